-- SCIM directory: every User and Group pushed by the IdP, as its JSON resource. `version` is the
-- ETag (optimistic concurrency: a write names the version it read). `user_name_key` is the
-- lower-cased userName (SCIM userName is case-insensitive and unique among Users).
CREATE TABLE scim_resources (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    kind           TEXT    NOT NULL,   -- 'User' | 'Group'
    user_name_key  TEXT,
    body           TEXT    NOT NULL,   -- JSON resource (without meta)
    version        INTEGER NOT NULL,
    created        TEXT    NOT NULL,
    last_modified  TEXT    NOT NULL
);
CREATE UNIQUE INDEX scim_resources_user_name ON scim_resources (user_name_key)
    WHERE user_name_key IS NOT NULL;
CREATE INDEX scim_resources_kind ON scim_resources (kind, seq);

-- Transactional outbox: envelopes written with the directory change that caused them; the relay
-- publishes them to the queue in order and then deletes them.
CREATE TABLE scim_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope_id  TEXT NOT NULL UNIQUE,
    body         TEXT NOT NULL
);
