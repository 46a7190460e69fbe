//! Drives the engine from a queue: claim, process (at most one message per subject at a time),
//! then ack; release with backoff on transient failure; dead-letter poison messages with the
//! reason. `run_once` is the step tests drive without sleeping.
//!
//! On a queue whose leases can lapse (SQS, Pub/Sub: `QueueConsumer::leases_can_lapse`), each
//! delivery is worked on under a [`Lease`]: taken from before the receive was sent, extended
//! when half of it is left, and handed to the engine, whose one apply loop checks it before
//! every write. Work whose lease may have lapsed stops before its next write and the delivery is
//! abandoned (`QueueConsumer::abandon`), never settled nor dead-lettered: another processor may
//! already have it.

use crate::engine::{Engine, Handled, ProcessError};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::error::{Classified, chain};
use gatehouse_domain::ports::{BackendError, Delivery, LookerPort, QueueConsumer, StateStore};
use gatehouse_platform::events::{self, FailReason, ProcessedOutcome, QueueOp};
use gatehouse_platform::retry::RetryPolicy;
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_targets::lease::Lease;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

/// When a failed delivery comes back: the one retry policy's schedule, 250 ms doubling per
/// attempt up to about 4 minutes, never sooner than a `Retry-After`.
const RELEASE: RetryPolicy = RetryPolicy {
    retries: 0,
    min_delay: Duration::from_millis(250),
    max_delay: Duration::from_millis(250 * 1024),
};

/// How long the worker waits after a failed receive: the one retry policy's schedule, 250 ms
/// doubling up to 30 s per consecutive failure, never sooner than a `Retry-After`. A failure
/// retrying cannot fix (access denied, no such queue, a refused request) waits the longest at
/// once: it needs a person, not a hammering, and the worker keeps trying so that the fix takes
/// effect without a restart.
pub const RECEIVE_BACKOFF: RetryPolicy = RetryPolicy {
    retries: 0,
    min_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(30),
};

/// Settling a delivery (ack, release, dead letter): a throttled or transient failure is retried
/// in place, since a delivery left unsettled comes back and is handled again.
pub const SETTLE: RetryPolicy = RetryPolicy {
    retries: 3,
    min_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(2),
};

/// The wait before the next receive after `failures` consecutive failed ones, the last `e`.
pub fn receive_delay(e: &impl Classified, failures: u32) -> Duration {
    if e.is_retryable() {
        RECEIVE_BACKOFF.delay(failures.saturating_sub(1), e.retry_after())
    } else {
        RECEIVE_BACKOFF.delay(u32::MAX, e.retry_after())
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub visibility_timeout: Duration,
    pub poll_interval: Duration,
    /// How often due deletions are swept.
    pub sweep_interval: Duration,
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Acked(Handled),
    Released {
        delay: Duration,
    },
    DeadLettered {
        reason: String,
    },
    /// The delivery's lease may have lapsed: the work stopped before its next write and the
    /// delivery was let go unsettled (it comes back, perhaps to another processor).
    Abandoned {
        reason: String,
    },
}

pub struct Worker<Q, S, L> {
    queue: Q,
    engine: Arc<Engine<S, L>>,
    cfg: WorkerConfig,
    /// Rung by an enqueue in this process (embedded queue): claim at once, not at the next poll.
    wake: Option<Arc<Notify>>,
}

impl<Q, S, L> Worker<Q, S, L>
where
    Q: QueueConsumer + Clone + 'static,
    S: StateStore + 'static,
    L: LookerPort + 'static,
{
    pub fn new(queue: Q, engine: Arc<Engine<S, L>>, cfg: WorkerConfig) -> Self {
        Worker {
            queue,
            engine,
            cfg,
            wake: None,
        }
    }

    /// Wake up on `wake` (rung by the queue when this process enqueues) as well as every
    /// `poll_interval`, which is then only the fallback for delayed retries and other processes.
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// The lease of a delivery received by a request sent at `leased_at`, when the queue's
    /// leases can lapse (`None`: the embedded queue, which pays nothing for it).
    fn lease(&self, leased_at: tokio::time::Instant) -> Option<Lease> {
        self.queue
            .leases_can_lapse()
            .then(|| Lease::new(leased_at, self.cfg.visibility_timeout))
    }

    /// Claim one batch and process it to the end. Returns what became of each delivery.
    pub async fn run_once(&self) -> Result<Vec<Disposition>, ProcessError> {
        let leased_at = tokio::time::Instant::now();
        let batch = self
            .queue
            .receive(self.cfg.concurrency, self.cfg.visibility_timeout)
            .await?;
        let mut set = JoinSet::new();
        for d in batch {
            set.spawn(process(
                self.queue.clone(),
                self.engine.clone(),
                self.cfg.clone(),
                d,
                self.lease(leased_at),
            ));
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(disp)) => out.push(disp),
                Ok(Err(e)) => return Err(e),
                Err(join) => tracing::error!(error = %join, "processing task panicked"),
            }
        }
        Ok(out)
    }

    /// Run until shutdown: keep up to `concurrency` deliveries in flight; in-flight work is
    /// finished (not abandoned) when shutdown is requested.
    pub async fn run(self, shutdown: Shutdown) {
        let mut set: JoinSet<Result<Disposition, ProcessError>> = JoinSet::new();
        let mut last_sweep: Option<tokio::time::Instant> = None;
        // Consecutive failed receives, and no receive before this instant.
        let mut receive_failures: u32 = 0;
        let mut backoff_until: Option<tokio::time::Instant> = None;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if last_sweep.is_none_or(|t| t.elapsed() >= self.cfg.sweep_interval) {
                last_sweep = Some(tokio::time::Instant::now());
                match self.engine.sweep_deletions(gatehouse_domain::clock::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "scheduled deletions done"),
                    Err(e) => tracing::warn!(error = %e, "scheduled deletions failed; will retry"),
                }
            }
            let free = self.cfg.concurrency.saturating_sub(set.len());
            let backing_off = backoff_until.is_some_and(|t| tokio::time::Instant::now() < t);
            let leased_at = tokio::time::Instant::now();
            let received = if free > 0 && !backing_off {
                match self.queue.receive(free, self.cfg.visibility_timeout).await {
                    Ok(b) => {
                        receive_failures = 0;
                        backoff_until = None;
                        b
                    }
                    Err(e) => {
                        receive_failures = receive_failures.saturating_add(1);
                        let delay = receive_delay(&e, receive_failures);
                        backoff_until = Some(tokio::time::Instant::now() + delay);
                        let kind = e.kind();
                        events::queue_error(QueueOp::Receive, kind);
                        if kind.is_retryable() {
                            tracing::warn!(error = %chain(&e), kind = kind.as_str(), failures = receive_failures,
                                retry_in = ?delay, "queue receive failed; will retry");
                        } else {
                            tracing::error!(error = %chain(&e), kind = kind.as_str(), retry_in = ?delay,
                                "queue receive refused; retrying will not help until the queue's configuration or permissions are fixed");
                        }
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            let got = received.len();
            for d in received {
                set.spawn(process(
                    self.queue.clone(),
                    self.engine.clone(),
                    self.cfg.clone(),
                    d,
                    self.lease(leased_at),
                ));
            }
            if got == 0 || set.len() >= self.cfg.concurrency {
                let woken = async {
                    match &self.wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                };
                // After a failed receive, the backoff replaces the poll and a wake-up does not
                // cut it short.
                let backoff = backoff_until.filter(|t| tokio::time::Instant::now() < *t);
                let next = backoff.unwrap_or_else(|| tokio::time::Instant::now() + self.cfg.poll_interval);
                // Wait for a slot, new work, or shutdown.
                tokio::select! {
                    _ = shutdown.wait() => {}
                    _ = woken, if set.len() < self.cfg.concurrency && backoff.is_none() => {}
                    Some(r) = set.join_next(), if !set.is_empty() => log_result(r),
                    _ = tokio::time::sleep_until(next), if set.len() < self.cfg.concurrency => {}
                }
            }
            while let Some(r) = set.try_join_next() {
                log_result(r);
            }
        }
        // Finish what was claimed: its effects and acks are recorded before we exit.
        while let Some(r) = set.join_next().await {
            log_result(r);
        }
    }
}

/// Settle a delivery with the [`SETTLE`] policy: a throttled or transient failure is retried in
/// place (counted in `gatehouse_queue_errors_total{operation}`); one retrying cannot fix, or the
/// last, is returned (the delivery then comes back after its visibility timeout).
async fn settle<F, Fut>(operation: QueueOp, mut f: F) -> Result<(), BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), BackendError>>,
{
    SETTLE
        .call(operation.as_str(), || {
            let attempt = f();
            async move {
                attempt.await.inspect_err(|e| {
                    events::queue_error(operation, e.kind());
                })
            }
        })
        .await
}

fn log_result(r: Result<Result<Disposition, ProcessError>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "queue operation failed; the message will come back"),
        Err(e) => tracing::error!(error = %e, "processing task panicked"),
    }
}

async fn process<Q, S, L>(
    queue: Q,
    engine: Arc<Engine<S, L>>,
    cfg: WorkerConfig,
    d: Delivery,
    lease: Option<Lease>,
) -> Result<Disposition, ProcessError>
where
    Q: QueueConsumer,
    S: StateStore,
    L: LookerPort,
{
    let env = match Envelope::from_json(&d.body) {
        Ok(e) => e,
        Err(e) => {
            let reason = format!("not a valid envelope: {e}");
            tracing::warn!(receipt = %d.receipt, reason = %reason, "dead-lettering poison message");
            queue.dead_letter(&d, &reason).await?;
            events::events_failed(None, FailReason::Poison);
            return Ok(Disposition::DeadLettered { reason });
        }
    };
    let source = env.source.as_str();
    let span = tracing::info_span!(
        "process",
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        envelope_id = %env.id,
        source,
        subject = %env.subject.key,
        event_type = %env.source_event_type,
        messaging.system = "gatehouse-embedded",
        messaging.message.id = %env.id,
        messaging.delivery_attempt = d.attempt,
        outcome = tracing::field::Empty,
    );
    // The intake's request span is the parent, even across processes (the envelope carries it).
    if let Some(parent) = &env.trace_parent {
        gatehouse_platform::telemetry::set_remote_parent(&span, parent);
    }
    async move {
        let started = tokio::time::Instant::now();
        // Queue lag, whatever the backend: from the intake accepting the event to work starting.
        let age = (gatehouse_domain::clock::now() - env.received_at).num_milliseconds().max(0) as f64 / 1000.0;
        events::event_age(env.source, age);
        // Keep the lease while the work runs, so slow work is not redelivered to another worker:
        // extended when half of it is left; after a failed extension, tried again soon. A lease
        // that may have lapsed is not extended any more (its receipt may be another's now).
        let handled = {
            let work = async {
                match &lease {
                    Some(l) => engine.handle_leased(&env, l).await,
                    None => engine.handle(&env).await,
                }
            };
            tokio::pin!(work);
            let every = (cfg.visibility_timeout / 2).max(Duration::from_millis(100));
            let again = (cfg.visibility_timeout / 10).max(Duration::from_millis(100));
            let mut next = match &lease {
                Some(l) => l.renew_at(),
                None => tokio::time::Instant::now() + every,
            };
            loop {
                tokio::select! {
                    r = &mut work => break r,
                    _ = tokio::time::sleep_until(next), if !lease.as_ref().is_some_and(Lease::is_lost) => {
                        let sent = tokio::time::Instant::now();
                        match queue.extend(&d, cfg.visibility_timeout).await {
                            Ok(()) => {
                                if let Some(l) = &lease {
                                    l.extended(sent, tokio::time::Instant::now());
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %chain(&e), "could not extend the lease; the message may be redelivered");
                            }
                        }
                        let now = tokio::time::Instant::now();
                        next = match &lease {
                            Some(l) => l.renew_at().max(now + again),
                            None => now + every,
                        };
                    }
                }
            }
        };
        match handled {
            Ok(handled) => {
                settle(QueueOp::Ack, || queue.ack(&d)).await?;
                let outcome = match &handled {
                    Handled::Duplicate => ProcessedOutcome::Duplicate,
                    Handled::Ignored => ProcessedOutcome::Ignored,
                    Handled::NoOp { stale: true } => ProcessedOutcome::Stale,
                    Handled::NoOp { stale: false } => ProcessedOutcome::NoOp,
                    Handled::Applied { .. } => ProcessedOutcome::Applied,
                    Handled::DryRun { .. } => ProcessedOutcome::DryRun,
                    Handled::RotationRequested => ProcessedOutcome::RotationRequested,
                    Handled::Held => ProcessedOutcome::Held,
                };
                events::event_processed(env.source, outcome, started.elapsed().as_secs_f64());
                let outcome = outcome.as_str();
                tracing::Span::current().record("outcome", outcome);
                // Debug, not info: one line per event was a synchronous write on the hot path.
                tracing::debug!(outcome, ?handled, "processed");
                Ok(Disposition::Acked(handled))
            }
            Err(ProcessError::LeaseLost(e)) => {
                // Not the envelope's fault, and the message may be another processor's already:
                // neither released nor dead-lettered under a receipt that may be stale.
                let reason = e.to_string();
                tracing::Span::current().record("outcome", "lease_lost");
                tracing::warn!(reason = %reason, "lease may have lapsed; work stopped before its next write, the message comes back");
                queue.abandon(&d).await;
                events::events_failed(Some(env.source), FailReason::LeaseLost);
                Ok(Disposition::Abandoned { reason })
            }
            Err(e) if e.is_permanent() || d.attempt >= cfg.max_attempts => {
                let reason = format!("after {} attempt(s): {}", d.attempt, chain(&e));
                let span = tracing::Span::current();
                span.record("outcome", "dead_lettered");
                span.record("otel.status_code", "ERROR");
                tracing::warn!(reason = %reason, "dead-lettering");
                settle(QueueOp::DeadLetter, || queue.dead_letter(&d, &reason)).await?;
                events::events_failed(Some(env.source), FailReason::DeadLettered);
                Ok(Disposition::DeadLettered { reason })
            }
            Err(e) => {
                let delay = RELEASE.delay(d.attempt, e.retry_after());
                tracing::Span::current().record("outcome", "retried");
                tracing::warn!(error = %chain(&e), retry_in = ?delay, "processing failed; will retry");
                settle(QueueOp::Release, || queue.release(&d, delay)).await?;
                events::events_failed(Some(env.source), FailReason::Retried);
                Ok(Disposition::Released { delay })
            }
        }
    }
    .instrument(span)
    .await
}
