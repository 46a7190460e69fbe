//! Catch-up state of the Google Workspace and Microsoft Graph intakes (issue 18), on SQLite and
//! PostgreSQL behind one trait: the Reports API watch channels Gatehouse made, and one cursor per
//! catch-up source. Tables in `migrations/sqlite/0015_intake_catchup.sql` and
//! `migrations/postgres/0009_intake_catchup.sql`.
//!
//! No secret is stored: a channel's token is derived from `google.channel_secret` and its id.

#[cfg(feature = "postgres")]
use crate::postgres::Postgres;
use crate::sqlite::{Sqlite, err, parse_ts, ts};
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::BackendError;
use sqlx::Row;

/// A Reports API watch channel Gatehouse created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleChannel {
    pub channel_id: String,
    /// Google's `resourceId`, needed to stop the channel.
    pub resource_id: String,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Where a catch-up source stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Google: the newest event time seen (RFC 3339). Graph: the `@odata.deltaLink`.
    pub position: String,
    /// The end of the last complete catch-up pass.
    pub covered_until: DateTime<Utc>,
}

/// The catch-up store; implemented by [`Sqlite`] and [`Postgres`] with one contract test.
pub trait CatchupStore: Send + Sync {
    /// Record a channel just created.
    fn google_channel_put(&self, c: &GoogleChannel) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Channels not stopped, oldest first.
    fn google_channels_live(&self) -> impl Future<Output = Result<Vec<GoogleChannel>, BackendError>> + Send;
    /// Whether `channel_id` is a channel Gatehouse made, not stopped and not expired at `now`.
    fn google_channel_accepts(
        &self,
        channel_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;
    /// Mark a channel stopped: its notifications are refused from now on.
    fn google_channel_stopped(
        &self,
        channel_id: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    fn catchup_get(&self, source: &str) -> impl Future<Output = Result<Option<Cursor>, BackendError>> + Send;
    fn catchup_put(&self, source: &str, c: &Cursor) -> impl Future<Output = Result<(), BackendError>> + Send;
}

impl CatchupStore for Sqlite {
    async fn google_channel_put(&self, c: &GoogleChannel) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO google_channels (channel_id, resource_id, expires_at, created_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (channel_id) DO UPDATE SET resource_id = excluded.resource_id,
                expires_at = excluded.expires_at",
        )
        .bind(&c.channel_id)
        .bind(&c.resource_id)
        .bind(ts(c.expires_at))
        .bind(ts(c.created_at))
        .execute(self.pool())
        .await
        .map_err(err("cannot store a google channel"))?;
        Ok(())
    }

    async fn google_channels_live(&self) -> Result<Vec<GoogleChannel>, BackendError> {
        let rows = sqlx::query(
            "SELECT channel_id, resource_id, expires_at, created_at FROM google_channels
             WHERE stopped_at IS NULL ORDER BY created_at, channel_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(err("cannot list google channels"))?;
        rows.iter()
            .map(|r| {
                Ok(GoogleChannel {
                    channel_id: r.get(0),
                    resource_id: r.get(1),
                    expires_at: parse_ts(r.get::<&str, _>(2))?,
                    created_at: parse_ts(r.get::<&str, _>(3))?,
                })
            })
            .collect()
    }

    async fn google_channel_accepts(
        &self,
        channel_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        sqlx::query(
            "SELECT 1 FROM google_channels WHERE channel_id = ? AND stopped_at IS NULL AND expires_at > ?",
        )
        .bind(channel_id)
        .bind(ts(now))
        .fetch_optional(self.pool())
        .await
        .map(|r| r.is_some())
        .map_err(err("cannot read google channels"))
    }

    async fn google_channel_stopped(&self, channel_id: &str, at: DateTime<Utc>) -> Result<(), BackendError> {
        sqlx::query("UPDATE google_channels SET stopped_at = ? WHERE channel_id = ? AND stopped_at IS NULL")
            .bind(ts(at))
            .bind(channel_id)
            .execute(self.pool())
            .await
            .map_err(err("cannot mark a google channel stopped"))?;
        Ok(())
    }

    async fn catchup_get(&self, source: &str) -> Result<Option<Cursor>, BackendError> {
        let row = sqlx::query("SELECT position, covered_until FROM intake_catchup WHERE source = ?")
            .bind(source)
            .fetch_optional(self.pool())
            .await
            .map_err(err("cannot read a catch-up cursor"))?;
        row.map(|r| {
            Ok(Cursor {
                position: r.get(0),
                covered_until: parse_ts(r.get::<&str, _>(1))?,
            })
        })
        .transpose()
    }

    async fn catchup_put(&self, source: &str, c: &Cursor) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO intake_catchup (source, position, covered_until, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (source) DO UPDATE SET position = excluded.position,
                covered_until = excluded.covered_until, updated_at = excluded.updated_at",
        )
        .bind(source)
        .bind(&c.position)
        .bind(ts(c.covered_until))
        .bind(ts(gatehouse_domain::clock::now()))
        .execute(self.pool())
        .await
        .map_err(err("cannot store a catch-up cursor"))?;
        Ok(())
    }
}

/// Millisecond precision, like the SQLite store.
#[cfg(feature = "postgres")]
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[cfg(feature = "postgres")]
impl CatchupStore for Postgres {
    async fn google_channel_put(&self, c: &GoogleChannel) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO google_channels (channel_id, resource_id, expires_at, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (channel_id) DO UPDATE SET resource_id = excluded.resource_id,
                expires_at = excluded.expires_at",
        )
        .bind(&c.channel_id)
        .bind(&c.resource_id)
        .bind(millis(c.expires_at))
        .bind(millis(c.created_at))
        .execute(self.pool())
        .await
        .map_err(err("cannot store a google channel"))?;
        Ok(())
    }

    async fn google_channels_live(&self) -> Result<Vec<GoogleChannel>, BackendError> {
        let rows = sqlx::query(
            "SELECT channel_id, resource_id, expires_at, created_at FROM google_channels
             WHERE stopped_at IS NULL ORDER BY created_at, channel_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(err("cannot list google channels"))?;
        Ok(rows
            .iter()
            .map(|r| GoogleChannel {
                channel_id: r.get(0),
                resource_id: r.get(1),
                expires_at: r.get(2),
                created_at: r.get(3),
            })
            .collect())
    }

    async fn google_channel_accepts(
        &self,
        channel_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        sqlx::query(
            "SELECT 1 FROM google_channels WHERE channel_id = $1 AND stopped_at IS NULL AND expires_at > $2",
        )
        .bind(channel_id)
        .bind(millis(now))
        .fetch_optional(self.pool())
        .await
        .map(|r| r.is_some())
        .map_err(err("cannot read google channels"))
    }

    async fn google_channel_stopped(&self, channel_id: &str, at: DateTime<Utc>) -> Result<(), BackendError> {
        sqlx::query(
            "UPDATE google_channels SET stopped_at = $1 WHERE channel_id = $2 AND stopped_at IS NULL",
        )
        .bind(millis(at))
        .bind(channel_id)
        .execute(self.pool())
        .await
        .map_err(err("cannot mark a google channel stopped"))?;
        Ok(())
    }

    async fn catchup_get(&self, source: &str) -> Result<Option<Cursor>, BackendError> {
        let row = sqlx::query("SELECT position, covered_until FROM intake_catchup WHERE source = $1")
            .bind(source)
            .fetch_optional(self.pool())
            .await
            .map_err(err("cannot read a catch-up cursor"))?;
        Ok(row.map(|r| Cursor {
            position: r.get(0),
            covered_until: r.get(1),
        }))
    }

    async fn catchup_put(&self, source: &str, c: &Cursor) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO intake_catchup (source, position, covered_until, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source) DO UPDATE SET position = excluded.position,
                covered_until = excluded.covered_until, updated_at = excluded.updated_at",
        )
        .bind(source)
        .bind(&c.position)
        .bind(millis(c.covered_until))
        .bind(millis(gatehouse_domain::clock::now()))
        .execute(self.pool())
        .await
        .map_err(err("cannot store a catch-up cursor"))?;
        Ok(())
    }
}

/// The configured state store: on PostgreSQL, every replica of the ingress sees the same
/// channels and cursors (issue 18).
impl CatchupStore for crate::state::AnyState {
    async fn google_channel_put(&self, c: &GoogleChannel) -> Result<(), BackendError> {
        match self {
            Self::Sqlite(s) => s.google_channel_put(c).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.google_channel_put(c).await,
        }
    }
    async fn google_channels_live(&self) -> Result<Vec<GoogleChannel>, BackendError> {
        match self {
            Self::Sqlite(s) => s.google_channels_live().await,
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.google_channels_live().await,
        }
    }
    async fn google_channel_accepts(
        &self,
        channel_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        match self {
            Self::Sqlite(s) => s.google_channel_accepts(channel_id, now).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.google_channel_accepts(channel_id, now).await,
        }
    }
    async fn google_channel_stopped(&self, channel_id: &str, at: DateTime<Utc>) -> Result<(), BackendError> {
        match self {
            Self::Sqlite(s) => s.google_channel_stopped(channel_id, at).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.google_channel_stopped(channel_id, at).await,
        }
    }
    async fn catchup_get(&self, source: &str) -> Result<Option<Cursor>, BackendError> {
        match self {
            Self::Sqlite(s) => s.catchup_get(source).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.catchup_get(source).await,
        }
    }
    async fn catchup_put(&self, source: &str, c: &Cursor) -> Result<(), BackendError> {
        match self {
            Self::Sqlite(s) => s.catchup_put(source, c).await,
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => p.catchup_put(source, c).await,
        }
    }
}
