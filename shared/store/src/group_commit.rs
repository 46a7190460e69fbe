//! The turn-taking both stores' group commits share (`sqlite/group.rs`, `postgres/group.rs`).
//!
//! A write adds itself to a list and waits for the turn. Whoever gets the turn takes every write
//! waiting by then and runs them together (the store's `run`: one transaction), on a task of
//! its own, so a caller dropped mid-commit (a client gone, a shutdown) does not abandon the
//! other writes half-done: the group commits or rolls back as a whole. Each write is answered
//! with its own result once the group has committed, or with the group's failure. While one
//! group runs, the next writes gather; the next turn takes them all.

use gatehouse_domain::ports::BackendError;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// Per write, in order, once the group committed; or why nothing was committed.
pub(crate) type GroupResult<Done> = Result<Vec<Result<Done, BackendError>>, BackendError>;

type Answer<Done> = oneshot::Sender<Result<Done, BackendError>>;

/// The waiting writes and the turn to run them.
pub(crate) struct Turns<Op, Done> {
    pending: Mutex<Vec<(Op, Answer<Done>)>>,
    turn: tokio::sync::Mutex<()>,
}

impl<Op, Done> Default for Turns<Op, Done> {
    fn default() -> Self {
        Turns {
            pending: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
        }
    }
}

impl<Op, Done> std::fmt::Debug for Turns<Op, Done> {
    // A count only: the pending writes carry people's events.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Turns")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

impl<Op: Send + 'static, Done: Send + 'static> Turns<Op, Done> {
    /// Run `op` in the next group; `run` runs a whole group as one transaction. Returns once
    /// that transaction has committed (or failed).
    pub(crate) async fn submit<Fut>(
        &self,
        op: Op,
        run: impl FnOnce(Vec<Op>) -> Fut,
    ) -> Result<Done, BackendError>
    where
        Fut: Future<Output = GroupResult<Done>> + Send + 'static,
    {
        let (answer, mut outcome) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((op, answer));
        let _turn = self.turn.lock().await;
        // An earlier turn took this write: it finished (and said how) before handing the turn on.
        match outcome.try_recv() {
            Ok(r) => return r,
            Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
            Err(oneshot::error::TryRecvError::Empty) => {}
        }
        let jobs = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let (ops, answers): (Vec<Op>, Vec<Answer<Done>>) = jobs.into_iter().unzip();
        let group = run(ops);
        let ran = tokio::spawn(async move {
            match group.await {
                Ok(results) => {
                    let mut results = results.into_iter();
                    for answer in answers {
                        // A caller that went away no longer needs its answer.
                        let _ = answer.send(results.next().unwrap_or_else(|| Err(abandoned())));
                    }
                }
                Err(e) => {
                    let e = GroupFailed(Arc::new(e));
                    for answer in answers {
                        let _ = answer.send(Err(BackendError::new("cannot commit the write", e.clone())));
                    }
                }
            }
        });
        if ran.await.is_err() {
            return Err(abandoned());
        }
        outcome.await.unwrap_or_else(|_| Err(abandoned()))
    }
}

impl<Op, Done> Turns<Op, Done> {
    /// Hold the turn: no group runs while the guard lives (the SQLite store's cold writes; tests
    /// let writes gather, then release them into one commit).
    pub(crate) async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Writes waiting for a turn.
    pub(crate) fn waiting(&self) -> usize {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// A statement or the transaction shared by several writes failed: each of them gets this,
/// with the one cause chain.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the group commit holding this write failed")]
struct GroupFailed(#[source] Arc<BackendError>);

fn abandoned() -> BackendError {
    BackendError::new(
        "cannot write",
        "the group commit holding this write was abandoned",
    )
}
