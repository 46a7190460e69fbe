//! The Okta System Log catch-up cursor in PostgreSQL (one upsert per save: replicas may share it).

use super::{Postgres, millis};
use crate::sqlite::err;
use chrono::{DateTime, Utc};
use gatehouse_domain::okta_log::{LogCursor, LogCursors};
use gatehouse_domain::ports::BackendError;
use sqlx::Row;

impl LogCursors for Postgres {
    async fn load_okta_cursor(&self, org: &str) -> Result<Option<LogCursor>, BackendError> {
        let row = sqlx::query("SELECT next_url, filter, covered_until FROM okta_log_cursors WHERE org = $1")
            .bind(org)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the okta log cursor"))?;
        Ok(row.map(|r| LogCursor {
            next_url: r.get(0),
            filter: r.get(1),
            covered_until: r.get::<DateTime<Utc>, _>(2),
        }))
    }

    async fn save_okta_cursor(&self, org: &str, c: &LogCursor) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO okta_log_cursors (org, next_url, filter, covered_until, updated_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (org) DO UPDATE SET next_url = excluded.next_url, filter = excluded.filter,
                 covered_until = excluded.covered_until, updated_at = excluded.updated_at",
        )
        .bind(org)
        .bind(&c.next_url)
        .bind(&c.filter)
        .bind(millis(c.covered_until))
        .execute(&self.pool)
        .await
        .map_err(err("cannot store the okta log cursor"))?;
        Ok(())
    }
}
