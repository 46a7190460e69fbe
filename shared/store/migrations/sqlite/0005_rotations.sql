-- The rotator's persisted state machine: one row per rotation, written after every step.
CREATE TABLE rotations (
    id           TEXT PRIMARY KEY,   -- rotation id; also the AWS ClientRequestToken
    secret       TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    phase        TEXT NOT NULL,      -- started|created|set|tested|finished|revoked|done|rolled_back|failed
    keys_before  TEXT,               -- JSON array of the key ids that existed before create
    old_key_id   TEXT,
    old_version  TEXT,
    new_key_id   TEXT,
    new_version  TEXT,
    due_at       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    started_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    lease_owner  TEXT,
    lease_until  TEXT
);
-- One rotation per secret at a time, across every instance sharing the database.
CREATE UNIQUE INDEX rotations_one_active ON rotations (secret)
    WHERE phase IN ('started', 'created', 'set', 'tested');
CREATE INDEX rotations_due ON rotations (due_at)
    WHERE phase NOT IN ('done', 'rolled_back', 'failed');

-- Per declared secret: the last schedule occurrence claimed, and the failure backoff.
CREATE TABLE rotation_secrets (
    secret     TEXT PRIMARY KEY,
    last_fire  TEXT,
    failures   INTEGER NOT NULL DEFAULT 0,
    retry_at   TEXT
);
