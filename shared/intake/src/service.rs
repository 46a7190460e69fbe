//! The wiring of an intake process (`gatehouse-ingress`): the intake and admin listeners, the
//! intakes' background tasks, the embedded queue's gauges and a graceful stop. `gatehouse-app`
//! builds on [`listen`] and [`Running`] to add the processor and the rotator to a process.

use crate::ingress::{self, Deps};
use crate::server::{self, Limits};
use futures::future::BoxFuture;
use gatehouse_domain::ports::BackendError;
use gatehouse_domain::ports::QueueProducer;
#[cfg(feature = "pubsub")]
use gatehouse_domain::ports::{Delivery, QueueConsumer};
use gatehouse_platform::config::{Config, ConfigError, QueueConfig};
use gatehouse_platform::events::{self, QueueName};
use gatehouse_platform::ops;
use gatehouse_platform::shutdown::{Shutdown, ShutdownTrigger};
use gatehouse_store::open::{OpenError, open_state};
#[cfg(feature = "pubsub")]
use gatehouse_store::pubsub::{PubsubOptions, PubsubQueue};
use gatehouse_store::sqlite::Sqlite;
#[cfg(feature = "sqs")]
use gatehouse_store::sqs::SqsQueue;
use gatehouse_store::state::AnyState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl ServiceError {
    /// Exit code for binaries: 64 (EX_USAGE) for bad configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServiceError::Config(_) => 64,
            _ => 1,
        }
    }
}

impl From<OpenError> for ServiceError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Config(e) => ServiceError::Config(e),
            OpenError::Backend(e) => ServiceError::Backend(e),
        }
    }
}

/// Work run once every task has finished.
pub type StopHook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>;

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

    /// Run `task` until the service stops (it must end once [`Running::shutdown`] fires).
    pub fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Run `hook` once every task has finished.
    pub fn on_stop(&mut self, hook: StopHook) {
        self.on_stop.push(hook);
    }

    /// The signal every task of the service stops on.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
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

/// Bind `addr`; the bound address (its port when `addr`'s is 0).
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServiceError> {
    let bind_error = |source| ServiceError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Bind the intake and admin listeners and serve them: `/healthz` on the intake port, plus every
/// intake route and background task when `ingress`; `/healthz`, `/readyz` and `/metrics` on the
/// admin port; the embedded queue's lag and depth gauges.
pub async fn listen<Q>(
    cfg: &Config,
    ingress: bool,
    queue: Q,
    store: Sqlite,
    state: AnyState,
    dry_run: bool,
) -> Result<Running, ServiceError>
where
    Q: QueueProducer + Clone + 'static,
{
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
        queue,
        store: store.clone(),
        state: state.clone(),
        config: Arc::new(cfg.clone()),
    };
    if ingress {
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
    if ingress {
        tasks.extend(ingress::spawn_tasks(&deps, &shutdown));
        // The System Log catch-up keeps its cursor in the state store (shared by replicas).
        tasks.extend(ingress::okta_catchup::spawn(
            cfg,
            deps.queue.clone(),
            state.clone(),
            &shutdown,
        ));
        // The directory import compares with the directory the processor folds (state store).
        tasks.extend(ingress::okta_import::spawn(
            cfg,
            deps.queue.clone(),
            state.clone(),
            &shutdown,
        ));
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
                events::queue_lag(QueueName::Embedded, lag);
            }
            if let Ok(depth) = lag_store.queue_depth().await {
                events::queue_depth(QueueName::Embedded, depth);
            }
            tokio::select! {
                _ = s.wait() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }));
    Ok(Running {
        addr,
        admin_addr,
        store,
        state,
        dry_run,
        trigger,
        shutdown,
        tasks,
        on_stop: Vec::new(),
    })
}

/// The intake process (`gatehouse-ingress`): validate the configuration, open the database and
/// the configured queue, bind, then serve every intake. It builds no engine and no target client.
pub async fn start(cfg: &Config) -> Result<Running, ServiceError> {
    gatehouse_store::backends::check(cfg)?;
    let store = Sqlite::open(&cfg.data_dir).await?;
    let state = open_state(cfg, &store).await?;
    // The processors' mode, reported like theirs: without Looker nothing is ever sent.
    let dry_run = cfg.looker_connection()?.is_none();
    let running = match &cfg.queue {
        QueueConfig::Embedded => listen(cfg, true, store.clone(), store, state, dry_run).await?,
        #[cfg(feature = "sqs")]
        QueueConfig::Sqs(s) => {
            let queue = SqsQueue::connect(&s.queue_url, s.wait_time).await?;
            listen(cfg, true, queue, store, state, dry_run).await?
        }
        #[cfg(not(feature = "sqs"))]
        QueueConfig::Sqs(_) => return Err(gatehouse_store::backends::SQS.missing().into()),
        #[cfg(feature = "pubsub")]
        QueueConfig::Pubsub(p) => {
            let mut opts = PubsubOptions::new(&p.topic, &p.subscription);
            opts.emulator_host = p.emulator_host.clone();
            opts.dead_letter_topic = p.dead_letter_topic.clone();
            let queue = PubsubQueue::connect_with(opts).await?;
            let mut running = listen(cfg, true, queue.clone(), store, state, dry_run).await?;
            running.on_stop(Box::new(move || Box::pin(async move { queue.shutdown().await })));
            running
        }
        #[cfg(not(feature = "pubsub"))]
        QueueConfig::Pubsub(_) => return Err(gatehouse_store::backends::PUBSUB.missing().into()),
    };
    tracing::info!(
        addr = %running.addr,
        admin_addr = %running.admin_addr,
        data_dir = %cfg.data_dir.display(),
        state = running.state.backend(),
        dry_run,
        ingress = true,
        processor = false,
        rotator = false,
        "gatehouse started"
    );
    Ok(running)
}

/// The whole `main` of `gatehouse-ingress`: load config (exit 64 if bad), log, start, run until
/// SIGINT/SIGTERM, stop gracefully.
pub async fn service_main(name: &str, config: Option<&std::path::Path>) -> std::process::ExitCode {
    gatehouse_platform::service::main(name, config, |cfg| async move {
        start(&cfg)
            .await?
            .until(gatehouse_platform::shutdown::os_signal())
            .await;
        Ok::<(), ServiceError>(())
    })
    .await
}

impl gatehouse_platform::service::Stop for ServiceError {
    fn exit_code(&self) -> i32 {
        ServiceError::exit_code(self)
    }
}

/// A Pub/Sub audit subscription whose deliveries carry the message attributes too: the body
/// becomes the Pub/Sub message shape `{"data": base64, "attributes": {...}}`, which the audit
/// parser reads (Secret Manager puts `eventType` and `secretId` only in attributes).
#[cfg(feature = "pubsub")]
#[derive(Clone)]
pub struct WithAttributes(pub PubsubQueue);

#[cfg(feature = "pubsub")]
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
    fn leases_can_lapse(&self) -> bool {
        self.0.leases_can_lapse()
    }
    async fn abandon(&self, d: &Delivery) {
        self.0.abandon(d).await
    }
}
