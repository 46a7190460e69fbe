-- Issue 13: the claim walks `queue_visible` (visible_at, then seq: the rowid) from the oldest
-- visible message and stops after one batch, so its cost no longer grows with the backlog. Each
-- candidate is checked with two index lookups: an older message of its subject
-- (`queue_subject`), and a sibling in flight or waiting out a retry delay (this index: the
-- subject's rows not yet visible, a handful).
CREATE INDEX queue_subject_visible ON queue (subject, visible_at);
