-- Looker admin-API calls per calendar month (UTC, `YYYY-MM`), summed over every process: each
-- adds its in-memory count with `calls = calls + delta`, so restarts keep the count and
-- replicas add up. 0007 is taken by another feature.
CREATE TABLE looker_calls (
    month       TEXT PRIMARY KEY,
    calls       INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL
);
