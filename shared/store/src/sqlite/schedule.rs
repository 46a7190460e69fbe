//! Leases on scheduled reconcile ticks and the audit run counter in SQLite (issue 14).

use super::{Sqlite, err};
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::BackendError;
use gatehouse_domain::schedule::{Claim, ReconcileSchedule};
use sqlx::Row;

impl ReconcileSchedule for Sqlite {
    async fn claim_tick(
        &self,
        tick: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Claim, BackendError> {
        let won = sqlx::query(CLAIM)
            .bind(tick)
            .bind(holder)
            .bind(until.timestamp_millis())
            .bind(now.timestamp_millis())
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot claim the reconcile tick"))?;
        if won.is_some() {
            return Ok(Claim::Won);
        }
        let row = sqlx::query("SELECT finished_at IS NOT NULL FROM reconcile_ticks WHERE tick = ?1")
            .bind(tick)
            .fetch_one(&self.pool)
            .await
            .map_err(err("cannot read the reconcile tick"))?;
        Ok(if row.get::<bool, _>(0) {
            Claim::Finished
        } else {
            Claim::Held
        })
    }

    async fn take_over_tick(
        &self,
        tick: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Claim, BackendError> {
        let won = sqlx::query(TAKE_OVER)
            .bind(tick)
            .bind(holder)
            .bind(until.timestamp_millis())
            .bind(now.timestamp_millis())
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot take over the reconcile tick"))?;
        if won.is_some() {
            return Ok(Claim::Won);
        }
        let row = sqlx::query("SELECT finished_at IS NOT NULL FROM reconcile_ticks WHERE tick = ?1")
            .bind(tick)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the reconcile tick"))?;
        Ok(match row {
            Some(r) if !r.get::<bool, _>(0) => Claim::Held,
            _ => Claim::Finished,
        })
    }

    async fn finish_tick(&self, tick: &str, holder: &str) -> Result<bool, BackendError> {
        let done = sqlx::query(FINISH)
            .bind(tick)
            .bind(holder)
            .bind(gatehouse_domain::clock::now().timestamp_millis())
            .execute(&self.pool)
            .await
            .map_err(err("cannot finish the reconcile tick"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn next_audit_run(&self) -> Result<u64, BackendError> {
        let row = sqlx::query(NEXT_AUDIT_RUN)
            .fetch_one(&self.pool)
            .await
            .map_err(err("cannot count the reconcile audit run"))?;
        Ok(row.get::<i64, _>(0).max(0) as u64)
    }
}

/// Insert the claim, or take it over when it is this holder's or its lease lapsed, unless the
/// tick is finished. A row comes back only when this holder holds the tick now.
const CLAIM: &str = "INSERT INTO reconcile_ticks (tick, holder, lease_until) VALUES (?1, ?2, ?3)
     ON CONFLICT (tick) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until
     WHERE reconcile_ticks.finished_at IS NULL
       AND (reconcile_ticks.holder = excluded.holder OR reconcile_ticks.lease_until < ?4)
     RETURNING holder";
const TAKE_OVER: &str = "UPDATE reconcile_ticks SET holder = ?2, lease_until = ?3
     WHERE tick = ?1 AND finished_at IS NULL AND (holder = ?2 OR lease_until < ?4)
     RETURNING holder";
const FINISH: &str = "UPDATE reconcile_ticks SET finished_at = ?3
     WHERE tick = ?1 AND holder = ?2 AND finished_at IS NULL";
const NEXT_AUDIT_RUN: &str = "INSERT INTO reconcile_counters (name, value) VALUES ('attribute_audit', 1)
     ON CONFLICT (name) DO UPDATE SET value = reconcile_counters.value + 1
     RETURNING value";
