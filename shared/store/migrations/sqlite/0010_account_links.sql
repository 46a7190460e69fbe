-- Issue 16: a person (the IdP's stable id, `Subject.key`) linked to their account(s) in a target
-- (`looker` user id, `aws` IAM user name, `gcp` member). Found first on every later event, so an
-- email change is not a new person. Rows are never deleted: "ever linked" stays answerable.
CREATE TABLE account_links (
    target      TEXT NOT NULL,
    person      TEXT NOT NULL,
    account     TEXT NOT NULL,
    linked_at   TEXT NOT NULL,
    PRIMARY KEY (target, person, account)
);
CREATE INDEX account_links_by_account ON account_links (target, account);
