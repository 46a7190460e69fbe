//! [`RotationStore`] on the processor's PostgreSQL database (migration
//! `postgres/0002_rotations.sql`), for several rotator instances. Same semantics as
//! [`crate::sqlite::SqliteRotations`]: the partial unique index `rotations_one_active` allows
//! one active rotation per secret; `claim`, `save` and `claim_fire` are single conditional
//! `UPDATE`s, which PostgreSQL re-checks on the latest row version after waiting for a
//! concurrent writer, so two instances never both win. The ledger is the processor's
//! hash-chained one; the rotation inbox (`rotation_inbox`, migration `postgres/0015`) is the
//! rotator's own: requests arrive through the rotation queue, never from a processor's write.

use crate::state::{Phase, Rotation, RotationStore, SecretState, Started};
use chrono::{DateTime, Utc};
use gatehouse_domain::ports::{BackendError, LedgerEntry, RotationRequest, StateStore};
use gatehouse_store::postgres::Postgres;
use sqlx::Row;
use sqlx::postgres::PgRow;

/// The rotator's state in the PostgreSQL database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PgRotations {
    db: Postgres,
}

fn err(context: &'static str) -> impl FnOnce(sqlx::Error) -> BackendError {
    move |e| BackendError::new(context, e)
}

/// Millisecond precision, like the SQLite store: what is saved is what is read back.
fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The phases that hold the one-active slot: the partial unique index's predicate, as a literal
/// for `concat!`.
macro_rules! active {
    () => {
        "('started', 'created', 'set', 'tested')"
    };
}

/// `SELECT <every rotation column> FROM rotations <rest>` as one literal.
macro_rules! select {
    ($rest:literal) => {
        concat!(
            "SELECT id, secret, trigger, phase, keys_before::text, old_key_id, old_version, new_key_id, ",
            "new_version, due_at, attempts, error, started_at FROM rotations ",
            $rest
        )
    };
}

fn row_to_rotation(r: &PgRow) -> Result<Rotation, BackendError> {
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
            .map_err(|e| BackendError::new("stored key list is not a json array of strings", e))?,
        old_key_id: r.get(5),
        old_version: r.get(6),
        new_key_id: r.get(7),
        new_version: r.get(8),
        due_at: r.get(9),
        attempts: u32::try_from(r.get::<i32, _>(10)).unwrap_or(0),
        error: r.get(11),
        started_at: r.get(12),
    })
}

impl PgRotations {
    pub fn new(db: Postgres) -> Self {
        PgRotations { db }
    }

    /// The database (for the processor-side ports it shares).
    pub fn db(&self) -> &Postgres {
        &self.db
    }

    async fn ensure_secret(&self, secret: &str) -> Result<(), BackendError> {
        sqlx::query("INSERT INTO rotation_secrets (secret) VALUES ($1) ON CONFLICT (secret) DO NOTHING")
            .bind(secret)
            .execute(self.db.pool())
            .await
            .map_err(err("cannot record the secret"))?;
        Ok(())
    }
}

impl RotationStore for PgRotations {
    async fn start(&self, r: &Rotation) -> Result<Started, BackendError> {
        // The active rotation a conflict names may end before we read it: then try again.
        for _ in 0..5 {
            let inserted = sqlx::query(
                "INSERT INTO rotations (id, secret, trigger, phase, due_at, attempts, started_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $6)
                 ON CONFLICT DO NOTHING RETURNING id",
            )
            .bind(&r.id)
            .bind(&r.secret)
            .bind(&r.trigger)
            .bind(r.phase.as_str())
            .bind(ms(r.due_at))
            .bind(ms(r.started_at))
            .fetch_optional(self.db.pool())
            .await
            .map_err(err("cannot start the rotation"))?;
            if let Some(row) = inserted {
                return Ok(Started::New(row.get(0)));
            }
            // Either conflict: the id (another instance took the same request) or the secret's
            // one active rotation.
            let existed = sqlx::query("SELECT 1 FROM rotations WHERE id = $1")
                .bind(&r.id)
                .fetch_optional(self.db.pool())
                .await
                .map_err(err("cannot read the rotation"))?;
            if existed.is_some() {
                return Ok(Started::Existed(r.id.clone()));
            }
            let active = sqlx::query(concat!(
                "SELECT id FROM rotations WHERE secret = $1 AND phase IN ",
                active!()
            ))
            .bind(&r.secret)
            .fetch_optional(self.db.pool())
            .await
            .map_err(err("cannot read the active rotation"))?;
            if let Some(row) = active {
                return Ok(Started::AlreadyActive(row.get(0)));
            }
        }
        Err(BackendError::new(
            "cannot start the rotation",
            format!("the active rotation of {} kept changing", r.secret),
        ))
    }

    async fn get(&self, id: &str) -> Result<Option<Rotation>, BackendError> {
        sqlx::query(select!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await
            .map_err(err("cannot read the rotation"))?
            .as_ref()
            .map(row_to_rotation)
            .transpose()
    }

    async fn history(&self, secret: &str) -> Result<Vec<Rotation>, BackendError> {
        sqlx::query(select!("WHERE secret = $1 ORDER BY started_at, seq"))
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
            "WHERE phase NOT IN ('done', 'rolled_back') AND due_at <= $1 ORDER BY due_at, seq"
        ))
        .bind(ms(now))
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
        Ok(row.get(0))
    }

    async fn claim(
        &self,
        id: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        // A concurrent claim waits for this row lock, then re-evaluates the WHERE on the row as
        // this one left it: it sees a live lease of another owner and updates nothing.
        let done = sqlx::query(
            "UPDATE rotations SET lease_owner = $1, lease_until = $2
             WHERE id = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until <= $4)",
        )
        .bind(owner)
        .bind(ms(until))
        .bind(id)
        .bind(ms(now))
        .execute(self.db.pool())
        .await
        .map_err(err("cannot lease the rotation"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn save(&self, r: &Rotation, owner: &str) -> Result<bool, BackendError> {
        let keys = r
            .keys_before
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| BackendError::new("cannot serialize the key list", e))?;
        let attempts = i32::try_from(r.attempts).unwrap_or(i32::MAX);
        let done = sqlx::query(
            "UPDATE rotations SET phase = $1, keys_before = $2::jsonb, old_key_id = $3, old_version = $4,
                new_key_id = $5, new_version = $6, due_at = $7, attempts = $8, error = $9, updated_at = $10
             WHERE id = $11 AND lease_owner = $12",
        )
        .bind(r.phase.as_str())
        .bind(keys)
        .bind(&r.old_key_id)
        .bind(&r.old_version)
        .bind(&r.new_key_id)
        .bind(&r.new_version)
        .bind(ms(r.due_at))
        .bind(attempts)
        .bind(&r.error)
        .bind(ms(gatehouse_domain::clock::now()))
        .bind(&r.id)
        .bind(owner)
        .execute(self.db.pool())
        .await
        .map_err(err("cannot save the rotation"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), BackendError> {
        sqlx::query(
            "UPDATE rotations SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(self.db.pool())
        .await
        .map_err(err("cannot release the rotation"))?;
        Ok(())
    }

    async fn secret_state(&self, secret: &str) -> Result<SecretState, BackendError> {
        let row = sqlx::query("SELECT last_fire, failures, retry_at FROM rotation_secrets WHERE secret = $1")
            .bind(secret)
            .fetch_optional(self.db.pool())
            .await
            .map_err(err("cannot read the secret state"))?;
        let Some(r) = row else {
            return Ok(SecretState::default());
        };
        Ok(SecretState {
            last_fire: r.get(0),
            failures: u32::try_from(r.get::<i32, _>(1)).unwrap_or(0),
            retry_at: r.get(2),
        })
    }

    async fn set_backoff(
        &self,
        secret: &str,
        failures: u32,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), BackendError> {
        sqlx::query(
            "INSERT INTO rotation_secrets (secret, failures, retry_at) VALUES ($1, $2, $3)
             ON CONFLICT (secret) DO UPDATE SET failures = excluded.failures, retry_at = excluded.retry_at",
        )
        .bind(secret)
        .bind(i32::try_from(failures).unwrap_or(i32::MAX))
        .bind(retry_at.map(ms))
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
        // Compare-and-set: a concurrent claim of the same `prev` re-reads `last_fire` after
        // this one commits and no longer matches.
        let done = sqlx::query(
            "UPDATE rotation_secrets SET last_fire = $1
             WHERE secret = $2 AND last_fire IS NOT DISTINCT FROM $3",
        )
        .bind(ms(fire))
        .bind(secret)
        .bind(prev.map(ms))
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
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (envelope_id) DO NOTHING",
        )
        .bind(ms(at))
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
        sqlx::query(
            "UPDATE rotation_inbox SET handled_at = $1 WHERE envelope_id = $2 AND handled_at IS NULL",
        )
        .bind(ms(at))
        .bind(envelope_id)
        .execute(self.db.pool())
        .await
        .map_err(err("cannot mark the rotation request handled"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_phases_match_the_unique_index() {
        let listed: Vec<String> = Phase::ACTIVE
            .iter()
            .map(|p| format!("'{}'", p.as_str()))
            .collect();
        assert_eq!(active!(), format!("({})", listed.join(", ")));
        let migration = include_str!("../../store/migrations/postgres/0002_rotations.sql");
        assert!(
            migration.contains(concat!("WHERE phase IN ", active!())),
            "the partial unique index covers exactly Phase::ACTIVE"
        );
    }
}
