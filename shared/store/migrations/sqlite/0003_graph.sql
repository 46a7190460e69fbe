-- Microsoft Graph change notifications: the inbox (one row per notification, written before the
-- 202; `key` is derived from the notification, so a redelivery is a no-op), the subscriptions
-- Gatehouse keeps alive, and the last member listing seen per group (to tell removals).
CREATE TABLE graph_inbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    key          TEXT    NOT NULL UNIQUE,
    body         TEXT    NOT NULL,            -- the notification JSON, verbatim
    received_at  TEXT    NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'pending',  -- pending | done | failed
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,            -- unix milliseconds
    last_error   TEXT,
    done_at      INTEGER                      -- unix milliseconds
);
CREATE INDEX graph_inbox_due ON graph_inbox (status, next_at, seq);

CREATE TABLE graph_subscriptions (
    resource         TEXT PRIMARY KEY,
    subscription_id  TEXT NOT NULL UNIQUE,
    expires_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);

CREATE TABLE graph_group_members (
    group_id    TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    group_name  TEXT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
