//! The queue contract: what the processor relies on from any `QueueProducer + QueueConsumer`.
//!
//! Each function takes a fresh, empty queue and panics when the backend breaks the property it
//! documents. Backends instantiate the suite in their own test module (the embedded SQLite queue
//! below; SQS standard and FIFO in `sqs.rs`; Pub/Sub in `pubsub.rs`), describing what they
//! support with [`Capabilities`] (the embedded rotation queue, processor → rotator, runs it too).
//! Waits poll with deadlines; no sleep goes beyond the timeout being tested.

use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::ports::{Delivery, QueueConsumer, QueueProducer};
use gatehouse_store::sqlite::Sqlite;
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// What a backend promises beyond the common contract.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Capabilities {
    /// One subject's messages come out in publish order, one in flight at a time (embedded
    /// queue per subject, SQS FIFO per message group, Pub/Sub with ordering keys).
    pub ordered: bool,
    /// The backend moves a message to its dead-letter store by itself once it was received this
    /// many times without an ack (SQS `maxReceiveCount`, Pub/Sub `max_delivery_attempts`).
    pub native_redrive_after: Option<u32>,
    /// The short visibility timeout the suite tests with (at least the backend's minimum and
    /// granularity: SQS whole seconds, Pub/Sub ack deadlines 10 s).
    pub visibility: Duration,
    /// Extra time the backend may take beyond a timeout before acting on it (long-poll wait,
    /// clock granularity).
    pub slack: Duration,
}

/// A message found in a backend's dead-letter store.
#[derive(Debug, Clone)]
pub(crate) struct DeadLettered {
    pub body: String,
    /// `None` when the backend moved it by itself (native redrive) and recorded no reason.
    pub reason: Option<String>,
}

/// Reads a backend's dead-letter store.
pub(crate) trait DeadLetters: Sync {
    /// Dead letters present now. May return only those not returned before (the suite
    /// accumulates), or all of them.
    fn read(&self) -> impl Future<Output = Vec<DeadLettered>> + Send;
}

/// An envelope for `subject`, with a fresh id unless one is given.
pub(crate) fn envelope(id: &str, subject: &str, secs: i64) -> Envelope {
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Manual,
        subject: Subject {
            key: subject.into(),
            email: Some(format!("{subject}@example.com")),
            display_name: None,
        },
        occurred_at: DateTime::from_timestamp(secs, 0).unwrap(),
        received_at: gatehouse_domain::clock::now(),
        event: IdentityEvent::UserActivated,
        profile: Default::default(),
        source_event_type: "contract".into(),
        raw: serde_json::Value::Null,
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn id_of(d: &Delivery) -> String {
    Envelope::from_json(&d.body)
        .unwrap_or_else(|e| panic!("delivery body is not the published envelope: {e}: {}", d.body))
        .id
        .0
}

/// Receive until `want` returns something or `deadline` passes; deliveries not wanted fail.
async fn receive_one<Q: QueueConsumer>(
    q: &Q,
    visibility: Duration,
    deadline: Instant,
    what: &str,
) -> Delivery {
    loop {
        let got = q.receive(10, visibility).await.expect("receive");
        assert!(got.len() <= 1, "{what}: expected one delivery, got {}", got.len());
        if let Some(d) = got.into_iter().next() {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: nothing delivered before the deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keep receiving until `until`, failing on any delivery.
async fn assert_nothing_until<Q: QueueConsumer>(q: &Q, visibility: Duration, until: Instant, what: &str) {
    while Instant::now() < until {
        let got = q.receive(10, visibility).await.expect("receive");
        assert!(
            got.is_empty(),
            "{what}: got {:?}",
            got.iter().map(|d| &d.body).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every published envelope is delivered (at least once), intact, and acked deliveries are gone.
/// Publishes more than one SQS batch (ten) over distinct subjects.
pub(crate) async fn delivers_every_published_message<Q>(q: Q, caps: Capabilities)
where
    Q: QueueProducer + QueueConsumer + Clone,
{
    let published: Vec<Envelope> = (0..23)
        .map(|i| envelope(&unique("all"), &unique("subject"), 1_700_000_000 + i))
        .collect();
    q.publish(&published).await.expect("publish");
    let want: BTreeSet<String> = published.iter().map(|e| e.id.0.clone()).collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20) + caps.slack;
    while seen != want {
        assert!(
            Instant::now() < deadline,
            "only {} of {} messages delivered",
            seen.len(),
            want.len()
        );
        for d in q.receive(10, Duration::from_secs(30)).await.expect("receive") {
            let env = Envelope::from_json(&d.body).expect("body is the envelope");
            let original = published.iter().find(|e| e.id == env.id).expect("a published id");
            assert_eq!(env.subject.key, original.subject.key);
            assert_eq!(env.occurred_at, original.occurred_at);
            assert!(d.attempt >= 1);
            seen.insert(env.id.0);
            q.ack(&d).await.expect("ack");
        }
    }
}

/// An acked message is never delivered again, not even after its visibility timeout.
pub(crate) async fn ack_removes<Q>(q: Q, caps: Capabilities)
where
    Q: QueueProducer + QueueConsumer + Clone,
{
    q.publish(&[envelope(&unique("ack"), &unique("s"), 1)])
        .await
        .unwrap();
    let d = receive_one(
        &q,
        caps.visibility,
        Instant::now() + Duration::from_secs(10),
        "first",
    )
    .await;
    assert_eq!(d.attempt, 1);
    q.ack(&d).await.expect("ack");
    let until = Instant::now() + caps.visibility * 2 + caps.slack;
    assert_nothing_until(&q, caps.visibility, until, "an acked message came back").await;
}

/// A delivery neither acked nor released stays invisible for the visibility timeout, then comes
/// back with `attempt` incremented.
pub(crate) async fn unacked_comes_back_after_visibility<Q>(q: Q, caps: Capabilities)
where
    Q: QueueProducer + QueueConsumer + Clone,
{
    let env = envelope(&unique("unacked"), &unique("s"), 1);
    q.publish(std::slice::from_ref(&env)).await.unwrap();
    let first = receive_one(
        &q,
        caps.visibility,
        Instant::now() + Duration::from_secs(10),
        "first",
    )
    .await;
    let t0 = Instant::now();
    assert_eq!(first.attempt, 1);
    let got = q.receive(10, caps.visibility).await.unwrap();
    assert!(got.is_empty(), "in flight, so not delivered twice at once");
    let again = receive_one(
        &q,
        caps.visibility,
        t0 + caps.visibility * 4 + caps.slack,
        "redelivery after the visibility timeout",
    )
    .await;
    assert!(
        t0.elapsed() + caps.slack >= caps.visibility,
        "came back after {:?}, before the visibility timeout {:?}",
        t0.elapsed(),
        caps.visibility
    );
    assert_eq!(id_of(&again), env.id.0);
    assert_eq!(again.attempt, 2, "the second delivery counts as attempt 2");
    q.ack(&again).await.expect("ack the redelivery");
}

/// `extend` keeps slow work invisible past the original visibility timeout, and the delivery can
/// still be acked afterwards.
pub(crate) async fn extend_prevents_redelivery<Q>(q: Q, caps: Capabilities)
where
    Q: QueueProducer + QueueConsumer + Clone,
{
    q.publish(&[envelope(&unique("slow"), &unique("s"), 1)])
        .await
        .unwrap();
    let d = receive_one(
        &q,
        caps.visibility,
        Instant::now() + Duration::from_secs(10),
        "first",
    )
    .await;
    let t0 = Instant::now();
    // Halfway through the lease (well inside the timeout under test), extend it.
    tokio::time::sleep_until(t0 + caps.visibility / 2).await;
    q.extend(&d, caps.visibility * 3).await.expect("extend");
    // Past the original timeout (by half of it plus the backend's slack): still invisible.
    let until = t0 + caps.visibility + caps.visibility / 2 + caps.slack;
    assert_nothing_until(&q, caps.visibility, until, "redelivered despite extend").await;
    q.ack(&d).await.expect("ack after extend");
}

/// One subject's messages are handed out in publish order, never two at once (the processor
/// works on a batch in parallel). Only for `caps.ordered` backends.
pub(crate) async fn per_subject_order<Q>(q: Q, caps: Capabilities)
where
    Q: QueueProducer + QueueConsumer + Clone,
{
    assert!(caps.ordered, "per_subject_order is only for ordered backends");
    let subject = unique("ordered");
    let batch: Vec<Envelope> = (1..=3)
        .map(|i| envelope(&unique(&format!("e{i}")), &subject, i))
        .collect();
    q.publish(&batch).await.unwrap();
    let mut order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20) + caps.slack;
    while order.len() < batch.len() {
        let what = format!("message {} of the subject", order.len() + 1);
        let d = receive_one(&q, Duration::from_secs(30), deadline, &what).await;
        // While it is in flight, the subject's next message is not handed out.
        let got = q.receive(10, Duration::from_secs(30)).await.unwrap();
        assert!(
            got.is_empty(),
            "a second message of the subject was handed out while one is in flight"
        );
        order.push(id_of(&d));
        q.ack(&d).await.unwrap();
    }
    let want: Vec<String> = batch.iter().map(|e| e.id.0.clone()).collect();
    assert_eq!(order, want, "per-subject publish order");
}

/// `release` gives a delivery back after the delay (not after its longer visibility timeout),
/// as a new attempt; a zero delay makes it available at once. Receives the message three times:
/// a backend with native redrive must allow at least that many.
pub(crate) async fn release_with_delay<Q>(q: Q, caps: Capabilities)
where
    Q: QueueProducer + QueueConsumer + Clone,
{
    assert!(
        caps.native_redrive_after.is_none_or(|n| n >= 3),
        "release_with_delay needs at least 3 receives before native redrive"
    );
    let long = Duration::from_secs(60);
    let env = envelope(&unique("released"), &unique("s"), 1);
    q.publish(std::slice::from_ref(&env)).await.unwrap();
    let d = receive_one(&q, long, Instant::now() + Duration::from_secs(10), "first").await;
    q.release(&d, caps.visibility).await.expect("release");
    let t0 = Instant::now();
    let got = q.receive(10, long).await.unwrap();
    assert!(got.is_empty(), "released with a delay, so not available at once");
    let again = receive_one(
        &q,
        long,
        t0 + caps.visibility * 4 + caps.slack,
        "after the release delay",
    )
    .await;
    assert!(
        t0.elapsed() + caps.slack >= caps.visibility,
        "back after {:?}, before the delay",
        t0.elapsed()
    );
    assert_eq!(id_of(&again), env.id.0);
    assert_eq!(again.attempt, 2);
    q.release(&again, Duration::ZERO).await.expect("release now");
    let third = receive_one(
        &q,
        long,
        Instant::now() + Duration::from_secs(5) + caps.slack,
        "zero delay",
    )
    .await;
    assert_eq!(third.attempt, 3);
    q.ack(&third).await.unwrap();
}

/// `dead_letter` takes the message off the queue and stores its body with the reason.
pub(crate) async fn dead_letter_moves_with_reason<Q, D>(q: Q, caps: Capabilities, store: &D)
where
    Q: QueueProducer + QueueConsumer + Clone,
    D: DeadLetters,
{
    let env = envelope(&unique("poison"), &unique("s"), 1);
    q.publish(std::slice::from_ref(&env)).await.unwrap();
    let d = receive_one(
        &q,
        caps.visibility,
        Instant::now() + Duration::from_secs(10),
        "first",
    )
    .await;
    let reason = "policy failed: no rule for department \"ünïcode\"";
    q.dead_letter(&d, reason).await.expect("dead_letter");
    let dead = wait_for_dead_letter(store, &d.body, Instant::now() + Duration::from_secs(10)).await;
    assert_eq!(dead.reason.as_deref(), Some(reason));
    let until = Instant::now() + caps.visibility * 2 + caps.slack;
    assert_nothing_until(&q, caps.visibility, until, "a dead-lettered message came back").await;
}

/// The backend dead-letters a message by itself after `native_redrive_after` receives without
/// an ack; it is never handed out for one more attempt. Only for backends that have it.
pub(crate) async fn native_redrive_after_max_receives<Q, D>(q: Q, caps: Capabilities, store: &D)
where
    Q: QueueProducer + QueueConsumer + Clone,
    D: DeadLetters,
{
    let max = caps
        .native_redrive_after
        .expect("native_redrive_after_max_receives needs a backend with native redrive");
    let env = envelope(&unique("redrive"), &unique("s"), 1);
    q.publish(std::slice::from_ref(&env)).await.unwrap();
    let mut body = String::new();
    for attempt in 1..=max {
        let deadline = Instant::now() + caps.visibility * 4 + caps.slack;
        let d = receive_one(&q, caps.visibility, deadline, &format!("receive {attempt}")).await;
        assert_eq!(d.attempt, attempt);
        body = d.body;
    }
    // Not acked: after the last lease ends the backend moves it; receiving drives that in SQS.
    let deadline = Instant::now() + caps.visibility * 4 + caps.slack + Duration::from_secs(5);
    let mut found = Vec::new();
    loop {
        let got = q.receive(10, caps.visibility).await.unwrap();
        assert!(
            got.is_empty(),
            "handed out again after {max} receives (attempt {})",
            got[0].attempt
        );
        found.extend(store.read().await);
        if let Some(dead) = found.iter().find(|f| f.body == body) {
            assert_eq!(id_of_body(&dead.body), env.id.0);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not moved to the dead-letter store after {max} receives"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn id_of_body(body: &str) -> String {
    Envelope::from_json(body)
        .expect("dead letter body is the envelope")
        .id
        .0
}

async fn wait_for_dead_letter<D: DeadLetters>(store: &D, body: &str, deadline: Instant) -> DeadLettered {
    let mut found = Vec::new();
    loop {
        found.extend(store.read().await);
        if let Some(d) = found.iter().find(|f| f.body == body) {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "message not found in the dead-letter store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the embedded SQLite queue ----

const EMBEDDED: Capabilities = Capabilities {
    ordered: true,
    native_redrive_after: None,
    visibility: Duration::from_millis(400),
    slack: Duration::from_millis(100),
};

async fn embedded() -> (tempfile::TempDir, Sqlite) {
    let dir = tempfile::tempdir().unwrap();
    let db = Sqlite::open(dir.path()).await.unwrap();
    (dir, db)
}

impl DeadLetters for Sqlite {
    async fn read(&self) -> Vec<DeadLettered> {
        self.dead_letters()
            .await
            .unwrap()
            .into_iter()
            .map(|d| DeadLettered {
                body: d.body,
                reason: Some(d.reason),
            })
            .collect()
    }
}

#[tokio::test]
async fn embedded_delivers_every_published_message() {
    let (_d, q) = embedded().await;
    delivers_every_published_message(q, EMBEDDED).await;
}

#[tokio::test]
async fn embedded_ack_removes() {
    let (_d, q) = embedded().await;
    ack_removes(q, EMBEDDED).await;
}

#[tokio::test]
async fn embedded_unacked_comes_back_after_visibility() {
    let (_d, q) = embedded().await;
    unacked_comes_back_after_visibility(q, EMBEDDED).await;
}

#[tokio::test]
async fn embedded_extend_prevents_redelivery() {
    let (_d, q) = embedded().await;
    extend_prevents_redelivery(q, EMBEDDED).await;
}

#[tokio::test]
async fn embedded_per_subject_order() {
    let (_d, q) = embedded().await;
    per_subject_order(q, EMBEDDED).await;
}

#[tokio::test]
async fn embedded_release_with_delay() {
    let (_d, q) = embedded().await;
    release_with_delay(q, EMBEDDED).await;
}

#[tokio::test]
async fn embedded_dead_letter_moves_with_reason() {
    let (_d, q) = embedded().await;
    dead_letter_moves_with_reason(q.clone(), EMBEDDED, &q).await;
}

/// Issue 12, item 4: the embedded rotation queue (processor → rotator) keeps the same
/// contract; a request stands alone, so no per-subject order is promised.
const EMBEDDED_ROTATION: Capabilities = Capabilities {
    ordered: false,
    ..EMBEDDED
};

#[tokio::test]
async fn embedded_rotation_queue_delivers_every_published_message() {
    let (_d, db) = embedded().await;
    delivers_every_published_message(db.rotation_queue(), EMBEDDED_ROTATION).await;
}

#[tokio::test]
async fn embedded_rotation_queue_ack_removes() {
    let (_d, db) = embedded().await;
    ack_removes(db.rotation_queue(), EMBEDDED_ROTATION).await;
}

#[tokio::test]
async fn embedded_rotation_queue_unacked_comes_back_after_visibility() {
    let (_d, db) = embedded().await;
    unacked_comes_back_after_visibility(db.rotation_queue(), EMBEDDED_ROTATION).await;
}

#[tokio::test]
async fn embedded_rotation_queue_extend_prevents_redelivery() {
    let (_d, db) = embedded().await;
    extend_prevents_redelivery(db.rotation_queue(), EMBEDDED_ROTATION).await;
}

#[tokio::test]
async fn embedded_rotation_queue_release_with_delay() {
    let (_d, db) = embedded().await;
    release_with_delay(db.rotation_queue(), EMBEDDED_ROTATION).await;
}

#[tokio::test]
async fn embedded_rotation_queue_dead_letter_moves_with_reason() {
    let (_d, db) = embedded().await;
    dead_letter_moves_with_reason(db.rotation_queue(), EMBEDDED_ROTATION, &db).await;
}

/// The rotation queue is its own queue: what is published to it never reaches the events
/// queue the processor consumes, and the other way round.
#[tokio::test]
async fn embedded_rotation_queue_is_separate_from_the_events_queue() {
    let (_d, db) = embedded().await;
    let rotation = db.rotation_queue();
    rotation.publish(&[envelope("rot-1", "s", 1)]).await.unwrap();
    db.publish(&[envelope("evt-1", "s", 1)]).await.unwrap();
    let events = db.receive(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(events.iter().map(id_of).collect::<Vec<_>>(), ["evt-1"]);
    let requests = rotation.receive(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(requests.iter().map(id_of).collect::<Vec<_>>(), ["rot-1"]);
}
