//! Wiring from configuration: the same assembly serves `gatehouse standalone` (ingress +
//! processor in one process), `gatehouse-ingress` and `gatehouse-processor`.

use crate::audit::{Kind, Translator, TranslatorConfig};
use crate::budget::Budget;
use crate::cloud::{AwsTarget, CloudTargets, GcpTarget};
use crate::engine::{Engine, RetryPolicy};
use crate::ingress::{self, Deps};
use crate::safety::Safety;
use crate::server::{self, Limits};
use crate::worker::{Worker, WorkerConfig};
use futures::future::BoxFuture;
use gatehouse_adapters::aws_iam::{AwsConnect, AwsIam};
use gatehouse_adapters::gcp_iam::{GcpIam, GcpIamConfig, TokenSource};
use gatehouse_adapters::looker::{CallMeter, LookerClient, LookerConfig};
use gatehouse_adapters::postgres::Postgres;
use gatehouse_adapters::pubsub::{PubsubOptions, PubsubQueue};
use gatehouse_adapters::sqlite::Sqlite;
use gatehouse_adapters::sqs::SqsQueue;
use gatehouse_adapters::state::AnyState;
use gatehouse_domain::cloud::AwsUserMapping;
use gatehouse_domain::looker::LookerError;
use gatehouse_domain::policy::{Policy, PolicyError};
use gatehouse_domain::ports::BackendError;
use gatehouse_domain::ports::Directory;
use gatehouse_domain::ports::{Delivery, QueueConsumer, QueueProducer};
use gatehouse_platform::config::{
    AttributeCheck, AwsUserMappingConfig, Config, ConfigError, GcpTokenSource, PostgresConfig, QueueConfig,
    StateConfig,
};
use gatehouse_platform::ops;
use gatehouse_platform::shutdown::{Shutdown, ShutdownTrigger};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("policy file {path}: {source}")]
    Policy { path: String, source: PolicyError },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("looker client: {0}")]
    Looker(#[from] LookerError),
    #[error("rotator: {0}")]
    Rotator(#[from] gatehouse_rotation::RotationError),
    #[error("cloud client: {0}")]
    Cloud(gatehouse_domain::cloud::CloudError),
    #[error(
        "looker user attributes would fail open ([looker] attribute_check = \"warn\" starts anyway): {}",
        .0.join("; ")
    )]
    UnsafeAttributes(Vec<String>),
}

impl AppError {
    /// Exit code for binaries: 64 (EX_USAGE) for bad configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            AppError::Config(_) | AppError::Policy { .. } => 64,
            _ => 1,
        }
    }
}

/// The policy file, or the built-in default (full offboarding, no group mappings), with the
/// configuration's email-domain allow-list. Warns once about what any intake may claim.
pub fn load_policy(cfg: &Config) -> Result<Policy, AppError> {
    let mut policy = match &cfg.policy {
        None => Policy::default(),
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| AppError::Policy {
                path: shown.clone(),
                source: PolicyError::Parse(format!("cannot read: {e}")),
            })?;
            Policy::from_toml(&text).map_err(|source| AppError::Policy { path: shown, source })?
        }
    };
    policy.allowed_email_domains = cfg.identity.allowed_domains();
    if policy.allowed_email_domains.is_none() {
        tracing::warn!(
            "identity.allowed_email_domains is not set: people of any email domain may be onboarded \
             and granted access by any intake; set it to your own domains"
        );
    }
    let open = policy.any_source_claims();
    if !open.is_empty() {
        tracing::warn!(
            rules = %open.join(", "),
            "these policy rules accept a group or attribute claim from any intake; add source = \"...\" \
             to their condition to say which intake may assert it"
        );
    }
    Ok(policy)
}

/// The Looker client, or `None` (dry-run mode) when no Looker is configured.
pub fn looker_client(cfg: &Config) -> Result<Option<LookerClient>, AppError> {
    cfg.looker_connection()?
        .map(|c| {
            LookerClient::new(LookerConfig {
                base_url: c.url,
                client_id: c.client_id,
                client_secret: c.client_secret,
                timeout: c.timeout,
                catalog_ttl: c.catalog_ttl,
            })
        })
        .transpose()
        .map_err(AppError::from)
}

pub type AppEngine = Engine<AnyState, LookerClient>;

/// One-off commands (`plan`, `reconcile`): add the calls `engine`'s Looker client made to the
/// month's budget count, once, when a quota is configured.
pub async fn count_looker_calls(cfg: &Config, engine: &AppEngine) {
    if let Some(client) = engine.looker() {
        count_calls(cfg, engine.store().clone(), vec![client.meter().clone()]).await;
    }
}

/// Add what `meters` counted to the month's budget count in `store`, once, when a quota is
/// configured. Errors are logged, not returned: the command's own result matters more.
pub async fn count_calls(cfg: &Config, store: AnyState, meters: Vec<CallMeter>) {
    let Some(budget) = budget(cfg, store, &meters) else {
        return;
    };
    match budget.flush().await {
        Ok(s) => tracing::info!(month = %s.month, calls = s.calls, remaining = s.remaining,
            "looker admin-api budget"),
        Err(e) => tracing::warn!(error = %e, "cannot store the looker call count"),
    }
}

/// The budget of a process counting `meters` into `store`: `None` without a quota or a meter.
fn budget(cfg: &Config, store: AnyState, meters: &[CallMeter]) -> Option<Budget<AnyState>> {
    let quota = cfg.looker.budget.monthly_call_quota?;
    let (first, more) = meters.split_first()?;
    Some(
        Budget::new(
            store,
            first.clone(),
            quota,
            &cfg.looker.budget,
            Arc::new(chrono::Utc::now),
        )
        .with_meters(more.iter().cloned()),
    )
}

/// The processor's state store as configured: the SQLite database `sqlite` (also the embedded
/// queue's), or a PostgreSQL pool.
pub async fn open_state(cfg: &Config, sqlite: &Sqlite) -> Result<AnyState, AppError> {
    Ok(match &cfg.state {
        StateConfig::Sqlite => AnyState::Sqlite(sqlite.clone()),
        StateConfig::Postgres(p) => AnyState::Postgres(connect_postgres(p).await?),
    })
}

/// The state store alone, for what needs nothing else of the data directory (the rotator,
/// `gatehouse rotate`): PostgreSQL without opening SQLite, else the SQLite database.
pub async fn open_state_alone(cfg: &Config) -> Result<AnyState, AppError> {
    Ok(match &cfg.state {
        StateConfig::Sqlite => AnyState::Sqlite(Sqlite::open(&cfg.data_dir).await?),
        StateConfig::Postgres(p) => AnyState::Postgres(connect_postgres(p).await?),
    })
}

async fn connect_postgres(p: &PostgresConfig) -> Result<Postgres, AppError> {
    let url = p
        .url
        .as_ref()
        .ok_or_else(|| ConfigError::new("state.url (GATEHOUSE_DATABASE_URL)", "is required for postgres"))?;
    Ok(Postgres::connect(url, p.max_connections).await?)
}

/// The cloud targets the configuration enables (AWS IAM, GCP IAM), with the reconcile modes.
pub async fn cloud_targets(cfg: &Config, store: &AnyState) -> Result<CloudTargets, AppError> {
    let p = &cfg.processor;
    let retry = RetryPolicy {
        retries: p.call_retries,
        min_delay: p.retry_min_delay,
        max_delay: p.retry_max_delay,
    };
    let aws = match (&cfg.aws.enabled, &cfg.aws.user_mapping) {
        (true, Some(m)) => {
            let iam = AwsIam::connect(&AwsConnect {
                endpoint_url: cfg.aws.endpoint_url.clone(),
                region: cfg.aws.region.clone(),
                profile: cfg.aws.profile.clone(),
                credentials_file: cfg.aws.credentials_file.clone(),
            })
            .await;
            let mapping = match m {
                AwsUserMappingConfig::Tag(key) => AwsUserMapping::Tag { key: key.clone() },
                AwsUserMappingConfig::Template(t) => AwsUserMapping::Template { template: t.clone() },
            };
            Some(AwsTarget {
                iam,
                mapping,
                retry: retry.clone(),
            })
        }
        _ => None,
    };
    let gcp = if cfg.gcp.enabled {
        let token = match &cfg.gcp.token {
            GcpTokenSource::Static { token } => TokenSource::Static(token.clone()),
            GcpTokenSource::Adc => GcpIam::adc().map_err(AppError::Cloud)?,
        };
        let iam = GcpIam::new(GcpIamConfig {
            resource_manager_url: cfg.gcp.resource_manager_url.clone(),
            bigquery_url: cfg.gcp.bigquery_url.clone(),
            iam_url: cfg.gcp.iam_url.clone(),
            token,
            timeout: cfg.gcp.timeout,
        })
        .map_err(AppError::Cloud)?;
        Some(GcpTarget {
            iam,
            retry: retry.clone(),
            conflict_retries: cfg.gcp.conflict_retries,
        })
    } else {
        None
    };
    let dir = store.clone();
    Ok(CloudTargets {
        aws,
        gcp,
        modes: cfg.reconcile.mode,
        directory: Arc::new(move || {
            let d = dir.clone();
            Box::pin(async move { d.subjects().await })
        }),
    })
}

/// Row-level security must fail closed in Looker too: each managed user attribute must not be
/// editable by users, and its default must be empty or the policy's deny value. A problem refuses
/// the start (or, with `[looker] attribute_check = "warn"`, is logged as an error). If Looker
/// cannot be read now, a warning is logged and the start goes on (an outage must not stop
/// offboarding).
pub async fn check_looker_attributes(cfg: &Config, engine: &AppEngine) -> Result<(), AppError> {
    let (Some(looker), policy) = (engine.looker(), engine.policy()) else {
        return Ok(());
    };
    if policy.managed_attributes().is_empty() {
        return Ok(());
    }
    let held = match looker.user_attribute_settings().await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read looker user attributes; their settings are not checked");
            return Ok(());
        }
    };
    let problems = gatehouse_domain::policy::attribute_problems(policy, &held);
    if problems.is_empty() {
        return Ok(());
    }
    match cfg.looker.attribute_check {
        AttributeCheck::Refuse => Err(AppError::UnsafeAttributes(problems)),
        AttributeCheck::Warn => {
            for problem in &problems {
                tracing::error!(%problem, "looker user attribute fails open (row-level security)");
            }
            Ok(())
        }
    }
}

/// The engine with the cloud targets the configuration enables, every step screened by the
/// safety rails (which learn who Gatehouse is in Looker and AWS on the first plan that writes).
pub async fn engine_with_cloud(cfg: &Config, store: AnyState) -> Result<AppEngine, AppError> {
    let cloud = cloud_targets(cfg, &store).await?;
    let engine = engine(cfg, store)?.with_cloud(cloud);
    let safety = Safety::from_config(cfg)
        .with_looker(engine.looker().cloned())
        .with_aws(engine.cloud().and_then(|c| c.aws.as_ref()).map(|a| a.iam.clone()));
    Ok(engine.with_screen(Arc::new(safety)))
}

pub fn engine(cfg: &Config, store: AnyState) -> Result<AppEngine, AppError> {
    let policy = Arc::new(load_policy(cfg)?);
    let looker = looker_client(cfg)?;
    let p = &cfg.processor;
    let mut holders: std::collections::HashMap<String, Vec<String>> = Default::default();
    for s in &cfg.rotator.secrets {
        for h in &s.holders {
            holders.entry(h.to_lowercase()).or_default().push(s.name.clone());
        }
    }
    Ok(Engine::new(
        store,
        looker,
        policy,
        RetryPolicy {
            retries: p.call_retries,
            min_delay: p.retry_min_delay,
            max_delay: p.retry_max_delay,
        },
    )
    .with_secret_holders(holders)
    .with_max_clock_skew(p.max_clock_skew))
    .map(|e| match &cfg.safety.breaker {
        Some(b) => e.with_breaker(crate::breaker::Breaker::new(b)),
        None => e,
    })
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

/// Work run once every task has finished.
type StopHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>;

/// A running service. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    /// The intake listener (webhooks, SCIM; `/healthz`).
    pub addr: SocketAddr,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    /// The SQLite database: embedded queue, SCIM directory, Graph inbox (and the state when
    /// `[state]` is `sqlite`).
    pub store: Sqlite,
    /// The processor's state store (`[state]`).
    pub state: AnyState,
    pub dry_run: bool,
    trigger: ShutdownTrigger,
    shutdown: Shutdown,
    tasks: Vec<JoinHandle<()>>,
    /// Run after every task has finished (e.g. flush a Pub/Sub stream's acks).
    on_stop: Vec<StopHook>,
}

impl Running {
    /// Stop accepting requests, finish in-flight work, close the database.
    pub async fn stop(self) {
        self.trigger.trigger();
        for t in self.tasks {
            let _ = t.await;
        }
        for hook in self.on_stop {
            hook().await;
        }
        self.state.close().await;
        self.store.close().await;
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Run until `signal` resolves, then stop gracefully.
    pub async fn until(self, signal: impl std::future::Future<Output = ()>) {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            _ = signal => tracing::info!("shutdown requested"),
            _ = shutdown.wait() => {}
        }
        self.stop().await;
    }
}

/// Validate everything (config, policy, Looker settings, database), bind the port, then start.
pub async fn start(cfg: &Config, components: Components) -> Result<Running, AppError> {
    let store = Sqlite::open(&cfg.data_dir).await?;
    let state = open_state(cfg, &store).await?;
    let principals = cfg.cloud_audit.gatehouse_principals.clone();
    match &cfg.queue {
        QueueConfig::Embedded => start_on(cfg, components, store.clone(), store, state).await,
        QueueConfig::Sqs(s) => {
            let queue = SqsQueue::connect(&s.queue_url, s.wait_time).await?;
            let mut running = start_on(cfg, components, queue.clone(), store, state).await?;
            if let (true, Some(url)) = (components.processor, &s.audit_queue_url) {
                let audit = SqsQueue::connect(url, s.wait_time).await?;
                let t = Translator::new(audit, queue, TranslatorConfig::new(Kind::Aws, principals));
                running.spawn(t.run(running.shutdown.clone()));
            }
            Ok(running)
        }
        QueueConfig::Pubsub(p) => {
            let mut opts = PubsubOptions::new(&p.topic, &p.subscription);
            opts.emulator_host = p.emulator_host.clone();
            opts.dead_letter_topic = p.dead_letter_topic.clone();
            let queue = PubsubQueue::connect_with(opts.clone()).await?;
            let mut running = start_on(cfg, components, queue.clone(), store, state).await?;
            let q = queue.clone();
            running
                .on_stop
                .push(Box::new(move || Box::pin(async move { q.shutdown().await })));
            if let (true, Some(sub)) = (components.processor, &p.audit_subscription) {
                let audit = PubsubQueue::connect_with(PubsubOptions {
                    subscription: sub.clone(),
                    ..opts
                })
                .await?;
                let a = audit.clone();
                running
                    .on_stop
                    .push(Box::new(move || Box::pin(async move { a.shutdown().await })));
                let input = WithAttributes(audit);
                let t = Translator::new(input, queue, TranslatorConfig::new(Kind::Gcp, principals));
                running.spawn(t.run(running.shutdown.clone()));
            }
            Ok(running)
        }
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
    start_on(cfg, components, queue, store, state).await
}

/// Bind `addr`; the bound address (its port when `addr`'s is 0).
async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), AppError> {
    let bind_error = |source| AppError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Start on a given queue backend.
async fn start_on<Q>(
    cfg: &Config,
    components: Components,
    queue: Q,
    store: Sqlite,
    state: AnyState,
) -> Result<Running, AppError>
where
    Q: QueueProducer + QueueConsumer + Clone + 'static,
{
    let engine = Arc::new(engine_with_cloud(cfg, state.clone()).await?);
    let dry_run = engine.is_dry_run();
    if components.processor {
        check_looker_attributes(cfg, &engine).await?;
    }
    let (listener, addr) = bind(cfg.listen).await?;
    let (admin_listener, admin_addr) = bind(cfg.admin_listen).await?;
    let (trigger, shutdown) = Shutdown::new();

    let (ready_store, ready_state) = (store.clone(), state.clone());
    // `/readyz` and `/metrics` only on the admin listener; the intake port answers `/healthz`.
    let admin = ops::router(Arc::new(move || {
        let (s, st) = (ready_store.clone(), ready_state.clone());
        Box::pin(async move { s.ping().await && st.ping().await })
    }));
    let mut app = ops::liveness_router();
    let deps = Deps {
        queue: queue.clone(),
        store: store.clone(),
        config: Arc::new(cfg.clone()),
    };
    if components.ingress {
        app = app.merge(ingress::router(&deps));
    }
    let mut tasks = vec![
        tokio::spawn(server::serve(
            "intake",
            listener,
            app,
            Limits::intake(&cfg.server),
            shutdown.clone(),
        )),
        tokio::spawn(server::serve(
            "admin",
            admin_listener,
            admin,
            Limits::admin(&cfg.server),
            shutdown.clone(),
        )),
    ];
    if components.ingress {
        tasks.extend(ingress::spawn_tasks(&deps, &shutdown));
    }
    let mut rotator_meters = Vec::new();
    if components.rotator(cfg) {
        let rotator = gatehouse_rotation::build::rotator(cfg, state.clone()).await?;
        rotator_meters = rotator.looker_meters();
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move { rotator.run(s.wait()).await }));
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
        tasks.push(tokio::spawn(worker.run(s)));
    }
    if components.processor && cfg.reconcile.scheduled {
        let cron = cfg.reconcile.cron()?;
        let engine = engine.clone();
        let dir = store.clone();
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            crate::reconcile::run_on_schedule(&cron, chrono::Utc::now, s, || async {
                match crate::reconcile::run(&engine, &dir, true, &crate::reconcile::LogProgress).await {
                    Ok(r) => tracing::info!(
                        people = r.people,
                        drift = r.plans.len(),
                        writes = r.writes,
                        reported = r.reported,
                        looker_reads = r.reads.looker,
                        aws_reads = r.reads.aws,
                        gcp_reads = r.reads.gcp,
                        "scheduled reconcile done"
                    ),
                    Err(e) => tracing::error!(error = %e, "scheduled reconcile failed"),
                }
            })
            .await
        }));
    }
    let mut on_stop: Vec<StopHook> = Vec::new();
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
        tasks.push(tokio::spawn(async move { b.run(s).await }));
        // After every task has stopped (no call in flight any more): the last calls.
        on_stop.push(Box::new(move || {
            Box::pin(async move {
                if let Err(e) = budget.flush().await {
                    tracing::error!(error = %e, "cannot store the last looker call count");
                }
            })
        }));
    }
    let lag_store = store.clone();
    let s = shutdown.clone();
    let embedded = matches!(cfg.queue, QueueConfig::Embedded);
    tasks.push(tokio::spawn(async move {
        if !embedded {
            return; // SQS and Pub/Sub report their own depth and age
        }
        loop {
            if let Ok(lag) = lag_store.queue_lag_seconds().await {
                metrics::gauge!("gatehouse_queue_lag_seconds", "queue" => "embedded").set(lag);
            }
            if let Ok(depth) = lag_store.queue_depth().await {
                metrics::gauge!("gatehouse_queue_depth", "queue" => "embedded").set(depth as f64);
            }
            tokio::select! {
                _ = s.wait() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }));
    tracing::info!(
        %addr,
        %admin_addr,
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
    Ok(Running {
        addr,
        admin_addr,
        store,
        state,
        dry_run,
        trigger,
        shutdown,
        tasks,
        on_stop,
    })
}

/// The whole `main` of a service binary: load config (exit 64 if bad), log, start, run until
/// SIGINT/SIGTERM, stop gracefully.
pub async fn service_main(
    name: &str,
    config: Option<&std::path::Path>,
    components: Components,
) -> std::process::ExitCode {
    let cfg = match Config::load(config, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let telemetry = match gatehouse_platform::telemetry::init(&cfg.log, &cfg.telemetry, name) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = match start(&cfg, components).await {
        Ok(running) => {
            running.until(gatehouse_platform::shutdown::os_signal()).await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    };
    telemetry.shutdown().await;
    code
}

/// A Pub/Sub audit subscription whose deliveries carry the message attributes too: the body
/// becomes the Pub/Sub message shape `{"data": base64, "attributes": {...}}`, which the audit
/// parser reads (Secret Manager puts `eventType` and `secretId` only in attributes).
#[derive(Clone)]
struct WithAttributes(PubsubQueue);

impl QueueConsumer for WithAttributes {
    async fn receive(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, BackendError> {
        use base64::Engine as _;
        let batch = self.0.receive(max, visibility).await?;
        Ok(batch
            .into_iter()
            .map(|mut d| {
                let attributes = self.0.attributes(&d).unwrap_or_default();
                let data = base64::engine::general_purpose::STANDARD.encode(d.body.as_bytes());
                d.body = serde_json::json!({ "data": data, "attributes": attributes }).to_string();
                d
            })
            .collect())
    }
    async fn ack(&self, d: &Delivery) -> Result<(), BackendError> {
        self.0.ack(d).await
    }
    async fn release(&self, d: &Delivery, delay: Duration) -> Result<(), BackendError> {
        self.0.release(d, delay).await
    }
    async fn dead_letter(&self, d: &Delivery, reason: &str) -> Result<(), BackendError> {
        self.0.dead_letter(d, reason).await
    }
    async fn extend(&self, d: &Delivery, visibility: Duration) -> Result<(), BackendError> {
        self.0.extend(d, visibility).await
    }
}

/// The whole `main` of `gatehouse-rotator`: load config (exit 64 if bad), open the database,
/// run the rotator until SIGINT/SIGTERM.
pub async fn rotator_main(config: Option<&std::path::Path>) -> std::process::ExitCode {
    let cfg = match Config::load(config, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse-rotator: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    let telemetry = match gatehouse_platform::telemetry::init(&cfg.log, &cfg.telemetry, "gatehouse-rotator") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gatehouse-rotator: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let run = async {
        let state = open_state_alone(&cfg).await?;
        let rotator = gatehouse_rotation::build::rotator(&cfg, state.clone()).await?;
        tracing::info!(
            secrets = cfg.rotator.secrets.len(),
            state = state.backend(),
            "gatehouse rotator started"
        );
        // Its Looker calls (API3 kind) count against the budget the processors share: one
        // budget for the process, flushed like the processor's (one warning a month).
        let meters = rotator.looker_meters();
        let budget = budget(&cfg, state.clone(), &meters).map(Arc::new);
        let (trigger, shutdown) = Shutdown::new();
        let flusher = budget
            .clone()
            .map(|b| tokio::spawn(async move { b.run(shutdown).await }));
        rotator.run(gatehouse_platform::shutdown::os_signal()).await;
        trigger.trigger();
        if let (Some(task), Some(budget)) = (flusher, budget) {
            let _ = task.await;
            if let Err(e) = budget.flush().await {
                tracing::error!(error = %e, "cannot store the last looker call count");
            }
        }
        state.close().await;
        Ok::<(), AppError>(())
    };
    let code = match run.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gatehouse-rotator: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    };
    telemetry.shutdown().await;
    code
}
