-- Embedded queue: one row per envelope until acked. `envelope_id` is unique, so a redelivered
-- webhook body enqueues nothing new.
CREATE TABLE queue (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id  TEXT    NOT NULL UNIQUE,
    subject      TEXT    NOT NULL,
    occurred_at  TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    visible_at   INTEGER NOT NULL,   -- unix milliseconds
    enqueued_at  INTEGER NOT NULL
);
CREATE INDEX queue_visible ON queue (visible_at);
CREATE INDEX queue_subject ON queue (subject, occurred_at, seq);

CREATE TABLE dead_letters (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT    NOT NULL,
    attempts  INTEGER NOT NULL,
    reason    TEXT    NOT NULL,
    body      TEXT    NOT NULL
);

-- Dedupe store: an envelope id here has had all its effects recorded.
CREATE TABLE processed (
    envelope_id   TEXT PRIMARY KEY,
    processed_at  TEXT NOT NULL
);

-- The directory: one identity per subject, and the fingerprint of the desired state last
-- converged in Looker.
CREATE TABLE subjects (
    key         TEXT PRIMARY KEY,
    identity    TEXT NOT NULL,
    converged   TEXT,
    updated_at  TEXT NOT NULL
);

-- Append-only: every write call (or planned call in dry run) with the event and rule behind it.
CREATE TABLE ledger (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT NOT NULL,
    envelope_id  TEXT NOT NULL,
    subject      TEXT NOT NULL,
    event        TEXT NOT NULL,
    rule         TEXT NOT NULL,
    call         TEXT NOT NULL,   -- JSON HttpCall
    status       TEXT NOT NULL
);
CREATE INDEX ledger_at ON ledger (at);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;

CREATE TABLE deletions (
    subject  TEXT PRIMARY KEY,
    email    TEXT NOT NULL,
    due_at   TEXT NOT NULL
);
