//! [`RotationStore`] on the store's SQLite database (migrations `0005_rotations.sql`,
//! `0021_rotation_queue.sql`). The ledger is the processor's hash-chained one; the rotation
//! inbox (`rotation_inbox`) is the rotator's own: requests arrive through the rotation queue and
//! are recorded there before they are acked, never written by the processor.

use crate::state::{Phase, Rotation, RotationStore, SecretState, Started};
use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_domain::ports::{BackendError, LedgerEntry, RotationRequest, StateStore};
use gatehouse_store::sqlite::Sqlite;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// The rotator's state in the SQLite database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteRotations {
    db: Sqlite,
}

fn err(context: &'static str) -> impl FnOnce(sqlx::Error) -> BackendError {
    move |e| BackendError::new(context, e)
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, BackendError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| BackendError::new("stored timestamp is not RFC 3339", e))
}

fn opt_ts(s: Option<String>) -> Result<Option<DateTime<Utc>>, BackendError> {
    s.as_deref().map(parse_ts).transpose()
}

/// `SELECT <every rotation column> FROM rotations <rest>` as one literal.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT id, secret, trigger, phase, keys_before, old_key_id, old_version, new_key_id, ",
            "new_version, due_at, attempts, error, started_at FROM rotations ",
            $rest
        )
    };
}

fn row_to_rotation(r: &SqliteRow) -> Result<Rotation, BackendError> {
    let phase: String = r.get(3);
    let keys: Option<String> = r.get(4);
    Ok(Rotation {
        id: r.get(0),
        secret: r.get(1),
        trigger: r.get(2),
        phase: Phase::parse(&phase).ok_or_else(|| BackendError::new("unknown rotation phase", phase))?,
        keys_before: keys
            .map(|k| serde_json::from_str(&k))
            .transpose()
            .map_err(|e| BackendError::new("stored key list is not json", e))?,
        old_key_id: r.get(5),
        old_version: r.get(6),
        new_key_id: r.get(7),
        new_version: r.get(8),
        due_at: parse_ts(r.get::<&str, _>(9))?,
        attempts: r.get::<i64, _>(10) as u32,
        error: r.get(11),
        started_at: parse_ts(r.get::<&str, _>(12))?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl SqliteRotations {
    pub fn new(db: Sqlite) -> Self {
        SqliteRotations { db }
    }

    /// The database (for the processor-side ports it shares).
    pub fn db(&self) -> &Sqlite {
        &self.db
    }

    async fn ensure_secret(&self, secret: &str) -> Result<(), BackendError> {
        sqlx::query("INSERT INTO rotation_secrets (secret) VALUES (?) ON CONFLICT DO NOTHING")
            .bind(secret)
            .execute(self.db.pool())
            .await
            .map_err(err("cannot record the secret"))?;
        Ok(())
    }
}

impl RotationStore for SqliteRotations {
    async fn start(&self, r: &Rotation) -> Result<Started, BackendError> {
        let inserted = sqlx::query(
            "INSERT INTO rotations (id, secret, trigger, phase, due_at, attempts, started_at, updated_at)
             VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.secret)
        .bind(&r.trigger)
        .bind(r.phase.as_str())
        .bind(ts(r.due_at))
        .bind(ts(r.started_at))
        .bind(ts(r.started_at))
        .execute(self.db.pool())
        .await;
        match inserted {
            Ok(_) => Ok(Started::New(r.id.clone())),
            Err(e) if is_unique_violation(&e) => {
                let existed = sqlx::query("SELECT 1 FROM rotations WHERE id = ?")
                    .bind(&r.id)
                    .fetch_optional(self.db.pool())
                    .await
                    .map_err(err("cannot read the rotation"))?;
                if existed.is_some() {
                    return Ok(Started::Existed(r.id.clone()));
                }
                let row = sqlx::query(
                    "SELECT id FROM rotations WHERE secret = ?
                     AND phase IN ('started', 'created', 'set', 'tested')",
                )
                .bind(&r.secret)
                .fetch_optional(self.db.pool())
                .await
                .map_err(err("cannot read the active rotation"))?;
                match row {
                    Some(row) => Ok(Started::AlreadyActive(row.get(0))),
                    None => Err(BackendError::new("cannot start the rotation", e)),
                }
            }
            Err(e) => Err(BackendError::new("cannot start the rotation", e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Rotation>, BackendError> {
        sqlx::query(select!("WHERE id = ?"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await
            .map_err(err("cannot read the rotation"))?
            .as_ref()
            .map(row_to_rotation)
            .transpose()
    }

    async fn history(&self, secret: &str) -> Result<Vec<Rotation>, BackendError> {
        sqlx::query(select!("WHERE secret = ? ORDER BY started_at, rowid"))
            .bind(secret)
            .fetch_all(self.db.pool())
            .await
            .map_err(err("cannot read rotations"))?
            .iter()
            .map(row_to_rotation)
            .collect()
    }

    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Rotation>, BackendError> {
        sqlx::query(select!(
            "WHERE phase NOT IN ('done', 'rolled_back') AND due_at <= ? ORDER BY due_at, rowid"
        ))
        .bind(ts(now))
        .fetch_all(self.db.pool())
        .await
        .map_err(err("cannot read due rotations"))?
        .iter()
        .map(row_to_rotation)
        .collect()
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, BackendError> {
        let row = sqlx::query("SELECT MIN(due_at) FROM rotations WHERE phase NOT IN ('done', 'rolled_back')")
            .fetch_one(self.db.pool())
            .await
            .map_err(err("cannot read due rotations"))?;
        opt_ts(row.get(0))
    }

    async fn claim(
        &self,
        id: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let done = sqlx::query(
            "UPDATE rotations SET lease_owner = ?1, lease_until = ?2
             WHERE id = ?3 AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_until <= ?4)",
        )
        .bind(owner)
        .bind(ts(until))
        .bind(id)
        .bind(ts(now))
        .execute(self.db.pool())
        .await
        .map_err(err("cannot lease the rotation"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn save(&self, r: &Rotation, owner: &str) -> Result<bool, BackendError> {
        let keys = r
            .keys_before
            .as_ref()
            .map(|k| serde_json::to_string(k).unwrap_or_else(|_| "[]".into()));
        let done = sqlx::query(
            "UPDATE rotations SET phase = ?, keys_before = ?, old_key_id = ?, old_version = ?,
                new_key_id = ?, new_version = ?, due_at = ?, attempts = ?, error = ?, updated_at = ?
             WHERE id = ? AND lease_owner = ?",
        )
        .bind(r.phase.as_str())
        .bind(keys)
        .bind(&r.old_key_id)
        .bind(&r.old_version)
        .bind(&r.new_key_id)
        .bind(&r.new_version)
        .bind(ts(r.due_at))
        .bind(r.attempts as i64)
        .bind(&r.error)
        .bind(ts(gatehouse_domain::clock::now()))
        .bind(&r.id)
        .bind(owner)
        .execute(self.db.pool())
        .await
        .map_err(err("cannot save the rotation"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), BackendError> {
        sqlx::query(
            "UPDATE rotations SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?",
        )
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await
        .map_err(err("cannot release the rotation"))?;
        Ok(())
    }

    async fn secret_state(&self, secret: &str) -> Result<SecretState, BackendError> {
        let row = sqlx::query("SELECT last_fire, failures, retry_at FROM rotation_secrets WHERE secret = ?")
            .bind(secret)
            .fetch_optional(self.db.pool())
            .await
            .map_err(err("cannot read the secret state"))?;
        let Some(r) = row else {
            return Ok(SecretState::default());
        };
        Ok(SecretState {
            last_fire: opt_ts(r.get(0))?,
            failures: r.get::<i64, _>(1) as u32,
            retry_at: opt_ts(r.get(2))?,
        })
    }

    async fn set_backoff(
        &self,
        secret: &str,
        failures: u32,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), BackendError> {
        self.ensure_secret(secret).await?;
        sqlx::query("UPDATE rotation_secrets SET failures = ?, retry_at = ? WHERE secret = ?")
            .bind(failures as i64)
            .bind(retry_at.map(ts))
            .bind(secret)
            .execute(self.db.pool())
            .await
            .map_err(err("cannot record the backoff"))?;
        Ok(())
    }

    async fn claim_fire(
        &self,
        secret: &str,
        prev: Option<DateTime<Utc>>,
        fire: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        self.ensure_secret(secret).await?;
        let done =
            sqlx::query("UPDATE rotation_secrets SET last_fire = ? WHERE secret = ? AND last_fire IS ?")
                .bind(ts(fire))
                .bind(secret)
                .bind(prev.map(ts))
                .execute(self.db.pool())
                .await
                .map_err(err("cannot claim the schedule"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        self.db.append_ledger(entries).await
    }

    async fn ledger(&self) -> Result<Vec<LedgerEntry>, BackendError> {
        Ok(self
            .db
            .ledger_since(None)
            .await?
            .into_iter()
            .map(|r| r.entry)
            .filter(|e| e.subject.starts_with("secret:"))
            .collect())
    }

    async fn record_request(&self, r: &RotationRequest, at: DateTime<Utc>) -> Result<bool, BackendError> {
        let done = sqlx::query(
            "INSERT INTO rotation_inbox (at, envelope_id, subject, provider, reason, secret)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (envelope_id) DO NOTHING",
        )
        .bind(ts(at))
        .bind(&r.envelope_id)
        .bind(&r.subject)
        .bind(&r.provider)
        .bind(&r.reason)
        .bind(&r.secret)
        .execute(self.db.pool())
        .await
        .map_err(err("cannot record the rotation request"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn pending_requests(&self) -> Result<Vec<RotationRequest>, BackendError> {
        let rows = sqlx::query(
            "SELECT envelope_id, subject, provider, reason, secret FROM rotation_inbox
             WHERE handled_at IS NULL ORDER BY id",
        )
        .fetch_all(self.db.pool())
        .await
        .map_err(err("cannot read rotation requests"))?;
        Ok(rows
            .iter()
            .map(|r| RotationRequest {
                envelope_id: r.get(0),
                subject: r.get(1),
                provider: r.get(2),
                reason: r.get(3),
                secret: r.get(4),
            })
            .collect())
    }

    async fn mark_handled(&self, envelope_id: &str, at: DateTime<Utc>) -> Result<(), BackendError> {
        sqlx::query("UPDATE rotation_inbox SET handled_at = ? WHERE envelope_id = ? AND handled_at IS NULL")
            .bind(ts(at))
            .bind(envelope_id)
            .execute(self.db.pool())
            .await
            .map_err(err("cannot mark the rotation request handled"))?;
        Ok(())
    }
}
