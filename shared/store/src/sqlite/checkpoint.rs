//! WAL checkpoints on a thread of their own (issue 13).
//!
//! SQLite checkpoints the WAL (copies its pages back into the database file and fsyncs that
//! file) inside the commit that pushes the WAL past 1,000 pages, on the committing connection:
//! here the writer thread, which every accepted request waits for. The bench measured the cost:
//! accept p50 0.7 ms but p99 71 ms at 1,000 requests/s, the requests that queued behind a
//! commit doing a checkpoint.
//! The writer thread's connection and the cold writes' run with `wal_autocheckpoint=0`,
//! and this thread checkpoints instead, every [`INTERVAL`] when something was committed since
//! the last one, in `PASSIVE` mode: it never waits for (or blocks) the writer or a reader, it
//! copies what no reader still needs, and a later pass copies the rest. Once the whole WAL is
//! copied, the writer's next transaction starts the WAL over from its beginning, so the file
//! stops growing.
//!
//! Durability does not depend on it: a commit is durable once its WAL frames are fsync'd
//! (`synchronous=FULL`). A checkpoint only moves committed pages into the database file and
//! fsyncs it before the WAL is reused.

use super::err;
use gatehouse_domain::ports::BackendError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// How often the thread looks for committed work to checkpoint. At the group commit's rates
/// (hundreds of commits a second, a few pages each) a pass copies a few hundred to a few
/// thousand pages, about what SQLite's own 1,000-page threshold would.
const INTERVAL: Duration = Duration::from_millis(250);

/// A pass runs at least this often even if no commit was counted (the writes of the read pool,
/// rare, are not counted; they keep SQLite's own checkpoint threshold anyway).
const EVERY: u32 = 40;

/// What the thread has done, and what it is told.
#[derive(Debug, Default)]
struct Shared {
    /// Commits the writer made (bumped by [`Checkpointer::committed`]).
    commits: AtomicU64,
    /// Checkpoint passes run, and WAL frames they copied into the database file.
    passes: AtomicU64,
    frames: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The checkpointing thread. Dropping it (or [`Checkpointer::close`]) stops the thread after
/// its pass in hand.
#[derive(Debug)]
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Checkpoint passes run by this process, and the WAL frames they copied back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoints {
    pub passes: u64,
    pub frames: u64,
}

impl Checkpointer {
    /// Open the checkpointer's connection on `path` and start its thread.
    pub(super) fn start(path: &Path) -> Result<Self, BackendError> {
        let conn = Connection::open(path).map_err(err("cannot open the sqlite checkpointer"))?;
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0;")
            .map_err(err("cannot set the sqlite checkpointer's pragmas"))?;
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("gatehouse-sqlite-checkpoint".into())
                .spawn(move || run(&conn, &shared))
                .map_err(err("cannot start the sqlite checkpoint thread"))?
        };
        Ok(Checkpointer {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The writer committed a transaction: there is something to checkpoint.
    pub(super) fn committed(&self) {
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn counts(&self) -> Checkpoints {
        Checkpoints {
            passes: self.shared.passes.load(Ordering::Relaxed),
            frames: self.shared.frames.load(Ordering::Relaxed),
        }
    }

    /// Stop the thread (after the pass in hand) and wait for it.
    pub(super) fn close(&self) {
        *self.shared.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(conn: &Connection, shared: &Shared) {
    let mut seen = 0;
    let mut idle = 0;
    loop {
        {
            let stop = shared.stop.lock().unwrap_or_else(PoisonError::into_inner);
            let (stop, _) = shared
                .wake
                .wait_timeout_while(stop, INTERVAL, |stop| !*stop)
                .unwrap_or_else(PoisonError::into_inner);
            if *stop {
                return;
            }
        }
        let commits = shared.commits.load(Ordering::Relaxed);
        if commits == seen && idle < EVERY {
            idle += 1;
            continue;
        }
        (seen, idle) = (commits, 0);
        // (busy, frames in the WAL, frames copied back); busy means another connection (another
        // process's checkpointer) was checkpointing: the next pass tries again.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((_, _, copied)) => {
                shared.passes.fetch_add(1, Ordering::Relaxed);
                shared.frames.fetch_add(copied.max(0) as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "sqlite WAL checkpoint failed; the next pass tries again"),
        }
    }
}
