-- Issue 15: the times of every processed offboarding envelope (deactivate, suspend, delete,
-- `gatehouse offboard`), written in the transaction that finishes it, so the deprovisioning SLA
-- report can measure event → receive → last revoking call after the message is gone.
CREATE TABLE offboarding_times (
    envelope_id  TEXT PRIMARY KEY,
    person       TEXT NOT NULL,
    email        TEXT,
    source       TEXT NOT NULL,
    event        TEXT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX offboarding_times_occurred ON offboarding_times (occurred_at);
