//! The outbox relay: publishes the SCIM outbox to the queue, in order, then deletes what it
//! published. At-least-once: a crash between publish and delete publishes again, and the
//! envelope id makes the repeat harmless (the queue and the processor dedupe by it).

use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{BackendError, QueueProducer};
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_store::sqlite::Sqlite;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Envelopes published per queue transaction.
const BATCH: usize = 256;

pub struct Relay<Q> {
    queue: Q,
    store: Sqlite,
    /// A flush task is running.
    running: AtomicBool,
    /// Something was written since the running flush last looked.
    again: AtomicBool,
}

impl<Q: QueueProducer + Clone + 'static> Relay<Q> {
    pub fn new(queue: Q, store: Sqlite) -> Self {
        Relay {
            queue,
            store,
            running: AtomicBool::new(false),
            again: AtomicBool::new(false),
        }
    }

    /// Publish everything pending, oldest first. Returns how many envelopes went out.
    pub async fn flush(&self) -> Result<usize, BackendError> {
        let mut sent = 0;
        loop {
            let pending = self.store.scim_outbox_pending(BATCH).await?;
            let Some(last) = pending.last().map(|(seq, _)| *seq) else {
                return Ok(sent);
            };
            let batch: Vec<Envelope> = pending.into_iter().map(|(_, e)| e).collect();
            self.queue.publish(&batch).await?;
            self.store.scim_outbox_delete_through(last).await?;
            sent += batch.len();
            gatehouse_platform::events::scim_outbox_published(batch.len() as u64);
        }
    }

    async fn flush_logged(&self) {
        if let Err(e) = self.flush().await {
            tracing::warn!(
                error = %e, source = ?std::error::Error::source(&e),
                "scim outbox relay could not publish; it will retry"
            );
        }
    }

    /// Wake a flush now (after a write). Coalesces: at most one flush task runs at a time, and
    /// it runs again if writes arrived while it was busy.
    pub fn kick(self: &Arc<Self>) {
        self.again.store(true, Ordering::SeqCst);
        if self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                while me.again.swap(false, Ordering::SeqCst) {
                    me.flush_logged().await;
                }
                me.running.store(false, Ordering::SeqCst);
                // A kick between the last swap and the store above saw `running` and left.
                if !me.again.load(Ordering::SeqCst) || me.running.swap(true, Ordering::SeqCst) {
                    break;
                }
            }
        });
    }

    /// Poll the outbox every `interval` until shutdown (recovers what a crash left behind).
    pub async fn run(self: Arc<Self>, interval: Duration, shutdown: Shutdown) {
        loop {
            self.flush_logged().await;
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        // Last flush so an orderly stop leaves nothing behind.
        self.flush_logged().await;
    }
}
