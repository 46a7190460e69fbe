//! The Pub/Sub queue against Google's fake (`pstest`, started by `make test` through
//! `scripts/pubsub-emulator.sh`): the shared queue contract, then what is specific to Pub/Sub.
//!
//! Each test creates its own topic, subscription and dead-letter topic through the emulator's
//! admin endpoint (gRPC port + 1, or `GATEHOUSE_TEST_PUBSUB_ADMIN`), so tests are independent.

use crate::queue_contract::{self, Capabilities, DeadLettered, DeadLetters, envelope};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{Delivery, QueueConsumer, QueueProducer};
use gatehouse_store::pubsub::{
    DEAD_LETTER_ATTEMPTS_ATTRIBUTE, DEAD_LETTER_REASON_ATTRIBUTE, DEAD_LETTER_SUBSCRIPTION_ATTRIBUTE,
    ENVELOPE_ID_ATTRIBUTE, PubsubOptions, PubsubQueue,
};
use std::time::Duration;
use tokio::time::Instant;

const PROJECT: &str = "gatehouse-test";

/// Visibility is enforced by the client (see the module docs of `pubsub.rs`), so any value works;
/// the slack covers one `receive_wait` and the emulator's 10 ms delivery tick.
const PUBSUB: Capabilities = Capabilities {
    ordered: false,
    native_redrive_after: None,
    visibility: Duration::from_secs(1),
    slack: Duration::from_millis(500),
};

fn emulator() -> String {
    std::env::var("GATEHOUSE_TEST_PUBSUB_EMULATOR").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_PUBSUB_EMULATOR is not set: run `make test` (scripts/test.sh starts the \
             Pub/Sub emulator), or `scripts/pubsub-emulator.sh start` and \
             GATEHOUSE_TEST_PUBSUB_EMULATOR=127.0.0.1:8085"
        )
    })
}

fn admin() -> String {
    if let Ok(a) = std::env::var("GATEHOUSE_TEST_PUBSUB_ADMIN") {
        return a;
    }
    let grpc = emulator();
    let (host, port) = grpc
        .rsplit_once(':')
        .expect("GATEHOUSE_TEST_PUBSUB_EMULATOR is host:port");
    let port: u16 = port.parse().expect("GATEHOUSE_TEST_PUBSUB_EMULATOR port");
    format!("{host}:{}", port + 1)
}

async fn put(path: &str, body: serde_json::Value) {
    let url = format!("http://{}/v1/{path}", admin());
    let res = reqwest::Client::new()
        .put(&url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("emulator admin at {url} did not answer (run `make test`): {e}"));
    assert!(
        res.status().is_success(),
        "PUT {url}: {}",
        res.text().await.unwrap_or_default()
    );
}

/// A fresh topic with one subscription; returns (topic, subscription).
async fn fresh(prefix: &str) -> (String, String) {
    let name = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    let topic = format!("projects/{PROJECT}/topics/{name}");
    let sub = format!("projects/{PROJECT}/subscriptions/{name}");
    put(&topic, serde_json::json!({})).await;
    put(
        &sub,
        serde_json::json!({"topic": topic, "ackDeadlineSeconds": 10}),
    )
    .await;
    (topic, sub)
}

fn options(topic: &str, sub: &str) -> PubsubOptions {
    let mut o = PubsubOptions::new(topic, sub);
    o.emulator_host = Some(emulator());
    o.receive_wait = Duration::from_millis(200);
    o
}

/// A queue on fresh names with a dead-letter topic, and a reader of that dead-letter topic.
async fn queue_with_dlq() -> (PubsubQueue, DlqReader) {
    let (topic, sub) = fresh("q").await;
    let (dlq_topic, dlq_sub) = fresh("dlq").await;
    let mut o = options(&topic, &sub);
    o.dead_letter_topic = Some(dlq_topic.clone());
    let q = PubsubQueue::connect_with(o).await.expect("connect");
    let reader = PubsubQueue::connect_with(options(&dlq_topic, &dlq_sub))
        .await
        .expect("connect the dead-letter reader");
    (q, DlqReader(reader))
}

async fn queue() -> PubsubQueue {
    queue_with_dlq().await.0
}

/// Reads the dead-letter subscription; the reason comes from the message's attribute.
struct DlqReader(PubsubQueue);

impl DeadLetters for DlqReader {
    async fn read(&self) -> Vec<DeadLettered> {
        let mut out = Vec::new();
        for d in self
            .0
            .receive(10, Duration::from_secs(30))
            .await
            .expect("read dlq")
        {
            let attrs = self.0.attributes(&d).expect("held delivery has attributes");
            out.push(DeadLettered {
                body: d.body.clone(),
                reason: attrs.get(DEAD_LETTER_REASON_ATTRIBUTE).cloned(),
            });
            self.0.ack(&d).await.unwrap();
        }
        out
    }
}

async fn receive_one(q: &PubsubQueue, visibility: Duration, what: &str) -> Delivery {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(d) = q
            .receive(1, visibility)
            .await
            .expect("receive")
            .into_iter()
            .next()
        {
            return d;
        }
        assert!(Instant::now() < deadline, "{what}: nothing delivered in 10s");
    }
}

// ---- the shared contract ----

#[tokio::test]
async fn pubsub_delivers_every_published_message() {
    queue_contract::delivers_every_published_message(queue().await, PUBSUB).await;
}

#[tokio::test]
async fn pubsub_ack_removes() {
    queue_contract::ack_removes(queue().await, PUBSUB).await;
}

#[tokio::test]
async fn pubsub_unacked_comes_back_after_visibility() {
    queue_contract::unacked_comes_back_after_visibility(queue().await, PUBSUB).await;
}

#[tokio::test]
async fn pubsub_extend_prevents_redelivery() {
    queue_contract::extend_prevents_redelivery(queue().await, PUBSUB).await;
}

#[tokio::test]
async fn pubsub_release_with_delay() {
    queue_contract::release_with_delay(queue().await, PUBSUB).await;
}

#[tokio::test]
async fn pubsub_dead_letter_moves_with_reason() {
    let (q, dlq) = queue_with_dlq().await;
    queue_contract::dead_letter_moves_with_reason(q, PUBSUB, &dlq).await;
}

// ---- Pub/Sub specifics ----

/// Acks are sent in the background: `shutdown` flushes them before the process (here: its own
/// runtime) goes away, so a new consumer of the subscription does not get the acked message
/// again, while the message that was held unacked at shutdown is handed back at once (not after
/// the ack deadline).
#[tokio::test]
async fn shutdown_flushes_acks_and_hands_back_held_messages() {
    let (topic, sub) = fresh("shutdown").await;
    let acked = envelope("acked", "s1", 1);
    let held = envelope("held", "s2", 2);
    let opts = options(&topic, &sub);
    let (acked_id, held_id) = (acked.id.clone(), held.id.clone());
    // A "process" of its own: when its runtime is dropped, every background task dies with it.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let q = PubsubQueue::connect_with(opts).await.unwrap();
            q.publish(&[acked, held]).await.unwrap();
            let mut got = Vec::new();
            while got.len() < 2 {
                got.push(receive_one(&q, Duration::from_secs(600), "both").await);
            }
            for d in &got {
                if Envelope::from_json(&d.body).unwrap().id == acked_id {
                    q.ack(d).await.unwrap();
                }
            }
            q.shutdown().await;
            assert!(
                q.receive(10, Duration::from_secs(1)).await.is_err(),
                "receive after shutdown fails"
            );
        });
    })
    .join()
    .expect("the first consumer");

    let next = PubsubQueue::connect_with(options(&topic, &sub)).await.unwrap();
    let d = receive_one(&next, Duration::from_secs(60), "the held message, handed back").await;
    assert_eq!(Envelope::from_json(&d.body).unwrap().id, held_id);
    next.ack(&d).await.unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let got = next.receive(10, Duration::from_secs(60)).await.unwrap();
        assert!(got.is_empty(), "the acked message came back: {:?}", got[0].body);
    }
    next.shutdown().await;
}

/// A body that is not an envelope (a GCP audit-log entry on the audit subscription) is handed
/// out as it was published, with its attributes.
#[tokio::test]
async fn raw_bodies_are_delivered_verbatim() {
    let (topic, sub) = fresh("audit").await;
    let q = PubsubQueue::connect_with(options(&topic, &sub)).await.unwrap();
    let body = r#"{"protoPayload":{"methodName":"SetIamPolicy","authenticationInfo":{"principalEmail":"ädmin@example.com"}}}"#;
    let id = q
        .publish_raw(
            body,
            &[("logging.googleapis.com/timestamp", "2024-01-01T00:00:00Z")],
        )
        .await
        .unwrap();
    assert!(!id.is_empty(), "a server-assigned message id");
    let d = receive_one(&q, Duration::from_secs(60), "audit entry").await;
    assert_eq!(d.body, body);
    assert_eq!(d.attempt, 1);
    assert_eq!(
        q.attributes(&d).unwrap()["logging.googleapis.com/timestamp"],
        "2024-01-01T00:00:00Z"
    );
    q.ack(&d).await.unwrap();
    assert_eq!(q.in_flight(), 0);
    q.shutdown().await;
}

/// Published envelopes carry the `envelope_id` attribute; dead letters keep it and add the
/// reason, the attempt count and the subscription they came from.
#[tokio::test]
async fn dead_letters_carry_reason_attempts_and_origin() {
    let (q, dlq) = queue_with_dlq().await;
    let env = envelope("poison-1", "s1", 1);
    q.publish(std::slice::from_ref(&env)).await.unwrap();
    let d = receive_one(&q, Duration::from_secs(60), "first").await;
    assert_eq!(q.attributes(&d).unwrap()[ENVELOPE_ID_ATTRIBUTE], "poison-1");
    q.dead_letter(&d, "bad envelope").await.unwrap();
    assert_eq!(q.in_flight(), 0, "the original is acked");
    let dead = receive_one(&dlq.0, Duration::from_secs(60), "dead letter").await;
    let attrs = dlq.0.attributes(&dead).unwrap();
    assert_eq!(dead.body, d.body);
    assert_eq!(attrs[DEAD_LETTER_REASON_ATTRIBUTE], "bad envelope");
    assert_eq!(attrs[DEAD_LETTER_ATTEMPTS_ATTRIBUTE], "1");
    assert_eq!(attrs[DEAD_LETTER_SUBSCRIPTION_ATTRIBUTE], q.subscription());
    assert_eq!(attrs[ENVELOPE_ID_ATTRIBUTE], "poison-1");
    dlq.0.ack(&dead).await.unwrap();
    q.shutdown().await;
    dlq.0.shutdown().await;
}

/// Without a dead-letter topic, `dead_letter` fails and keeps the message, rather than dropping
/// it.
#[tokio::test]
async fn dead_letter_without_a_topic_fails_and_keeps_the_message() {
    let (topic, sub) = fresh("nodlq").await;
    let q = PubsubQueue::connect_with(options(&topic, &sub)).await.unwrap();
    q.publish(&[envelope("kept", "s1", 1)]).await.unwrap();
    let d = receive_one(&q, Duration::from_secs(60), "first").await;
    let e = q.dead_letter(&d, "poison").await.unwrap_err();
    assert!(e.to_string().contains("dead-letter"), "{e}");
    assert_eq!(q.in_flight(), 1, "still held");
    q.release(&d, Duration::ZERO).await.unwrap();
    let again = receive_one(&q, Duration::from_secs(60), "kept").await;
    assert_eq!(again.attempt, 2);
    q.ack(&again).await.unwrap();
    q.shutdown().await;
}

/// A receipt from an earlier delivery whose lease lapsed acks nothing: the redelivery stays in
/// flight until its own receipt is acked.
#[tokio::test]
async fn a_stale_receipt_does_not_ack_the_redelivery() {
    let (topic, sub) = fresh("stale").await;
    let q = PubsubQueue::connect_with(options(&topic, &sub)).await.unwrap();
    q.publish(&[envelope("stale", "s1", 1)]).await.unwrap();
    let first = receive_one(&q, Duration::from_millis(300), "first").await;
    let second = receive_one(&q, Duration::from_secs(60), "redelivery").await;
    assert_eq!(second.attempt, 2);
    assert_ne!(first.receipt, second.receipt);
    q.ack(&first).await.unwrap();
    assert_eq!(q.in_flight(), 1, "the stale receipt acked nothing");
    q.ack(&second).await.unwrap();
    assert_eq!(q.in_flight(), 0);
    q.shutdown().await;
}

/// The worker fences writes with the lease it confirmed: an extension of a delivery that is no
/// longer held (its deadline passed and it was handed back) must fail, not answer `Ok`. An
/// abandoned delivery is handed back at once and comes again.
#[tokio::test]
async fn extending_a_delivery_no_longer_held_fails_and_an_abandoned_one_comes_back() {
    let (topic, sub) = fresh("lease").await;
    let q = PubsubQueue::connect_with(options(&topic, &sub)).await.unwrap();
    assert!(q.leases_can_lapse());
    q.publish(&[envelope("lease", "s1", 1)]).await.unwrap();
    let first = receive_one(&q, Duration::from_secs(60), "first").await;
    q.extend(&first, Duration::from_secs(60))
        .await
        .expect("a held delivery is extended");
    q.abandon(&first).await;
    assert_eq!(q.in_flight(), 0, "abandoned: handed back");
    let e = q
        .extend(&first, Duration::from_secs(60))
        .await
        .expect_err("no longer held");
    assert!(e.to_string().contains("extend"), "{e}");
    let again = receive_one(&q, Duration::from_secs(60), "after the abandon").await;
    assert_ne!(again.receipt, first.receipt);
    q.ack(&again).await.unwrap();
    q.shutdown().await;
}

/// `publish` succeeds only once the server confirmed every message: a topic that does not
/// exist is an error, not a silent drop.
#[tokio::test]
async fn publish_to_a_missing_topic_fails() {
    let q = PubsubQueue::connect_with(options(
        &format!(
            "projects/{PROJECT}/topics/missing-{}",
            uuid::Uuid::new_v4().simple()
        ),
        &format!("projects/{PROJECT}/subscriptions/unused"),
    ))
    .await
    .unwrap();
    let e = q.publish(&[envelope("lost", "s1", 1)]).await.unwrap_err();
    assert!(e.to_string().contains("publish"), "{e}");
    q.publish(&[]).await.expect("an empty batch is a no-op");
}

// ---- dead-letter tools (`gatehouse dlq`) ----

/// List shows what the processor dead-lettered (reason, attempts, body) and leaves it on the
/// dead-letter subscription; redrive publishes one or all back to the source topic (an envelope
/// as an envelope, another body with its original attributes) and acks them on the dead letters.
#[tokio::test]
async fn dead_letter_tools_list_and_redrive() {
    use gatehouse_store::dlq::Redrive;
    use gatehouse_store::pubsub::PubsubDeadLetters;
    let (topic, sub) = fresh("q").await;
    let (dlq_topic, dlq_sub) = fresh("dlq").await;
    let mut o = options(&topic, &sub);
    o.dead_letter_topic = Some(dlq_topic.clone());
    let q = PubsubQueue::connect_with(o).await.unwrap();
    let env = envelope(&format!("dl-{}", uuid::Uuid::new_v4().simple()), "s1", 1);
    q.publish(std::slice::from_ref(&env)).await.unwrap();
    q.publish_raw("not an envelope", &[("origin", "test")])
        .await
        .unwrap();
    for _ in 0..2 {
        let d = receive_one(&q, Duration::from_secs(30), "to dead-letter").await;
        let reason = if d.body == "not an envelope" {
            "unparseable"
        } else {
            "policy failed"
        };
        q.dead_letter(&d, reason).await.unwrap();
    }

    let tools = PubsubDeadLetters::connect(&topic, &dlq_sub, Some(&emulator()))
        .await
        .unwrap();
    let listed = tools.list().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let good = listed
        .iter()
        .find(|m| m.body != "not an envelope")
        .unwrap()
        .clone();
    let raw = listed
        .iter()
        .find(|m| m.body == "not an envelope")
        .unwrap()
        .clone();
    assert_eq!(Envelope::from_json(&good.body).unwrap().id, env.id);
    assert_eq!(good.reason.as_deref(), Some("policy failed"));
    assert_eq!(good.attempts, Some(1));
    assert_eq!(raw.reason.as_deref(), Some("unparseable"));
    assert_eq!(tools.list().await.unwrap().len(), 2, "listing takes nothing away");

    assert_eq!(
        tools.redrive(&Redrive::One("no-such-id".into())).await.unwrap(),
        0
    );
    assert_eq!(tools.redrive(&Redrive::One(good.id.clone())).await.unwrap(), 1);
    let back = receive_one(&q, Duration::from_secs(30), "redriven envelope").await;
    assert_eq!(Envelope::from_json(&back.body).unwrap().id, env.id);
    let attrs = q.attributes(&back).unwrap();
    assert_eq!(attrs[ENVELOPE_ID_ATTRIBUTE], env.id.0);
    assert!(!attrs.contains_key(DEAD_LETTER_REASON_ATTRIBUTE));
    q.ack(&back).await.unwrap();
    let left = tools.list().await.unwrap();
    assert_eq!(
        left.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![raw.id.clone()]
    );

    assert_eq!(tools.redrive(&Redrive::All).await.unwrap(), 1);
    let back = receive_one(&q, Duration::from_secs(30), "redriven raw body").await;
    assert_eq!(back.body, "not an envelope");
    let attrs = q.attributes(&back).unwrap();
    assert_eq!(
        attrs.get("origin").map(String::as_str),
        Some("test"),
        "original attributes kept"
    );
    assert!(
        !attrs.keys().any(|k| k.starts_with("gatehouse-dead-letter-")),
        "{attrs:?}"
    );
    q.ack(&back).await.unwrap();
    assert!(tools.list().await.unwrap().is_empty());
    tools.shutdown().await;
    q.shutdown().await;
}
