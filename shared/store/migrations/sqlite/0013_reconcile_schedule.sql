-- The scheduled reconcile across processes (issue 14): one row per schedule tick, claimed by
-- one holder until `lease_until` (unix ms, renewed while it runs); a tick whose holder stopped
-- renewing is taken over; `finished_at` (unix ms) ends it. Counters: the rolling attribute
-- audit's run number.
CREATE TABLE reconcile_ticks (
    tick         TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    lease_until  INTEGER NOT NULL,
    finished_at  INTEGER
);
CREATE TABLE reconcile_counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);
