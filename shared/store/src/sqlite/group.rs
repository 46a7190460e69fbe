//! Group commit of the embedded queue's and the state's hot writes (issue 13).
//!
//! Every write on the event path (an accepted webhook's enqueue, the processor's claim, the
//! forgetting of a converged fingerprint before a plan's first write, its ledger appends, the
//! commit of an event's outcome, the ack) used to commit a transaction of
//! its own: one WAL fsync each (about 1.5 ms on the CI machine's disk), so four or five per
//! event, and the fsyncs, not the CPU, set the pace (132 events/s). Now a write adds itself to a
//! shared list and waits for its turn; whoever gets the turn runs every waiting write in ONE
//! transaction on the single writer connection, each of several statements inside a savepoint of its
//! own (a write that fails, such as a commit losing its compare-and-set, rolls back alone and
//! reports its own error; a single statement is atomic by itself), commits once, and tells each write how it went. While that commit and its fsync run,
//! the next writes gather, and the next turn runs them all.
//!
//! Durability is unchanged: a write returns `Ok` only once the transaction holding it has
//! committed with `synchronous=FULL`, so a 2xx still means the envelope is on disk, an ack is
//! only ever durable after the outcome it follows (the worker awaits the commit before it acks),
//! and the ledger chain stays one line (the appends of a group run in order, each reading the
//! head the previous one wrote; `BEGIN IMMEDIATE` holds the file's write lock from the start).

use super::{Sqlite, err, now_ms};
use gatehouse_domain::ports::{BackendError, LedgerEntry, Outcome};
use sqlx::{Acquire, SqliteConnection};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// One queue row to write.
pub(super) struct Row {
    pub(super) id: String,
    pub(super) subject: String,
    pub(super) occurred_at: String,
    pub(super) body: String,
}

/// One claimed queue row: `(seq, attempts, body, occurred_at)`.
pub(super) type Claimed = (i64, i64, String, String);

/// A write the group writer runs.
pub(super) enum Op {
    /// Enqueue messages (one accepted request's envelopes).
    Enqueue(Vec<Row>),
    /// Claim up to `max` visible messages until `until` (`now` decides what is visible).
    Claim { until: i64, now: i64, max: i64 },
    /// Delete a processed message.
    Ack { seq: i64 },
    /// Record an event's outcome.
    Commit(Box<Outcome>),
    /// Forget a subject's converged fingerprint (compare-and-set on `base_version`) before a
    /// plan's first write; returns the new version.
    ForgetConverged { key: String, base_version: i64 },
    /// Append rows to the ledger chain.
    AppendLedger(Vec<LedgerEntry>),
}

impl Op {
    /// Whether the write is a single SQL statement (so needs no savepoint of its own).
    fn is_one_statement(&self) -> bool {
        match self {
            // A group runs its enqueues and acks as shared statements before anything else.
            Op::Enqueue(rows) => rows.len() <= ROWS_PER_STATEMENT,
            Op::Claim { .. } | Op::Ack { .. } | Op::ForgetConverged { .. } => true,
            Op::Commit(_) | Op::AppendLedger(_) => false,
        }
    }
}

/// What a write returns.
pub(super) enum Done {
    Unit,
    Claimed(Vec<Claimed>),
    Version(i64),
}

/// One write and where its outcome goes.
struct Job {
    op: Op,
    done: oneshot::Sender<Result<Done, BackendError>>,
}

/// The waiting writes and the turn to run them.
#[derive(Default)]
pub(super) struct GroupWriter {
    pending: Mutex<Vec<Job>>,
    turn: tokio::sync::Mutex<()>,
    commits: AtomicU64,
    writes: AtomicU64,
    enqueued: AtomicU64,
}

impl std::fmt::Debug for GroupWriter {
    // Counts only: the pending writes carry people's events.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupWriter")
            .field("commits", &self.commits.load(Ordering::Relaxed))
            .field("writes", &self.writes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How many write transactions (each one WAL fsync) the group writer committed, and what they
/// carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterCommits {
    /// Write transactions committed (one fsync each with `synchronous=FULL`).
    pub commits: u64,
    /// Writes they carried (enqueues, claims, ledger appends, forgotten fingerprints, outcome
    /// commits, acks).
    pub writes: u64,
    /// Queue rows enqueued by them (messages already queued count too: `ON CONFLICT DO NOTHING`).
    pub enqueued: u64,
}

impl Sqlite {
    /// Run `op` in the next group commit; returns once that transaction has committed.
    pub(super) async fn write(&self, op: Op) -> Result<Done, BackendError> {
        let (done, mut outcome) = oneshot::channel();
        self.group
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Job { op, done });
        let _turn = self.group.turn.lock().await;
        // An earlier turn took this write: it finished (and said how) before handing the turn on.
        match outcome.try_recv() {
            Ok(r) => return r,
            Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let jobs = std::mem::take(&mut *self.group.pending.lock().unwrap_or_else(PoisonError::into_inner));
        // On a task of its own, so a caller dropped mid-commit (a client gone, a shutdown) does
        // not abandon the other writes half-done: the group commits or rolls back as a whole.
        let db = self.clone();
        let group = tokio::spawn(async move { db.run_group(jobs).await });
        if group.await.is_err() {
            return Err(abandoned());
        }
        outcome.await.unwrap_or_else(|_| Err(abandoned()))
    }

    async fn run_group(&self, jobs: Vec<Job>) {
        let (results, committed) = match self.write_jobs(&jobs).await {
            Ok(results) => (results, Ok(())),
            Err(e) => (Vec::new(), Err(GroupFailed(Arc::new(e)))),
        };
        if committed.is_ok() {
            let enqueued: usize = jobs
                .iter()
                .map(|j| match &j.op {
                    Op::Enqueue(rows) => rows.len(),
                    _ => 0,
                })
                .sum();
            self.group.commits.fetch_add(1, Ordering::Relaxed);
            self.group.writes.fetch_add(jobs.len() as u64, Ordering::Relaxed);
            self.group.enqueued.fetch_add(enqueued as u64, Ordering::Relaxed);
            gatehouse_platform::events::store_group_commit();
            if enqueued > 0 {
                self.wake.notify_one();
            }
        }
        let mut results = results.into_iter();
        for job in jobs {
            let r = match &committed {
                Ok(()) => results.next().unwrap_or_else(|| Err(abandoned())),
                Err(e) => Err(BackendError::new("cannot commit the write", e.clone())),
            };
            // A caller that went away no longer needs its answer.
            let _ = job.done.send(r);
        }
    }

    /// Every job in one transaction; the per-job results once committed.
    ///
    /// Each SQL statement is a round trip to the connection's thread, and the writer is the one
    /// serial resource, so the group spends as few statements as it can: every enqueue's rows in
    /// one multi-row insert and every ack in one delete, first (an ack's outcome committed in an
    /// earlier group, since the worker awaits the one before it sends the other, so running acks
    /// first changes nothing but lets this group's claims see the freed subjects and the new
    /// messages); then the other writes in order, a write of several statements in a savepoint
    /// of its own (one statement is atomic by itself: SQLite undoes a failing statement).
    async fn write_jobs(&self, jobs: &[Job]) -> Result<Vec<Result<Done, BackendError>>, BackendError> {
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("cannot begin a write"))?;
        let mut results: Vec<Option<Result<Done, BackendError>>> = jobs.iter().map(|_| None).collect();
        let (mut enqueues, mut acks) = (Vec::new(), Vec::new());
        let (mut rows, mut seqs) = (Vec::new(), Vec::new());
        for (i, job) in jobs.iter().enumerate() {
            match &job.op {
                Op::Enqueue(r) => {
                    enqueues.push(i);
                    rows.extend(r);
                }
                Op::Ack { seq } => {
                    acks.push(i);
                    seqs.push(*seq);
                }
                _ => {}
            }
        }
        if !rows.is_empty() {
            let r = insert_messages(&mut tx, &rows).await;
            share(&mut results, &enqueues, r, "cannot enqueue");
        }
        if !seqs.is_empty() {
            let r = delete_messages(&mut tx, &seqs).await;
            share(&mut results, &acks, r, "cannot ack");
        }
        for (job, slot) in jobs.iter().zip(results.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            if job.op.is_one_statement() {
                *slot = Some(run(&mut tx, &job.op).await);
                continue;
            }
            let mut sp = (&mut tx).begin().await.map_err(err("cannot open a savepoint"))?;
            match run(&mut sp, &job.op).await {
                Ok(done) => {
                    sp.commit().await.map_err(err("cannot release a savepoint"))?;
                    *slot = Some(Ok(done));
                }
                Err(e) => {
                    sp.rollback().await.map_err(err("cannot roll back a savepoint"))?;
                    *slot = Some(Err(e));
                }
            }
        }
        tx.commit().await.map_err(err("cannot commit a write"))?;
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(abandoned())))
            .collect())
    }

    /// Write transactions committed by this process so far, and what they carried (the bench
    /// reports fsyncs per event from it).
    pub fn writer_commits(&self) -> WriterCommits {
        WriterCommits {
            commits: self.group.commits.load(Ordering::Relaxed),
            writes: self.group.writes.load(Ordering::Relaxed),
            enqueued: self.group.enqueued.load(Ordering::Relaxed),
        }
    }

    /// Hold the write turn (tests: let writes gather, then release them into one commit).
    #[doc(hidden)]
    pub async fn hold_write_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.group.turn.lock().await
    }

    /// Writes waiting for a turn (tests).
    #[doc(hidden)]
    pub fn writes_waiting(&self) -> usize {
        self.group
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// Rows per multi-row insert and seqs per delete: 6 and 1 bound parameters each, well under
/// SQLite's limit on bound parameters in one statement.
const ROWS_PER_STATEMENT: usize = 100;
const SEQS_PER_STATEMENT: usize = 500;

/// The rows of every enqueue of a group, in order (so `seq` follows arrival), in as few
/// statements as the parameter limit allows; a message already queued is left as it is.
async fn insert_messages(conn: &mut SqliteConnection, rows: &[&Row]) -> Result<(), BackendError> {
    let now = now_ms();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO queue (envelope_id, subject, occurred_at, body, visible_at, enqueued_at) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(&r.id)
                .push_bind(&r.subject)
                .push_bind(&r.occurred_at)
                .push_bind(&r.body)
                .push_bind(now)
                .push_bind(now);
        });
        q.push(" ON CONFLICT (envelope_id) DO NOTHING");
        q.build()
            .execute(&mut *conn)
            .await
            .map_err(err("cannot enqueue"))?;
    }
    Ok(())
}

/// Every ack of a group: the processed messages leave the queue.
async fn delete_messages(conn: &mut SqliteConnection, seqs: &[i64]) -> Result<(), BackendError> {
    for chunk in seqs.chunks(SEQS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("DELETE FROM queue WHERE seq IN (");
        let mut list = q.separated(", ");
        for seq in chunk {
            list.push_bind(*seq);
        }
        q.push(")");
        q.build().execute(&mut *conn).await.map_err(err("cannot ack"))?;
    }
    Ok(())
}

/// One statement's outcome for every write it carried (`slots` indexes `results`).
fn share(
    results: &mut [Option<Result<Done, BackendError>>],
    slots: &[usize],
    r: Result<(), BackendError>,
    context: &'static str,
) {
    let r = r.map_err(|e| GroupFailed(Arc::new(e)));
    for &i in slots {
        results[i] = Some(match &r {
            Ok(()) => Ok(Done::Unit),
            Err(e) => Err(BackendError::new(context, e.clone())),
        });
    }
}

async fn run(conn: &mut SqliteConnection, op: &Op) -> Result<Done, BackendError> {
    match op {
        Op::Enqueue(rows) => insert_messages(conn, &rows.iter().collect::<Vec<_>>())
            .await
            .map(|()| Done::Unit),
        Op::Claim { until, now, max } => super::claim::claim(conn, *until, *now, *max)
            .await
            .map(Done::Claimed),
        Op::Ack { seq } => delete_messages(conn, &[*seq]).await.map(|()| Done::Unit),
        Op::Commit(outcome) => super::commit_outcome(conn, outcome).await.map(|()| Done::Unit),
        Op::ForgetConverged { key, base_version } => super::forget_converged_on(conn, key, *base_version)
            .await
            .map(Done::Version),
        Op::AppendLedger(entries) => super::append_ledger_rows(conn, entries)
            .await
            .map(|()| Done::Unit),
    }
}

/// A statement or a transaction shared by several writes failed: each of them gets this, with
/// the one cause chain.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the group commit holding this write failed")]
struct GroupFailed(#[source] Arc<BackendError>);

fn abandoned() -> BackendError {
    BackendError::new(
        "cannot write",
        "the group commit holding this write was abandoned",
    )
}
