//! The processor's wiring from configuration: the policy, the Looker client, the cloud targets
//! and the safety screen assembled into an [`AppEngine`]; the Looker call budget; and the whole
//! `main` of `gatehouse-rotator`. One process's assembly (intake + processor) is `gatehouse-app`.

use crate::budget::Budget;
use crate::cloud::{AwsTarget, CloudTargets, GcpTarget};
use crate::engine::{Engine, RetryPolicy};
use gatehouse_domain::cloud::AwsUserMapping;
use gatehouse_domain::looker::LookerError;
use gatehouse_domain::policy::{Policy, PolicyError};
use gatehouse_domain::ports::BackendError;
use gatehouse_domain::ports::Directory;
use gatehouse_platform::config::Mode as ConfigMode;
use gatehouse_platform::config::{
    AttributeCheck, AwsUserMappingConfig, Config, ConfigError, GcpTokenSource, QueueConfig,
};
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_store::open::OpenError;
#[cfg(feature = "pubsub")]
use gatehouse_store::pubsub::{PubsubOptions, PubsubQueue};
use gatehouse_store::sqlite::Sqlite;
#[cfg(feature = "sqs")]
use gatehouse_store::sqs::SqsQueue;
use gatehouse_store::state::AnyState;
use gatehouse_targets::Mode;
use gatehouse_targets::client::aws_iam::{AwsConnect, AwsIam};
use gatehouse_targets::client::cloud_identity::{CloudIdentity, CloudIdentityConfig};
use gatehouse_targets::client::gcp_iam::{GcpIam, GcpIamConfig, TokenSource};
use gatehouse_targets::client::identity_center::{IdcSettings, IdentityCenter};
use gatehouse_targets::client::looker::{CallMeter, CatalogKinds, LookerClient, LookerConfig};
use gatehouse_targets::identity_center::IdentityCenterTarget;
use gatehouse_targets::safety::Safety;
use std::net::SocketAddr;
use std::sync::Arc;

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
    policy.looker_sso = cfg.identity.looker_sso();
    // Looker (Google Cloud core): the login binding becomes one more managed GCP grant.
    policy.set_looker_core(cfg.looker_core());
    if policy.looker_core.is_some() && !policy.onboarding.create_users {
        tracing::warn!(
            "looker.platform is \"core\" and onboarding.create_users is false: gatehouse neither grants \
             nor removes the login role (roles/looker.instanceUser); grant it some other way"
        );
    }
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
                max_concurrent_calls: c.max_concurrent_calls,
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
pub fn budget(cfg: &Config, store: AnyState, meters: &[CallMeter]) -> Option<Budget<AnyState>> {
    let quota = cfg.looker.budget.monthly_call_quota?;
    let (first, more) = meters.split_first()?;
    Some(
        Budget::new(
            store,
            first.clone(),
            quota,
            &cfg.looker.budget,
            gatehouse_domain::clock::system(),
        )
        .with_meters(more.iter().cloned()),
    )
}

impl From<OpenError> for AppError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Config(e) => AppError::Config(e),
            OpenError::Backend(e) => AppError::Backend(e),
        }
    }
}

/// The processor's state store as configured: the SQLite database `sqlite` (also the embedded
/// queue's), or a PostgreSQL pool.
pub async fn open_state(cfg: &Config, sqlite: &Sqlite) -> Result<AnyState, AppError> {
    Ok(gatehouse_store::open::open_state(cfg, sqlite).await?)
}

/// The state store alone, for what needs nothing else of the data directory (the rotator,
/// `gatehouse rotate`): PostgreSQL without opening SQLite, else the SQLite database.
pub async fn open_state_alone(cfg: &Config) -> Result<AnyState, AppError> {
    Ok(gatehouse_store::open::open_state_alone(cfg).await?)
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
        let (token, groups_token) = match &cfg.gcp.token {
            GcpTokenSource::Static { token } => (
                TokenSource::Static(token.clone()),
                TokenSource::Static(token.clone()),
            ),
            GcpTokenSource::Adc => (
                GcpIam::adc().map_err(AppError::Cloud)?,
                CloudIdentity::adc().map_err(AppError::Cloud)?,
            ),
        };
        let groups = CloudIdentity::new(CloudIdentityConfig {
            url: cfg.gcp.cloud_identity_url.clone(),
            token: groups_token,
            timeout: cfg.gcp.timeout,
            page_size: cfg.gcp.groups_page_size,
        })
        .map_err(AppError::Cloud)?;
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
            groups,
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

/// The Identity Center target when `[aws.identity_center]` is configured (issue 20). A policy
/// that lists account assignments needs its `instance_arn`.
pub async fn identity_center_target(
    cfg: &Config,
    policy: &Policy,
) -> Result<Option<IdentityCenterTarget>, AppError> {
    let Some(ic) = &cfg.aws.identity_center else {
        if !policy.managed_identity_center_groups().is_empty() {
            tracing::warn!(
                "the policy names identity_center groups but [aws.identity_center] is not configured; \
                 they are not managed"
            );
        }
        return Ok(None);
    };
    if !policy.identity_center.assignments.is_empty() && ic.instance_arn.is_none() {
        return Err(AppError::Config(ConfigError::new(
            "aws.identity_center.instance_arn",
            "is required when the policy lists [[identity_center.assignments]]",
        )));
    }
    let p = &cfg.processor;
    let client = IdentityCenter::connect(
        &AwsConnect {
            endpoint_url: ic.endpoint_url.clone().or_else(|| cfg.aws.endpoint_url.clone()),
            region: ic.region.clone().or_else(|| cfg.aws.region.clone()),
            profile: cfg.aws.profile.clone(),
            credentials_file: cfg.aws.credentials_file.clone(),
        },
        IdcSettings {
            identity_store_id: ic.identity_store_id.clone(),
            instance_arn: ic.instance_arn.clone(),
            external_id_issuer: ic.external_id_issuer.clone(),
            assignment_timeout: ic.assignment_timeout,
            poll_interval: std::time::Duration::from_millis(500),
        },
    )
    .await;
    Ok(Some(IdentityCenterTarget {
        client,
        retry: RetryPolicy {
            retries: p.call_retries,
            min_delay: p.retry_min_delay,
            max_delay: p.retry_max_delay,
        },
    }))
}

/// The engine with the cloud targets the configuration enables, every step screened by the
/// safety rails (which learn who Gatehouse is in Looker and AWS on the first plan that writes).
pub async fn engine_with_cloud(cfg: &Config, store: AnyState) -> Result<AppEngine, AppError> {
    let cloud = cloud_targets(cfg, &store).await?;
    let engine = engine(cfg, store)?.with_cloud(cloud);
    let engine = match identity_center_target(cfg, engine.policy()).await? {
        Some(t) => {
            let mode = match cfg.aws.identity_center.as_ref().map(|c| c.mode) {
                Some(ConfigMode::Report) => Mode::Report,
                _ => Mode::Apply,
            };
            engine.with_target_in(t, mode)
        }
        None => engine,
    };
    let safety = Safety::from_config(cfg)
        .with_looker(engine.looker().cloned())
        .with_aws(engine.cloud().and_then(|c| c.aws.as_ref()).map(|a| a.iam.clone()));
    Ok(engine.with_screen(Arc::new(safety)))
}

/// Issue 14: the catalog lists only the kinds of Looker object the policy manages, plus the
/// groups and roles `[safety] protected` names.
fn catalog_kinds(policy: &gatehouse_domain::policy::Policy, cfg: &Config) -> CatalogKinds {
    use gatehouse_platform::config::Protected;
    let protected: Vec<Protected> = cfg
        .safety
        .protected
        .iter()
        .filter_map(|p| Protected::parse(p).ok())
        .collect();
    CatalogKinds {
        groups: !policy.managed_groups().is_empty()
            || protected.iter().any(|p| matches!(p, Protected::LookerGroup(_))),
        roles: !policy.managed_roles().is_empty()
            || protected.iter().any(|p| matches!(p, Protected::LookerRole(_))),
        user_attributes: !policy.managed_attributes().is_empty(),
    }
}

pub fn engine(cfg: &Config, store: AnyState) -> Result<AppEngine, AppError> {
    let policy = Arc::new(load_policy(cfg)?);
    let kinds = catalog_kinds(&policy, cfg);
    let looker = looker_client(cfg)?.map(|c| c.with_catalog_kinds(kinds));
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

/// The rotation queue `[queue]` names (issue 12, item 4): the processors publish rotation
/// requests to it and the rotator consumes it, so the two never meet through a table. Both sides
/// of one queue; a process uses the side it needs (a Pub/Sub subscriber pulls only on the first
/// receive).
pub struct RotationQueue {
    /// What the engine publishes to ([`Engine::with_rotation_queue`]).
    pub publisher: Arc<dyn crate::engine::RotationPublisher>,
    /// What the rotator takes requests from (`Rotator::with_requests`).
    pub requests: Arc<dyn gatehouse_rotation::requests::RequestQueue>,
    #[cfg(feature = "pubsub")]
    pubsub: Option<PubsubQueue>,
}

impl RotationQueue {
    /// Both sides of one already built queue (tests: an SQS client pointed at moto).
    pub fn of<Q>(q: Q) -> Self
    where
        Q: gatehouse_domain::ports::QueueProducer + gatehouse_domain::ports::QueueConsumer + Clone + 'static,
    {
        RotationQueue {
            publisher: Arc::new(q.clone()),
            requests: Arc::new(q),
            #[cfg(feature = "pubsub")]
            pubsub: None,
        }
    }

    /// Stop the Pub/Sub clients, if any (after the last publish or receive).
    pub async fn shutdown(&self) {
        #[cfg(feature = "pubsub")]
        if let Some(q) = &self.pubsub {
            q.shutdown().await;
        }
    }
}

/// Open the rotation queue: in the embedded default, the `rotation_queue` of the SQLite
/// database `sqlite` (opened from `data_dir` when `None`); on SQS, `rotation_queue_url`; on
/// Pub/Sub, `rotation_topic` + `rotation_subscription`. `None` when SQS or Pub/Sub name none
/// (allowed only when no secret is declared: the config refuses it otherwise).
pub async fn rotation_queue(
    cfg: &Config,
    sqlite: Option<&Sqlite>,
) -> Result<Option<RotationQueue>, AppError> {
    match &cfg.queue {
        QueueConfig::Embedded => {
            let db = match sqlite {
                Some(db) => db.clone(),
                None => Sqlite::open(&cfg.data_dir).await?,
            };
            Ok(Some(RotationQueue::of(db.rotation_queue())))
        }
        #[cfg(feature = "sqs")]
        QueueConfig::Sqs(s) => match &s.rotation_queue_url {
            // A short long-poll: the rotator receives once per tick and must not sit 20 s on an
            // empty queue before it drives its due steps.
            Some(url) => Ok(Some(RotationQueue::of(
                SqsQueue::connect(url, s.wait_time.min(ROTATION_RECEIVE_WAIT)).await?,
            ))),
            None => Ok(None),
        },
        #[cfg(not(feature = "sqs"))]
        QueueConfig::Sqs(_) => Err(gatehouse_store::backends::SQS.missing().into()),
        #[cfg(feature = "pubsub")]
        QueueConfig::Pubsub(p) => match (&p.rotation_topic, &p.rotation_subscription) {
            (Some(topic), sub) => {
                // A topic without a rotator subscription still serves the processors' side; its
                // receive fails with the backend's error, named in the rotator's log.
                let mut opts = PubsubOptions::new(topic, sub.clone().unwrap_or_default());
                opts.emulator_host = p.emulator_host.clone();
                opts.dead_letter_topic = p.dead_letter_topic.clone();
                opts.ordering_keys = false;
                let q = PubsubQueue::connect_with(opts).await?;
                let mut queue = RotationQueue::of(q.clone());
                queue.pubsub = Some(q);
                Ok(Some(queue))
            }
            (None, _) => Ok(None),
        },
        #[cfg(not(feature = "pubsub"))]
        QueueConfig::Pubsub(_) => Err(gatehouse_store::backends::PUBSUB.missing().into()),
    }
}

/// The longest an SQS receive of the rotator waits for a request.
#[cfg(feature = "sqs")]
const ROTATION_RECEIVE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The whole `main` of `gatehouse-rotator`: load config (exit 64 if bad), open the database,
/// run the rotator until SIGINT/SIGTERM.
pub async fn rotator_main(config: Option<&std::path::Path>) -> std::process::ExitCode {
    gatehouse_platform::service::main("gatehouse-rotator", config, |cfg| async move {
        let cfg = &cfg;
        gatehouse_store::backends::check(cfg)?;
        let state = open_state_alone(cfg).await?;
        let queue = rotation_queue(cfg, state.sqlite()).await?;
        let rotator = gatehouse_rotation::build::rotator(cfg, state.clone()).await?;
        let rotator = match &queue {
            Some(q) => rotator.with_requests(q.requests.clone()),
            None => rotator,
        };
        tracing::info!(
            secrets = cfg.rotator.secrets.len(),
            state = state.backend(),
            "gatehouse rotator started"
        );
        // Its Looker calls (API3 kind) count against the budget the processors share: one
        // budget for the process, flushed like the processor's (one warning a month).
        let meters = rotator.looker_meters();
        let budget = budget(cfg, state.clone(), &meters).map(Arc::new);
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
        if let Some(q) = &queue {
            q.shutdown().await;
        }
        state.close().await;
        Ok::<(), AppError>(())
    })
    .await
}

impl gatehouse_platform::service::Stop for AppError {
    fn exit_code(&self) -> i32 {
        AppError::exit_code(self)
    }
}
