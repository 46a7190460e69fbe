-- Issue 12, item 4: the processor and the rotator meet through a queue, not a shared table.
-- The processor publishes rotation requests to the rotation queue ([queue]); the rotator
-- records each in its own inbox before acking it. `rotation_requests` becomes that inbox,
-- renamed, so no row is lost: pending ones are drained by the rotator as before, handled ones
-- keep deduplicating by envelope id. Only the rotator touches it from now on.
ALTER TABLE rotation_requests RENAME TO rotation_inbox;
ALTER INDEX rotation_requests_pending RENAME TO rotation_inbox_pending;
