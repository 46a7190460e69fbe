//! One Gatehouse process assembled from configuration: `gatehouse standalone` (intake +
//! processor, and the rotator when secrets are declared) and `gatehouse-processor`. The intake
//! process alone is `gatehouse_intake::service`; the processor's own wiring (engine, budget,
//! state, the rotator's `main`) is `gatehouse_engine::app`, re-exported here.

// The processor's future (engine, breaker, applies across Looker, AWS, GCP and the store)
// nests deeper than rustc's default query depth (128).
#![recursion_limit = "256"]

pub use gatehouse_engine::app::*;
pub use gatehouse_intake::service::Running;

use gatehouse_domain::ports::{QueueConsumer, QueueProducer};
use gatehouse_engine::worker::{Worker, WorkerConfig};
#[cfg(any(feature = "sqs", feature = "pubsub"))]
use gatehouse_intake::audit::{Kind, Translator, TranslatorConfig};
#[cfg(feature = "pubsub")]
use gatehouse_intake::service::WithAttributes;
use gatehouse_intake::service::{self, ServiceError};
use gatehouse_platform::config::{Config, QueueConfig};
#[cfg(feature = "pubsub")]
use gatehouse_store::pubsub::{PubsubOptions, PubsubQueue};
use gatehouse_store::sqlite::Sqlite;
#[cfg(feature = "sqs")]
use gatehouse_store::sqs::SqsQueue;
use gatehouse_store::state::AnyState;
use std::sync::Arc;

/// The intake wiring's error as the process's.
fn service_error(e: ServiceError) -> AppError {
    {
        match e {
            ServiceError::Config(e) => AppError::Config(e),
            ServiceError::Backend(e) => AppError::Backend(e),
            ServiceError::Bind { addr, source } => AppError::Bind { addr, source },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Components {
    pub ingress: bool,
    pub processor: bool,
}

impl Components {
    /// `gatehouse standalone` (ingress and processor together) also runs the rotator when
    /// secrets are declared; the split services leave it to `gatehouse-rotator`.
    fn rotator(&self, cfg: &Config) -> bool {
        self.ingress && self.processor && !cfg.rotator.secrets.is_empty()
    }
}

/// Validate everything (config, policy, Looker settings, database), bind the port, then start.
pub async fn start(cfg: &Config, components: Components) -> Result<Running, AppError> {
    gatehouse_store::backends::check(cfg)?;
    let store = Sqlite::open(&cfg.data_dir).await?;
    let state = open_state(cfg, &store).await?;
    #[cfg(any(feature = "sqs", feature = "pubsub"))]
    let principals = cfg.cloud_audit.gatehouse_principals.clone();
    match &cfg.queue {
        QueueConfig::Embedded => start_on(cfg, components, store.clone(), store, state, None).await,
        #[cfg(feature = "sqs")]
        QueueConfig::Sqs(s) => {
            let queue = SqsQueue::connect(&s.queue_url, s.wait_time).await?;
            let mut running = start_on(cfg, components, queue.clone(), store, state, None).await?;
            if let (true, Some(url)) = (components.processor, &s.audit_queue_url) {
                let audit = SqsQueue::connect(url, s.wait_time).await?;
                let t = Translator::new(audit, queue, TranslatorConfig::new(Kind::Aws, principals));
                running.spawn(t.run(running.shutdown()));
            }
            Ok(running)
        }
        #[cfg(not(feature = "sqs"))]
        QueueConfig::Sqs(_) => Err(gatehouse_store::backends::SQS.missing().into()),
        #[cfg(feature = "pubsub")]
        QueueConfig::Pubsub(p) => {
            let mut opts = PubsubOptions::new(&p.topic, &p.subscription);
            opts.emulator_host = p.emulator_host.clone();
            opts.dead_letter_topic = p.dead_letter_topic.clone();
            let queue = PubsubQueue::connect_with(opts.clone()).await?;
            let mut running = start_on(cfg, components, queue.clone(), store, state, None).await?;
            let q = queue.clone();
            running.on_stop(Box::new(move || Box::pin(async move { q.shutdown().await })));
            if let (true, Some(sub)) = (components.processor, &p.audit_subscription) {
                let audit = PubsubQueue::connect_with(PubsubOptions {
                    subscription: sub.clone(),
                    ..opts
                })
                .await?;
                let a = audit.clone();
                running.on_stop(Box::new(move || Box::pin(async move { a.shutdown().await })));
                let input = WithAttributes(audit);
                let t = Translator::new(input, queue, TranslatorConfig::new(Kind::Gcp, principals));
                running.spawn(t.run(running.shutdown()));
            }
            Ok(running)
        }
        #[cfg(not(feature = "pubsub"))]
        QueueConfig::Pubsub(_) => Err(gatehouse_store::backends::PUBSUB.missing().into()),
    }
}

/// Start on an already built queue (tests: an SQS client pointed at moto, several replicas on
/// one queue), with the SQLite database and state store from `cfg`.
pub async fn start_with_queue<Q>(cfg: &Config, components: Components, queue: Q) -> Result<Running, AppError>
where
    Q: QueueProducer + QueueConsumer + Clone + 'static,
{
    let store = Sqlite::open(&cfg.data_dir).await?;
    let state = open_state(cfg, &store).await?;
    start_on(cfg, components, queue, store, state, None).await
}

/// [`start_with_queue`] with an already built rotation queue too (tests: both on moto).
pub async fn start_with_queues<Q>(
    cfg: &Config,
    components: Components,
    queue: Q,
    rotation: RotationQueue,
) -> Result<Running, AppError>
where
    Q: QueueProducer + QueueConsumer + Clone + 'static,
{
    let store = Sqlite::open(&cfg.data_dir).await?;
    let state = open_state(cfg, &store).await?;
    start_on(cfg, components, queue, store, state, Some(rotation)).await
}

/// Start on a given queue backend.
async fn start_on<Q>(
    cfg: &Config,
    components: Components,
    queue: Q,
    store: Sqlite,
    state: AnyState,
    rotation: Option<RotationQueue>,
) -> Result<Running, AppError>
where
    Q: QueueProducer + QueueConsumer + Clone + 'static,
{
    // Issue 12, item 4: rotation requests leave the processor as envelopes on the rotation
    // queue, and the rotator takes them only from there.
    let rotation = match rotation {
        Some(q) => Some(q),
        None if components.processor || components.rotator(cfg) => rotation_queue(cfg, Some(&store)).await?,
        None => None,
    };
    let engine = engine_with_cloud(cfg, state.clone()).await?;
    let engine = Arc::new(match &rotation {
        Some(q) => engine.with_rotation_queue(q.publisher.clone()),
        None => engine,
    });
    let dry_run = engine.is_dry_run();
    if components.processor {
        check_looker_attributes(cfg, &engine).await?;
    }
    let mut running = service::listen(
        cfg,
        components.ingress,
        queue.clone(),
        store.clone(),
        state.clone(),
        dry_run,
    )
    .await
    .map_err(service_error)?;
    let shutdown = running.shutdown();
    let mut rotator_meters = Vec::new();
    if components.rotator(cfg) {
        let rotator = gatehouse_rotation::build::rotator(cfg, state.clone()).await?;
        let rotator = match &rotation {
            Some(q) => rotator.with_requests(q.requests.clone()),
            None => rotator,
        };
        rotator_meters = rotator.looker_meters();
        let s = shutdown.clone();
        running.spawn(async move { rotator.run(s.wait()).await });
    }
    if components.processor {
        let p = &cfg.processor;
        let worker = Worker::new(
            queue.clone(),
            engine.clone(),
            WorkerConfig {
                concurrency: p.workers,
                max_attempts: p.max_attempts,
                visibility_timeout: p.visibility_timeout,
                poll_interval: p.poll_interval,
                sweep_interval: p.deletion_sweep_interval,
            },
        );
        // Embedded queue: an enqueue in this process (ingress, redrive) wakes the processor.
        let worker = if matches!(cfg.queue, QueueConfig::Embedded) {
            worker.with_wake(store.wake())
        } else {
            worker
        };
        let s = shutdown.clone();
        running.spawn(worker.run(s));
    }
    if components.processor
        && let Some(export) = cfg.audit.head_export.clone()
    {
        let s = shutdown.clone();
        running.spawn(gatehouse_engine::head_export::run(state.clone(), export, s));
    }
    if let Some(q) = rotation {
        running.on_stop(Box::new(move || Box::pin(async move { q.shutdown().await })));
    }
    if components.processor && cfg.reconcile.scheduled {
        let cron = cfg.reconcile.cron()?;
        let engine = engine.clone();
        let dir = store.clone();
        let shared = state.clone();
        let s = shutdown.clone();
        let rc = cfg.reconcile.clone();
        let quota = cfg.looker.budget.monthly_call_quota;
        // Every processor runs the schedule; one of them (the tick's lease holder) reconciles.
        running.spawn(async move {
            let holder = gatehouse_engine::reconcile_leader::holder_id();
            let lease = rc.leader_lease;
            gatehouse_engine::reconcile_leader::run_on_schedule_once(
                &cron,
                gatehouse_domain::clock::SystemClock,
                s,
                &shared,
                &holder,
                lease,
                |tick| {
                    let (engine, dir, shared, rc) = (&engine, &dir, &shared, &rc);
                    async move {
                        gatehouse_engine::reconcile_budget::scheduled_run(
                            engine.as_ref(),
                            dir,
                            shared,
                            rc,
                            quota,
                            &tick,
                        )
                        .await
                    }
                },
            )
            .await
        });
    }
    // Looker (Google Cloud core): converge people as soon as their first login creates their
    // user (one search call a run when nothing is new); one replica per interval.
    if components.processor && cfg.looker_core().is_some() && engine.looker().is_some() {
        let engine = engine.clone();
        let shared = state.clone();
        let s = shutdown.clone();
        let core = cfg.looker.core.clone();
        let (quota, reserve) = (cfg.looker.budget.monthly_call_quota, cfg.reconcile.event_reserve);
        running.spawn(async move {
            let holder = gatehouse_engine::reconcile_leader::holder_id();
            gatehouse_engine::looker_core::run_every(
                engine.as_ref(),
                &shared,
                &shared,
                &holder,
                gatehouse_engine::looker_core::Every {
                    interval: core.first_login_interval,
                    page_size: core.first_login_page_size,
                    quota,
                    reserve,
                },
                gatehouse_domain::clock::SystemClock,
                s,
            )
            .await
        });
    }
    // The processor's budget also counts the Looker calls of a rotator in the same process.
    let processor_meter = engine
        .looker()
        .filter(|_| components.processor)
        .map(|c| c.meter().clone());
    if let Some(meter) = processor_meter
        && let Some(budget) = budget(cfg, state.clone(), &[vec![meter], rotator_meters].concat())
    {
        let budget = Arc::new(budget);
        let (b, s) = (budget.clone(), shutdown.clone());
        running.spawn(async move { b.run(s).await });
        // After every task has stopped (no call in flight any more): the last calls.
        running.on_stop(Box::new(move || {
            Box::pin(async move {
                if let Err(e) = budget.flush().await {
                    tracing::error!(error = %e, "cannot store the last looker call count");
                }
            })
        }));
    }
    tracing::info!(
        addr = %running.addr,
        admin_addr = %running.admin_addr,
        data_dir = %cfg.data_dir.display(),
        state = state.backend(),
        dry_run,
        ingress = components.ingress,
        processor = components.processor,
        rotator = components.rotator(cfg),
        "gatehouse started"
    );
    if dry_run {
        tracing::warn!("no Looker configured: dry-run mode, plans go to the ledger and no call is made");
    }
    Ok(running)
}

/// SIGINT/SIGTERM, stop gracefully.
pub async fn service_main(
    name: &str,
    config: Option<&std::path::Path>,
    components: Components,
) -> std::process::ExitCode {
    gatehouse_platform::service::main(name, config, |cfg| async move {
        start(&cfg, components)
            .await?
            .until(gatehouse_platform::shutdown::os_signal())
            .await;
        Ok::<(), AppError>(())
    })
    .await
}
