-- The mass-change circuit breaker (issue 19): changes counted per window, trips, held envelopes.
-- Every decision runs under one transaction-scoped advisory lock, so replicas count as one.
CREATE TABLE breaker_changes (
    envelope_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (envelope_id, kind)
);
CREATE INDEX breaker_changes_kind_at ON breaker_changes (kind, at);

CREATE TABLE breaker_trips (
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    count BIGINT NOT NULL,
    lim BIGINT NOT NULL,
    PRIMARY KEY (kind, scope)
);

CREATE TABLE breaker_held (
    seq BIGSERIAL PRIMARY KEY,
    envelope_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    subject TEXT NOT NULL,
    held_at TIMESTAMPTZ NOT NULL,
    envelope TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'released', 'discarded')),
    decided_at TIMESTAMPTZ,
    decided_by TEXT
);
CREATE INDEX breaker_held_state ON breaker_held (state, seq);
