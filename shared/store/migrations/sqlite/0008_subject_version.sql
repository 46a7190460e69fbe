-- Optimistic concurrency for subjects: every commit bumps `version`, and a commit whose handler
-- loaded an older version is refused (the handler then handles its event again), so two
-- handlers of one subject never lose each other's facts. 0005-0007 are taken by other features.
ALTER TABLE subjects ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
