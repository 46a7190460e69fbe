-- Issue 15: every ledger row records the digest of the policy its decision was made with and who
-- caused it (both covered by the hash chain, encoding v2). Rows written before keep NULL and
-- their v1 encoding.
ALTER TABLE ledger ADD COLUMN policy_digest TEXT;
ALTER TABLE ledger ADD COLUMN actor TEXT;
