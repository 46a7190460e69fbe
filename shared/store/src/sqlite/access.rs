//! Access snapshots in SQLite (issue 15): one row per person × target per reconcile run.

use super::{Sqlite, err};
use chrono::{DateTime, Duration, Utc};
use gatehouse_domain::access::{AccessRow, AccessSnapshot, AccessSnapshots, Retention};
use gatehouse_domain::ports::BackendError;
use sqlx::{QueryBuilder, Row};

/// Rows per INSERT (SQLite allows 32,766 bound parameters; four per row).
const CHUNK: usize = 500;
/// PostgreSQL allows 65,535 bound parameters.
#[cfg(feature = "postgres")]
pub(crate) const CHUNK_PG: usize = 1000;

pub(crate) fn json_of(state: &serde_json::Value) -> String {
    state.to_string()
}

pub(crate) fn row_of(subject: String, target: String, state: &str) -> Result<AccessRow, BackendError> {
    let state = serde_json::from_str(state)
        .map_err(|e| BackendError::new("cannot read an access snapshot row", e))?;
    Ok(AccessRow {
        subject,
        target,
        state,
    })
}

pub(crate) fn time_of(ms: i64) -> Result<DateTime<Utc>, BackendError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        BackendError::new(
            "cannot read an access snapshot's time",
            format!("{ms} is out of range"),
        )
    })
}

/// With `keep_days`, the unix-ms time before which a run is deleted (counted back from the run
/// just saved, so retention does not depend on the clock of the process that writes).
pub(crate) fn cutoff_days(run_at: DateTime<Utc>, r: Retention) -> Option<i64> {
    r.keep_days
        .map(|d| (run_at - Duration::days(i64::from(d))).timestamp_millis())
}

impl AccessSnapshots for Sqlite {
    async fn save_access_snapshot(&self, s: &AccessSnapshot, r: Retention) -> Result<(), BackendError> {
        const E: &str = "cannot write the access snapshot";
        let at = s.run_at.timestamp_millis();
        let writer = self.writer().await;
        let mut tx = writer.begin().await.map_err(err(E))?;
        for chunk in s.rows.chunks(CHUNK) {
            let mut q = QueryBuilder::new("INSERT INTO access_snapshots (run_at, subject, target, state) ");
            q.push_values(chunk, |mut b, row| {
                b.push_bind(at)
                    .push_bind(&row.subject)
                    .push_bind(&row.target)
                    .push_bind(json_of(&row.state));
            });
            q.push(" ON CONFLICT (run_at, subject, target) DO UPDATE SET state = excluded.state");
            q.build().execute(&mut *tx).await.map_err(err(E))?;
        }
        sqlx::query(
            "DELETE FROM access_snapshots WHERE run_at < (SELECT run_at FROM
               (SELECT DISTINCT run_at FROM access_snapshots ORDER BY run_at DESC LIMIT 1 OFFSET ?1))",
        )
        .bind(i64::from(r.keep_runs.max(1) - 1))
        .execute(&mut *tx)
        .await
        .map_err(err(E))?;
        if let Some(cut) = cutoff_days(s.run_at, r) {
            sqlx::query("DELETE FROM access_snapshots WHERE run_at < ?1 AND run_at <> ?2")
                .bind(cut)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(err(E))?;
        }
        tx.commit().await.map_err(err(E))
    }

    async fn access_snapshot_at(&self, as_of: DateTime<Utc>) -> Result<Option<AccessSnapshot>, BackendError> {
        const E: &str = "cannot read the access snapshot";
        let rows = sqlx::query(
            "SELECT run_at, subject, target, state FROM access_snapshots
             WHERE run_at = (SELECT MAX(run_at) FROM access_snapshots WHERE run_at <= ?1)
             ORDER BY subject, target",
        )
        .bind(as_of.timestamp_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(err(E))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let run_at = time_of(first.get(0))?;
        let rows = rows
            .iter()
            .map(|r| row_of(r.get(1), r.get(2), r.get::<&str, _>(3)))
            .collect::<Result<_, _>>()?;
        Ok(Some(AccessSnapshot { run_at, rows }))
    }

    async fn access_snapshot_runs(&self) -> Result<Vec<DateTime<Utc>>, BackendError> {
        sqlx::query("SELECT DISTINCT run_at FROM access_snapshots ORDER BY run_at DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot list the access snapshots"))?
            .iter()
            .map(|r| time_of(r.get(0)))
            .collect()
    }
}
