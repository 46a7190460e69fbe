//! Offboarding times in PostgreSQL (issue 15): written inside `commit`'s transaction, read by
//! the deprovisioning SLA report.

use super::{Postgres, millis};
use crate::sqlite::err;
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::{BackendError, OffboardingLog, OffboardingTimes};
use sqlx::Row;

/// Record `t` in the commit's transaction (a redelivered envelope keeps its first row).
pub(super) async fn record(conn: &mut sqlx::PgConnection, t: &OffboardingTimes) -> Result<(), BackendError> {
    sqlx::query(
        "INSERT INTO offboarding_times
             (envelope_id, person, email, source, event, occurred_at, received_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (envelope_id) DO NOTHING",
    )
    .bind(&t.envelope_id)
    .bind(&t.person)
    .bind(&t.email)
    .bind(&t.source)
    .bind(&t.event)
    .bind(millis(t.occurred_at))
    .bind(millis(t.received_at))
    .bind(millis(t.finished_at))
    .execute(conn)
    .await
    .map_err(err("cannot record the offboarding times"))?;
    Ok(())
}

impl OffboardingLog for Postgres {
    async fn offboardings(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<OffboardingTimes>, BackendError> {
        let rows = sqlx::query(
            "SELECT envelope_id, person, email, source, event, occurred_at, received_at, finished_at
             FROM offboarding_times WHERE occurred_at >= $1 AND occurred_at < $2
             ORDER BY occurred_at, envelope_id",
        )
        .bind(millis(since))
        .bind(millis(until))
        .fetch_all(&self.pool)
        .await
        .map_err(err("cannot read the offboarding times"))?;
        Ok(rows
            .iter()
            .map(|r| OffboardingTimes {
                envelope_id: r.get(0),
                person: r.get(1),
                email: r.get(2),
                source: r.get(3),
                event: r.get(4),
                occurred_at: r.get(5),
                received_at: r.get(6),
                finished_at: r.get(7),
            })
            .collect())
    }
}
