-- The Okta System Log catch-up's position per org: the last `rel="next"` link (Okta's opaque
-- `after` cursor), the filter it was made for, and the instant up to which everything Okta
-- had persisted has been enqueued. 0012 and 0013 belong to other features.
CREATE TABLE okta_log_cursors (
    org            TEXT PRIMARY KEY,
    next_url       TEXT,
    filter         TEXT NOT NULL,
    covered_until  TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
