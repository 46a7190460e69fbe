//! The SQS backend against a real SQS API (moto on loopback, started by `make test` through
//! `scripts/moto.sh`; `GATEHOUSE_TEST_MOTO_URL` points here). Each test creates its own queues.

use crate::queue_contract::{self, Capabilities, DeadLettered, DeadLetters, envelope};
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Builder, Credentials, Region};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{QueueConsumer, QueueProducer};
use gatehouse_store::sqs::{DEAD_LETTER_REASON_ATTRIBUTE, SqsQueue};
use std::time::Duration;
use tokio::time::Instant;

/// A secret that must never show up in an error.
const SECRET: &str = "testing-secret-d0-not-leak";
const MAX_RECEIVES: u32 = 2;

const CAPS: Capabilities = Capabilities {
    ordered: false,
    native_redrive_after: Some(MAX_RECEIVES),
    visibility: Duration::from_secs(2),
    // Long poll of one second plus whole-second timeouts.
    slack: Duration::from_millis(1500),
};
const FIFO_CAPS: Capabilities = Capabilities {
    ordered: true,
    ..CAPS
};

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: the SQS tests need moto. Run `make test` \
             (it starts moto with scripts/moto.sh), or `scripts/moto.sh start` and \
             GATEHOUSE_TEST_MOTO_URL=http://127.0.0.1:5000 cargo test ..."
        )
    })
}

fn client() -> Client {
    let conf = Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", SECRET, None, None, "test"))
        .build();
    Client::from_conf(conf)
}

async fn create(client: &Client, name: &str, fifo: bool, redrive_to: Option<(&str, u32)>) -> String {
    let mut req = client.create_queue().queue_name(name);
    if fifo {
        req = req.attributes(QueueAttributeName::FifoQueue, "true");
    }
    if let Some((dlq_url, max_receives)) = redrive_to {
        let arn = client
            .get_queue_attributes()
            .queue_url(dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()
            .remove(&QueueAttributeName::QueueArn)
            .unwrap();
        let policy = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": max_receives.to_string(),
        });
        req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    req.send().await.expect("create queue").queue_url.unwrap()
}

struct Setup {
    queue: SqsQueue,
    dlq: Dlq,
}

/// A fresh queue with a dead-letter queue and a redrive policy after `MAX_RECEIVES`.
async fn setup(fifo: bool) -> Setup {
    setup_with(fifo, MAX_RECEIVES).await
}

async fn setup_with(fifo: bool, max_receives: u32) -> Setup {
    let client = client();
    let base = format!("gh-{}", uuid::Uuid::new_v4().simple());
    let suffix = if fifo { ".fifo" } else { "" };
    let dlq_url = create(&client, &format!("{base}-dlq{suffix}"), fifo, None).await;
    let url = create(
        &client,
        &format!("{base}{suffix}"),
        fifo,
        Some((&dlq_url, max_receives)),
    )
    .await;
    Setup {
        queue: SqsQueue::with_client(client.clone(), &url, Duration::from_secs(1)),
        dlq: Dlq { client, url: dlq_url },
    }
}

/// Reads (and deletes) what is on a dead-letter queue.
struct Dlq {
    client: Client,
    url: String,
}

impl DeadLetters for Dlq {
    async fn read(&self) -> Vec<DeadLettered> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap();
        let mut found = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let reason = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get(DEAD_LETTER_REASON_ATTRIBUTE))
                .and_then(|v| v.string_value.clone());
            self.client
                .delete_message()
                .queue_url(&self.url)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
            found.push(DeadLettered {
                body: m.body.unwrap_or_default(),
                reason,
            });
        }
        found
    }
}

macro_rules! contract {
    ($($name:ident: $fifo:expr, $caps:expr, $check:ident $(, dlq $dlq:tt)?;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let s = setup($fifo).await;
            contract!(@call s, $caps, $check $(, $dlq)?);
        }
    )*};
    (@call $s:ident, $caps:expr, $check:ident) => {
        queue_contract::$check($s.queue, $caps).await
    };
    (@call $s:ident, $caps:expr, $check:ident, $dlq:tt) => {
        queue_contract::$check($s.queue, $caps, &$s.dlq).await
    };
}

contract! {
    standard_delivers_every_published_message: false, CAPS, delivers_every_published_message;
    standard_ack_removes: false, CAPS, ack_removes;
    standard_unacked_comes_back_after_visibility: false, CAPS, unacked_comes_back_after_visibility;
    standard_extend_prevents_redelivery: false, CAPS, extend_prevents_redelivery;
    standard_dead_letter_moves_with_reason: false, CAPS, dead_letter_moves_with_reason, dlq x;
    standard_native_redrive_after_max_receives: false, CAPS, native_redrive_after_max_receives, dlq x;
    fifo_delivers_every_published_message: true, FIFO_CAPS, delivers_every_published_message;
    fifo_ack_removes: true, FIFO_CAPS, ack_removes;
    fifo_unacked_comes_back_after_visibility: true, FIFO_CAPS, unacked_comes_back_after_visibility;
    fifo_extend_prevents_redelivery: true, FIFO_CAPS, extend_prevents_redelivery;
    fifo_per_subject_order: true, FIFO_CAPS, per_subject_order;
    fifo_dead_letter_moves_with_reason: true, FIFO_CAPS, dead_letter_moves_with_reason, dlq x;
    fifo_native_redrive_after_max_receives: true, FIFO_CAPS, native_redrive_after_max_receives, dlq x;
}

// `release_with_delay` receives three times: the queue's redrive must allow that.
#[tokio::test]
async fn standard_release_with_delay() {
    let caps = Capabilities {
        native_redrive_after: Some(5),
        ..CAPS
    };
    queue_contract::release_with_delay(setup_with(false, 5).await.queue, caps).await;
}

#[tokio::test]
async fn fifo_release_with_delay() {
    let caps = Capabilities {
        native_redrive_after: Some(5),
        ..FIFO_CAPS
    };
    queue_contract::release_with_delay(setup_with(true, 5).await.queue, caps).await;
}

/// Receive until something arrives (or fail at the deadline).
async fn receive_some(q: &SqsQueue, visibility: Duration) -> Vec<gatehouse_domain::ports::Delivery> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = q.receive(10, visibility).await.unwrap();
        if !got.is_empty() {
            return got;
        }
        assert!(Instant::now() < deadline, "nothing received");
    }
}

#[tokio::test]
async fn fifo_publishes_the_subject_as_group_and_the_envelope_id_as_dedup_id() {
    let s = setup(true).await;
    let e = envelope("env-1", "okta:00u1", 1);
    s.queue.publish(std::slice::from_ref(&e)).await.unwrap();
    s.queue.publish(std::slice::from_ref(&e)).await.unwrap();
    let out = s
        .dlq
        .client
        .receive_message()
        .queue_url(s.queue.queue_url())
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let msgs = out.messages.unwrap();
    assert_eq!(msgs.len(), 1, "the replay was deduplicated by envelope id");
    let attrs = msgs[0].attributes.as_ref().unwrap();
    assert_eq!(attrs[&MessageSystemAttributeName::MessageGroupId], "okta:00u1");
    assert_eq!(
        attrs[&MessageSystemAttributeName::MessageDeduplicationId],
        "env-1"
    );
}

#[tokio::test]
async fn fifo_hashes_ids_sqs_does_not_accept() {
    let s = setup(true).await;
    let long_id = format!("scim:{}", "x".repeat(200));
    let subject = "graph:user with spaces/ünïcode";
    s.queue.publish(&[envelope(&long_id, subject, 1)]).await.unwrap();
    let got = receive_some(&s.queue, Duration::from_secs(30)).await;
    let env = gatehouse_domain::envelope::Envelope::from_json(&got[0].body).unwrap();
    assert_eq!(env.id.0, long_id, "the body keeps the real ids");
    assert_eq!(env.subject.key, subject);
}

#[tokio::test]
async fn bodies_that_are_not_envelopes_are_handed_out_as_they_are() {
    let s = setup(false).await;
    let raw = r#"{"version":"0","detail-type":"AWS API Call via CloudTrail","detail":{"eventName":"PutSecretValue"}}"#;
    s.dlq
        .client
        .send_message()
        .queue_url(s.queue.queue_url())
        .message_body(raw)
        .send()
        .await
        .unwrap();
    let got = receive_some(&s.queue, Duration::from_secs(30)).await;
    assert_eq!(got[0].body, raw);
    assert_eq!(got[0].attempt, 1);
    s.queue.dead_letter(&got[0], "not an envelope").await.unwrap();
    let dead = s.dlq.read().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, raw);
    assert_eq!(dead[0].reason.as_deref(), Some("not an envelope"));
}

#[tokio::test]
async fn fifo_holds_back_a_groups_next_messages_until_the_first_is_settled() {
    let s = setup(true).await;
    let q = s.queue;
    let batch: Vec<_> = (1..=3)
        .map(|i| envelope(&format!("g-{i}"), "okta:same", i))
        .collect();
    q.publish(&batch).await.unwrap();
    let first = receive_some(&q, Duration::from_secs(30)).await;
    assert_eq!(first.len(), 1, "one message of the group at a time");
    // Released for a retry: the later messages must not overtake it.
    q.release(&first[0], Duration::ZERO).await.unwrap();
    let again = receive_some(&q, Duration::from_secs(30)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        again[0].body, first[0].body,
        "the released message comes first again"
    );
    assert_eq!(again[0].attempt, 2);
    q.ack(&again[0]).await.unwrap();
    let second = receive_some(&q, Duration::from_secs(30)).await;
    assert_eq!(second.len(), 1);
    assert!(second[0].body.contains("\"g-2\""), "{}", second[0].body);
    // A clone shares the bookkeeping: acking through it frees the group.
    q.clone().ack(&second[0]).await.unwrap();
    let third = receive_some(&q, Duration::from_secs(30)).await;
    assert!(third[0].body.contains("\"g-3\""), "{}", third[0].body);
}

/// Two processes on one FIFO queue: `a` receives a group's two messages at once, hands out the
/// first and holds the second. Returns (`a`, a second consumer `b` with its own bookkeeping,
/// the first delivery).
async fn two_consumers_one_held(
    visibility: Duration,
) -> (SqsQueue, SqsQueue, gatehouse_domain::ports::Delivery) {
    let s = setup_with(true, 10).await;
    let a = s.queue;
    let b = SqsQueue::with_client(client(), a.queue_url(), Duration::from_secs(1));
    let batch: Vec<_> = (1..=2)
        .map(|i| envelope(&format!("h-{i}"), "okta:held", i))
        .collect();
    a.publish(&batch).await.unwrap();
    let first = receive_some(&a, visibility).await;
    assert_eq!(first.len(), 1, "one message of the group at a time");
    assert!(first[0].body.contains("\"h-1\""), "{}", first[0].body);
    (a, b, first.into_iter().next().unwrap())
}

fn second_of_group(got: &[gatehouse_domain::ports::Delivery]) -> usize {
    got.iter().filter(|d| d.body.contains("\"h-2\"")).count()
}

/// A delivery whose lease may have lapsed is abandoned: no call under its receipt (the message
/// stays invisible: nobody receives it before its lease ends), and the group's messages held
/// behind it are not handed out (SQS redelivers them in order after it).
#[tokio::test]
async fn fifo_an_abandoned_delivery_is_left_to_its_lease_and_its_group_is_not_handed_out() {
    let (a, b, first) = two_consumers_one_held(Duration::from_secs(30)).await;
    assert!(a.leases_can_lapse(), "the worker fences writes with the lease");
    a.abandon(&first).await;
    let mine = a.receive(10, Duration::from_secs(30)).await.unwrap();
    assert!(
        mine.is_empty(),
        "nothing of the group handed out after the abandon: {mine:?}"
    );
    let other = b.receive(10, Duration::from_secs(30)).await.unwrap();
    assert!(
        other.is_empty(),
        "the abandoned message is still invisible (nothing was sent under its receipt): {other:?}"
    );
}

#[tokio::test]
async fn fifo_held_messages_are_leased_with_the_one_in_flight() {
    let (a, b, first) = two_consumers_one_held(Duration::from_secs(4)).await;
    let t0 = Instant::now();
    // The work outlasts the first lease; the worker extends the delivery in flight, which must
    // extend the message held behind it too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.extend(&first, Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep_until(t0 + Duration::from_secs(5)).await;
    a.ack(&first).await.unwrap();
    let other = b.receive(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        second_of_group(&other),
        0,
        "the held message's lease ended while it was held: another consumer got it"
    );
    let mine = receive_some(&a, Duration::from_secs(30)).await;
    assert_eq!(second_of_group(&mine), 1, "the held message comes next: {mine:?}");
}

#[tokio::test]
async fn fifo_a_held_message_whose_lease_ended_is_never_handed_out() {
    let (a, b, first) = two_consumers_one_held(Duration::from_secs(2)).await;
    // No extension: the held message's lease ends and SQS gives it to the other consumer.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.ack(&first).await.unwrap();
    let other = receive_some(&b, Duration::from_secs(30)).await;
    assert_eq!(second_of_group(&other), 1, "{other:?}");
    let mine = a.receive(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        second_of_group(&mine),
        0,
        "a message another consumer holds was handed out again (it would run twice in parallel)"
    );
}

#[tokio::test]
async fn depth_counts_waiting_and_in_flight_messages() {
    let s = setup(false).await;
    assert_eq!(s.queue.depth().await.unwrap(), 0);
    let batch: Vec<_> = (0..3)
        .map(|i| envelope(&format!("d-{i}"), &format!("s{i}"), i))
        .collect();
    s.queue.publish(&batch).await.unwrap();
    assert_eq!(s.queue.depth().await.unwrap(), 3);
    let got = receive_some(&s.queue, Duration::from_secs(30)).await;
    assert_eq!(s.queue.depth().await.unwrap(), 3, "in flight still counts");
    for d in &got {
        s.queue.ack(d).await.unwrap();
    }
    assert_eq!(s.queue.depth().await.unwrap(), 3 - got.len() as u64);
}

#[tokio::test]
async fn dead_letter_without_a_redrive_policy_says_so() {
    let client = client();
    let url = create(
        &client,
        &format!("gh-{}", uuid::Uuid::new_v4().simple()),
        false,
        None,
    )
    .await;
    let q = SqsQueue::with_client(client, &url, Duration::from_secs(1));
    q.publish(&[envelope("x", "s", 1)]).await.unwrap();
    let got = receive_some(&q, Duration::from_secs(30)).await;
    let err = q.dead_letter(&got[0], "bad").await.unwrap_err();
    let chain = format!("{err}: {}", err.source);
    assert!(chain.contains("RedrivePolicy"), "{chain}");
    // The message stays on the queue for an operator to redrive.
    assert_eq!(q.depth().await.unwrap(), 1);
}

#[tokio::test]
async fn errors_keep_the_sdk_cause_and_never_the_credentials() {
    let client = client();
    let url = format!(
        "{}/123456789012/gh-missing-{}",
        moto_url(),
        uuid::Uuid::new_v4().simple()
    );
    let q = SqsQueue::with_client(client, &url, Duration::from_secs(1));
    let err = q.publish(&[envelope("x", "s", 1)]).await.unwrap_err();
    assert_eq!(err.context, "cannot publish to sqs");
    let mut chain = format!("{err} {err:?}");
    let mut cause: Option<&dyn std::error::Error> = Some(&*err.source);
    while let Some(c) = cause {
        chain.push_str(&format!(" {c} {c:?}"));
        cause = c.source();
    }
    assert!(
        chain.contains("NonExistentQueue") || chain.contains("does not exist"),
        "{chain}"
    );
    assert!(!chain.contains(SECRET), "credentials leaked into an error");
    assert!(!format!("{q:?}").contains(SECRET), "credentials in Debug");
    let err = q.receive(10, Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.context, "cannot receive from sqs");
    assert!(!format!("{err:?}").contains(SECRET));
}

/// Counts the SQS operations a client sends (from the `X-Amz-Target` header of the JSON protocol).
#[derive(Debug, Default, Clone)]
struct CountCalls(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>);

impl aws_sdk_sqs::config::Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_sdk_sqs::config::RuntimeComponents,
        _: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        let op = context
            .request()
            .headers()
            .get("x-amz-target")
            .unwrap_or("?")
            .trim_start_matches("AmazonSQS.")
            .to_string();
        *self.0.lock().unwrap().entry(op).or_default() += 1;
        Ok(())
    }
}

#[tokio::test]
async fn acks_waiting_together_are_deleted_in_one_batch_each_answered() {
    let s = setup(false).await;
    let calls = CountCalls::default();
    let counted = Client::from_conf(client().config().to_builder().interceptor(calls.clone()).build());
    let q = SqsQueue::with_client(counted, s.queue.queue_url(), Duration::from_secs(1));
    let envs: Vec<_> = (0..10)
        .map(|i| envelope(&format!("e{i}"), &format!("s{i}"), i))
        .collect();
    q.publish(&envs).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 10 {
        got.extend(receive_some(&q, Duration::from_secs(30)).await);
    }
    // A delivery whose receipt SQS does not know fails on its own; the others still succeed.
    let mut bogus = got[0].clone();
    bogus.receipt = "not-a-receipt-handle".into();
    let results = futures::future::join_all(got.iter().chain([&bogus]).map(|d| q.ack(d))).await;
    assert!(results[..10].iter().all(Result::is_ok), "{results:?}");
    assert!(
        results[10].is_err(),
        "an unknown receipt handle is reported, not swallowed"
    );
    assert_eq!(q.depth().await.unwrap(), 0, "every acked message is gone");
    let calls = calls.0.lock().unwrap().clone();
    assert_eq!(calls.get("DeleteMessage"), None, "{calls:?}");
    let batches = calls.get("DeleteMessageBatch").copied().unwrap_or(0);
    assert!(
        (1..=3).contains(&batches),
        "11 acks at once take a few batch calls, not 11: {calls:?}"
    );
}

// ---- dead-letter tools (`gatehouse dlq`) ----

/// List shows every dead letter (with the processor's reason, or none when SQS moved it by
/// itself) without taking it off the dead-letter queue; redrive sends one or all back to the
/// source queue and removes them from the dead-letter queue.
#[tokio::test]
async fn dead_letter_tools_list_and_redrive() {
    use gatehouse_store::dlq::Redrive;
    use gatehouse_store::sqs::SqsDeadLetters;
    let s = setup(false).await;
    let q = s.queue.clone();
    let envs: Vec<_> = (0..3)
        .map(|i| {
            envelope(
                &format!("dl-{i}-{}", uuid::Uuid::new_v4().simple()),
                &format!("s{i}"),
                i,
            )
        })
        .collect();
    q.publish(&envs[..2]).await.unwrap();
    for (i, d) in receive_n(&q, 2).await.iter().enumerate() {
        q.dead_letter(d, &format!("policy failed {i}")).await.unwrap();
    }
    // The third is moved by SQS itself after MAX_RECEIVES receives without an ack.
    q.publish(&envs[2..]).await.unwrap();
    for _ in 0..MAX_RECEIVES {
        receive_n(&q, 1).await;
    }

    let tools = SqsDeadLetters::new(q.clone(), None).await.unwrap();
    assert_eq!(
        tools.dead_letter_queue_url(),
        s.dlq.url,
        "found through the RedrivePolicy"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let l = tools.list().await.unwrap();
        if l.len() == 3 {
            break l;
        }
        assert!(l.len() < 3, "{l:?}");
        assert!(Instant::now() < deadline, "only {} dead letters listed", l.len());
        // Receiving drives SQS's own move to the dead-letter queue.
        assert!(q.receive(10, Duration::from_secs(2)).await.unwrap().is_empty());
    };
    let by_body = |e: &gatehouse_domain::envelope::Envelope| {
        listed
            .iter()
            .find(|m| Envelope::from_json(&m.body).is_ok_and(|b| b.id == e.id))
            .unwrap_or_else(|| panic!("{} not listed: {listed:?}", e.id.0))
            .clone()
    };
    let (first, moved) = (by_body(&envs[0]), by_body(&envs[2]));
    assert_eq!(first.reason.as_deref(), Some("policy failed 0"));
    assert_eq!(first.attempts, Some(1));
    assert!(first.at.is_some());
    assert_eq!(moved.reason, None, "moved by SQS: no reason recorded");
    assert_eq!(tools.list().await.unwrap().len(), 3, "listing takes nothing away");

    assert_eq!(
        tools.redrive(&Redrive::One("no-such-id".into())).await.unwrap(),
        0
    );
    assert_eq!(tools.redrive(&Redrive::One(first.id.clone())).await.unwrap(), 1);
    let back = receive_n(&q, 1).await;
    assert_eq!(Envelope::from_json(&back[0].body).unwrap().id, envs[0].id);
    assert_eq!(back[0].attempt, 1, "a fresh message on the source queue");
    q.ack(&back[0]).await.unwrap();
    let left = tools.list().await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|m| m.id != first.id));

    assert_eq!(tools.redrive(&Redrive::All).await.unwrap(), 2);
    assert!(tools.list().await.unwrap().is_empty());
    let mut ids: Vec<_> = Vec::new();
    while ids.len() < 2 {
        for d in receive_n(&q, 1).await {
            ids.push(Envelope::from_json(&d.body).unwrap().id.0);
            q.ack(&d).await.unwrap();
        }
    }
    ids.sort();
    let mut want = vec![envs[1].id.0.clone(), envs[2].id.0.clone()];
    want.sort();
    assert_eq!(ids, want);
}

/// Receive until at least `n` deliveries arrived (visibility 2 s), or fail after 15 s.
async fn receive_n(q: &SqsQueue, n: usize) -> Vec<gatehouse_domain::ports::Delivery> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} delivered", out.len());
        out.extend(q.receive(10, Duration::from_secs(2)).await.unwrap());
    }
    out
}
