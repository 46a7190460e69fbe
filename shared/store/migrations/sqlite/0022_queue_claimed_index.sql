-- Issue 13: the claim's in-flight-sibling check (a message of the subject claimed and not yet
-- visible again: in flight, or waiting out a retry delay) only ever looks at claimed rows
-- (`attempts > 0`), so its index holds those alone. An accepted webhook's enqueue writes a row
-- with `attempts = 0` and no longer updates it: one random index page fewer per enqueued message
-- in the writer's commit (an index on `subject` puts each new row on a page of its own among the
-- others). The claim that sets `attempts` adds the row, as it moved it in the old index.
DROP INDEX queue_subject_visible;
CREATE INDEX queue_subject_claimed ON queue (subject, visible_at) WHERE attempts > 0;
