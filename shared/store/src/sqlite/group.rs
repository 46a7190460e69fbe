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
use crate::group_commit::{GroupResult, Turns};
use gatehouse_domain::ports::{BackendError, LedgerEntry, Outcome};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
    Scim(Box<super::scim::ScimRows>),
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
    Scim(Result<(), super::scim::ScimStoreError>),
}

/// The waiting writes and the turn to run them.
#[derive(Default)]
pub(super) struct GroupWriter {
    turns: Turns<Op, Done>,
    /// Messages whose outcome commit already removed them from the queue: their ack has
    /// nothing left to write (taken out by the ack).
    pub(super) finished: Mutex<std::collections::HashSet<i64>>,
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
        let db = self.clone();
        self.group
            .turns
            .submit(op, move |ops| async move { db.run_group(ops).await })
            .await
    }

    /// One group, on the writer thread; the counters once it committed.
    async fn run_group(&self, ops: Vec<Op>) -> GroupResult<Done> {
        let enqueued: usize = ops
            .iter()
            .map(|op| match op {
                Op::Enqueue(rows) => rows.len(),
                _ => 0,
            })
            .sum();
        let writes = ops.len() as u64;
        let results = self.thread.run(ops).await?;
        self.group.commits.fetch_add(1, Ordering::Relaxed);
        self.group.writes.fetch_add(writes, Ordering::Relaxed);
        self.group.enqueued.fetch_add(enqueued as u64, Ordering::Relaxed);
        gatehouse_platform::events::store_group_commit();
        if enqueued > 0 {
            self.wake.notify_one();
        }
        Ok(results)
    }

    /// The connection of the writes outside the group commit, with the write turn held for as
    /// long as the returned guard lives: a cold write waits for the group in hand, and the next
    /// group waits for it. Keep the guard across a whole transaction (`let writer =
    /// self.writer().await;` first).
    pub(crate) async fn writer(&self) -> ColdWriter<'_> {
        ColdWriter {
            _turn: self.group.turns.hold().await,
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
        self.group.turns.hold().await
    }

    /// Writes waiting for a turn (tests).
    #[doc(hidden)]
    pub fn writes_waiting(&self) -> usize {
        self.group.turns.waiting()
    }
}
