-- Looker admin-API calls per calendar month (UTC, `YYYY-MM`), summed over every replica: each
-- adds its in-memory count with `calls = calls + delta` (one atomic upsert), so restarts keep
-- the count and replicas add up. 0002 belongs to the rotator's tables.
CREATE TABLE looker_calls (
    month       TEXT PRIMARY KEY,
    calls       BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL
);
