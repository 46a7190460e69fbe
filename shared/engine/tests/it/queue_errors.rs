//! Issue 12: the worker acts on a queue error's kind. A failed receive backs off on the one
//! retry policy's schedule (a failure retrying cannot fix waits the longest at once), instead of
//! polling again every `poll_interval`; a throttled or transient failure to settle a delivery is
//! retried in place, one retrying cannot fix is not.
//!
//! The time checks are lower bounds on the gaps between calls: a slow machine only makes the
//! gaps longer, so they cannot fail for want of speed.

use crate::envelope;
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::error::{Error, Kind};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, QueueProducer, StateStore};
use gatehouse_engine::engine::Engine;
use gatehouse_engine::worker::{Disposition, Worker, WorkerConfig};
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::RetryPolicy;
use gatehouse_targets::client::looker::LookerClient;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

fn failure(kind: Kind) -> BackendError {
    BackendError::new(
        "scripted queue failure",
        Error::new(kind, "the queue answered so"),
    )
}

/// The SQLite queue behind a script: each receive (ack) first takes the next scripted failure,
/// if any, and fails with it (`None`: fail every time with it). Every call's time is noted.
#[derive(Clone, Default)]
struct Scripted {
    inner: Option<Sqlite>,
    receive_fails: Arc<Mutex<VecDeque<Kind>>>,
    receive_always: Option<Kind>,
    ack_fails: Arc<Mutex<VecDeque<Kind>>>,
    receives: Arc<Mutex<Vec<Instant>>>,
    acks: Arc<Mutex<Vec<Instant>>>,
}

impl Scripted {
    fn store(&self) -> &Sqlite {
        self.inner.as_ref().expect("a store behind the script")
    }
}

impl QueueConsumer for Scripted {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        self.receives.lock().unwrap().push(Instant::now());
        if let Some(k) = self.receive_always {
            return Err(failure(k));
        }
        let next = self.receive_fails.lock().unwrap().pop_front();
        match next {
            Some(k) => Err(failure(k)),
            None => self.store().receive(max, visibility).await,
        }
    }
    async fn ack(&self, d: &Delivery) -> Result<(), BackendError> {
        self.acks.lock().unwrap().push(Instant::now());
        let next = self.ack_fails.lock().unwrap().pop_front();
        match next {
            Some(k) => Err(failure(k)),
            None => self.store().ack(d).await,
        }
    }
    async fn release(&self, d: &Delivery, delay: Duration) -> Result<(), BackendError> {
        self.store().release(d, delay).await
    }
    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<(), BackendError> {
        self.store().dead_letter(d, reason).await
    }
    async fn extend(&self, d: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        self.store().extend(d, visibility).await
    }
}

struct World {
    _dir: tempfile::TempDir,
    store: Sqlite,
    engine: Arc<Engine<Sqlite, LookerClient>>,
}

async fn world() -> World {
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
    World {
        _dir: dir,
        store,
        engine,
    }
}

/// Polls every 20 ms when nothing goes wrong.
fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        max_attempts: 3,
        visibility_timeout: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
        sweep_interval: Duration::from_secs(3600),
    }
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test]
async fn a_refused_receive_waits_the_longest_backoff_before_trying_again() {
    let w = world().await;
    let queue = Scripted {
        receive_always: Some(Kind::Unauthorized),
        ..Default::default()
    };
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn(Worker::new(queue.clone(), w.engine.clone(), config()).run(shutdown));
    // At a 20 ms poll, 2 s would be ~100 receives; the next one is due after 30 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        queue.receives.lock().unwrap().len(),
        1,
        "retried before the backoff ended"
    );
    // Shutdown is not held up by the backoff.
    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the worker stops while backing off")
        .unwrap();
}

#[tokio::test]
async fn transient_receive_failures_back_off_exponentially_then_work_resumes() {
    let w = world().await;
    w.store.publish(&[envelope("after-failures")]).await.unwrap();
    let queue = Scripted {
        inner: Some(w.store.clone()),
        receive_fails: Arc::new(Mutex::new(
            [Kind::Transient, Kind::Throttled, Kind::Transient].into(),
        )),
        ..Default::default()
    };
    let (trigger, shutdown) = Shutdown::new();
    let running = tokio::spawn(Worker::new(queue.clone(), w.engine.clone(), config()).run(shutdown));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !w
        .store
        .is_processed(&EnvelopeId("after-failures".into()))
        .await
        .unwrap()
    {
        assert!(Instant::now() < deadline, "never processed after the failures");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trigger.trigger();
    running.await.unwrap();
    let gaps = gaps(&queue.receives.lock().unwrap());
    // 250 ms, 500 ms, 1 s after the 1st, 2nd and 3rd failure (the poll would be 20 ms).
    for (i, min) in [250, 500, 1000].into_iter().enumerate() {
        assert!(
            gaps[i] >= Duration::from_millis(min),
            "gap {i} after a failure: {:?} < {min} ms ({gaps:?})",
            gaps[i]
        );
    }
    assert_eq!(queue.acks.lock().unwrap().len(), 1, "handled once, acked once");
}

#[tokio::test]
async fn a_transient_ack_failure_is_retried_in_place_and_a_refused_one_is_not() {
    let w = world().await;
    w.store.publish(&[envelope("ack-twice-failed")]).await.unwrap();
    let queue = Scripted {
        inner: Some(w.store.clone()),
        ack_fails: Arc::new(Mutex::new([Kind::Transient, Kind::Throttled].into())),
        ..Default::default()
    };
    let worker = Worker::new(queue.clone(), w.engine.clone(), config());
    let done = worker.run_once().await.expect("settled");
    assert!(matches!(done.as_slice(), [Disposition::Acked(_)]), "{done:?}");
    assert_eq!(queue.acks.lock().unwrap().len(), 3, "two failures, then the ack");
    assert!(
        queue
            .store()
            .receive(10, Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "the ack removed it"
    );

    // An ack refused for good is not retried: the delivery comes back after its visibility.
    w.store.publish(&[envelope("ack-refused")]).await.unwrap();
    queue.acks.lock().unwrap().clear();
    queue.ack_fails.lock().unwrap().push_back(Kind::Unauthorized);
    let err = worker.run_once().await.expect_err("the refusal is returned");
    assert!(format!("{err:?}").contains("scripted queue failure"), "{err:?}");
    assert_eq!(queue.acks.lock().unwrap().len(), 1, "not retried");
}
