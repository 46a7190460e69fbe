-- Access snapshots (issue 15): what each reconcile read from every target, one row per
-- person × target per run (`subject` is the person's key, or `orphan:<target>:<account>` for an
-- account that matches nobody), the state as JSON. `run_at` is unix ms. Old runs are deleted
-- by retention ([reconcile] snapshot_keep_runs / snapshot_keep_days).
CREATE TABLE access_snapshots (
    run_at   BIGINT NOT NULL,
    subject  TEXT NOT NULL,
    target   TEXT NOT NULL,
    state    TEXT NOT NULL,
    PRIMARY KEY (run_at, subject, target)
);
