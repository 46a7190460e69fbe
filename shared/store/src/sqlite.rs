//! SQLite: the embedded queue and the state store in one database file (WAL, `synchronous=FULL`
//! so an acknowledged webhook survives a crash or power loss).

use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_domain::breaker::{AdmitLimits, Change, HeldChange, Settle, Trip, Verdict};
use gatehouse_domain::envelope::{Envelope, EnvelopeId};
use gatehouse_domain::ledger_chain::{self, ChainHead};
use gatehouse_domain::ports::{
    BackendError, DELETION_CLAIM, DeadLetter, Delivery, Directory, LedgerEntry, LedgerRow, LookerCallCounts,
    Outcome, QueueConsumer, QueueProducer, ScheduledDeletion, StateStore, SubjectState,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub(crate) mod access;
mod breaker;
mod claim;
pub(crate) mod group;
mod offboarding;
mod okta_log;
mod rotation_queue;
mod schedule;
pub mod scim;
mod writer;

pub use rotation_queue::RotationQueue;

pub use group::WriterCommits;
use group::{Done, Op};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// `SELECT` of every ledger column, in the order `ledger_row` reads them, followed by `$rest`.
macro_rules! ledger_select {
    ($rest:literal) => {
        concat!(
            "SELECT seq, at, envelope_id, subject, event, rule, call, status, prev_hash, hash, target, policy_digest, actor FROM ledger ",
            $rest
        )
    };
}

/// One SQLite database holding the embedded queue and the state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sqlite {
    /// Reads (WAL: they never wait for the writer) and the store modules built on `pool()`.
    pool: SqlitePool,
    /// The connection of the writes outside the group commit (dead letters, releases, the
    /// breaker, schedules...). Reached only through [`Sqlite::writer`], which holds the group's
    /// write turn, so these writes and the group's thread take turns in this process, in order,
    /// instead of one sleeping in SQLite's busy handler while the other holds the lock.
    cold: SqlitePool,
    /// The hot writes (enqueue, claim, ledger append, outcome commit, ack), group-committed on
    /// `writer`: many writes, one transaction, one fsync.
    group: Arc<group::GroupWriter>,
    /// The thread that owns the group commit's connection and runs each group there.
    thread: Arc<writer::WriterThread>,
    /// Rung after every enqueue, so a processor in this process starts at once instead of at
    /// its next poll (issue 13).
    wake: Arc<Notify>,
}

/// Map a sqlx (or, on the writer thread, rusqlite) error to a `BackendError` with context
/// (shared by the store modules).
pub(crate) fn err<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> BackendError {
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
    gatehouse_domain::clock::now().timestamp_millis()
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
            // A local file does not drop connections: no `SELECT 1` round trip per acquire.
            .test_before_acquire(false)
            .connect_with(opts.clone())
            .await
            .map_err(err("cannot open the sqlite database"))?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| BackendError::new("cannot migrate the sqlite database", e))?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(err("cannot open the sqlite database"))?;
        let thread = Arc::new(writer::WriterThread::start(&data_dir.join("gatehouse.db"))?);
        let db = Sqlite {
            pool,
            cold: writer,
            group: Arc::default(),
            thread,
            wake: Arc::new(Notify::new()),
        };
        db.chain_legacy_ledger_rows().await?;
        Ok(db)
    }

    /// Chain the ledger rows written before the hash chain existed (they have no hash yet), in
    /// seq order, and set the chain head. A no-op once done.
    async fn chain_legacy_ledger_rows(&self) -> Result<(), BackendError> {
        let writer = self.writer().await;
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("cannot begin chaining the ledger"))?;
        let rows = sqlx::query(ledger_select!("WHERE hash IS NULL ORDER BY seq"))
            .fetch_all(&mut *tx)
            .await
            .map_err(err("cannot read unchained ledger rows"))?;
        if rows.is_empty() {
            return tx
                .commit()
                .await
                .map_err(err("cannot commit chaining the ledger"));
        }
        let first: i64 = rows[0].get(0);
        let mut prev: String = sqlx::query(
            "SELECT hash FROM ledger WHERE hash IS NOT NULL AND seq < ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(first)
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("cannot read the ledger"))?
        .map(|r| r.get(0))
        .unwrap_or_else(|| ledger_chain::GENESIS.to_string());
        let mut last = first;
        for r in &rows {
            let row = ledger_row(r)?;
            let hash = ledger_chain::row_hash(row.seq, &row.entry, &prev);
            sqlx::query("UPDATE ledger SET prev_hash = ?, hash = ? WHERE seq = ?")
                .bind(&prev)
                .bind(&hash)
                .bind(row.seq)
                .execute(&mut *tx)
                .await
                .map_err(err("cannot chain a ledger row"))?;
            prev = hash;
            last = row.seq;
        }
        set_head(&mut tx, last, &prev).await?;
        tx.commit()
            .await
            .map_err(err("cannot commit chaining the ledger"))
    }

    /// One dead letter of the embedded queue.
    pub async fn dead_letter_by_id(&self, id: i64) -> Result<Option<DeadLetter>, BackendError> {
        let row = sqlx::query("SELECT id, at, attempts, reason, body FROM dead_letters WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the dead letter"))?;
        row.as_ref().map(dead_letter_row).transpose()
    }

    /// Put a dead letter back on the embedded queue (as a fresh message, attempt 1) and remove
    /// it from the dead letters, in one transaction. `false` when there is no such dead letter.
    /// A body that is not an envelope goes back as it is, under its own id, and is dead-lettered
    /// again by the processor.
    pub async fn redrive_dead_letter(&self, id: i64) -> Result<bool, BackendError> {
        let writer = self.writer().await;
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("cannot begin the redrive"))?;
        let Some(row) = sqlx::query("SELECT body FROM dead_letters WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err("cannot read the dead letter"))?
        else {
            return Ok(false);
        };
        let body: String = row.get(0);
        let (envelope_id, subject, occurred_at) = match Envelope::from_json(&body) {
            Ok(env) => (env.id.0, env.subject.key, ts(env.occurred_at)),
            Err(_) => (
                format!("dead-letter:{id}"),
                format!("dead-letter:{id}"),
                ts(gatehouse_domain::clock::now()),
            ),
        };
        insert_message(&mut tx, &envelope_id, &subject, &occurred_at, &body, now_ms()).await?;
        sqlx::query("DELETE FROM dead_letters WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("cannot remove the redriven dead letter"))?;
        tx.commit().await.map_err(err("cannot commit the redrive"))?;
        self.wake.notify_one();
        Ok(true)
    }

    /// Enqueue a raw message body as-is (dead-letter redrive; tests of poison handling). The
    /// body is not checked: a consumer that cannot decode it dead-letters it with the reason.
    pub async fn enqueue_raw(&self, id: &str, subject: &str, body: &str) -> Result<(), BackendError> {
        let writer = self.writer().await;
        let mut conn = writer.acquire().await.map_err(err("cannot enqueue"))?;
        insert_message(
            &mut conn,
            id,
            subject,
            &ts(gatehouse_domain::clock::now()),
            body,
            now_ms(),
        )
        .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Notified after every enqueue into this database from this process (a `Notify` keeps one
    /// permit, so a wake-up that comes while the processor is busy is not lost).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
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
        rows.iter().map(dead_letter_row).collect()
    }

    /// The pool, for store modules (SCIM directory, Graph subscriptions, the rotator's state).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.thread.close().await;
        self.cold.close().await;
        self.pool.close().await;
    }
}

fn dead_letter_row(r: &sqlx::sqlite::SqliteRow) -> Result<DeadLetter, BackendError> {
    Ok(DeadLetter {
        id: r.get(0),
        at: parse_ts(r.get::<&str, _>(1))?,
        attempts: r.get::<i64, _>(2) as u32,
        reason: r.get(3),
        body: r.get(4),
    })
}

/// A stored subject from its row: the identity as JSON text, the fingerprint, the version.
pub(crate) fn subject_state(
    identity: &str,
    converged: Option<String>,
    version: i64,
) -> Result<SubjectState, BackendError> {
    Ok(SubjectState {
        identity: serde_json::from_str(identity)
            .map_err(|e| BackendError::new("stored identity is not valid json", e))?,
        converged,
        version,
    })
}

fn ledger_row(r: &sqlx::sqlite::SqliteRow) -> Result<LedgerRow, BackendError> {
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
            target: r.get(10),
            policy_digest: r.get(11),
            actor: r.get(12),
        },
        prev_hash: r.get::<Option<String>, _>(8).unwrap_or_default(),
        hash: r.get::<Option<String>, _>(9).unwrap_or_default(),
    })
}

async fn set_head(conn: &mut sqlx::SqliteConnection, seq: i64, hash: &str) -> Result<(), BackendError> {
    sqlx::query(
        "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2",
    )
    .bind(seq)
    .bind(hash)
    .execute(conn)
    .await
    .map_err(err("cannot move the ledger chain head"))?;
    Ok(())
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

/// The delivery of a claimed row: its receipt is `seq:attempts` ([`parse_receipt`] reads it
/// back), the same for the events queue and the rotation queue.
pub(crate) fn delivery(seq: i64, attempts: i64, body: String) -> Delivery {
    Delivery {
        receipt: format!("{seq}:{attempts}"),
        attempt: attempts as u32,
        body,
    }
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
        let rows = batch
            .iter()
            .map(|env| group::Row {
                id: env.id.0.clone(),
                subject: env.subject.key.clone(),
                occurred_at: ts(env.occurred_at),
                body: env.to_json(),
            })
            .collect::<Vec<_>>();
        if rows.is_empty() {
            return Ok(());
        }
        self.write(Op::Enqueue(rows)).await.map(drop)
    }
}

/// The embedded queue tables: the events queue and the rotation queue (issue 12, item 4), which
/// settle deliveries alike.
#[derive(Debug, Clone, Copy)]
pub(crate) enum QueueTable {
    Events,
    Rotation,
}

impl QueueTable {
    /// Static SQL per table (no statement is built from strings).
    fn set_visible_sql(self) -> &'static str {
        match self {
            QueueTable::Events => "UPDATE queue SET visible_at = ? WHERE seq = ? AND attempts = ?",
            QueueTable::Rotation => "UPDATE rotation_queue SET visible_at = ? WHERE seq = ? AND attempts = ?",
        }
    }

    fn delete_sql(self) -> &'static str {
        match self {
            QueueTable::Events => "DELETE FROM queue WHERE seq = ?",
            QueueTable::Rotation => "DELETE FROM rotation_queue WHERE seq = ?",
        }
    }
}

/// Make a delivery of `table` visible again at `now + by`, if it is still the attempt handed out.
pub(crate) async fn set_visible(
    writer: &SqlitePool,
    table: QueueTable,
    delivery: &Delivery,
    by: Duration,
    context: &'static str,
) -> Result<(), BackendError> {
    let (seq, attempt) = parse_receipt(&delivery.receipt)?;
    sqlx::query(table.set_visible_sql())
        .bind(now_ms() + by.as_millis() as i64)
        .bind(seq)
        .bind(attempt)
        .execute(writer)
        .await
        .map_err(err(context))?;
    Ok(())
}

/// Move a delivery of `table` to `dead_letters` with its reason, in one transaction.
pub(crate) async fn dead_letter_from(
    writer: &SqlitePool,
    table: QueueTable,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), BackendError> {
    let (seq, _) = parse_receipt(&delivery.receipt)?;
    let mut tx = writer.begin().await.map_err(err("cannot begin dead-lettering"))?;
    sqlx::query("INSERT INTO dead_letters (at, attempts, reason, body) VALUES (?, ?, ?, ?)")
        .bind(ts(gatehouse_domain::clock::now()))
        .bind(delivery.attempt as i64)
        .bind(reason)
        .bind(&delivery.body)
        .execute(&mut *tx)
        .await
        .map_err(err("cannot write the dead letter"))?;
    sqlx::query(table.delete_sql())
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map_err(err("cannot remove the dead-lettered message"))?;
    tx.commit().await.map_err(err("cannot commit dead-lettering"))
}

impl QueueConsumer for Sqlite {
    /// Claims up to `max` visible messages, at most one per subject and always a subject's oldest,
    /// so work on one person is serialized and in order while different people run in parallel.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        let now = now_ms();
        let until = now + visibility.as_millis() as i64;
        let Done::Claimed(mut rows) = self
            .write(Op::Claim {
                until,
                now,
                max: max as i64,
            })
            .await
            .map_err(|e| BackendError::new("cannot receive from the embedded queue", e))?
        else {
            return Err(BackendError::new(
                "cannot receive from the embedded queue",
                "the claim returned no rows",
            ));
        };
        // RETURNING has no defined order: hand work out oldest first.
        rows.sort_by(|a, b| (&a.3, a.0).cmp(&(&b.3, b.0)));
        Ok(rows
            .into_iter()
            .map(|(seq, attempts, body, _)| delivery(seq, attempts, body))
            .collect())
    }

    /// Deletes the message, unless the commit of its outcome already did (the usual case: the
    /// engine committed before the worker acks); then there is nothing to wait for.
    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        let (seq, _) = parse_receipt(&delivery.receipt)?;
        let finished = self
            .group
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&seq);
        if finished {
            return Ok(());
        }
        self.write(Op::Ack { seq }).await.map(drop)
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), BackendError> {
        set_visible(
            &*self.writer().await,
            QueueTable::Events,
            delivery,
            delay,
            "cannot release",
        )
        .await
    }

    async fn extend(&self, delivery: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        set_visible(
            &*self.writer().await,
            QueueTable::Events,
            delivery,
            visibility,
            "cannot extend visibility",
        )
        .await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BackendError> {
        dead_letter_from(&*self.writer().await, QueueTable::Events, delivery, reason).await
    }
}

impl Directory for Sqlite {
    async fn subjects(&self) -> Result<Vec<SubjectState>, BackendError> {
        let rows = sqlx::query("SELECT identity, converged, version FROM subjects ORDER BY key")
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot read the directory"))?;
        rows.iter()
            .map(|r| subject_state(r.get::<&str, _>(0), r.get(1), r.get(2)))
            .collect()
    }
}

impl LookerCallCounts for Sqlite {
    async fn add_looker_calls(&self, month: &str, delta: u64) -> Result<u64, BackendError> {
        let row = sqlx::query(
            "INSERT INTO looker_calls (month, calls, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (month) DO UPDATE SET calls = looker_calls.calls + excluded.calls,
                                               updated_at = excluded.updated_at
             RETURNING calls",
        )
        .bind(month)
        .bind(i64::try_from(delta).unwrap_or(i64::MAX))
        .bind(ts(gatehouse_domain::clock::now()))
        .fetch_one(&*self.writer().await)
        .await
        .map_err(err("cannot add to the looker call count"))?;
        Ok(row.get::<i64, _>(0).max(0) as u64)
    }

    async fn looker_calls(&self, month: &str) -> Result<u64, BackendError> {
        let row = sqlx::query("SELECT calls FROM looker_calls WHERE month = ?")
            .bind(month)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the looker call count"))?;
        Ok(row.map_or(0, |r| r.get::<i64, _>(0).max(0) as u64))
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
        let row = sqlx::query("SELECT identity, converged, version FROM subjects WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the directory"))?;
        row.map(|r| subject_state(r.get::<&str, _>(0), r.get(1), r.get(2)))
            .transpose()
    }

    /// The transaction that finishes an event: its outcome, and its message leaving the
    /// embedded queue (so the worker's ack that follows has nothing left to write).
    async fn commit(&self, outcome: Outcome) -> Result<(), BackendError> {
        if let Done::Finished(Some(seq)) = self.write(Op::Commit(Box::new(outcome))).await? {
            self.group
                .finished
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(seq);
        }
        Ok(())
    }

    async fn forget_converged(&self, key: &str, base_version: i64) -> Result<i64, BackendError> {
        match self
            .write(Op::ForgetConverged {
                key: key.to_string(),
                base_version,
            })
            .await?
        {
            Done::Version(v) => Ok(v),
            _ => Err(BackendError::new(
                "cannot forget the converged fingerprint",
                "the write returned no version",
            )),
        }
    }

    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write(Op::AppendLedger(entries.to_vec())).await.map(drop)
    }

    async fn ledger_head(&self) -> Result<Option<ChainHead>, BackendError> {
        let row = sqlx::query("SELECT seq, hash FROM ledger_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(err("cannot read the ledger chain head"))?;
        Ok(row.map(|r| ChainHead {
            seq: r.get(0),
            hash: r.get(1),
        }))
    }

    async fn ledger_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<LedgerRow>, BackendError> {
        let since = since.map(ts).unwrap_or_default();
        let rows = sqlx::query(ledger_select!("WHERE at >= ? ORDER BY seq"))
            .bind(since)
            .fetch_all(&self.pool)
            .await
            .map_err(err("cannot read the ledger"))?;
        rows.iter().map(ledger_row).collect()
    }

    async fn due_deletions(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledDeletion>, BackendError> {
        let until = now + chrono::Duration::from_std(DELETION_CLAIM).unwrap_or(chrono::Duration::MAX);
        let rows = sqlx::query(
            "UPDATE deletions SET claimed_until = ?1
             WHERE due_at <= ?2 AND (claimed_until IS NULL OR claimed_until <= ?2)
             RETURNING subject, email, due_at",
        )
        .bind(ts(until))
        .bind(ts(now))
        .fetch_all(&*self.writer().await)
        .await
        .map_err(err("cannot claim scheduled deletions"))?;
        let mut due: Vec<ScheduledDeletion> = rows
            .iter()
            .map(|r| {
                Ok(ScheduledDeletion {
                    subject: r.get(0),
                    email: r.get(1),
                    due_at: parse_ts(r.get::<&str, _>(2))?,
                })
            })
            .collect::<Result<_, BackendError>>()?;
        due.sort_by(|a, b| (a.due_at, &a.subject).cmp(&(b.due_at, &b.subject)));
        Ok(due)
    }

    async fn account_links(&self, target: &str, person: &str) -> Result<Vec<String>, BackendError> {
        let rows =
            sqlx::query("SELECT account FROM account_links WHERE target = ? AND person = ? ORDER BY rowid")
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
        let writer = self.writer().await;
        let mut tx = writer.begin().await.map_err(err("cannot write account links"))?;
        for a in accounts {
            sqlx::query(
                "INSERT INTO account_links (target, person, account, linked_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (target, person, account) DO NOTHING",
            )
            .bind(target)
            .bind(person)
            .bind(a)
            .bind(ts(gatehouse_domain::clock::now()))
            .execute(&mut *tx)
            .await
            .map_err(err("cannot write account links"))?;
        }
        tx.commit().await.map_err(err("cannot write account links"))
    }

    async fn finish_deletion(&self, subject: &str) -> Result<(), BackendError> {
        sqlx::query("DELETE FROM deletions WHERE subject = ?")
            .bind(subject)
            .execute(&*self.writer().await)
            .await
            .map_err(err("cannot finish the deletion"))?;
        Ok(())
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
