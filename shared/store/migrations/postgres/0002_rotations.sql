-- The rotator's state on PostgreSQL (gatehouse_rotation::postgres::PgRotations): the same tables
-- and meaning as SQLite's 0005_rotations.sql, shared by every rotator instance. The ledger and
-- rotation_requests are the processor's own tables (0001_state.sql).

-- One row per rotation, written after every step.
CREATE TABLE rotations (
    id           TEXT PRIMARY KEY,   -- rotation id; also the AWS ClientRequestToken
    secret       TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    phase        TEXT NOT NULL CHECK (phase IN
                     ('started', 'created', 'set', 'tested', 'finished', 'revoked', 'done', 'rolled_back')),
    keys_before  JSONB CHECK (keys_before IS NULL OR jsonb_typeof(keys_before) = 'array'),
    old_key_id   TEXT,
    old_version  TEXT,
    new_key_id   TEXT,
    new_version  TEXT,
    due_at       TIMESTAMPTZ NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    error        TEXT,
    started_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    -- The instance driving it and until when; a save is fenced on lease_owner.
    lease_owner  TEXT,
    lease_until  TIMESTAMPTZ,
    -- Insertion order: ties of started_at in history().
    seq          BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE
);
-- One rotation per secret at a time, across every instance sharing the database.
CREATE UNIQUE INDEX rotations_one_active ON rotations (secret)
    WHERE phase IN ('started', 'created', 'set', 'tested');
CREATE INDEX rotations_due ON rotations (due_at)
    WHERE phase NOT IN ('done', 'rolled_back');
CREATE INDEX rotations_secret ON rotations (secret, started_at, seq);

-- Per declared secret: the last schedule occurrence claimed, and the failure backoff.
CREATE TABLE rotation_secrets (
    secret     TEXT PRIMARY KEY,
    last_fire  TIMESTAMPTZ,
    failures   INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
    retry_at   TIMESTAMPTZ
);

-- pending_requests() reads the unhandled ones in order.
CREATE INDEX rotation_requests_pending ON rotation_requests (id) WHERE handled_at IS NULL;
