//! Group commit of the embedded queue's and the state's hot writes (issue 13).
//!
//! Every write on the event path (an accepted webhook's enqueue, the processor's claim, the
//! forgetting of a converged fingerprint before a plan's first write, its ledger appends, the
//! commit of an event's outcome, the ack; and a SCIM request's directory change with its
//! outbox) used to commit a transaction of its own: one WAL fsync each (about 1.5 ms on the CI machine's disk), so four or five per
//! event, and the fsyncs, not the CPU, set the pace (132 events/s). Now a write adds itself to a
//! shared list and waits for its turn; whoever gets the turn runs every waiting write in ONE
//! transaction on the single writer connection (on its own thread: `writer.rs`), each write of
//! several statements inside a savepoint of its own (a write that fails, such as a commit losing
//! its compare-and-set, rolls back alone and reports its own error; a single statement is atomic
//! by itself), commits once, and tells each write how it went. While that commit and its fsync
//! run, the next writes gather, and the next turn runs them all.
//!
//! Durability is unchanged: a write returns `Ok` only once the transaction holding it has
//! committed with `synchronous=FULL`, so a 2xx still means the envelope is on disk, an ack is
//! never durable before the outcome it follows (the outcome's commit removes the message itself;
//! a separate ack comes only after the worker saw that commit),
//! and the ledger chain stays one line (the appends of a group run in order, each reading the
//! head the previous one wrote; `BEGIN IMMEDIATE` holds the file's write lock from the start).

use super::Sqlite;
use gatehouse_domain::ports::{BackendError, LedgerEntry, Outcome};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// One queue row to write.
pub(crate) struct Row {
    pub(super) id: String,
    pub(super) subject: String,
    pub(super) occurred_at: String,
    pub(super) body: String,
}

/// One claimed queue row: `(seq, attempts, body, occurred_at)`.
pub(crate) type Claimed = (i64, i64, String, String);

/// A write the group writer runs.
pub(crate) enum Op {
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
    /// A SCIM directory change and its outbox envelopes.
    Scim(Box<crate::scim_store::ScimRows>),
}

/// The cold writes' connection, with the write turn held ([`Sqlite::writer`]).
pub(crate) struct ColdWriter<'a> {
    _turn: tokio::sync::MutexGuard<'a, ()>,
    pool: &'a sqlx::SqlitePool,
}

impl std::ops::Deref for ColdWriter<'_> {
    type Target = sqlx::SqlitePool;
    fn deref(&self) -> &sqlx::SqlitePool {
        self.pool
    }
}

/// What a write returns.
pub(crate) enum Done {
    Unit,
    /// An outcome committed; the `seq` of its message, which left the embedded queue with it.
    Finished(Option<i64>),
    Claimed(Vec<Claimed>),
    Version(i64),
    /// A SCIM write: committed, or refused (rolled back alone) and why.
    Scim(Result<(), crate::scim_store::ScimStoreError>),
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
    /// Messages whose outcome commit already removed them from the queue: their ack has
    /// nothing left to write (taken out by the ack).
    pub(super) finished: Mutex<std::collections::HashSet<i64>>,
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
    pub(crate) async fn write(&self, op: Op) -> Result<Done, BackendError> {
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
        let enqueued: usize = jobs
            .iter()
            .map(|j| match &j.op {
                Op::Enqueue(rows) => rows.len(),
                _ => 0,
            })
            .sum();
        let (ops, dones): (Vec<Op>, Vec<_>) = jobs.into_iter().map(|j| (j.op, j.done)).unzip();
        let writes = ops.len() as u64;
        let committed = self.thread.run(ops).await;
        if committed.is_ok() {
            self.group.commits.fetch_add(1, Ordering::Relaxed);
            self.group.writes.fetch_add(writes, Ordering::Relaxed);
            self.group.enqueued.fetch_add(enqueued as u64, Ordering::Relaxed);
            gatehouse_platform::events::store_group_commit();
            if enqueued > 0 {
                self.wake.notify_one();
            }
        }
        match committed {
            Ok(results) => {
                let mut results = results.into_iter();
                for done in dones {
                    // A caller that went away no longer needs its answer.
                    let _ = done.send(results.next().unwrap_or_else(|| Err(abandoned())));
                }
            }
            Err(e) => {
                let e = GroupFailed(Arc::new(e));
                for done in dones {
                    let _ = done.send(Err(BackendError::new("cannot commit the write", e.clone())));
                }
            }
        }
    }

    /// The connection of the writes outside the group commit, with the write turn held for as
    /// long as the returned guard lives: a cold write waits for the group in hand, and the next
    /// group waits for it. Keep the guard across a whole transaction (`let writer =
    /// self.writer().await;` first).
    pub(crate) async fn writer(&self) -> ColdWriter<'_> {
        ColdWriter {
            _turn: self.group.turn.lock().await,
            pool: &self.cold,
        }
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
