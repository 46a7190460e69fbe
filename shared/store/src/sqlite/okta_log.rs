//! The Okta System Log catch-up cursor in SQLite.

use super::{Sqlite, err, parse_ts, ts};
use gatehouse_domain::okta_log::{LogCursor, LogCursors};
use gatehouse_domain::ports::BackendError;
use sqlx::Row;

impl LogCursors for Sqlite {
    async fn load_okta_cursor(&self, org: &str) -> Result<Option<LogCursor>, BackendError> {
        let row = sqlx::query("SELECT next_url, filter, covered_until FROM okta_log_cursors WHERE org = ?")
            .bind(org)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the okta log cursor"))?;
        row.map(|r| {
            Ok(LogCursor {
                next_url: r.get(0),
                filter: r.get(1),
                covered_until: parse_ts(&r.get::<String, _>(2))?,
            })
        })
        .transpose()
    }

    async fn save_okta_cursor(&self, org: &str, c: &LogCursor) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO okta_log_cursors (org, next_url, filter, covered_until, updated_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (org) DO UPDATE SET next_url = excluded.next_url, filter = excluded.filter,
                 covered_until = excluded.covered_until, updated_at = excluded.updated_at",
        )
        .bind(org)
        .bind(&c.next_url)
        .bind(&c.filter)
        .bind(ts(c.covered_until))
        .bind(ts(gatehouse_domain::clock::now()))
        .execute(&self.pool)
        .await
        .map_err(err("cannot store the okta log cursor"))?;
        Ok(())
    }
}
