-- Hash chain over the ledger (see gatehouse_domain::ledger_chain): every row stores the previous
-- row's hash and its own. Rows written before this migration are chained once, in seq order, by
-- `Sqlite::open` right after migrating (the only update the ledger ever allows: filling in the
-- hash of a row that has none). `ledger_head` is the last row's seq and hash, updated in the
-- same transaction as every append, so rows removed from the end are seen too.
ALTER TABLE ledger ADD COLUMN prev_hash TEXT;
ALTER TABLE ledger ADD COLUMN hash TEXT;

CREATE TABLE ledger_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT    NOT NULL
);

DROP TRIGGER ledger_no_update;
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
WHEN OLD.hash IS NOT NULL
  OR NEW.seq IS NOT OLD.seq OR NEW.at IS NOT OLD.at OR NEW.envelope_id IS NOT OLD.envelope_id
  OR NEW.subject IS NOT OLD.subject OR NEW.event IS NOT OLD.event OR NEW.rule IS NOT OLD.rule
  OR NEW.call IS NOT OLD.call OR NEW.status IS NOT OLD.status
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;

-- A due deletion handed to one sweeper is not handed to another before this time (RFC 3339).
ALTER TABLE deletions ADD COLUMN claimed_until TEXT;
