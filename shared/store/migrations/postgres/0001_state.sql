-- PostgreSQL state shared by every processor replica: the same tables and meaning as the SQLite
-- state store (migrations/sqlite), with the ledger hash-chained from its first row. The embedded
-- queue, the SCIM directory and the Graph inbox stay in SQLite (see docs/postgres.md).

-- Dedupe store: an envelope id here has had all its effects recorded.
CREATE TABLE processed (
    envelope_id   TEXT PRIMARY KEY,
    processed_at  TIMESTAMPTZ NOT NULL
);

-- The directory: one identity per subject, and the fingerprint of the desired state last
-- converged in Looker.
CREATE TABLE subjects (
    key         TEXT PRIMARY KEY,
    identity    JSONB NOT NULL,
    converged   TEXT,
    updated_at  TIMESTAMPTZ NOT NULL,
    -- Bumped by every commit; a commit from an older load is refused (optimistic concurrency).
    version     BIGINT NOT NULL DEFAULT 0
);

-- Append-only, hash-chained (gatehouse_domain::ledger_chain): every write call (or planned call
-- in dry run) with the event and rule behind it. `seq` is assigned under the chain head's row
-- lock, so seqs are gapless and in chain order.
CREATE TABLE ledger (
    seq          BIGINT PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    envelope_id  TEXT NOT NULL,
    subject      TEXT NOT NULL,
    event        TEXT NOT NULL,
    rule         TEXT NOT NULL,
    call         JSONB NOT NULL,
    status       TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL,
    -- which API the call went to: looker, aws or gcp
    target       TEXT NOT NULL DEFAULT 'looker'
);
CREATE INDEX ledger_at ON ledger (at);

-- The last row's seq and hash, updated with every append in the same transaction; its row lock
-- (SELECT ... FOR UPDATE) serializes appends from every replica. seq 0 = empty ledger.
CREATE TABLE ledger_head (
    id    SMALLINT PRIMARY KEY CHECK (id = 1),
    seq   BIGINT NOT NULL,
    hash  TEXT   NOT NULL
);
INSERT INTO ledger_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION gatehouse_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger is append-only';
END
$$;
CREATE TRIGGER ledger_no_update_or_delete BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION gatehouse_ledger_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_ledger_append_only();

-- Deletions scheduled by the offboarding policy; a sweeper claims a due one until claimed_until.
CREATE TABLE deletions (
    subject        TEXT PRIMARY KEY,
    email          TEXT NOT NULL,
    due_at         TIMESTAMPTZ NOT NULL,
    claimed_until  TIMESTAMPTZ
);
CREATE INDEX deletions_due ON deletions (due_at);

-- Requests for the rotator: a key created outside Gatehouse, a SECRET_ROTATE notification.
CREATE TABLE rotation_requests (
    id           BIGSERIAL PRIMARY KEY,
    at           TIMESTAMPTZ NOT NULL,
    envelope_id  TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    provider     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    secret       TEXT,
    handled_at   TIMESTAMPTZ
);
