//! Two processors on one FIFO queue (message group = the person) must never both write for one
//! person. Processor A receives the person's message, reads Looker, plans, and is then held just
//! before its first write (a screen that waits) while its lease extensions fail: the lease
//! lapses, the queue hands the message to processor B, which reads Looker (unchanged), writes
//! and commits. Then A is let go. Without the lease fence A sent its plan's writes again (a
//! duplicate `PATCH /users/{id}`) before its commit was refused; with it, A writes nothing and
//! lets the delivery go.
//!
//! Deterministic: B can only receive once the queue's lease of A's receive has ended, which is
//! after the end of the lease A keeps (taken before its receive was sent), and A is let go only
//! after B has finished; no step waits on a timer's outcome.

use crate::envelope;
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, StateStore};
use gatehouse_domain::target::{Screen, Screened, TargetName};
use gatehouse_engine::engine::{Engine, Handled, RetryPolicy};
use gatehouse_engine::worker::{Disposition, Worker, WorkerConfig};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_testkit::FakeLooker;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The visibility timeout of both processors: short, so the test does not wait long for A's
/// lease to lapse.
const VISIBILITY: Duration = Duration::from_secs(1);

/// An in-memory FIFO queue with SQS's lease rules: a group's oldest message is handed out only
/// while no message of the group is in flight; a received message is in flight for the
/// visibility asked for, under a receipt handle of that receive; `extend`, `ack` and `release`
/// need the current receipt of a message still in flight. Clones share the messages; each
/// processor has its own handle (`extend_fails`: this processor's extensions never get through).
#[derive(Clone)]
struct Fifo {
    state: Arc<Mutex<FifoState>>,
    extend_fails: bool,
}

#[derive(Default)]
struct FifoState {
    /// In send order.
    messages: Vec<Message>,
    receipts: u64,
    dead_letters: Vec<String>,
    abandoned: Vec<String>,
    /// Extensions that got through.
    extended: usize,
}

struct Message {
    group: String,
    body: String,
    receives: u32,
    /// The current receipt handle and the end of its lease.
    lease: Option<(String, Instant)>,
}

impl Fifo {
    fn new() -> Self {
        Fifo {
            state: Arc::default(),
            extend_fails: false,
        }
    }

    fn handle(&self, extend_fails: bool) -> Self {
        Fifo {
            state: self.state.clone(),
            extend_fails,
        }
    }

    fn send(&self, env: &gatehouse_domain::envelope::Envelope) {
        self.state.lock().unwrap().messages.push(Message {
            group: env.subject.key.clone(),
            body: env.to_json(),
            receives: 0,
            lease: None,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FifoState> {
        self.state.lock().unwrap()
    }
}

fn invalid(receipt: &str) -> BackendError {
    BackendError::new(
        "receipt handle is not the current one of a message in flight",
        receipt.to_string(),
    )
}

impl FifoState {
    fn in_flight(&mut self, receipt: &str, now: Instant) -> Option<&mut Message> {
        self.messages
            .iter_mut()
            .find(|m| matches!(&m.lease, Some((r, until)) if r == receipt && *until > now))
    }
}

impl QueueConsumer for Fifo {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        let now = Instant::now();
        let mut s = self.lock();
        let mut busy: HashMap<String, bool> = HashMap::new();
        for m in &s.messages {
            let flying = m.lease.as_ref().is_some_and(|(_, until)| *until > now);
            *busy.entry(m.group.clone()).or_default() |= flying;
        }
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for i in 0..s.messages.len() {
            let group = s.messages[i].group.clone();
            if out.len() >= max || busy[&group] || seen.contains(&group) {
                seen.push(group);
                continue;
            }
            seen.push(group);
            s.receipts += 1;
            let receipt = format!("r{}", s.receipts);
            let m = &mut s.messages[i];
            m.receives += 1;
            m.lease = Some((receipt.clone(), now + visibility));
            out.push(Delivery {
                receipt,
                attempt: m.receives,
                body: m.body.clone(),
            });
        }
        Ok(out)
    }

    async fn ack(&self, d: &Delivery) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut s = self.lock();
        s.in_flight(&d.receipt, now).ok_or_else(|| invalid(&d.receipt))?;
        s.messages
            .retain(|m| !matches!(&m.lease, Some((r, _)) if *r == d.receipt));
        Ok(())
    }

    async fn release(&self, d: &Delivery, delay: Duration) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut s = self.lock();
        let m = s.in_flight(&d.receipt, now).ok_or_else(|| invalid(&d.receipt))?;
        m.lease = Some((d.receipt.clone(), now + delay));
        Ok(())
    }

    async fn dead_letter(&self, d: &Delivery, _reason: &str) -> Result<(), BackendError> {
        self.ack(d).await?;
        self.lock().dead_letters.push(d.body.clone());
        Ok(())
    }

    async fn extend(&self, d: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        if self.extend_fails {
            return Err(BackendError::new("extension did not get through", "scripted"));
        }
        let now = Instant::now();
        let mut s = self.lock();
        let m = s.in_flight(&d.receipt, now).ok_or_else(|| invalid(&d.receipt))?;
        m.lease = Some((d.receipt.clone(), now + visibility));
        s.extended += 1;
        Ok(())
    }

    fn leases_can_lapse(&self) -> bool {
        true
    }

    async fn abandon(&self, d: &Delivery) {
        self.lock().abandoned.push(d.receipt.clone());
    }
}

/// A screen that holds the first plan that revokes until it is opened: the processor has read
/// and planned, and is about to write.
#[derive(Clone)]
struct Gate {
    arrived: tokio::sync::watch::Sender<bool>,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            arrived: tokio::sync::watch::Sender::new(false),
            open: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Screen for Gate {
    fn withhold(&self, _: &Screened<'_>) -> Option<String> {
        None
    }

    fn prepare_revocations(
        &self,
        _target: TargetName,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.arrived.send_replace(true);
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
        })
    }
}

fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 1,
        max_attempts: 1,
        visibility_timeout: VISIBILITY,
        poll_interval: Duration::from_millis(50),
        sweep_interval: Duration::from_secs(3600),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_whose_lease_lapsed_writes_nothing_for_the_person_the_other_now_handles() {
    let fake = FakeLooker::start().await;
    let user = fake.add_user("lease1@example.com", "Lea", "Se");
    fake.add_session(&user);
    let dir = tempfile::tempdir().unwrap();
    // One state store, as two processor replicas share one (PostgreSQL in production).
    let store = Sqlite::open(dir.path()).await.unwrap();
    let retry = RetryPolicy {
        retries: 1,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(5),
    };
    let policy = Arc::new(Policy::default());
    let gate = Gate::new();
    let a = Engine::new(
        store.clone(),
        Some(crate::looker_client(&fake)),
        policy.clone(),
        retry.clone(),
    )
    .with_screen(Arc::new(gate.clone()));
    let b = Engine::new(store.clone(), Some(crate::looker_client(&fake)), policy, retry);
    let queue = Fifo::new();
    let env = envelope("lease1");
    queue.send(&env);
    let a = Worker::new(queue.handle(true), Arc::new(a), config());
    let b = Worker::new(queue.handle(false), Arc::new(b), config());

    let a = tokio::spawn(async move { a.run_once().await });
    // A has read Looker and planned the offboarding, and is about to write.
    let mut arrived = gate.arrived.subscribe();
    arrived.wait_for(|a| *a).await.unwrap();
    assert_eq!(fake.write_calls(), 0, "A is held before its first write");

    // B gets the message once A's lease has lapsed, and handles it to the end.
    let deadline = Instant::now() + Duration::from_secs(60);
    let by_b = loop {
        let got = b.run_once().await.expect("B's queue calls");
        if !got.is_empty() {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never handed the message to B"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        matches!(by_b.as_slice(), [Disposition::Acked(Handled::Applied { writes })] if *writes > 0),
        "B offboarded the person: {by_b:?}"
    );
    let after_b = fake.write_calls();

    // A goes on from its old plan.
    gate.open.send_replace(true);
    let by_a = a.await.expect("A's task");

    let writes: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.is_write)
        .map(|c| format!("{} {} {}", c.method, c.path, c.body))
        .collect();
    let mut unique = writes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        writes.len(),
        unique.len(),
        "A wrote for the person B had handled, from its stale plan: {writes:#?}"
    );
    assert_eq!(fake.write_calls(), after_b, "no write after B's: {writes:#?}");
    assert!(fake.user(&user).unwrap().is_disabled);
    match by_a {
        Ok(d) => assert!(
            matches!(d.as_slice(), [Disposition::Abandoned { reason }] if reason.contains("lease")),
            "A let the delivery go: {d:?}"
        ),
        Err(e) => panic!("A's delivery was not let go: {e}"),
    }
    {
        let s = queue.lock();
        assert!(s.messages.is_empty(), "B's ack removed the message");
        assert!(s.dead_letters.is_empty(), "nothing dead-lettered");
        assert_eq!(s.abandoned, ["r1"], "A abandoned its own receipt, nothing else");
    }
    assert!(
        store.is_processed(&env.id).await.unwrap(),
        "B's commit is the envelope's"
    );
}

/// The other side: work that outlives its first lease but whose extensions get through keeps
/// writing. A is held before its first write until three extensions got through (past the end
/// of the lease of its receive), then writes and acks. (Its last extension leaves it three
/// quarters of a visibility before a write would be refused: a machine stalled that long between
/// the third extension and A's write would rightly refuse it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_whose_extensions_get_through_writes_after_its_first_lease_ended() {
    const LONGER: Duration = Duration::from_secs(2);
    let fake = FakeLooker::start().await;
    let user = fake.add_user("lease2@example.com", "Lea", "Se");
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    let retry = RetryPolicy {
        retries: 1,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(5),
    };
    let gate = Gate::new();
    let a = Engine::new(
        store.clone(),
        Some(crate::looker_client(&fake)),
        Arc::new(Policy::default()),
        retry,
    )
    .with_screen(Arc::new(gate.clone()));
    let queue = Fifo::new();
    let env = envelope("lease2");
    queue.send(&env);
    let cfg = WorkerConfig {
        visibility_timeout: LONGER,
        ..config()
    };
    let a = Worker::new(queue.handle(false), Arc::new(a), cfg);
    let received = Instant::now();
    let a = tokio::spawn(async move { a.run_once().await });
    let mut arrived = gate.arrived.subscribe();
    arrived.wait_for(|a| *a).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while queue.lock().extended < 3 {
        assert!(Instant::now() < deadline, "A never extended its lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        Instant::now() >= received + LONGER,
        "three extensions, each when half the lease is left, end after the first lease"
    );
    gate.open.send_replace(true);
    let done = a.await.expect("A's task").expect("A's queue calls");
    assert!(
        matches!(done.as_slice(), [Disposition::Acked(Handled::Applied { writes })] if *writes > 0),
        "A wrote under its extended lease: {done:?}"
    );
    assert!(fake.user(&user).unwrap().is_disabled);
    assert!(queue.lock().messages.is_empty(), "acked");
    assert!(queue.lock().abandoned.is_empty());
}
