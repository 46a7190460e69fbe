-- Cloud IAM targets: which API a ledger row's call went to. Rows written before are Looker calls.
ALTER TABLE ledger ADD COLUMN target TEXT NOT NULL DEFAULT 'looker';
