-- Requests for the rotator: a key created outside Gatehouse, a SECRET_ROTATE notification.
CREATE TABLE rotation_requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT NOT NULL,
    envelope_id  TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    provider     TEXT NOT NULL,
    reason       TEXT NOT NULL,
    secret       TEXT,
    handled_at   TEXT
);
