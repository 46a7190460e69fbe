//! The embedded queue's claim (issue 13): its cost is O(batch), whatever the backlog.
//!
//! The candidates are read in `queue_visible` order (visible_at, then seq) from the oldest visible
//! message, and the scan stops after `LIMIT` eligible ones: no sort of every visible row, no
//! correlated subquery run over the whole backlog. A candidate is eligible when it is its
//! subject's oldest message (one `queue_subject` lookup) and no sibling is in flight or waiting out
//! a retry delay (one `queue_subject_claimed` lookup: that index holds claimed rows only, so an
//! enqueue does not write it), so one person's events are still handled one
//! at a time and in order, while different people run in parallel. The only rows the scan skips are
//! newer messages of a subject whose older one is queued (a person's own backlog).

use super::{Sqlite, err};
use gatehouse_domain::ports::BackendError;
use sqlx::Row;

/// `?1` the new visible_at (lease end), `?2` now, `?3` the batch size.
macro_rules! claim_sql {
    () => {
        "UPDATE queue SET attempts = attempts + 1, visible_at = ?1
     WHERE seq IN (
        SELECT q.seq FROM queue q INDEXED BY queue_visible
        WHERE q.visible_at <= ?2
          AND NOT EXISTS (
            SELECT 1 FROM queue o INDEXED BY queue_subject
            WHERE o.subject = q.subject
              AND (o.occurred_at < q.occurred_at OR (o.occurred_at = q.occurred_at AND o.seq < q.seq)))
          AND NOT EXISTS (
            SELECT 1 FROM queue b INDEXED BY queue_subject_claimed
            WHERE b.subject = q.subject AND b.visible_at > ?2 AND b.attempts > 0)
        ORDER BY q.visible_at, q.seq
        LIMIT ?3)
     RETURNING seq, attempts, body, occurred_at"
    };
}

pub(super) const CLAIM: &str = claim_sql!();

impl Sqlite {
    /// SQLite's plan for the claim (`EXPLAIN QUERY PLAN`, one line per step), so a test can tell
    /// that it walks the indexes and sorts nothing.
    pub async fn claim_query_plan(&self) -> Result<Vec<String>, BackendError> {
        let rows = sqlx::query(concat!("EXPLAIN QUERY PLAN ", claim_sql!()))
            .bind(0i64)
            .bind(0i64)
            .bind(1i64)
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot explain the claim"))?;
        Ok(rows.iter().map(|r| r.get::<String, _>(3)).collect())
    }
}
