-- The mass-change circuit breaker (issue 19): changes counted per window, trips, held envelopes.
-- Counted changes: one row per (envelope, kind) applied; pruned once older than the window.
CREATE TABLE breaker_changes (
    envelope_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (envelope_id, kind)
);
CREATE INDEX breaker_changes_kind_at ON breaker_changes (kind, at);

-- A trip holds every later change of its kind from its scope (a source, or '*' for all).
CREATE TABLE breaker_trips (
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    at TEXT NOT NULL,
    count INTEGER NOT NULL,
    lim INTEGER NOT NULL,
    PRIMARY KEY (kind, scope)
);

-- Held envelopes, kept until a person releases or discards them (the row stays, with the
-- decision, so a redelivery of the message never applies a discarded change).
CREATE TABLE breaker_held (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    held_at TEXT NOT NULL,
    envelope TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'released', 'discarded')),
    decided_at TEXT,
    decided_by TEXT
);
CREATE INDEX breaker_held_state ON breaker_held (state, seq);
