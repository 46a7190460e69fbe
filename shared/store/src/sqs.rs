//! AWS SQS queue backend (standard or FIFO; FIFO when the queue URL ends in `.fifo`).
//!
//! Publishing uses `SendMessageBatch` in chunks of ten and returns only once every entry is
//! stored. On a FIFO queue the message group is the subject key and the deduplication id the
//! envelope id, so one person's events are delivered in order and a replayed envelope is dropped
//! by SQS within its five-minute window.
//!
//! SQS FIFO may return several messages of one group in one receive; the processor works on the
//! deliveries of a batch in parallel, so this adapter hands out at most one message per group at
//! a time (like the embedded queue does per subject) and keeps the group's next messages back
//! until the one in flight is acked or dead-lettered.
//!
//! A held message is leased like the one in flight: extending the one in flight extends the
//! held messages of its group in the same step, and a held message whose lease ends, or is too
//! close to its end to be renewed safely, is never handed out (SQS hands it to someone else once
//! its lease ends; handing it out here as well would run it twice, in parallel).
//!
//! A lease that lapses anyway (an extension came late) lets SQS hand the message, or on a FIFO
//! queue the group's next one, to another consumer: so this queue says its leases can lapse
//! (`leases_can_lapse`), the worker fences every write with the lease it last confirmed
//! (`gatehouse_targets::lease`), and a delivery whose lease may have lapsed is `abandon`ed: its
//! bookkeeping is dropped and nothing is sent under its receipt handle, which may be stale.
//!
//! Bodies are handed out as they are (an EventBridge event on the audit queue is not an
//! envelope): decoding is the consumer's job.
//!
//! Acks are deletes, sent as `DeleteMessageBatch`: one task per queue takes the acks waiting at
//! that moment (up to ten) in one request, so a busy processor makes a tenth of the delete calls
//! and a lone ack waits for nothing. Each `ack` returns only once its own entry is deleted.

use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, QueueProducer};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::sync::{mpsc, oneshot};

/// Message attribute carrying the reason on a dead-lettered message.
pub const DEAD_LETTER_REASON_ATTRIBUTE: &str = "gatehouse-dead-letter-reason";

/// SQS takes at most ten messages per batch and per receive.
const BATCH: usize = 10;
/// Longest visibility timeout SQS accepts (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// Longest long-poll wait SQS accepts.
const MAX_WAIT_SECS: u64 = 20;
/// Tries of one batch send before publish gives up on the entries still failing.
const SEND_TRIES: u32 = 3;
/// Longest message attribute value kept for the dead-letter reason.
const MAX_REASON_CHARS: usize = 1024;
/// Message group of the dead letters on a FIFO dead-letter queue.
const DEAD_LETTER_GROUP: &str = "gatehouse-dead-letters";

/// An SQS queue: producer and consumer. Cheap to clone (clones share the client, the cached
/// dead-letter queue URL and the FIFO group bookkeeping).
#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    url: Arc<str>,
    fifo: bool,
    wait_time: Duration,
    /// The dead-letter queue URL from the queue's `RedrivePolicy` (`None`: no redrive policy),
    /// looked up on first use.
    dlq: Arc<OnceCell<Option<String>>>,
    groups: Arc<Mutex<Groups>>,
    /// The batching delete task, started by the first ack (see the module docs).
    deleter: Arc<std::sync::OnceLock<mpsc::UnboundedSender<DeleteRequest>>>,
}

/// One receipt handle to delete, and where to say how it went.
type DeleteRequest = (String, oneshot::Sender<Result<(), String>>);

/// FIFO bookkeeping: which group each handed-out delivery belongs to, and the messages of a
/// group that SQS returned while one of the group was already handed out.
#[derive(Debug, Default)]
struct Groups {
    /// receipt handle -> (message group id, end of its lease), for deliveries handed out and not
    /// yet settled. A lease that ends unsettled (the consumer gave up without a word) frees its
    /// group: SQS hands that message out again.
    in_flight: HashMap<String, (String, Instant)>,
    /// message group id -> messages received but not yet handed out, in group order, each with
    /// the end of its lease.
    held: HashMap<String, VecDeque<(Delivery, Instant)>>,
}

impl Groups {
    /// Forget leases that ended, and the messages held behind them (they time out in SQS too
    /// and come back in order).
    fn expire(&mut self, now: Instant) {
        let expired: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(receipt, _)| receipt.clone())
            .collect();
        for receipt in expired {
            if let Some((group, _)) = self.in_flight.remove(&receipt) {
                self.held.remove(&group);
            }
        }
    }

    fn busy(&self, group: &str) -> bool {
        self.in_flight.values().any(|(g, _)| g == group)
    }
}

impl SqsQueue {
    /// Connect with the AWS SDK's standard chain (`AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ENDPOINT_URL_SQS`, profiles, web identity, instance roles, ...).
    pub async fn connect(queue_url: &str, wait_time: Duration) -> Result<Self, BackendError> {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        if shared.region().is_none() {
            return Err(BackendError::new(
                "cannot connect to sqs",
                "no aws region is configured (set AWS_REGION or a profile region)",
            ));
        }
        // The SDK's own retries are off: the worker's one retry policy owns retrying (a released
        // delivery, a failed poll), so attempts are never multiplied.
        let conf = aws_sdk_sqs::config::Builder::from(&shared)
            .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
            .build();
        Ok(Self::with_client(Client::from_conf(conf), queue_url, wait_time))
    }

    /// Use an already configured client (tests, custom endpoints).
    pub fn with_client(client: Client, queue_url: &str, wait_time: Duration) -> Self {
        SqsQueue {
            client,
            url: queue_url.into(),
            fifo: queue_url.ends_with(".fifo"),
            wait_time,
            dlq: Arc::new(OnceCell::new()),
            groups: Arc::new(Mutex::new(Groups::default())),
            deleter: Arc::new(std::sync::OnceLock::new()),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue URL named by the queue's `RedrivePolicy`.
    pub async fn dead_letter_queue_url(&self) -> Result<String, BackendError> {
        self.dead_letter_queue().await.map(str::to_string)
    }

    /// The client this queue uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn is_fifo(&self) -> bool {
        self.fifo
    }

    /// Messages waiting plus in flight (`ApproximateNumberOfMessages` +
    /// `ApproximateNumberOfMessagesNotVisible`): approximate, as SQS says.
    pub async fn depth(&self) -> Result<u64, BackendError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&*self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| BackendError::new("cannot read the sqs queue depth", e))?;
        let attrs = out.attributes.unwrap_or_default();
        let count = |name: &QueueAttributeName| -> Result<u64, BackendError> {
            attrs.get(name).map_or(Ok(0), |v| {
                v.parse()
                    .map_err(|e| BackendError::new("sqs returned a non-numeric queue depth", e))
            })
        };
        Ok(count(&QueueAttributeName::ApproximateNumberOfMessages)?
            + count(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?)
    }

    /// The dead-letter queue named by the queue's `RedrivePolicy`, looked up once.
    async fn dead_letter_queue(&self) -> Result<&str, BackendError> {
        let dlq = self
            .dlq
            .get_or_try_init(|| async {
                let out = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&*self.url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send()
                    .await
                    .map_err(|e| BackendError::new("cannot read the sqs queue's redrive policy", e))?;
                let Some(policy) = out
                    .attributes
                    .unwrap_or_default()
                    .remove(&QueueAttributeName::RedrivePolicy)
                else {
                    return Ok(None);
                };
                let arn = dead_letter_target_arn(&policy)?;
                let (account, name) = parse_queue_arn(&arn)?;
                let url = self
                    .client
                    .get_queue_url()
                    .queue_name(name)
                    .queue_owner_aws_account_id(account)
                    .send()
                    .await
                    .map_err(|e| BackendError::new("cannot find the sqs dead-letter queue", e))?
                    .queue_url
                    .ok_or_else(|| {
                        BackendError::new("cannot find the sqs dead-letter queue", "sqs returned no url")
                    })?;
                Ok::<_, BackendError>(Some(url))
            })
            .await?;
        dlq.as_deref().ok_or_else(|| {
            BackendError::new(
                "cannot dead-letter the message",
                "the sqs queue has no RedrivePolicy naming a dead-letter queue; configure one",
            )
        })
    }

    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
        context: &'static str,
    ) -> Result<(), BackendError> {
        self.client
            .change_message_visibility()
            .queue_url(&*self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(visibility, MAX_VISIBILITY_SECS))
            .send()
            .await
            .map_err(|e| crate::classify::sqs(context, e))?;
        Ok(())
    }

    /// Delete one message through the batching task; returns once SQS answered for it.
    async fn delete(&self, receipt: &str, context: &'static str) -> Result<(), BackendError> {
        let tx = self.deleter.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(delete_batches(self.client.clone(), self.url.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send((receipt.to_string(), reply))
            .map_err(|_| BackendError::new(context, "the sqs delete task has stopped"))?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(BackendError::new(context, why)),
            Err(_) => Err(BackendError::new(context, "the sqs delete task has stopped")),
        }
    }

    /// A delivery is settled (acked or dead-lettered): its group may hand out its next message.
    fn settle(&self, receipt: &str) {
        if self.fifo {
            self.lock_groups().in_flight.remove(receipt);
        }
    }

    fn lock_groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        // The bookkeeping stays consistent even if a holder panicked: every update is one step.
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// FIFO: record the in-flight delivery's new lease end and list the held messages of its
    /// group that can still be renewed. A held message too close to the end of its lease is
    /// dropped with every message behind it (SQS redelivers them in order); renewing it could
    /// reach SQS after another consumer got it.
    fn lease_held_behind(&self, receipt: &str, until: Instant, visibility: Duration) -> Vec<String> {
        let mut g = self.lock_groups();
        let Some((group, lease)) = g.in_flight.get_mut(receipt) else {
            return Vec::new();
        };
        *lease = until;
        let group = group.clone();
        let Some(queue) = g.held.get_mut(&group) else {
            return Vec::new();
        };
        let horizon = Instant::now() + renew_margin(visibility);
        if let Some(ending) = queue.iter().position(|(_, end)| *end <= horizon) {
            tracing::debug!(group = %group, "held sqs message's lease is ending; sqs will redeliver its group");
            queue.truncate(ending);
        }
        let receipts = queue.iter().map(|(d, _)| d.receipt.clone()).collect();
        g.held.retain(|_, q| !q.is_empty());
        receipts
    }

    /// Renew held messages' leases (`ChangeMessageVisibilityBatch`, ten per request); a message
    /// that was renewed gets the new lease end, one that was not keeps its old one (and is
    /// dropped before that ends).
    async fn renew_held(&self, receipts: Vec<String>, visibility: Duration, until: Instant) {
        for chunk in receipts.chunks(BATCH) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, receipt)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(secs(visibility, MAX_VISIBILITY_SECS))
                        .build()
                        .ok()
                })
                .collect();
            let renewed: Vec<&String> = match self
                .client
                .change_message_visibility_batch()
                .queue_url(&*self.url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => out
                    .successful
                    .iter()
                    .filter_map(|ok| ok.id.parse::<usize>().ok())
                    .filter_map(|i| chunk.get(i))
                    .collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "held sqs messages not renewed; they keep their lease");
                    Vec::new()
                }
            };
            let mut g = self.lock_groups();
            for queue in g.held.values_mut() {
                for (d, end) in queue.iter_mut() {
                    if renewed.contains(&&d.receipt) {
                        *end = until;
                    }
                }
            }
        }
    }

    /// FIFO: held messages whose group has nothing in flight, each re-leased for `visibility`
    /// before it is handed out (one that timed out meanwhile is dropped: SQS hands it out again).
    async fn take_held(&self, max: usize, visibility: Duration) -> Vec<Delivery> {
        let ready: Vec<(String, Delivery)> = {
            let mut g = self.lock_groups();
            let now = Instant::now();
            g.expire(now);
            let free: Vec<String> = g.held.keys().filter(|k| !g.busy(k)).take(max).cloned().collect();
            let mut ready = Vec::new();
            for group in free {
                let Some((d, until)) = g.held.get_mut(&group).and_then(VecDeque::pop_front) else {
                    continue;
                };
                if until <= now + renew_margin(visibility) {
                    // Its lease ends (or ended) before a renewal surely reaches SQS, which may
                    // already have handed it to another consumer: drop it and its successors,
                    // SQS redelivers them in order.
                    tracing::debug!(group = %group, "held sqs message's lease is ending; sqs will redeliver its group");
                    g.held.remove(&group);
                    continue;
                }
                g.in_flight
                    .insert(d.receipt.clone(), (group.clone(), now + visibility));
                ready.push((group, d));
            }
            g.held.retain(|_, q| !q.is_empty());
            ready
        };
        let mut out = Vec::new();
        for (group, d) in ready {
            match self
                .change_visibility(&d.receipt, visibility, "cannot renew a held sqs message")
                .await
            {
                Ok(()) => out.push(d),
                Err(e) => {
                    tracing::debug!(error = %e, group = %group, "held sqs message expired; sqs will redeliver its group");
                    let mut g = self.lock_groups();
                    g.in_flight.remove(&d.receipt);
                    // Its successors must not overtake it: drop them too, SQS redelivers them.
                    g.held.remove(&group);
                }
            }
        }
        out
    }
}

impl QueueProducer for SqsQueue {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
        for chunk in batch.chunks(BATCH) {
            let mut pending: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, env)| self.entry(i, env))
                .collect::<Result<_, _>>()?;
            let mut tries = 0;
            while !pending.is_empty() {
                tries += 1;
                let out = self
                    .client
                    .send_message_batch()
                    .queue_url(&*self.url)
                    .set_entries(Some(pending.clone()))
                    .send()
                    .await
                    .map_err(|e| crate::classify::sqs("cannot publish to sqs", e))?;
                let failed = out.failed;
                if failed.is_empty() {
                    break;
                }
                let retryable = failed.iter().all(|f| !f.sender_fault);
                if tries >= SEND_TRIES || !retryable {
                    let detail = failed
                        .iter()
                        .map(|f| {
                            format!(
                                "entry {}: {} ({})",
                                f.id,
                                f.code,
                                f.message.as_deref().unwrap_or("no message")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(BackendError::new(
                        "sqs rejected part of a publish batch",
                        format!("{} of {} entries failed: {detail}", failed.len(), chunk.len()),
                    ));
                }
                tracing::warn!(
                    failed = failed.len(),
                    tries,
                    "sqs rejected part of a batch; retrying those"
                );
                let failed_ids: std::collections::HashSet<&str> =
                    failed.iter().map(|f| f.id.as_str()).collect();
                pending.retain(|e| failed_ids.contains(e.id()));
                tokio::time::sleep(Duration::from_millis(100 * u64::from(tries))).await;
            }
        }
        Ok(())
    }
}

impl SqsQueue {
    fn entry(&self, i: usize, env: &Envelope) -> Result<SendMessageBatchRequestEntry, BackendError> {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_body(env.to_json());
        if self.fifo {
            entry = entry
                .message_group_id(fifo_token(&env.subject.key))
                .message_deduplication_id(fifo_token(&env.id.0));
        }
        entry
            .build()
            .map_err(|e| BackendError::new("cannot build an sqs batch entry", e))
    }
}

impl QueueConsumer for SqsQueue {
    /// Long-polls for up to `max` (at most ten) messages. On a FIFO queue at most one message per
    /// group is handed out at a time; the rest of the group is kept back until it is settled.
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        let max = max.clamp(1, BATCH);
        let mut out = if self.fifo {
            self.take_held(max, visibility).await
        } else {
            Vec::new()
        };
        if out.len() >= max {
            return Ok(out);
        }
        // Do not block on a long poll when held work was just handed out. A long poll waits at
        // most a third of the visibility: the worker counts a delivery's lease from before this
        // request (it cannot know when SQS picked the message), so a message found late in a
        // long poll would start with a lease too short to work under.
        let wait = if out.is_empty() {
            secs(self.wait_time, MAX_WAIT_SECS).min((visibility / 3).as_secs() as i32)
        } else {
            0
        };
        let mut req = self
            .client
            .receive_message()
            .queue_url(&*self.url)
            .max_number_of_messages((max - out.len()) as i32)
            .wait_time_seconds(wait)
            .visibility_timeout(secs(visibility, MAX_VISIBILITY_SECS))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount);
        if self.fifo {
            req = req.message_system_attribute_names(MessageSystemAttributeName::MessageGroupId);
        }
        let leased_at = Instant::now();
        let messages = req
            .send()
            .await
            .map_err(|e| crate::classify::sqs("cannot receive from sqs", e))?
            .messages
            .unwrap_or_default();
        let mut groups = self.fifo.then(|| self.lock_groups());
        if let Some(g) = groups.as_mut() {
            g.expire(Instant::now());
        }
        for m in messages {
            let attrs = m.attributes.unwrap_or_default();
            let Some(receipt) = m.receipt_handle else {
                tracing::warn!(message_id = ?m.message_id, "sqs returned a message without a receipt handle");
                continue;
            };
            let delivery = Delivery {
                receipt,
                attempt: attrs
                    .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                body: m.body.unwrap_or_default(),
            };
            let Some(g) = groups.as_mut() else {
                out.push(delivery);
                continue;
            };
            let group = attrs
                .get(&MessageSystemAttributeName::MessageGroupId)
                .cloned()
                .or(m.message_id)
                .unwrap_or_else(|| delivery.receipt.clone());
            if g.busy(&group) || g.held.contains_key(&group) {
                g.held
                    .entry(group)
                    .or_default()
                    .push_back((delivery, leased_at + visibility));
            } else {
                g.in_flight
                    .insert(delivery.receipt.clone(), (group, leased_at + visibility));
                out.push(delivery);
            }
        }
        Ok(out)
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        let done = self.delete(&delivery.receipt, "cannot ack the sqs message").await;
        // Settled either way: a failed delete comes back from SQS after its visibility timeout.
        self.settle(&delivery.receipt);
        done
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<(), BackendError> {
        self.change_visibility(&delivery.receipt, delay, "cannot release the sqs message")
            .await?;
        if self.fifo {
            // The group's later messages must wait for this one: give them back to SQS (which
            // keeps the group locked while this one is invisible) instead of handing them out.
            let held = {
                let mut g = self.lock_groups();
                let group = g.in_flight.remove(&delivery.receipt);
                group
                    .and_then(|(group, _)| g.held.remove(&group))
                    .unwrap_or_default()
            };
            for (d, _) in held {
                if let Err(e) = self
                    .change_visibility(&d.receipt, Duration::ZERO, "cannot give back a held sqs message")
                    .await
                {
                    tracing::debug!(error = %e, "held sqs message not given back; it times out by itself");
                }
            }
        }
        Ok(())
    }

    async fn extend(&self, delivery: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        let until = Instant::now() + visibility;
        self.change_visibility(
            &delivery.receipt,
            visibility,
            "cannot extend the sqs message visibility",
        )
        .await?;
        if self.fifo {
            let held = self.lease_held_behind(&delivery.receipt, until, visibility);
            self.renew_held(held, visibility, until).await;
        }
        Ok(())
    }

    fn leases_can_lapse(&self) -> bool {
        true
    }

    /// Forget the delivery and the group's messages held behind it (they come back from SQS in
    /// order once their leases end); its group is free here at once, SQS keeps it locked while
    /// the message is invisible.
    async fn abandon(&self, delivery: &Delivery) {
        if self.fifo {
            let mut g = self.lock_groups();
            if let Some((group, _)) = g.in_flight.remove(&delivery.receipt) {
                g.held.remove(&group);
            }
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), BackendError> {
        let dlq = self.dead_letter_queue().await?;
        let mut reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        if reason.trim().is_empty() {
            reason = "unspecified".into();
        }
        let reason_attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| BackendError::new("cannot build the dead-letter reason attribute", e))?;
        let attempts_attr = MessageAttributeValue::builder()
            .data_type("Number")
            .string_value(delivery.attempt.to_string())
            .build()
            .map_err(|e| BackendError::new("cannot build the dead-letter attempts attribute", e))?;
        let mut req = self
            .client
            .send_message()
            .queue_url(dlq)
            .message_body(&delivery.body)
            .message_attributes(DEAD_LETTER_REASON_ATTRIBUTE, reason_attr)
            .message_attributes(DEAD_LETTER_ATTEMPTS_ATTRIBUTE, attempts_attr);
        if dlq.ends_with(".fifo") {
            req = req
                .message_group_id(DEAD_LETTER_GROUP)
                .message_deduplication_id(hex_sha256(&delivery.body));
        }
        req.send()
            .await
            .map_err(|e| crate::classify::sqs("cannot send the message to the sqs dead-letter queue", e))?;
        let done = self
            .delete(&delivery.receipt, "cannot remove the dead-lettered sqs message")
            .await;
        self.settle(&delivery.receipt);
        done
    }
}

/// The delete task: every request waiting when it wakes (up to ten) goes in one
/// `DeleteMessageBatch`; each waiter hears about its own entry. Ends with the last queue clone.
async fn delete_batches(client: Client, url: Arc<str>, mut rx: mpsc::UnboundedReceiver<DeleteRequest>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let entries: Result<Vec<_>, _> = batch
            .iter()
            .enumerate()
            .map(|(i, (receipt, _))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
            })
            .collect();
        let sent = match entries {
            Ok(entries) => client
                .delete_message_batch()
                .queue_url(&*url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| error_chain(&e)),
            Err(e) => Err(error_chain(&e)),
        };
        match sent {
            Ok(out) => {
                let mut failed: HashMap<String, String> = out
                    .failed
                    .into_iter()
                    .map(|f| (f.id, format!("{}: {}", f.code, f.message.unwrap_or_default())))
                    .collect();
                for (i, (_, reply)) in batch.into_iter().enumerate() {
                    let _ = reply.send(failed.remove(&i.to_string()).map_or(Ok(()), Err));
                }
            }
            Err(why) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(why.clone()));
                }
            }
        }
    }
}

/// An error and its causes on one line (the SDK's own `Display` is only the outermost).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// How long a message received by the dlq tools stays invisible to others while they look.
const DLQ_LEASE_SECS: i32 = 30;
/// Message attribute with the attempt count of a dead letter sent by `dead_letter`.
const DEAD_LETTER_ATTEMPTS_ATTRIBUTE: &str = "gatehouse-attempts";

/// The dead-letter queue of an SQS queue, for `gatehouse dlq`: list, show and redrive (send back
/// to the source queue, then delete from the dead-letter queue).
///
/// SQS has no way to look at messages without receiving them: listing receives every message
/// (each invisible for a moment) and then makes them visible again at once. A FIFO dead-letter
/// queue hands out one message group's messages ten at a time, so a listing of a FIFO
/// dead-letter queue shows at most ten per group.
#[derive(Clone, Debug)]
pub struct SqsDeadLetters {
    source: SqsQueue,
    dlq: String,
}

impl SqsDeadLetters {
    /// The dead-letter queue `dlq_url`, or the one named by the source queue's `RedrivePolicy`.
    pub async fn new(source: SqsQueue, dlq_url: Option<String>) -> Result<Self, BackendError> {
        let dlq = match dlq_url {
            Some(u) => u,
            None => source.dead_letter_queue_url().await?,
        };
        Ok(SqsDeadLetters { source, dlq })
    }

    pub fn dead_letter_queue_url(&self) -> &str {
        &self.dlq
    }

    /// Receive every message of the dead-letter queue (deduplicated by message id).
    async fn scan(&self) -> Result<Vec<aws_sdk_sqs::types::Message>, BackendError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        loop {
            let got = self
                .source
                .client
                .receive_message()
                .queue_url(&self.dlq)
                .max_number_of_messages(BATCH as i32)
                .wait_time_seconds(0)
                .visibility_timeout(DLQ_LEASE_SECS)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(|e| BackendError::new("cannot read the sqs dead-letter queue", e))?
                .messages
                .unwrap_or_default();
            let before = out.len();
            for m in got {
                if seen.insert(m.message_id.clone().unwrap_or_default()) {
                    out.push(m);
                }
            }
            if out.len() == before {
                return Ok(out);
            }
        }
    }

    /// Make received messages visible again at once.
    async fn give_back(&self, messages: &[aws_sdk_sqs::types::Message]) {
        for m in messages {
            if let Some(r) = &m.receipt_handle
                && let Err(e) = self
                    .source
                    .client
                    .change_message_visibility()
                    .queue_url(&self.dlq)
                    .receipt_handle(r)
                    .visibility_timeout(0)
                    .send()
                    .await
            {
                tracing::debug!(error = %e, "dead letter not given back; it reappears after its lease");
            }
        }
    }

    /// Every dead letter, oldest first (messages stay on the dead-letter queue).
    pub async fn list(&self) -> Result<Vec<crate::dlq::DeadMessage>, BackendError> {
        let messages = self.scan().await?;
        self.give_back(&messages).await;
        let mut out: Vec<_> = messages.iter().map(dead_message).collect();
        out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        Ok(out)
    }

    /// Send the chosen dead letters back to the source queue, then delete them from the
    /// dead-letter queue. Returns how many went back.
    pub async fn redrive(&self, which: &crate::dlq::Redrive) -> Result<usize, BackendError> {
        let messages = self.scan().await?;
        let (chosen, rest): (Vec<_>, Vec<_>) = messages
            .into_iter()
            .partition(|m| which.wants(m.message_id.as_deref().unwrap_or_default()));
        self.give_back(&rest).await;
        let mut n = 0;
        for m in &chosen {
            let body = m.body.clone().unwrap_or_default();
            let id = m.message_id.clone().unwrap_or_default();
            let mut req = self
                .source
                .client
                .send_message()
                .queue_url(&*self.source.url)
                .message_body(&body);
            if self.source.fifo {
                let group = Envelope::from_json(&body)
                    .map(|e| e.subject.key)
                    .unwrap_or_else(|_| DEAD_LETTER_GROUP.to_string());
                // Not the envelope id: SQS would drop a redrive inside its 5-minute dedupe window.
                req = req
                    .message_group_id(fifo_token(&group))
                    .message_deduplication_id(hex_sha256(&format!("redrive:{id}")));
            }
            req.send()
                .await
                .map_err(|e| BackendError::new("cannot send the dead letter back to the sqs queue", e))?;
            if let Some(r) = &m.receipt_handle {
                self.source
                    .client
                    .delete_message()
                    .queue_url(&self.dlq)
                    .receipt_handle(r)
                    .send()
                    .await
                    .map_err(|e| BackendError::new("cannot delete the redriven dead letter", e))?;
            }
            n += 1;
        }
        Ok(n)
    }
}

fn dead_message(m: &aws_sdk_sqs::types::Message) -> crate::dlq::DeadMessage {
    let attr = |name: &str| {
        m.message_attributes
            .as_ref()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value.clone())
    };
    let system = m.attributes.clone().unwrap_or_default();
    let at = system
        .get(&MessageSystemAttributeName::SentTimestamp)
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(chrono::DateTime::from_timestamp_millis);
    // Moved by SQS itself (maxReceiveCount): no attribute, the count is the redrive policy's.
    let attempts = attr(DEAD_LETTER_ATTEMPTS_ATTRIBUTE).and_then(|a| a.parse().ok());
    crate::dlq::DeadMessage {
        id: m.message_id.clone().unwrap_or_default(),
        at,
        attempts,
        reason: attr(DEAD_LETTER_REASON_ATTRIBUTE),
        body: m.body.clone().unwrap_or_default(),
    }
}

/// Whole seconds for an SQS timeout: rounded up (a sub-second wish is not shortened to zero),
/// capped at what SQS accepts.
/// How much of a held message's lease must be left to renew it: a renewal that reaches SQS after
/// the lease ended may come after another consumer received the message.
fn renew_margin(visibility: Duration) -> Duration {
    (visibility / 4).min(Duration::from_secs(10))
}

fn secs(d: Duration, max: u64) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.min(max) as i32
}

/// A FIFO `MessageGroupId` / `MessageDeduplicationId`: the value itself when SQS accepts it (1 to
/// 128 printable ASCII characters), else its SHA-256 in hex.
fn fifo_token(value: &str) -> String {
    let valid = !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        value.to_string()
    } else {
        hex_sha256(value)
    }
}

fn hex_sha256(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `deadLetterTargetArn` of a `RedrivePolicy` attribute.
fn dead_letter_target_arn(policy: &str) -> Result<String, BackendError> {
    let v: serde_json::Value = serde_json::from_str(policy)
        .map_err(|e| BackendError::new("the sqs queue's RedrivePolicy is not json", e))?;
    v.get("deadLetterTargetArn")
        .and_then(|a| a.as_str())
        .map(str::to_string)
        .ok_or_else(|| {
            BackendError::new(
                "the sqs queue's RedrivePolicy names no dead-letter queue",
                "deadLetterTargetArn is missing",
            )
        })
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME` -> (ACCOUNT, NAME).
fn parse_queue_arn(arn: &str) -> Result<(String, String), BackendError> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", _, account, name] if !account.is_empty() && !name.is_empty() => {
            Ok((account.to_string(), name.to_string()))
        }
        _ => Err(BackendError::new(
            "the sqs dead-letter target is not an sqs queue arn",
            arn.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_to_whole_seconds_and_are_capped() {
        assert_eq!(secs(Duration::ZERO, 20), 0);
        assert_eq!(secs(Duration::from_millis(1), 20), 1);
        assert_eq!(secs(Duration::from_millis(1500), 20), 2);
        assert_eq!(secs(Duration::from_secs(2), 20), 2);
        assert_eq!(secs(Duration::from_secs(60), 20), 20);
        assert_eq!(secs(Duration::from_secs(u64::MAX), MAX_VISIBILITY_SECS), 43_200);
    }

    #[test]
    fn fifo_tokens_keep_valid_values_and_hash_the_rest() {
        assert_eq!(fifo_token("okta:00u1abc"), "okta:00u1abc");
        let long = "x".repeat(129);
        for bad in [long.as_str(), "has space", "ünïcode", ""] {
            let t = fifo_token(bad);
            assert_eq!(t.len(), 64, "{bad:?}");
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_eq!(fifo_token("has space"), fifo_token("has space"), "stable");
        assert_ne!(fifo_token("has space"), fifo_token("has  space"));
        assert_eq!(fifo_token(&"y".repeat(128)), "y".repeat(128));
    }

    #[test]
    fn redrive_policy_names_the_dead_letter_queue() {
        let arn = dead_letter_target_arn(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:123456789012:gh-dlq","maxReceiveCount":"5"}"#,
        )
        .unwrap();
        assert_eq!(
            parse_queue_arn(&arn).unwrap(),
            ("123456789012".to_string(), "gh-dlq".to_string())
        );
        assert!(dead_letter_target_arn(r#"{"maxReceiveCount":5}"#).is_err());
        assert!(dead_letter_target_arn("not json").is_err());
        assert!(parse_queue_arn("arn:aws:sns:eu-west-1:1:topic").is_err());
        assert!(parse_queue_arn("arn:aws:sqs:eu-west-1::q").is_err());
    }
}
