//! SQLite: the embedded queue and the state store in one database file (WAL, `synchronous=FULL`
//! so an acknowledged webhook survives a crash or power loss).

use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_domain::envelope::{Envelope, EnvelopeId};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::ports::{
    BackendError, DeadLetter, DeletionChange, Delivery, Directory, LedgerEntry, LedgerRow, Outcome,
    QueueConsumer, QueueProducer, RotationRequest, ScheduledDeletion, StateStore, SubjectState,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// One SQLite database holding the embedded queue and the state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sqlite {
    pool: SqlitePool,
}

/// Map a sqlx error to a `BackendError` with context (shared by the store modules).
pub(crate) fn err(context: &'static str) -> impl FnOnce(sqlx::Error) -> BackendError {
    move |e| BackendError::new(context, e)
}

/// Timestamps are stored as fixed-width RFC 3339 text (milliseconds, `Z`), so they sort.
pub(crate) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn parse_ts(s: &str) -> Result<DateTime<Utc>, BackendError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| BackendError::new("stored timestamp is not RFC 3339", e))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Sqlite {
    /// Open (creating if needed) `gatehouse.db` in `data_dir` and apply migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| BackendError::new("cannot create the data directory", e))?;
        let opts = SqliteConnectOptions::new()
            .filename(data_dir.join("gatehouse.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await
            .map_err(err("cannot open the sqlite database"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| BackendError::new("cannot migrate the sqlite database", e))?;
        Ok(Sqlite { pool })
    }

    /// Enqueue a raw message body as-is (dead-letter redrive; tests of poison handling). The
    /// body is not checked: a consumer that cannot decode it dead-letters it with the reason.
    pub async fn enqueue_raw(&self, id: &str, subject: &str, body: &str) -> Result<(), BackendError> {
        let mut conn = self.pool.acquire().await.map_err(err("cannot enqueue"))?;
        insert_message(&mut conn, id, subject, &ts(Utc::now()), body, now_ms()).await
    }

    /// Messages waiting or in flight on the embedded queue.
    pub async fn queue_depth(&self) -> Result<i64, BackendError> {
        sqlx::query("SELECT COUNT(*) FROM queue")
            .fetch_one(&self.pool)
            .await
            .map(|r| r.get::<i64, _>(0))
            .map_err(err("cannot count the queue"))
    }

    /// Age in seconds of the oldest message still queued (0 when empty).
    pub async fn queue_lag_seconds(&self) -> Result<f64, BackendError> {
        let oldest: Option<i64> = sqlx::query("SELECT MIN(enqueued_at) FROM queue")
            .fetch_one(&self.pool)
            .await
            .map(|r| r.get(0))
            .map_err(err("cannot read the queue lag"))?;
        Ok(oldest
            .map(|o| (now_ms() - o).max(0) as f64 / 1000.0)
            .unwrap_or(0.0))
    }

    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BackendError> {
        let rows = sqlx::query("SELECT id, at, attempts, reason, body FROM dead_letters ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot list dead letters"))?;
        rows.iter()
            .map(|r| {
                Ok(DeadLetter {
                    id: r.get(0),
                    at: parse_ts(r.get::<&str, _>(1))?,
                    attempts: r.get::<i64, _>(2) as u32,
                    reason: r.get(3),
                    body: r.get(4),
                })
            })
            .collect()
    }

    /// The pool, for store modules of this crate (SCIM directory, Graph subscriptions).
    pub(crate) fn pool(&self) -> &SqlitePool {
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

/// One queue row; a message whose id is already queued is left as it is.
async fn insert_message(
    conn: &mut sqlx::SqliteConnection,
    id: &str,
    subject: &str,
    occurred_at: &str,
    body: &str,
    now: i64,
) -> Result<(), BackendError> {
    sqlx::query(
        "INSERT INTO queue (envelope_id, subject, occurred_at, body, visible_at, enqueued_at)
         VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (envelope_id) DO NOTHING",
    )
    .bind(id)
    .bind(subject)
    .bind(occurred_at)
    .bind(body)
    .bind(now)
    .bind(now)
    .execute(conn)
    .await
    .map_err(err("cannot enqueue"))?;
    Ok(())
}

fn parse_receipt(receipt: &str) -> Result<(i64, i64), BackendError> {
    let bad = || BackendError::new("malformed embedded-queue receipt", receipt.to_string());
    let (seq, attempt) = receipt.split_once(':').ok_or_else(bad)?;
    Ok((
        seq.parse().map_err(|_| bad())?,
        attempt.parse().map_err(|_| bad())?,
    ))
}

impl QueueProducer for Sqlite {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await.map_err(err("cannot begin enqueue"))?;
        let now = now_ms();
        for env in batch {
            insert_message(
                &mut tx,
                &env.id.0,
                &env.subject.key,
                &ts(env.occurred_at),
                &env.to_json(),
                now,
            )
            .await?;
        }
        tx.commit().await.map_err(err("cannot commit enqueue"))
    }
}

impl QueueConsumer for Sqlite {
    /// Claims up to `max` visible messages, at most one per subject and always a subject's oldest,
    /// so work on one person is serialized and in order while different people run in parallel.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        let now = now_ms();
        let until = now + visibility.as_millis() as i64;
        let rows = sqlx::query(
            "UPDATE queue SET attempts = attempts + 1, visible_at = ?1
             WHERE seq IN (
                SELECT q.seq FROM queue q
                WHERE q.visible_at <= ?2
                  AND NOT EXISTS (
                    SELECT 1 FROM queue o
                    WHERE o.subject = q.subject AND o.seq != q.seq
                      AND ((o.attempts > 0 AND o.visible_at > ?2)
                           OR (o.occurred_at, o.seq) < (q.occurred_at, q.seq)))
                ORDER BY q.occurred_at, q.seq
                LIMIT ?3)
             RETURNING seq, attempts, body, occurred_at",
        )
        .bind(until)
        .bind(now)
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(err("cannot receive from the embedded queue"))?;
        // RETURNING has no defined order: hand work out oldest first.
        let mut rows = rows;
        rows.sort_by(|a, b| {
            (a.get::<&str, _>(3), a.get::<i64, _>(0)).cmp(&(b.get::<&str, _>(3), b.get::<i64, _>(0)))
        });
        Ok(rows
            .iter()
            .map(|r| {
                let seq: i64 = r.get(0);
                let attempts: i64 = r.get(1);
                Delivery {
                    receipt: format!("{seq}:{attempts}"),
                    attempt: attempts as u32,
                    body: r.get(2),
                }
            })
            .collect())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        let (seq, _) = parse_receipt(&delivery.receipt)?;
        sqlx::query("DELETE FROM queue WHERE seq = ?")
            .bind(seq)
            .execute(&self.pool)
            .await
            .map_err(err("cannot ack"))?;
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), BackendError> {
        let (seq, attempt) = parse_receipt(&delivery.receipt)?;
        sqlx::query("UPDATE queue SET visible_at = ? WHERE seq = ? AND attempts = ?")
            .bind(now_ms() + delay.as_millis() as i64)
            .bind(seq)
            .bind(attempt)
            .execute(&self.pool)
            .await
            .map_err(err("cannot release"))?;
        Ok(())
    }

    async fn extend(&self, delivery: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        let (seq, attempt) = parse_receipt(&delivery.receipt)?;
        sqlx::query("UPDATE queue SET visible_at = ? WHERE seq = ? AND attempts = ?")
            .bind(now_ms() + visibility.as_millis() as i64)
            .bind(seq)
            .bind(attempt)
            .execute(&self.pool)
            .await
            .map_err(err("cannot extend visibility"))?;
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BackendError> {
        let (seq, _) = parse_receipt(&delivery.receipt)?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(err("cannot begin dead-lettering"))?;
        sqlx::query("INSERT INTO dead_letters (at, attempts, reason, body) VALUES (?, ?, ?, ?)")
            .bind(ts(Utc::now()))
            .bind(delivery.attempt as i64)
            .bind(reason)
            .bind(&delivery.body)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot write the dead letter"))?;
        sqlx::query("DELETE FROM queue WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot remove the dead-lettered message"))?;
        tx.commit().await.map_err(err("cannot commit dead-lettering"))
    }
}

impl Directory for Sqlite {
    async fn subjects(&self) -> Result<Vec<SubjectState>, BackendError> {
        let rows = sqlx::query("SELECT identity, converged FROM subjects ORDER BY key")
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot read the directory"))?;
        rows.iter()
            .map(|r| {
                let identity: Identity = serde_json::from_str(r.get::<&str, _>(0))
                    .map_err(|e| BackendError::new("stored identity is not valid json", e))?;
                Ok(SubjectState {
                    identity,
                    converged: r.get(1),
                })
            })
            .collect()
    }
}

impl StateStore for Sqlite {
    async fn is_processed(&self, id: &EnvelopeId) -> Result<bool, BackendError> {
        let row = sqlx::query("SELECT 1 FROM processed WHERE envelope_id = ?")
            .bind(&id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the dedupe store"))?;
        Ok(row.is_some())
    }

    async fn load_subject(&self, key: &str) -> Result<Option<SubjectState>, BackendError> {
        let row = sqlx::query("SELECT identity, converged FROM subjects WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the directory"))?;
        row.map(|r| {
            let identity: Identity = serde_json::from_str(r.get::<&str, _>(0))
                .map_err(|e| BackendError::new("stored identity is not valid json", e))?;
            Ok(SubjectState {
                identity,
                converged: r.get(1),
            })
        })
        .transpose()
    }

    async fn commit(&self, outcome: Outcome) -> Result<(), BackendError> {
        let now = ts(Utc::now());
        let mut tx = self.pool.begin().await.map_err(err("cannot begin commit"))?;
        sqlx::query("INSERT INTO processed (envelope_id, processed_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(&outcome.envelope_id.0)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot record the processed envelope"))?;
        let Some(identity) = &outcome.identity else {
            return tx.commit().await.map_err(err("cannot commit"));
        };
        let json = serde_json::to_string(identity)
            .map_err(|e| BackendError::new("cannot serialize the identity", e))?;
        sqlx::query(
            "INSERT INTO subjects (key, identity, converged, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE SET identity = ?2, converged = ?3, updated_at = ?4",
        )
        .bind(&identity.key)
        .bind(&json)
        .bind(&outcome.converged)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(err("cannot write the identity"))?;
        match &outcome.deletion {
            DeletionChange::Keep => {}
            DeletionChange::Schedule(d) => {
                sqlx::query(
                    "INSERT INTO deletions (subject, email, due_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (subject) DO NOTHING",
                )
                .bind(&d.subject)
                .bind(&d.email)
                .bind(ts(d.due_at))
                .execute(&mut *tx)
                .await
                .map_err(err("cannot schedule the deletion"))?;
            }
            DeletionChange::Cancel => {
                sqlx::query("DELETE FROM deletions WHERE subject = ?")
                    .bind(&identity.key)
                    .execute(&mut *tx)
                    .await
                    .map_err(err("cannot cancel the deletion"))?;
            }
        }
        tx.commit().await.map_err(err("cannot commit"))
    }

    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(err("cannot begin ledger append"))?;
        for e in entries {
            let call =
                serde_json::to_string(&e.call).map_err(|e| BackendError::new("cannot serialize call", e))?;
            sqlx::query(
                "INSERT INTO ledger (at, envelope_id, subject, event, rule, call, status, target)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(ts(e.at))
            .bind(&e.envelope_id)
            .bind(&e.subject)
            .bind(&e.event)
            .bind(&e.rule)
            .bind(call)
            .bind(&e.status)
            .bind(&e.target)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot append to the ledger"))?;
        }
        tx.commit().await.map_err(err("cannot commit the ledger"))
    }

    async fn ledger_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<LedgerRow>, BackendError> {
        let since = since.map(ts).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT seq, at, envelope_id, subject, event, rule, call, status, target FROM ledger
             WHERE at >= ? ORDER BY seq",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(err("cannot read the ledger"))?;
        rows.iter()
            .map(|r| {
                Ok(LedgerRow {
                    seq: r.get(0),
                    entry: LedgerEntry {
                        at: parse_ts(r.get::<&str, _>(1))?,
                        envelope_id: r.get(2),
                        subject: r.get(3),
                        event: r.get(4),
                        rule: r.get(5),
                        call: serde_json::from_str(r.get::<&str, _>(6))
                            .map_err(|e| BackendError::new("stored call is not valid json", e))?,
                        status: r.get(7),
                        target: r.get(8),
                    },
                })
            })
            .collect()
    }

    async fn due_deletions(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledDeletion>, BackendError> {
        let rows =
            sqlx::query("SELECT subject, email, due_at FROM deletions WHERE due_at <= ? ORDER BY due_at")
                .bind(ts(now))
                .fetch_all(&self.pool)
                .await
                .map_err(err("cannot read scheduled deletions"))?;
        rows.iter()
            .map(|r| {
                Ok(ScheduledDeletion {
                    subject: r.get(0),
                    email: r.get(1),
                    due_at: parse_ts(r.get::<&str, _>(2))?,
                })
            })
            .collect()
    }

    async fn request_rotation(&self, r: &RotationRequest) -> Result<(), BackendError> {
        let now = ts(Utc::now());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(err("cannot begin rotation request"))?;
        sqlx::query(
            "INSERT INTO rotation_requests (at, envelope_id, subject, provider, reason, secret)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (envelope_id) DO NOTHING",
        )
        .bind(&now)
        .bind(&r.envelope_id)
        .bind(&r.subject)
        .bind(&r.provider)
        .bind(&r.reason)
        .bind(&r.secret)
        .execute(&mut *tx)
        .await
        .map_err(err("cannot record the rotation request"))?;
        sqlx::query("INSERT INTO processed (envelope_id, processed_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(&r.envelope_id)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot record the processed envelope"))?;
        tx.commit()
            .await
            .map_err(err("cannot commit the rotation request"))
    }

    async fn pending_rotations(&self) -> Result<Vec<RotationRequest>, BackendError> {
        let rows = sqlx::query(
            "SELECT envelope_id, subject, provider, reason, secret FROM rotation_requests
             WHERE handled_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
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

    async fn finish_deletion(&self, subject: &str) -> Result<(), BackendError> {
        sqlx::query("DELETE FROM deletions WHERE subject = ?")
            .bind(subject)
            .execute(&self.pool)
            .await
            .map_err(err("cannot finish the deletion"))?;
        Ok(())
    }
}
