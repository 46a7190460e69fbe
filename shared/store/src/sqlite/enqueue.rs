//! Group commit of the embedded queue's enqueues (issue 13).
//!
//! Every accepted webhook used to commit its own write transaction, so each paid one WAL fsync
//! and waited in SQLite's busy handler behind the processor's writes. Now an enqueue adds its rows
//! to a shared list and waits for its turn; whoever gets the turn writes every waiting request's
//! rows in one transaction on the single writer connection and tells each request how it went.
//! While that commit (and its fsync) runs, the next requests gather, and the next turn writes
//! them all. Durability is unchanged: `publish` returns `Ok` only once the transaction holding
//! its rows has committed with `synchronous=FULL`, so a 2xx still means the envelope is on disk.

use super::{Sqlite, err, insert_message, now_ms};
use gatehouse_domain::ports::BackendError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use tokio::sync::oneshot;

/// One queue row to write.
pub(super) struct Row {
    pub(super) id: String,
    pub(super) subject: String,
    pub(super) occurred_at: String,
    pub(super) body: String,
}

/// One request's rows and where its outcome goes.
struct Job {
    rows: Vec<Row>,
    done: oneshot::Sender<Result<(), BackendError>>,
}

/// The waiting requests and the turn to write them.
#[derive(Default)]
pub(super) struct Enqueuer {
    pending: Mutex<Vec<Job>>,
    turn: tokio::sync::Mutex<()>,
    commits: AtomicU64,
    rows: AtomicU64,
}

impl std::fmt::Debug for Enqueuer {
    // Counts only: the pending bodies are people's events.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueuer")
            .field("commits", &self.commits.load(Ordering::Relaxed))
            .field("rows", &self.rows.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How many enqueue transactions (each one WAL fsync) wrote how many requests' rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnqueueCommits {
    /// Write transactions committed (one fsync each with `synchronous=FULL`).
    pub commits: u64,
    /// Rows written by them (messages already queued count too: `ON CONFLICT DO NOTHING`).
    pub rows: u64,
}

impl Sqlite {
    /// Enqueue `rows` in the next group commit; returns once that transaction has committed.
    pub(super) async fn enqueue(&self, rows: Vec<Row>) -> Result<(), BackendError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (done, mut outcome) = oneshot::channel();
        self.enqueuer
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Job { rows, done });
        let _turn = self.enqueuer.turn.lock().await;
        // An earlier turn took these rows: it finished (and said how) before handing the turn on.
        match outcome.try_recv() {
            Ok(r) => return r,
            Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let jobs = std::mem::take(
            &mut *self
                .enqueuer
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        // On a task of its own, so a request dropped mid-commit (client gone) does not abandon
        // the other requests' rows half-written: the group commits or rolls back as a whole.
        let db = self.clone();
        let group = tokio::spawn(async move { db.write_group(jobs).await });
        if group.await.is_err() {
            return Err(abandoned());
        }
        outcome.await.unwrap_or_else(|_| Err(abandoned()))
    }

    async fn write_group(&self, jobs: Vec<Job>) {
        let result = self.write_rows(&jobs).await;
        if result.is_ok() {
            let rows: usize = jobs.iter().map(|j| j.rows.len()).sum();
            self.enqueuer.commits.fetch_add(1, Ordering::Relaxed);
            self.enqueuer.rows.fetch_add(rows as u64, Ordering::Relaxed);
            metrics::counter!("gatehouse_queue_enqueue_commits_total").increment(1);
            self.wake.notify_one();
        }
        for job in jobs {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(BackendError::new("cannot enqueue", e.to_string())),
            };
            // A request that went away no longer needs its answer.
            let _ = job.done.send(r);
        }
    }

    async fn write_rows(&self, jobs: &[Job]) -> Result<(), BackendError> {
        let mut tx = self.writer.begin().await.map_err(err("cannot begin enqueue"))?;
        let now = now_ms();
        for r in jobs.iter().flat_map(|j| &j.rows) {
            insert_message(&mut tx, &r.id, &r.subject, &r.occurred_at, &r.body, now).await?;
        }
        tx.commit().await.map_err(err("cannot commit enqueue"))
    }

    /// Enqueue transactions committed by this process so far, and the rows they wrote (the
    /// bench reports fsyncs per accepted request from it).
    pub fn enqueue_commits(&self) -> EnqueueCommits {
        EnqueueCommits {
            commits: self.enqueuer.commits.load(Ordering::Relaxed),
            rows: self.enqueuer.rows.load(Ordering::Relaxed),
        }
    }

    /// Hold the enqueue turn (tests: let requests gather, then release them into one commit).
    #[doc(hidden)]
    pub async fn hold_enqueue_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.enqueuer.turn.lock().await
    }

    /// Requests waiting for an enqueue turn (tests).
    #[doc(hidden)]
    pub fn enqueues_waiting(&self) -> usize {
        self.enqueuer
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn abandoned() -> BackendError {
    BackendError::new(
        "cannot enqueue",
        "the group commit holding this request was abandoned",
    )
}
