//! Access snapshots (issue 15): what each reconcile read from every target, per person, stored
//! with the run's time so an access review can answer "who had what on a given day" without
//! calling a target. A port: SQLite and PostgreSQL implement it.
//!
//! One row per person × target per run; the state is JSON whose shape belongs to the target
//! (see `gatehouse_engine::access`). Accounts that match nobody in the directory (orphans) are
//! rows too, under the subject [`orphan_subject`] names.

use crate::ports::BackendError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// What one target held for one person (or one orphan account) in one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRow {
    /// The person's key (the IdP's stable id), or [`orphan_subject`] for an orphan account.
    pub subject: String,
    /// `looker`, `aws` or `gcp`.
    pub target: String,
    pub state: serde_json::Value,
}

/// Every row of one reconcile run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessSnapshot {
    pub run_at: DateTime<Utc>,
    pub rows: Vec<AccessRow>,
}

/// How many runs the store keeps (`[reconcile] snapshot_keep_runs`, `snapshot_keep_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many runs are always kept (at least 1).
    pub keep_runs: u32,
    /// Runs older than this many days are deleted even among the newest `keep_runs` (never the
    /// run just saved). `None`: no age limit.
    pub keep_days: Option<u32>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_runs: 30,
            keep_days: None,
        }
    }
}

/// The subject under which an orphan account of `target` is recorded.
pub fn orphan_subject(target: &str, account: &str) -> String {
    format!("orphan:{target}:{account}")
}

/// The (target, account) of an orphan row's subject.
pub fn parse_orphan_subject(subject: &str) -> Option<(&str, &str)> {
    subject.strip_prefix("orphan:")?.split_once(':')
}

/// Reconcile snapshots in the state store.
pub trait AccessSnapshots: Send + Sync {
    /// Store `snapshot` (one transaction) and delete the runs `retention` lets go.
    fn save_access_snapshot(
        &self,
        snapshot: &AccessSnapshot,
        retention: Retention,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// The last run at or before `as_of`, with all its rows (subject, target order).
    fn access_snapshot_at(
        &self,
        as_of: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<AccessSnapshot>, BackendError>> + Send;
    /// The times of the stored runs, newest first.
    fn access_snapshot_runs(&self) -> impl Future<Output = Result<Vec<DateTime<Utc>>, BackendError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphan_subjects_round_trip_with_colons_in_the_account() {
        let s = orphan_subject("gcp", "user:a@x.com");
        assert_eq!(parse_orphan_subject(&s), Some(("gcp", "user:a@x.com")));
        assert_eq!(parse_orphan_subject("00u1"), None);
    }
}
