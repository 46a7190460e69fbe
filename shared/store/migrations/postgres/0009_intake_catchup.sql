-- Catch-up state of the Google Workspace and Microsoft Graph intakes (issue 18); see
-- migrations/sqlite/0015_intake_catchup.sql.
CREATE TABLE google_channels (
    channel_id   TEXT PRIMARY KEY,
    resource_id  TEXT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    stopped_at   TIMESTAMPTZ
);

CREATE TABLE intake_catchup (
    source         TEXT PRIMARY KEY,
    position       TEXT NOT NULL,
    covered_until  TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
