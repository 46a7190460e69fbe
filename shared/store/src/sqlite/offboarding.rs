//! Offboarding times in SQLite (issue 15): written inside `commit`'s transaction, read by the
//! deprovisioning SLA report.

use super::{Sqlite, err, parse_ts, ts};
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::{BackendError, OffboardingLog, OffboardingTimes};
use sqlx::Row;

impl OffboardingLog for Sqlite {
    async fn offboardings(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<OffboardingTimes>, BackendError> {
        // The stored text is RFC 3339 in UTC with milliseconds: its order is the time order.
        let rows = sqlx::query(
            "SELECT envelope_id, person, email, source, event, occurred_at, received_at, finished_at
             FROM offboarding_times WHERE occurred_at >= ? AND occurred_at < ?
             ORDER BY occurred_at, envelope_id",
        )
        .bind(ts(since))
        .bind(ts(until))
        .fetch_all(&self.pool)
        .await
        .map_err(err("cannot read the offboarding times"))?;
        rows.iter()
            .map(|r| {
                Ok(OffboardingTimes {
                    envelope_id: r.get(0),
                    person: r.get(1),
                    email: r.get(2),
                    source: r.get(3),
                    event: r.get(4),
                    occurred_at: parse_ts(r.get::<&str, _>(5))?,
                    received_at: parse_ts(r.get::<&str, _>(6))?,
                    finished_at: parse_ts(r.get::<&str, _>(7))?,
                })
            })
            .collect()
    }
}
