//! Issue 13: with the embedded queue in the same process, an enqueue wakes the processor; the
//! poll is only a fallback. The worker here polls once an hour, so only the wake-up can make it
//! handle the event before the deadline. Each event is published only once the worker has
//! found the queue empty (so it is waiting, not about to claim anyway).

use crate::envelope;
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, QueueProducer, StateStore};
use gatehouse_engine::engine::Engine;
use gatehouse_engine::worker::{Worker, WorkerConfig};
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::RetryPolicy;
use gatehouse_targets::client::looker::LookerClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The SQLite queue, noting when the worker has found it empty since its last ack: then the
/// handler of the last event has finished and the worker has gone back to waiting.
#[derive(Clone)]
struct Counting {
    inner: Sqlite,
    acked: Arc<AtomicUsize>,
    idle: Arc<AtomicBool>,
}

impl QueueConsumer for Counting {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        let got = self.inner.receive(max, visibility).await?;
        if got.is_empty() {
            self.idle.store(true, Ordering::SeqCst);
        }
        Ok(got)
    }
    async fn ack(&self, d: &Delivery) -> Result<(), BackendError> {
        let r = self.inner.ack(d).await;
        self.idle.store(false, Ordering::SeqCst);
        self.acked.fetch_add(1, Ordering::SeqCst);
        r
    }
    async fn release(&self, d: &Delivery, delay: Duration) -> Result<(), BackendError> {
        self.inner.release(d, delay).await
    }
    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<(), BackendError> {
        self.inner.dead_letter(d, reason).await
    }
    async fn extend(&self, d: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        self.inner.extend(d, visibility).await
    }
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_enqueue_in_this_process_wakes_the_processor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    let retry = RetryPolicy {
        retries: 1,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
    };
    let engine = Arc::new(Engine::new(
        store.clone(),
        None::<LookerClient>,
        Arc::new(Policy::default()),
        retry,
    ));
    let (acked, idle) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let queue = Counting {
        inner: store.clone(),
        acked: acked.clone(),
        idle: idle.clone(),
    };
    let worker = Worker::new(
        queue,
        engine,
        WorkerConfig {
            concurrency: 4,
            max_attempts: 3,
            visibility_timeout: Duration::from_secs(60),
            poll_interval: Duration::from_secs(3600),
            sweep_interval: Duration::from_secs(3600),
        },
    )
    .with_wake(store.wake());
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn(worker.run(shutdown));
    // Two rounds: each time the worker has just found the queue empty and gone to wait.
    // (A count of empty claims taken before publishing raced with the worker's last claim after
    // an ack: under load the test could wait for a claim that, rightly, never came.)
    for (round, id) in ["first", "second"].into_iter().enumerate() {
        until(
            "the worker never went back to waiting on an empty queue",
            async || acked.load(Ordering::SeqCst) >= round && idle.load(Ordering::SeqCst),
        )
        .await;
        store.publish(&[envelope(id)]).await.unwrap();
        let what = format!("{id}: not processed: the enqueue did not wake the processor");
        until(&what, async || {
            store.is_processed(&EnvelopeId(id.into())).await.unwrap()
        })
        .await;
    }
    trigger.trigger();
    running.await.unwrap();
}
