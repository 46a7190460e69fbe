-- Issue 12, item 4: the processor and the rotator meet through a queue, not a shared table.
--
-- The processor publishes each rotation request as an envelope to the rotation queue (this
-- table in the embedded default; `[queue] rotation_queue_url` / `rotation_topic` on SQS and
-- Pub/Sub). The rotator consumes it and records the request in its own inbox before acking.
--
-- `rotation_requests` becomes that inbox, renamed, so every row is kept: pending rows (handled_at
-- NULL) are drained by the rotator as before, handled ones keep deduplicating by envelope id.
-- Only the rotator reads or writes it from now on.
ALTER TABLE rotation_requests RENAME TO rotation_inbox;

-- The embedded rotation queue: one row per envelope until the rotator acks it. `envelope_id`
-- is unique, so a republished request (a redelivered offboarding) enqueues nothing new while
-- the first is queued. Poison goes to `dead_letters` with its reason.
CREATE TABLE rotation_queue (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id  TEXT    NOT NULL UNIQUE,
    body         TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    visible_at   INTEGER NOT NULL,   -- unix milliseconds
    enqueued_at  INTEGER NOT NULL
);
CREATE INDEX rotation_queue_visible ON rotation_queue (visible_at, seq);
