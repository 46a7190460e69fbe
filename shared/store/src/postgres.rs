//! PostgreSQL state store: the state shared by several processor replicas (dedupe, identities,
//! fingerprints, the hash-chained ledger, scheduled deletions, rotation requests). Same contract
//! as the SQLite store (`tests/it/state_contract.rs` runs both); safe with any number of replicas:
//! every change is one transaction, inserts are `ON CONFLICT`, deletions are claimed with
//! `FOR UPDATE SKIP LOCKED`, and ledger appends take the chain head's row lock so the chain stays
//! one line. Outcome commits and ledger appends are group-committed per process
//! (`postgres/group.rs`): many writes, one transaction, each in a savepoint of its own.

use crate::sqlite::err;
use chrono::{DateTime, Utc};
use gatehouse_domain::breaker::{AdmitLimits, Change, HeldChange, Settle, Trip, Verdict};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::ledger_chain::ChainHead;
use gatehouse_domain::ports::{
    BackendError, DELETION_CLAIM, DeletionChange, LedgerEntry, LedgerRow, LookerCallCounts, Outcome,
    ScheduledDeletion, StateStore, SubjectState,
};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

mod access;
mod breaker;
mod group;
mod offboarding;
mod okta_log;
mod schedule;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A pool of connections to one PostgreSQL database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Postgres {
    pool: PgPool,
    /// Outcome commits and ledger appends, group-committed (`postgres/group.rs`).
    group: std::sync::Arc<group::Group>,
}

pub use group::GroupCommits;

/// Timestamps keep millisecond precision, like the SQLite store (and the ledger's hash).
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

impl Postgres {
    /// Connect to `url` (`postgres://user:password@host:port/db`; the password stays secret:
    /// errors never contain the URL) with at most `max_connections`, and apply migrations
    /// (sqlx holds an advisory lock while migrating, so replicas may start together).
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Self, BackendError> {
        let opts = PgConnectOptions::from_str(url.expose_secret()).map_err(|_| {
            BackendError::new(
                "cannot connect to postgresql",
                "the database url is not a valid postgres:// url",
            )
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(err("cannot connect to postgresql"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| BackendError::new("cannot migrate the postgresql database", e))?;
        Ok(Postgres {
            pool,
            group: Default::default(),
        })
    }

    /// The pool (for the rotator's tables on the same database).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn ledger_row(r: &PgRow) -> Result<LedgerRow, BackendError> {
    Ok(LedgerRow {
        seq: r.get(0),
        entry: LedgerEntry {
            at: r.get(1),
            envelope_id: r.get(2),
            subject: r.get(3),
            event: r.get(4),
            rule: r.get(5),
            call: serde_json::from_str(r.get::<&str, _>(6))
                .map_err(|e| BackendError::new("stored call is not valid json", e))?,
            status: r.get(7),
            target: r.get(10),
            policy_digest: r.get(11),
            actor: r.get(12),
        },
        prev_hash: r.get(8),
        hash: r.get(9),
    })
}

async fn mark_processed(
    conn: &mut sqlx::PgConnection,
    id: &str,
    now: DateTime<Utc>,
) -> Result<(), BackendError> {
    sqlx::query(
        "INSERT INTO processed (envelope_id, processed_at) VALUES ($1, $2)
         ON CONFLICT (envelope_id) DO NOTHING",
    )
    .bind(id)
    .bind(now)
    .execute(conn)
    .await
    .map_err(err("cannot record the processed envelope"))?;
    Ok(())
}

/// An event's outcome, on the group's transaction: the processed row, the offboarding times,
/// the identity (compare-and-set on the version the handler loaded: a conflict fails this write,
/// whose savepoint rolls back, processed row too, and the handler handles its event again) and
/// the deletion schedule.
async fn commit_on(
    tx: &mut sqlx::PgConnection,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<(), BackendError> {
    mark_processed(&mut *tx, &outcome.envelope_id.0, now).await?;
    if let Some(times) = &outcome.offboarding {
        offboarding::record(&mut *tx, times).await?;
    }
    let Some(identity) = &outcome.identity else {
        return Ok(());
    };
    let json =
        serde_json::to_string(identity).map_err(|e| BackendError::new("cannot serialize the identity", e))?;
    let written = match outcome.base_version {
        None => sqlx::query(
            "INSERT INTO subjects (key, identity, converged, updated_at, version)
                 VALUES ($1, $2::jsonb, $3, $4, 1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&identity.key)
        .bind(&json)
        .bind(&outcome.converged)
        .bind(now),
        Some(v) => sqlx::query(
            "UPDATE subjects SET identity = $2::jsonb, converged = $3, updated_at = $4, version = $5 + 1
                 WHERE key = $1 AND version = $5",
        )
        .bind(&identity.key)
        .bind(&json)
        .bind(&outcome.converged)
        .bind(now)
        .bind(v),
    }
    .execute(&mut *tx)
    .await
    .map_err(err("cannot write the identity"))?;
    if written.rows_affected() != 1 {
        return Err(BackendError::subject_changed(&identity.key));
    }
    match &outcome.deletion {
        DeletionChange::Keep => {}
        DeletionChange::Schedule(d) => {
            sqlx::query(
                "INSERT INTO deletions (subject, email, due_at) VALUES ($1, $2, $3)
                     ON CONFLICT (subject) DO NOTHING",
            )
            .bind(&d.subject)
            .bind(&d.email)
            .bind(millis(d.due_at))
            .execute(&mut *tx)
            .await
            .map_err(err("cannot schedule the deletion"))?;
        }
        DeletionChange::Cancel => {
            sqlx::query("DELETE FROM deletions WHERE subject = $1")
                .bind(&identity.key)
                .execute(&mut *tx)
                .await
                .map_err(err("cannot cancel the deletion"))?;
        }
    }
    Ok(())
}

impl gatehouse_domain::ports::Directory for Postgres {
    async fn subjects(&self) -> Result<Vec<SubjectState>, BackendError> {
        let rows = sqlx::query("SELECT identity::text, converged, version FROM subjects ORDER BY key")
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot read the directory"))?;
        rows.iter()
            .map(|r| crate::sqlite::subject_state(r.get::<&str, _>(0), r.get(1), r.get(2)))
            .collect()
    }
}

impl LookerCallCounts for Postgres {
    async fn add_looker_calls(&self, month: &str, delta: u64) -> Result<u64, BackendError> {
        let row = sqlx::query(
            "INSERT INTO looker_calls (month, calls, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (month) DO UPDATE SET calls = looker_calls.calls + excluded.calls,
                                               updated_at = excluded.updated_at
             RETURNING calls",
        )
        .bind(month)
        .bind(i64::try_from(delta).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(err("cannot add to the looker call count"))?;
        Ok(row.get::<i64, _>(0).max(0) as u64)
    }

    async fn looker_calls(&self, month: &str) -> Result<u64, BackendError> {
        let row = sqlx::query("SELECT calls FROM looker_calls WHERE month = $1")
            .bind(month)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the looker call count"))?;
        Ok(row.map_or(0, |r| r.get::<i64, _>(0).max(0) as u64))
    }
}

impl StateStore for Postgres {
    async fn is_processed(&self, id: &EnvelopeId) -> Result<bool, BackendError> {
        let row = sqlx::query("SELECT 1 FROM processed WHERE envelope_id = $1")
            .bind(&id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the dedupe store"))?;
        Ok(row.is_some())
    }

    async fn load_subject(&self, key: &str) -> Result<Option<SubjectState>, BackendError> {
        let row = sqlx::query("SELECT identity::text, converged, version FROM subjects WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the directory"))?;
        row.map(|r| crate::sqlite::subject_state(r.get::<&str, _>(0), r.get(1), r.get(2)))
            .transpose()
    }

    async fn commit(&self, outcome: Outcome) -> Result<(), BackendError> {
        self.write(group::Op::Commit(Box::new(outcome))).await
    }

    async fn forget_converged(&self, key: &str, base_version: i64) -> Result<i64, BackendError> {
        let row = sqlx::query(
            "UPDATE subjects SET converged = NULL, updated_at = $3, version = $2 + 1
             WHERE key = $1 AND version = $2 RETURNING version",
        )
        .bind(key)
        .bind(base_version)
        .bind(millis(gatehouse_domain::clock::now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(err("cannot forget the converged fingerprint"))?;
        row.map(|r| r.get::<i64, _>(0))
            .ok_or_else(|| BackendError::subject_changed(key))
    }

    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(group::Op::AppendLedger(entries.to_vec())).await
    }

    async fn ledger_head(&self) -> Result<Option<ChainHead>, BackendError> {
        let row = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1 AND seq > 0")
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the ledger chain head"))?;
        Ok(row.map(|r| ChainHead {
            seq: r.get(0),
            hash: r.get(1),
        }))
    }

    async fn ledger_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<LedgerRow>, BackendError> {
        let rows = sqlx::query(
            "SELECT seq, at, envelope_id, subject, event, rule, call::text, status, prev_hash, hash, target,
                    policy_digest, actor
             FROM ledger WHERE $1::timestamptz IS NULL OR at >= $1 ORDER BY seq",
        )
        .bind(since.map(millis))
        .fetch_all(&self.pool)
        .await
        .map_err(err("cannot read the ledger"))?;
        rows.iter().map(ledger_row).collect()
    }

    async fn due_deletions(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledDeletion>, BackendError> {
        let now = millis(now);
        let until = now + chrono::Duration::from_std(DELETION_CLAIM).unwrap_or(chrono::Duration::MAX);
        let rows = sqlx::query(
            "UPDATE deletions SET claimed_until = $1
             WHERE subject IN (
                SELECT subject FROM deletions
                WHERE due_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $2)
                FOR UPDATE SKIP LOCKED)
             RETURNING subject, email, due_at",
        )
        .bind(until)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(err("cannot claim scheduled deletions"))?;
        let mut due: Vec<ScheduledDeletion> = rows
            .iter()
            .map(|r| ScheduledDeletion {
                subject: r.get(0),
                email: r.get(1),
                due_at: r.get(2),
            })
            .collect();
        due.sort_by(|a, b| (a.due_at, &a.subject).cmp(&(b.due_at, &b.subject)));
        Ok(due)
    }

    async fn finish_deletion(&self, subject: &str) -> Result<(), BackendError> {
        sqlx::query("DELETE FROM deletions WHERE subject = $1")
            .bind(subject)
            .execute(&self.pool)
            .await
            .map_err(err("cannot finish the deletion"))?;
        Ok(())
    }

    async fn account_links(&self, target: &str, person: &str) -> Result<Vec<String>, BackendError> {
        let rows =
            sqlx::query("SELECT account FROM account_links WHERE target = $1 AND person = $2 ORDER BY seq")
                .bind(target)
                .bind(person)
                .fetch_all(&self.pool)
                .await
                .map_err(err("cannot read account links"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn link_accounts(
        &self,
        target: &str,
        person: &str,
        accounts: &[String],
    ) -> Result<(), BackendError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(err("cannot write account links"))?;
        for a in accounts {
            sqlx::query(
                "INSERT INTO account_links (target, person, account, linked_at) VALUES ($1, $2, $3, now())
                 ON CONFLICT (target, person, account) DO NOTHING",
            )
            .bind(target)
            .bind(person)
            .bind(a)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot write account links"))?;
        }
        tx.commit().await.map_err(err("cannot write account links"))
    }
    async fn breaker_admit(&self, change: &Change, limits: &AdmitLimits) -> Result<Verdict, BackendError> {
        self.admit(change, limits).await
    }
    async fn breaker_trips(&self) -> Result<Vec<Trip>, BackendError> {
        self.trips().await
    }
    async fn breaker_held(&self, source: Option<&str>) -> Result<Vec<HeldChange>, BackendError> {
        self.held(source).await
    }
    async fn breaker_settle(&self, seq: i64, decision: Settle, actor: &str) -> Result<(), BackendError> {
        self.settle(seq, decision, actor).await
    }
    async fn breaker_reset(&self, source: Option<&str>) -> Result<Vec<Trip>, BackendError> {
        self.reset(source).await
    }
}
