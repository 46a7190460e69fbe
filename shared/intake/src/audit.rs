//! The cloud audit translator: raw audit deliveries (an SQS audit queue fed by EventBridge, or a
//! Pub/Sub audit subscription fed by a log sink and Secret Manager) → envelopes on the main queue.
//!
//! One step ([`Translator::translate_once`], what tests drive) receives a batch and, per delivery:
//! parses it ([`gatehouse_domain::cloud_audit::parse`]); publishes its envelopes to the main queue;
//! acks only after the publish returned. An unparseable delivery is dead-lettered at once with the
//! parser's reason (it would never parse on a retry, so it never loops); a failed publish releases
//! the delivery with backoff (the main queue is down, the message is fine). Envelope ids are the
//! clouds' own event ids, so a delivery that comes back after a publish whose ack was lost is
//! deduplicated by the processor.

use gatehouse_domain::cloud_audit;
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, QueueProducer};
use gatehouse_platform::events::{self, FailReason};
use gatehouse_platform::retry::RetryPolicy;
use gatehouse_platform::shutdown::Shutdown;
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::Instrument;

pub use gatehouse_domain::cloud_audit::Kind;

/// How the translator runs.
#[derive(Debug, Clone)]
pub struct TranslatorConfig {
    pub kind: Kind,
    /// Identities Gatehouse calls the cloud as (AWS ARNs / principal ids, GCP principal emails):
    /// their changes are Ignored, not drift. See `docs/cloud-audit.md` for the matching rules.
    pub gatehouse_principals: Vec<String>,
    /// Deliveries per receive.
    pub batch: usize,
    pub visibility_timeout: Duration,
    /// Wait between receives that found nothing (or failed).
    pub poll_interval: Duration,
}

impl TranslatorConfig {
    pub fn new(kind: Kind, gatehouse_principals: Vec<String>) -> Self {
        TranslatorConfig {
            kind,
            gatehouse_principals,
            batch: 10,
            visibility_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TranslateReport {
    /// Deliveries received.
    pub received: usize,
    /// Deliveries acked after their envelopes were published.
    pub acked: usize,
    /// Envelopes published to the main queue.
    pub published: usize,
    /// Published envelopes per event kind (`cloud_drift`, `rotation_requested`, `ignored`, ...).
    pub by_kind: BTreeMap<String, usize>,
    /// Reasons of the deliveries dead-lettered as unparseable.
    pub dead_lettered: Vec<String>,
    /// Deliveries given back because the publish failed.
    pub released: usize,
    /// Ack/release/dead-letter calls that failed (the delivery comes back after its visibility
    /// timeout).
    pub queue_errors: usize,
}

pub struct Translator<In, Out> {
    input: In,
    output: Out,
    cfg: TranslatorConfig,
}

impl<In, Out> Translator<In, Out>
where
    In: QueueConsumer,
    Out: QueueProducer,
{
    pub fn new(input: In, output: Out, cfg: TranslatorConfig) -> Self {
        Translator { input, output, cfg }
    }

    /// Receive one batch from the audit queue and translate every delivery in it. `Err` only when
    /// the receive itself failed.
    pub async fn translate_once(&self) -> Result<TranslateReport, BackendError> {
        let batch = self
            .input
            .receive(self.cfg.batch, self.cfg.visibility_timeout)
            .await?;
        let mut report = TranslateReport {
            received: batch.len(),
            ..TranslateReport::default()
        };
        for d in batch {
            let span = tracing::info_span!(
                "translate",
                messaging.system = messaging_system(self.cfg.kind),
                messaging.message.id = %d.receipt,
                messaging.delivery_attempt = d.attempt,
            );
            self.translate(&d, &mut report).instrument(span).await;
        }
        Ok(report)
    }

    async fn translate(&self, d: &Delivery, report: &mut TranslateReport) {
        let kind = self.cfg.kind;
        let source = kind.source();
        let mut envelopes = match cloud_audit::parse(
            kind,
            d.body.as_bytes(),
            gatehouse_domain::clock::now(),
            &self.cfg.gatehouse_principals,
        ) {
            Ok(envelopes) => envelopes,
            Err(e) => {
                let reason = format!("unparseable {} audit event: {e}", kind.as_str());
                tracing::warn!(reason = %reason, "dead-lettering audit delivery");
                events::events_failed(Some(source), FailReason::Unparseable);
                match self.input.dead_letter(d, &reason).await {
                    Ok(()) => report.dead_lettered.push(reason),
                    Err(e) => {
                        report.queue_errors += 1;
                        tracing::error!(error = %e, "could not dead-letter; the delivery will come back");
                    }
                }
                return;
            }
        };
        // The processor's span joins this translation's trace.
        crate::ingress::trace_envelopes(&mut envelopes);
        if let Err(e) = self.output.publish(&envelopes).await {
            let delay = backoff(d.attempt);
            tracing::warn!(error = %gatehouse_domain::error::chain(&e), retry_in = ?delay, "publishing audit envelopes failed; will retry");
            events::events_failed(Some(source), FailReason::Publish);
            match self.input.release(d, delay).await {
                Ok(()) => report.released += 1,
                Err(e) => {
                    report.queue_errors += 1;
                    tracing::error!(error = %e, "could not release; the delivery will come back");
                }
            }
            return;
        }
        for env in &envelopes {
            let actionable = env.event.is_actionable();
            events::event_received(source, &env.event, actionable);
            *report.by_kind.entry(env.event.kind().to_string()).or_default() += 1;
            tracing::info!(
                envelope_id = %env.id, subject = %env.subject.key, event_type = %env.source_event_type,
                kind = env.event.kind(), actionable, "audit event published"
            );
        }
        report.published += envelopes.len();
        match self.input.ack(d).await {
            Ok(()) => report.acked += 1,
            Err(e) => {
                // Published but not acked: the delivery comes back and its envelope ids dedupe it.
                report.queue_errors += 1;
                tracing::error!(error = %e, "could not ack a published audit delivery");
            }
        }
    }

    /// Translate until shutdown; a step in progress is finished before returning.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            if shutdown.is_triggered() {
                break;
            }
            let idle = match self.translate_once().await {
                Ok(report) => report.received == 0,
                Err(e) => {
                    tracing::error!(error = %e, "audit queue receive failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = shutdown.wait() => {}
                    _ = tokio::time::sleep(self.cfg.poll_interval) => {}
                }
            }
        }
    }
}

fn messaging_system(kind: Kind) -> &'static str {
    match kind {
        Kind::Aws => "aws_sqs",
        Kind::Gcp => "gcp_pubsub",
    }
}

/// 500 ms doubling per attempt, at most about 4 minutes: the one retry policy's schedule.
fn backoff(attempt: u32) -> Duration {
    const PUBLISH: RetryPolicy = RetryPolicy {
        retries: 0,
        min_delay: Duration::from_millis(250),
        max_delay: Duration::from_millis(250 * 1024),
    };
    PUBLISH.delay(attempt.max(1), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_domain::envelope::{Envelope, IdentityEvent};
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// The audit queue: hands out what was pushed, records what became of each delivery.
    #[derive(Clone, Default)]
    struct MemIn {
        ready: Arc<Mutex<VecDeque<Delivery>>>,
        acked: Arc<Mutex<Vec<String>>>,
        released: Arc<Mutex<Vec<(String, Duration)>>>,
        dead: Arc<Mutex<Vec<(String, String)>>>,
        /// Envelopes published when each ack happened (ack strictly after publish).
        out: MemOut,
        acked_after: Arc<Mutex<Vec<usize>>>,
    }

    impl MemIn {
        fn push(&self, receipt: &str, body: &[u8]) {
            self.ready.lock().unwrap().push_back(Delivery {
                receipt: receipt.into(),
                attempt: 1,
                body: String::from_utf8(body.to_vec()).unwrap(),
            });
        }
    }

    impl QueueConsumer for MemIn {
        async fn receive(&self, max: usize, _visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
            let mut ready = self.ready.lock().unwrap();
            let n = max.min(ready.len());
            Ok(ready.drain(..n).collect())
        }
        async fn ack(&self, d: &Delivery) -> Result<(), BackendError> {
            self.acked_after
                .lock()
                .unwrap()
                .push(self.out.published.lock().unwrap().len());
            self.acked.lock().unwrap().push(d.receipt.clone());
            Ok(())
        }
        async fn release(&self, d: &Delivery, delay: Duration) -> Result<(), BackendError> {
            self.released.lock().unwrap().push((d.receipt.clone(), delay));
            Ok(())
        }
        async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<(), BackendError> {
            self.dead
                .lock()
                .unwrap()
                .push((d.receipt.clone(), reason.to_string()));
            Ok(())
        }
        async fn extend(&self, _d: &Delivery, _visibility: Duration) -> Result<(), BackendError> {
            Ok(())
        }
    }

    /// The main queue; `fail` makes every publish fail.
    #[derive(Clone, Default)]
    struct MemOut {
        published: Arc<Mutex<Vec<Envelope>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl QueueProducer for MemOut {
        async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
            if *self.fail.lock().unwrap() {
                return Err(BackendError::new("main queue unavailable", "test"));
            }
            self.published.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
    }

    fn translator(kind: Kind, principals: &[&str]) -> (Translator<MemIn, MemOut>, MemIn, MemOut) {
        let out = MemOut::default();
        let input = MemIn {
            out: out.clone(),
            ..MemIn::default()
        };
        let cfg = TranslatorConfig::new(kind, principals.iter().map(|p| p.to_string()).collect());
        (Translator::new(input.clone(), out.clone(), cfg), input, out)
    }

    macro_rules! fixture {
        ($path:literal) => {
            include_bytes!(concat!("../../../../shared/fixtures/", $path)).as_slice()
        };
    }

    fn ids(out: &MemOut) -> Vec<String> {
        out.published
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.id.0.clone())
            .collect()
    }

    #[tokio::test]
    async fn aws_fixtures_in_envelopes_out_acked_after_publish() {
        let (t, input, out) = translator(Kind::Aws, &[]);
        input.push("r1", fixture!("aws/eventbridge.iam.CreateUser.constructed.json"));
        input.push(
            "r2",
            fixture!("aws/eventbridge.iam.CreateAccessKey.constructed.json"),
        );
        input.push(
            "r3",
            fixture!("aws/eventbridge.secretsmanager.GetSecretValue.constructed.json"),
        );
        let report = t.translate_once().await.unwrap();
        assert_eq!(report.received, 3);
        assert_eq!(report.acked, 3);
        assert_eq!(report.published, 3);
        assert_eq!(
            report.by_kind,
            BTreeMap::from([
                ("cloud_drift".to_string(), 1),
                ("ignored".to_string(), 1),
                ("rotation_requested".to_string(), 1)
            ])
        );
        assert_eq!(
            ids(&out),
            [
                "aws:cloudtrail:e1d2c3b4-0000-4a5b-8c9d-222222220000",
                "aws:cloudtrail:e1d2c3b4-0002-4a5b-8c9d-222222220002",
                "aws:cloudtrail:7b8c9d0e-0000-4f1a-b2c3-444444440002"
            ]
        );
        assert_eq!(*input.acked.lock().unwrap(), ["r1", "r2", "r3"]);
        // Each ack came after its own delivery's envelope was published.
        assert_eq!(*input.acked_after.lock().unwrap(), [1, 2, 3]);
        assert!(input.dead.lock().unwrap().is_empty());
        // Nothing left: the next step is empty.
        assert_eq!(t.translate_once().await.unwrap(), TranslateReport::default());
    }

    #[tokio::test]
    async fn gcp_push_and_data_deliveries_become_envelopes() {
        let (t, input, out) = translator(Kind::Gcp, &["gatehouse@acme-prod-42.iam.gserviceaccount.com"]);
        input.push(
            "p1",
            fixture!("gcp/pubsub.push.logsink.SetIamPolicy.constructed.json"),
        );
        input.push(
            "p2",
            fixture!("gcp/logentry.CreateServiceAccountKey.constructed.json"),
        );
        input.push(
            "p3",
            fixture!("gcp/pubsub.push.secretmanager.SECRET_ROTATE.constructed.json"),
        );
        input.push(
            "p4",
            fixture!("gcp/secretmanager.secret.SECRET_ROTATE.data.constructed.json"),
        );
        let report = t.translate_once().await.unwrap();
        assert_eq!(report.acked, 4);
        let published = out.published.lock().unwrap().clone();
        let summary: Vec<(&str, &str)> = published
            .iter()
            .map(|e| (e.subject.key.as_str(), e.event.kind()))
            .collect();
        assert_eq!(
            summary,
            [
                ("gcp:user:bob@example.com", "cloud_drift"),
                (
                    "gcp:sa:ci-deployer@acme-prod-42.iam.gserviceaccount.com",
                    "rotation_requested"
                ),
                (
                    "gcp:secret:projects/123456789012/secrets/payments-db-password",
                    "rotation_requested"
                ),
                (
                    "gcp:secret:projects/123456789012/secrets/payments-db-password",
                    "rotation_requested"
                ),
            ]
        );
        assert!(matches!(
            &published[2].event,
            IdentityEvent::RotationRequested { secret: Some(s), .. } if s == "projects/123456789012/secrets/payments-db-password"
        ));
    }

    #[tokio::test]
    async fn changes_made_by_gatehouse_are_published_as_ignored() {
        let (t, input, out) = translator(Kind::Aws, &["arn:aws:iam::111122223333:user/ops-automation"]);
        input.push(
            "r1",
            fixture!("aws/eventbridge.iam.CreateAccessKey.constructed.json"),
        );
        let report = t.translate_once().await.unwrap();
        assert_eq!(report.by_kind, BTreeMap::from([("ignored".to_string(), 1)]));
        assert_eq!(
            out.published.lock().unwrap()[0].event,
            IdentityEvent::Ignored {
                event_type: "CreateAccessKey (made by gatehouse)".into()
            }
        );
        assert_eq!(*input.acked.lock().unwrap(), ["r1"]);
    }

    #[tokio::test]
    async fn poison_is_dead_lettered_at_once_with_the_reason() {
        let (t, input, out) = translator(Kind::Aws, &[]);
        input.push("bad1", b"not json at all");
        input.push("bad2", fixture!("aws/cloudtrail.records.CreateUser.docs.json"));
        input.push(
            "good",
            fixture!("aws/eventbridge.iam.DeleteUser.constructed.json"),
        );
        let report = t.translate_once().await.unwrap();
        let dead = input.dead.lock().unwrap().clone();
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].0, "bad1");
        assert!(
            dead[0]
                .1
                .starts_with("unparseable aws audit event: body is not valid json"),
            "{}",
            dead[0].1
        );
        assert_eq!(dead[1].0, "bad2");
        assert!(
            dead[1].1.contains("a cloudtrail log file (Records[])"),
            "{}",
            dead[1].1
        );
        assert_eq!(report.dead_lettered, [dead[0].1.clone(), dead[1].1.clone()]);
        // Poison is neither acked nor released (so never retried); the good one still went through.
        assert_eq!(*input.acked.lock().unwrap(), ["good"]);
        assert!(input.released.lock().unwrap().is_empty());
        assert_eq!(ids(&out), ["aws:cloudtrail:e1d2c3b4-0005-4a5b-8c9d-222222220005"]);

        // A GCP delivery that is not a message Gatehouse reads.
        let (t, input, _) = translator(Kind::Gcp, &[]);
        input.push(
            "g",
            fixture!("gcp/pubsub.push.MessagePublishedData-simple.google-cloudevents.json"),
        );
        t.translate_once().await.unwrap();
        let dead = input.dead.lock().unwrap().clone();
        assert!(dead[0].1.contains("message.data is not json"), "{}", dead[0].1);
    }

    #[tokio::test]
    async fn publish_failure_releases_with_backoff_and_does_not_ack() {
        let (t, input, out) = translator(Kind::Aws, &[]);
        *out.fail.lock().unwrap() = true;
        input.push("r1", fixture!("aws/eventbridge.iam.CreateUser.constructed.json"));
        let report = t.translate_once().await.unwrap();
        assert_eq!(report.released, 1);
        assert_eq!(report.acked, 0);
        assert!(input.acked.lock().unwrap().is_empty());
        assert!(input.dead.lock().unwrap().is_empty());
        let released = input.released.lock().unwrap().clone();
        assert_eq!(released, [("r1".to_string(), Duration::from_millis(500))]);
        assert!(backoff(3) > backoff(1));
        assert_eq!(backoff(50), backoff(10));

        // The main queue is back: the redelivery goes through.
        *out.fail.lock().unwrap() = false;
        input.push("r1", fixture!("aws/eventbridge.iam.CreateUser.constructed.json"));
        let report = t.translate_once().await.unwrap();
        assert_eq!(report.acked, 1);
        assert_eq!(ids(&out), ["aws:cloudtrail:e1d2c3b4-0000-4a5b-8c9d-222222220000"]);
    }

    #[tokio::test]
    async fn run_translates_until_shutdown() {
        let (t, input, out) = translator(Kind::Aws, &[]);
        input.push(
            "r1",
            fixture!("aws/eventbridge.iam.AttachRolePolicy.constructed.json"),
        );
        let (trigger, shutdown) = Shutdown::new();
        let task = tokio::spawn(t.run(shutdown));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while input.acked.lock().unwrap().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "not translated in time");
            tokio::task::yield_now().await;
        }
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("run returns on shutdown")
            .unwrap();
        assert_eq!(ids(&out), ["aws:cloudtrail:e1d2c3b4-0003-4a5b-8c9d-222222220003"]);
    }

    /// Counts counters by their full key (name and labels).
    #[derive(Default)]
    struct Counting(Arc<Mutex<BTreeMap<String, u64>>>);

    struct Cell(String, Arc<Mutex<BTreeMap<String, u64>>>);

    impl metrics::CounterFn for Cell {
        fn increment(&self, value: u64) {
            *self.1.lock().unwrap().entry(self.0.clone()).or_default() += value;
        }
        fn absolute(&self, value: u64) {
            self.1.lock().unwrap().insert(self.0.clone(), value);
        }
    }

    impl metrics::Recorder for Counting {
        fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            metrics::Counter::from_arc(Arc::new(Cell(name, self.0.clone())))
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn received_and_unparseable_events_are_counted() {
        let recorder = Counting::default();
        let counts = recorder.0.clone();
        let (t, input, _) = translator(Kind::Aws, &[]);
        input.push(
            "a",
            fixture!("aws/eventbridge.iam.AddUserToGroup.constructed.json"),
        );
        input.push(
            "b",
            fixture!("aws/eventbridge.secretsmanager.RotationSucceeded.constructed.json"),
        );
        input.push(
            "c",
            fixture!("aws/secretsmanager.rotation-lambda.setSecret.constructed.json"),
        );
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        metrics::with_local_recorder(&recorder, || rt.block_on(t.translate_once())).unwrap();
        let counts = counts.lock().unwrap().clone();
        assert_eq!(
            counts,
            BTreeMap::from([
                // `source` too: every sample of a metric carries its declared label keys.
                (
                    "gatehouse_events_failed_total{reason=unparseable,source=aws_cloudtrail}".to_string(),
                    1
                ),
                (
                    "gatehouse_events_received_total{actionable=false,kind=ignored,source=aws_cloudtrail}"
                        .to_string(),
                    1
                ),
                (
                    "gatehouse_events_received_total{actionable=true,kind=cloud_drift,source=aws_cloudtrail}"
                        .to_string(),
                    1
                ),
            ])
        );
    }
}
