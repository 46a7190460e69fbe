-- Catch-up state of the Google Workspace and Microsoft Graph intakes (issue 18):
-- the Reports API watch channels Gatehouse made (their tokens are derived from
-- `google.channel_secret` and the channel id, never stored), and one cursor per catch-up source.
CREATE TABLE google_channels (
    channel_id   TEXT PRIMARY KEY,
    resource_id  TEXT NOT NULL,
    expires_at   TEXT NOT NULL,   -- RFC 3339, as Google granted it
    created_at   TEXT NOT NULL,
    stopped_at   TEXT             -- set once channels/stop succeeded (or Google no longer knew it)
);

CREATE TABLE intake_catchup (
    source         TEXT PRIMARY KEY,  -- 'google', 'graph:users', 'graph:groups'
    position       TEXT NOT NULL,     -- google: newest event time seen (RFC 3339); graph: the deltaLink
    covered_until  TEXT NOT NULL,     -- the end of the last complete catch-up pass
    updated_at     TEXT NOT NULL
);
