//! Google Pub/Sub: the queue backend past one machine on GCP (and the reader of the GCP audit-log
//! subscription).
//!
//! Publishing goes through Google's `Publisher` (gRPC), with the envelope JSON as data, the
//! attribute `envelope_id`, and the subject key as ordering key; `publish` returns only once
//! every message has a server-assigned id.
//!
//! Receiving uses the crate's streaming pull (`Subscriber::subscribe`): it is the only pull the
//! crate exposes publicly (its unary `Pull`, `Acknowledge` and `ModifyAckDeadline` are
//! crate-private), and it is what Google recommends for a long-running consumer. The stream keeps
//! every message it handed out under lease (it extends ack deadlines by itself), so the queue's
//! visibility is enforced here: each delivery handed out by [`PubsubQueue::receive`] is held with
//! a local deadline; `extend` moves the deadline, `release(delay)` sets it to `delay`, and a
//! reaper task nacks (= `ModifyAckDeadline` 0) every delivery whose deadline passed, so Pub/Sub
//! redelivers it. If the process dies, the leases lapse and Pub/Sub redelivers after the stream's
//! ack deadline (`PubsubOptions::ack_deadline`).
//!
//! `Delivery::attempt` is Pub/Sub's `delivery_attempt` when the subscription has a dead-letter
//! policy (only then does Pub/Sub count); otherwise this process counts the deliveries of each
//! message id it saw, so a message redelivered to another process starts again at 1.
//!
//! A lease that passes anyway (the worker's extension came late) hands the message back, and
//! Pub/Sub may give it, or with ordering keys the key's next one, to another subscriber: so
//! this queue says its leases can lapse, `extend` of a delivery no longer held fails, and the
//! worker fences every write with the lease it last confirmed (`gatehouse_targets::lease`).
//!
//! Always call [`PubsubQueue::shutdown`] before exit: acks are sent in the background and are
//! only flushed by a clean shutdown of the stream.

use futures::future::join_all;
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, QueueProducer};
use google_cloud_pubsub::client::{Publisher, Subscriber};
use google_cloud_pubsub::model::Message;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior, handler::Handler};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Attribute carrying the envelope id of a published envelope.
pub const ENVELOPE_ID_ATTRIBUTE: &str = "envelope_id";
/// Attribute carrying the reason of a dead-lettered message.
pub const DEAD_LETTER_REASON_ATTRIBUTE: &str = "gatehouse-dead-letter-reason";
/// Attribute carrying the attempt count of a dead-lettered message.
pub const DEAD_LETTER_ATTEMPTS_ATTRIBUTE: &str = "gatehouse-dead-letter-attempts";
/// Attribute carrying the subscription a dead-lettered message was read from.
pub const DEAD_LETTER_SUBSCRIPTION_ATTRIBUTE: &str = "gatehouse-dead-letter-subscription";

/// Pub/Sub limits an attribute value to 1024 bytes.
const MAX_ATTRIBUTE_BYTES: usize = 1024;
/// How often held deliveries are checked for a passed deadline.
const REAP_EVERY: Duration = Duration::from_millis(100);
/// Per-message-id attempt counts are forgotten after this long without a delivery.
const ATTEMPTS_TTL: Duration = Duration::from_secs(6 * 60 * 60);

/// How to reach Pub/Sub and how to behave. `PubsubOptions::new(topic, subscription)` gives the
/// defaults.
#[derive(Debug, Clone)]
pub struct PubsubOptions {
    /// Full topic name `projects/P/topics/T` that `publish` writes to.
    pub topic: String,
    /// Full subscription name `projects/P/subscriptions/S` that `receive` pulls from.
    pub subscription: String,
    /// `host:port` of an emulator (anonymous credentials, plain HTTP/2); `None` = Google's endpoint
    /// with Application Default Credentials.
    pub emulator_host: Option<String>,
    /// Full topic name that `dead_letter` publishes to. Without it `dead_letter` fails and the
    /// message is left to come back.
    pub dead_letter_topic: Option<String>,
    /// Publish with ordering key = subject key (Pub/Sub delivers a key's messages in order when
    /// the subscription enables message ordering).
    pub ordering_keys: bool,
    /// How long `receive` waits for a first message before returning an empty batch.
    pub receive_wait: Duration,
    /// After a first message, how long `receive` waits for each further one to fill the batch.
    pub batch_linger: Duration,
    /// Flow control: messages the server may push to this process before they are acked.
    pub max_outstanding_messages: i64,
    /// The ack deadline the stream asks for and keeps extending (10 s to 600 s): how long after a
    /// crash Pub/Sub redelivers what this process held.
    pub ack_deadline: Duration,
    /// Publish calls that take longer fail with an error (the caller answers 503).
    pub publish_timeout: Duration,
}

impl PubsubOptions {
    pub fn new(topic: impl Into<String>, subscription: impl Into<String>) -> Self {
        PubsubOptions {
            topic: topic.into(),
            subscription: subscription.into(),
            emulator_host: None,
            dead_letter_topic: None,
            ordering_keys: true,
            receive_wait: Duration::from_secs(1),
            batch_linger: Duration::from_millis(25),
            max_outstanding_messages: 64,
            ack_deadline: Duration::from_secs(60),
            publish_timeout: Duration::from_secs(30),
        }
    }
}

/// A Pub/Sub topic (producer side) and subscription (consumer side). Cheap to clone.
#[derive(Clone)]
pub struct PubsubQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PubsubQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubsubQueue")
            .field("topic", &self.inner.opts.topic)
            .field("subscription", &self.inner.opts.subscription)
            .field("dead_letter_topic", &self.inner.opts.dead_letter_topic)
            .finish_non_exhaustive()
    }
}

struct Inner {
    opts: PubsubOptions,
    publisher: Publisher,
    dead_letter: Option<Publisher>,
    subscriber: Subscriber,
    /// Opened on the first `receive`, so a producer-only queue never pulls.
    stream: tokio::sync::Mutex<Option<MessageStream>>,
    shutdown_token: Mutex<Option<google_cloud_pubsub::subscriber::ShutdownToken>>,
    held: Mutex<Held>,
    closed: AtomicBool,
}

#[derive(Default)]
struct Held {
    next_seq: u64,
    /// Deliveries handed out and not yet acked, released to the server or dead-lettered.
    inflight: HashMap<String, InFlight>,
    /// Deliveries seen per message id (when Pub/Sub does not count them).
    attempts: HashMap<String, (u32, Instant)>,
}

struct InFlight {
    handler: Handler,
    until: Instant,
    message_id: String,
    attributes: HashMap<String, String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl PubsubQueue {
    /// `emulator_host: Some("127.0.0.1:8085")` → that endpoint with anonymous credentials;
    /// `None` → Google's endpoint with default credentials. No dead-letter topic: see
    /// [`PubsubQueue::connect_with`].
    pub async fn connect(
        topic: &str,
        subscription: &str,
        emulator_host: Option<&str>,
    ) -> Result<Self, BackendError> {
        let mut opts = PubsubOptions::new(topic, subscription);
        opts.emulator_host = emulator_host.map(str::to_string);
        Self::connect_with(opts).await
    }

    /// Build the clients. Connections are made lazily (on the first publish or receive).
    pub async fn connect_with(opts: PubsubOptions) -> Result<Self, BackendError> {
        let endpoint = opts.emulator_host.as_deref().map(emulator_endpoint);
        let publisher = build_publisher(&opts.topic, endpoint.as_deref()).await?;
        let dead_letter = match &opts.dead_letter_topic {
            Some(t) => Some(build_publisher(t, endpoint.as_deref()).await?),
            None => None,
        };
        let mut sb = Subscriber::builder();
        if let Some(ep) = &endpoint {
            sb = sb
                .with_endpoint(ep.clone())
                .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
        }
        let subscriber = sb
            .build()
            .await
            .map_err(|e| BackendError::new("cannot build the pubsub subscriber client", e))?;
        Ok(PubsubQueue {
            inner: Arc::new(Inner {
                opts,
                publisher,
                dead_letter,
                subscriber,
                stream: tokio::sync::Mutex::new(None),
                shutdown_token: Mutex::new(None),
                held: Mutex::new(Held::default()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    pub fn topic(&self) -> &str {
        &self.inner.opts.topic
    }

    pub fn subscription(&self) -> &str {
        &self.inner.opts.subscription
    }

    /// Deliveries handed out by `receive` and not yet acked, released or dead-lettered.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.held).inflight.len()
    }

    /// The Pub/Sub attributes of a delivery still held (e.g. `eventType` of a Secret Manager
    /// notification, `gatehouse-dead-letter-reason` on a dead-letter subscription).
    pub fn attributes(&self, delivery: &Delivery) -> Option<HashMap<String, String>> {
        lock(&self.inner.held)
            .inflight
            .get(&delivery.receipt)
            .map(|h| h.attributes.clone())
    }

    /// Stop the streaming pull cleanly: deliveries still held are nacked (Pub/Sub redelivers
    /// them), pending acks are flushed, and `receive` fails from now on. Publishing still works.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let held: Vec<InFlight> = lock(&self.inner.held).inflight.drain().map(|(_, v)| v).collect();
        for h in held {
            h.handler.nack();
        }
        let token = lock(&self.inner.shutdown_token).take();
        if let Some(token) = token {
            token.shutdown().await;
        }
        self.inner.stream.lock().await.take();
        self.inner.publisher.flush().await;
    }

    /// Publish one raw message (bodies that are not envelopes, dead-letter redrive, tests).
    /// Returns the server-assigned message id.
    pub async fn publish_raw(&self, data: &str, attributes: &[(&str, &str)]) -> Result<String, BackendError> {
        let msg = Message::new()
            .set_data(data.to_string())
            .set_attributes(attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.confirm(vec![(None, self.inner.publisher.publish(msg))])
            .await
            .map(|mut ids| ids.remove(0))
    }

    /// Await every publish, within the publish timeout. On a failure the paused ordering keys are
    /// resumed (the caller retries the whole batch; envelope ids make that idempotent).
    async fn confirm(
        &self,
        pending: Vec<(Option<String>, google_cloud_pubsub::publisher::PublishFuture)>,
    ) -> Result<Vec<String>, BackendError> {
        let (keys, futs): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
        let results = tokio::time::timeout(self.inner.opts.publish_timeout, join_all(futs))
            .await
            .map_err(|e| BackendError::new("pubsub publish timed out", e))?;
        let mut ids = Vec::with_capacity(results.len());
        let mut first_err = None;
        for (key, r) in keys.into_iter().zip(results) {
            match r {
                Ok(id) => ids.push(id),
                Err(e) => {
                    if let Some(k) = key {
                        self.inner.publisher.resume_publish(k);
                    }
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(crate::classify::pubsub_publish("pubsub publish failed", e)),
            None => Ok(ids),
        }
    }

    /// Open the stream if needed and start the reaper.
    fn open_stream(&self, slot: &mut Option<MessageStream>) {
        if slot.is_some() {
            return;
        }
        let stream = self
            .inner
            .subscriber
            .subscribe(self.inner.opts.subscription.clone())
            .set_max_lease(Duration::from_secs(24 * 60 * 60))
            .set_max_lease_extension(self.inner.opts.ack_deadline)
            .set_max_outstanding_messages(self.inner.opts.max_outstanding_messages)
            .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
            .build();
        *lock(&self.inner.shutdown_token) = Some(stream.shutdown_token());
        *slot = Some(stream);
        tokio::spawn(reap_until_closed(Arc::downgrade(&self.inner)));
    }

    fn hold(&self, msg: Message, handler: Handler, visibility: Duration) -> Delivery {
        let now = Instant::now();
        let mut held = lock(&self.inner.held);
        let attempt = match handler.delivery_attempt() {
            Some(n) if n > 0 => n as u32,
            _ => {
                let e = held.attempts.entry(msg.message_id.clone()).or_insert((0, now));
                e.0 += 1;
                e.1 = now;
                e.0
            }
        };
        held.next_seq += 1;
        let receipt = format!("{}#{}", msg.message_id, held.next_seq);
        let body = match String::from_utf8(msg.data.to_vec()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(messaging.message.id = %msg.message_id, "pubsub message data is not utf-8");
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        held.inflight.insert(
            receipt.clone(),
            InFlight {
                handler,
                until: now + visibility,
                message_id: msg.message_id,
                attributes: msg.attributes,
            },
        );
        Delivery {
            receipt,
            attempt,
            body,
        }
    }

    /// Move a held delivery's deadline. `false` when it is no longer held.
    fn set_deadline(&self, receipt: &str, until: Instant) -> bool {
        match lock(&self.inner.held).inflight.get_mut(receipt) {
            Some(h) => {
                h.until = until;
                true
            }
            None => false,
        }
    }

    fn take(&self, receipt: &str) -> Option<InFlight> {
        let mut held = lock(&self.inner.held);
        let h = held.inflight.remove(receipt)?;
        Some(h)
    }

    fn forget_attempts(&self, message_id: &str) {
        lock(&self.inner.held).attempts.remove(message_id);
    }
}

/// The dead-letter subscription of a Pub/Sub queue, for `gatehouse dlq`: list, show and redrive
/// (publish back to the source topic, then ack on the dead-letter subscription).
///
/// Pub/Sub has no way to look at messages without pulling them: listing pulls every message
/// the subscription has (holding them all) and then nacks them, so they stay on it.
#[derive(Clone, Debug)]
pub struct PubsubDeadLetters {
    /// topic = the source topic (redrive publishes there); subscription = the dead letters.
    reader: PubsubQueue,
}

impl PubsubDeadLetters {
    /// `source_topic`: where redriven messages go; `dead_letter_subscription`: a subscription on
    /// the dead-letter topic.
    pub async fn connect(
        source_topic: &str,
        dead_letter_subscription: &str,
        emulator_host: Option<&str>,
    ) -> Result<Self, BackendError> {
        let mut opts = PubsubOptions::new(source_topic, dead_letter_subscription);
        opts.emulator_host = emulator_host.map(str::to_string);
        opts.max_outstanding_messages = 10_000;
        opts.receive_wait = Duration::from_secs(2);
        Ok(PubsubDeadLetters {
            reader: PubsubQueue::connect_with(opts).await?,
        })
    }

    /// Pull until nothing more arrives; every delivery stays held.
    async fn scan(&self) -> Result<Vec<(String, Delivery)>, BackendError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        loop {
            let got = self.reader.receive(1_000, Duration::from_secs(600)).await?;
            if got.is_empty() {
                return Ok(out);
            }
            for d in got {
                let id = self.message_id(&d);
                if seen.insert(id.clone()) {
                    out.push((id, d));
                } else {
                    // A second copy (redelivered while held): give it back.
                    self.reader.release(&d, Duration::ZERO).await?;
                }
            }
        }
    }

    fn message_id(&self, d: &Delivery) -> String {
        lock(&self.reader.inner.held)
            .inflight
            .get(&d.receipt)
            .map(|h| h.message_id.clone())
            .unwrap_or_else(|| d.receipt.split('#').next().unwrap_or_default().to_string())
    }

    fn dead_message(&self, id: &str, d: &Delivery) -> crate::dlq::DeadMessage {
        let attrs = self.reader.attributes(d).unwrap_or_default();
        crate::dlq::DeadMessage {
            id: id.to_string(),
            at: None,
            attempts: attrs
                .get(DEAD_LETTER_ATTEMPTS_ATTRIBUTE)
                .and_then(|a| a.parse().ok()),
            reason: attrs.get(DEAD_LETTER_REASON_ATTRIBUTE).cloned(),
            body: d.body.clone(),
        }
    }

    /// Every dead letter (they stay on the subscription).
    pub async fn list(&self) -> Result<Vec<crate::dlq::DeadMessage>, BackendError> {
        let held = self.scan().await?;
        let out = held.iter().map(|(id, d)| self.dead_message(id, d)).collect();
        for (_, d) in &held {
            self.reader.release(d, Duration::ZERO).await?;
        }
        Ok(out)
    }

    /// Publish the chosen dead letters to the source topic (an envelope with its ordering key;
    /// another body as it is, with its original attributes), then ack them on the dead-letter
    /// subscription. Returns how many went back.
    pub async fn redrive(&self, which: &crate::dlq::Redrive) -> Result<usize, BackendError> {
        let held = self.scan().await?;
        let mut n = 0;
        for (id, d) in &held {
            if !which.wants(id) {
                self.reader.release(d, Duration::ZERO).await?;
                continue;
            }
            match Envelope::from_json(&d.body) {
                Ok(env) => self.reader.publish(std::slice::from_ref(&env)).await?,
                Err(_) => {
                    let attrs: Vec<(String, String)> = self
                        .reader
                        .attributes(d)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| !k.starts_with("gatehouse-dead-letter-"))
                        .collect();
                    let attrs: Vec<(&str, &str)> =
                        attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    self.reader.publish_raw(&d.body, &attrs).await?;
                }
            }
            self.reader.ack(d).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Flush acks and nack what is still held. Call before exit.
    pub async fn shutdown(&self) {
        self.reader.shutdown().await;
    }
}

impl Inner {
    /// Nack every held delivery whose deadline passed; forget stale attempt counts.
    fn reap(&self, now: Instant) -> usize {
        let mut held = lock(&self.held);
        let expired: Vec<String> = held
            .inflight
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            if let Some(h) = held.inflight.remove(k) {
                tracing::debug!(messaging.message.id = %h.message_id, "pubsub lease lapsed; handed back");
                h.handler.nack();
            }
        }
        held.attempts
            .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < ATTEMPTS_TTL);
        expired.len()
    }
}

async fn reap_until_closed(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        inner.reap(Instant::now());
    }
}

fn emulator_endpoint(host: &str) -> String {
    if host.starts_with("http://") || host.starts_with("https://") {
        host.to_string()
    } else {
        format!("http://{host}")
    }
}

async fn build_publisher(topic: &str, endpoint: Option<&str>) -> Result<Publisher, BackendError> {
    // The client's own retries are off: a failed publish goes back to the caller, whose one
    // retry policy decides (a released delivery, a 503 to the sender), so attempts are never
    // multiplied. (The subscriber's streaming pull has no retry policy to set; it reconnects.)
    let mut b = Publisher::builder(topic.to_string())
        .set_delay_threshold(Duration::from_millis(5))
        .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
    if let Some(ep) = endpoint {
        b = b
            .with_endpoint(ep.to_string())
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build());
    }
    b.build()
        .await
        .map_err(|e| BackendError::new("cannot build the pubsub publisher client", e))
}

/// Cut to at most `max` bytes on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The attributes of a dead-lettered message: the original ones plus reason, attempts and origin.
fn dead_letter_attributes(
    original: &HashMap<String, String>,
    reason: &str,
    attempt: u32,
    subscription: &str,
) -> HashMap<String, String> {
    let mut attrs = original.clone();
    attrs.insert(
        DEAD_LETTER_REASON_ATTRIBUTE.into(),
        truncate(reason, MAX_ATTRIBUTE_BYTES).into(),
    );
    attrs.insert(DEAD_LETTER_ATTEMPTS_ATTRIBUTE.into(), attempt.to_string());
    attrs.insert(DEAD_LETTER_SUBSCRIPTION_ATTRIBUTE.into(), subscription.into());
    attrs
}

fn envelope_message(env: &Envelope, ordering_keys: bool) -> Message {
    let msg = Message::new()
        .set_data(env.to_json())
        .set_attributes([(ENVELOPE_ID_ATTRIBUTE.to_string(), env.id.0.clone())]);
    if ordering_keys && !env.subject.key.is_empty() {
        msg.set_ordering_key(env.subject.key.clone())
    } else {
        msg
    }
}

impl QueueProducer for PubsubQueue {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let pending = batch
            .iter()
            .map(|env| {
                let msg = envelope_message(env, self.inner.opts.ordering_keys);
                let key = (!msg.ordering_key.is_empty()).then(|| msg.ordering_key.clone());
                (key, self.inner.publisher.publish(msg))
            })
            .collect();
        let ids = self.confirm(pending).await?;
        tracing::debug!(
            messaging.destination.name = %self.inner.opts.topic,
            messaging.batch.message_count = ids.len(),
            "published to pubsub"
        );
        Ok(())
    }
}

impl QueueConsumer for PubsubQueue {
    /// Up to `max` messages: waits up to `receive_wait` for the first, then takes what arrives
    /// within `batch_linger` of each other.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(BackendError::new(
                "the pubsub queue is shut down",
                "receive after shutdown",
            ));
        }
        self.inner.reap(Instant::now());
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let mut slot = self.inner.stream.lock().await;
        self.open_stream(&mut slot);
        let Some(stream) = slot.as_mut() else {
            return Ok(out);
        };
        // At most a third of the visibility: the worker counts a delivery's lease from before
        // this call.
        let mut wait = self.inner.opts.receive_wait.min(visibility / 3);
        while out.len() < max {
            match tokio::time::timeout(wait, stream.next()).await {
                Err(_elapsed) => break,
                Ok(Some(Ok((msg, handler)))) => out.push(self.hold(msg, handler, visibility)),
                Ok(Some(Err(e))) => {
                    // The stream gives up only on a permanent error: open a new one next time.
                    slot.take();
                    if out.is_empty() {
                        return Err(crate::classify::pubsub("pubsub streaming pull failed", e));
                    }
                    tracing::warn!(error = %e, "pubsub streaming pull failed; returning what was received");
                    break;
                }
                Ok(None) => {
                    slot.take();
                    break;
                }
            }
            wait = self.inner.opts.batch_linger;
        }
        Ok(out)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        match self.take(&delivery.receipt) {
            Some(h) => {
                self.forget_attempts(&h.message_id);
                h.handler.ack();
            }
            None => tracing::debug!(receipt = %delivery.receipt, "ack of a delivery no longer held; ignored"),
        }
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), BackendError> {
        if delay.is_zero() {
            if let Some(h) = self.take(&delivery.receipt) {
                h.handler.nack();
            }
        } else if !self.set_deadline(&delivery.receipt, Instant::now() + delay) {
            tracing::debug!(receipt = %delivery.receipt, "release of a delivery no longer held; ignored");
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BackendError> {
        let Some(dlq) = &self.inner.dead_letter else {
            return Err(BackendError::new(
                "no pubsub dead-letter topic is configured",
                format!(
                    "subscription {} has no dead_letter_topic; the message will be redelivered",
                    self.inner.opts.subscription
                ),
            ));
        };
        let original = lock(&self.inner.held)
            .inflight
            .get(&delivery.receipt)
            .map(|h| h.attributes.clone())
            .unwrap_or_default();
        let msg = Message::new()
            .set_data(delivery.body.clone())
            .set_attributes(dead_letter_attributes(
                &original,
                reason,
                delivery.attempt,
                &self.inner.opts.subscription,
            ));
        tokio::time::timeout(self.inner.opts.publish_timeout, dlq.publish(msg))
            .await
            .map_err(|e| BackendError::new("pubsub dead-letter publish timed out", e))?
            .map_err(|e| crate::classify::pubsub_publish("pubsub dead-letter publish failed", e))?;
        self.ack(delivery).await
    }

    /// A delivery no longer held (its deadline passed and it was handed back) is an error: the
    /// worker must not count it as leased (`gatehouse_targets::lease`).
    async fn extend(&self, delivery: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        if self.set_deadline(&delivery.receipt, Instant::now() + visibility) {
            Ok(())
        } else {
            Err(BackendError::new(
                "cannot extend the pubsub ack deadline",
                "the delivery is no longer held: its deadline passed and it was handed back",
            ))
        }
    }

    fn leases_can_lapse(&self) -> bool {
        true
    }

    /// Nacked if still held (Pub/Sub redelivers it at once); one already handed back is left.
    async fn abandon(&self, delivery: &Delivery) {
        if let Some(h) = self.take(&delivery.receipt) {
            h.handler.nack();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_host_becomes_a_plain_http_endpoint() {
        assert_eq!(emulator_endpoint("127.0.0.1:8085"), "http://127.0.0.1:8085");
        assert_eq!(emulator_endpoint("http://h:1"), "http://h:1");
    }

    #[test]
    fn dead_letter_reason_is_cut_to_the_attribute_limit_on_a_char_boundary() {
        let reason = "é".repeat(600); // 1200 bytes
        let attrs = dead_letter_attributes(
            &HashMap::from([("envelope_id".to_string(), "e1".to_string())]),
            &reason,
            3,
            "projects/p/subscriptions/s",
        );
        let cut = &attrs[DEAD_LETTER_REASON_ATTRIBUTE];
        assert!(cut.len() <= MAX_ATTRIBUTE_BYTES && cut.len() >= MAX_ATTRIBUTE_BYTES - 1);
        assert!(reason.starts_with(cut.as_str()));
        assert_eq!(attrs["envelope_id"], "e1", "original attributes are kept");
        assert_eq!(attrs[DEAD_LETTER_ATTEMPTS_ATTRIBUTE], "3");
        assert_eq!(
            attrs[DEAD_LETTER_SUBSCRIPTION_ATTRIBUTE],
            "projects/p/subscriptions/s"
        );
    }

    #[test]
    fn envelope_message_carries_id_attribute_and_subject_ordering_key() {
        use gatehouse_domain::envelope::{EnvelopeId, IdentityEvent, Source, Subject};
        let env = Envelope {
            trace_parent: None,
            version: Envelope::VERSION,
            id: EnvelopeId("okta:1".into()),
            source: Source::Manual,
            subject: Subject {
                key: "okta:00u1".into(),
                email: None,
                display_name: None,
            },
            occurred_at: gatehouse_domain::clock::now(),
            received_at: gatehouse_domain::clock::now(),
            event: IdentityEvent::UserActivated,
            profile: Default::default(),
            source_event_type: "test".into(),
            raw: serde_json::Value::Null,
        };
        let m = envelope_message(&env, true);
        assert_eq!(m.ordering_key, "okta:00u1");
        assert_eq!(m.attributes[ENVELOPE_ID_ATTRIBUTE], "okta:1");
        assert_eq!(
            Envelope::from_json(std::str::from_utf8(&m.data).unwrap())
                .unwrap()
                .id
                .0,
            "okta:1"
        );
        assert!(envelope_message(&env, false).ordering_key.is_empty());
    }
}
