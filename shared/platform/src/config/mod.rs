//! Configuration: a TOML file (optional) plus `GATEHOUSE_*` environment overrides. The
//! environment is injected as a lookup function, so tests never set real variables. Every error
//! names the field (or variable) at fault; binaries exit 64 on it.

mod audit;
mod breaker;
mod cloud;
mod generic;
mod google;
mod graph;
mod identity_center;
mod looker_core;
mod okta_api;
mod queue;
mod rotator;
mod safety;
mod scim;
mod secret;
mod server;
mod state;
mod telemetry;

pub use audit::{AuditConfig, HeadExportConfig, HeadSinkKind, ObjectLockMode, valid_bucket_name};
pub use breaker::{BreakerConfig, Limits as BreakerLimits};
pub use cloud::{
    AwsConfig, AwsUserMappingConfig, GcpConfig, GcpTokenSource, Mode, Modes, Orphans, ReconcileConfig,
};
pub use generic::GenericConfig;
pub use google::GoogleConfig;
pub use graph::GraphConfig;
pub use identity_center::IdentityCenterConfig;
pub use looker_core::{LookerCoreConfig, LookerPlatform};
pub use okta_api::{MAX_LOG_PAGE, OKTA_LOG_RETENTION, OktaApiConfig, OktaApiConnection, OktaServiceApp};
pub use queue::{PubsubConfig, QueueConfig, SqsConfig};
pub use rotator::{
    GCP_IAM_URL, GCP_SECRET_MANAGER_URL, GcpApiConfig, KindConfig, OutOfBand, RotatorConfig, SecretConfig,
    StoreConfig,
};
pub use safety::{Protected, SafetyConfig};
pub use scim::ScimConfig;
pub use secret::{MIN_SECRET_CHARS, WHSEC_MAX_BYTES, WHSEC_MIN_BYTES, check_token, check_whsec};
pub use server::ServerConfig;
pub use state::{PostgresConfig, StateConfig};
pub use telemetry::{OTEL_ENV_VARS, TelemetryConfig};

use secrecy::SecretString;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the admin listener (`/metrics`, `/readyz`, `/healthz`): never the intake
    /// port; keep it off the public network.
    #[serde(default = "server::default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Timeouts and connection limits of the HTTP listeners.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where the embedded SQLite database lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Policy file (TOML). Without one, the built-in default policy applies: full offboarding,
    /// no group mappings.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    #[serde(default)]
    pub okta: OktaConfig,
    #[serde(default)]
    pub looker: LookerSection,
    #[serde(default)]
    pub processor: ProcessorConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// OpenTelemetry traces (off unless an OTLP endpoint is set).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The queue between intake and processor: `embedded` (default), `sqs` or `pubsub`.
    #[serde(default)]
    pub queue: QueueConfig,
    /// The processor's state: `sqlite` (default, in the data directory) or `postgres`.
    #[serde(default)]
    pub state: StateConfig,
    /// Cloud audit events (CloudTrail, GCP audit logs).
    #[serde(default)]
    pub cloud_audit: CloudAuditConfig,
    /// SCIM 2.0 server at `/scim/v2`.
    #[serde(default)]
    pub scim: ScimConfig,
    /// Microsoft Graph change notifications at `/hooks/graph`.
    #[serde(default)]
    pub graph: GraphConfig,
    /// Google Workspace Reports push at `/hooks/google`.
    #[serde(default)]
    pub google: GoogleConfig,
    /// Standard Webhooks generic intake at `/hooks/generic`.
    #[serde(default)]
    pub generic: GenericConfig,
    /// The rotator's declared secrets.
    #[serde(default)]
    pub rotator: RotatorConfig,
    /// AWS IAM target (off by default).
    #[serde(default)]
    pub aws: AwsConfig,
    /// GCP IAM target (off by default).
    #[serde(default)]
    pub gcp: GcpConfig,
    /// Reconcile schedule and per-target modes.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    /// Who may be onboarded and granted anything (`[identity]`).
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Safety rails (`[safety]`): protected principals; `[safety.breaker]`: the mass-change
    /// circuit breaker.
    #[serde(default)]
    pub safety: SafetyConfig,
    /// `[audit.head_export]`: export the ledger's chain head on a schedule (issue 15).
    #[serde(default)]
    pub audit: AuditConfig,
}

/// `[identity]`: limits on the people any intake may bring in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Email domains (e.g. `["example.com"]`, exact, any case) a person must be in to be
    /// onboarded in Looker or granted anything in Looker, AWS or GCP. Unset: any domain (one
    /// warning at start says so). Offboarding applies to everyone.
    #[serde(default)]
    pub allowed_email_domains: Option<Vec<String>>,
    /// `[identity.looker_sso]` (issue 16): look a person with no linked Looker user up by the
    /// SSO credential the instance uses, after their email. Off when absent.
    #[serde(default)]
    pub looker_sso: Option<LookerSsoConfig>,
}

/// `[identity.looker_sso]`: `credential` is the Looker credential type (`saml`, `oidc`,
/// `google`, `ldap`); `id` which of the person's ids the IdP puts in it (`idp_user_id`, `email`,
/// `login`, `attribute:NAME`). Both required.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookerSsoConfig {
    #[serde(default)]
    pub credential: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
}

impl LookerSsoConfig {
    /// The lookup, or the field at fault.
    pub fn lookup(&self) -> Result<gatehouse_domain::sso::SsoLookup, ConfigError> {
        use gatehouse_domain::sso::{SsoCredential, SsoId, SsoLookup};
        let credential = match self.credential.as_deref().map(str::trim) {
            None => Err("is required: saml, oidc, google or ldap".to_owned()),
            Some(c) => {
                SsoCredential::parse(c).ok_or_else(|| format!("{c:?} is not one of saml, oidc, google, ldap"))
            }
        }
        .map_err(|m| ConfigError::new("identity.looker_sso.credential", m))?;
        let id = match self.id.as_deref().map(str::trim) {
            None => Err("is required: idp_user_id, email, login or attribute:NAME".to_owned()),
            Some(i) => SsoId::parse(i)
                .ok_or_else(|| format!("{i:?} is not one of idp_user_id, email, login, attribute:NAME")),
        }
        .map_err(|m| ConfigError::new("identity.looker_sso.id", m))?;
        Ok(SsoLookup { credential, id })
    }
}

impl IdentityConfig {
    /// The allow-list, lowercase (`None`: any domain).
    pub fn allowed_domains(&self) -> Option<std::collections::BTreeSet<String>> {
        self.allowed_email_domains
            .as_ref()
            .map(|d| d.iter().map(|d| d.trim().to_ascii_lowercase()).collect())
    }

    /// `[identity.looker_sso]` parsed (`None`: off). Validated at load.
    pub fn looker_sso(&self) -> Option<gatehouse_domain::sso::SsoLookup> {
        self.looker_sso.as_ref().and_then(|s| s.lookup().ok())
    }

    fn validate(&self, aws: &AwsConfig) -> Result<(), ConfigError> {
        if let Some(sso) = &self.looker_sso {
            sso.lookup()?;
        }
        if let Some(domains) = &self.allowed_email_domains {
            if domains.is_empty() {
                return Err(ConfigError::new(
                    "identity.allowed_email_domains",
                    "is empty: list at least one domain, or leave it out to allow any",
                ));
            }
            for (i, d) in domains.iter().enumerate() {
                let d = d.trim();
                let label_ok =
                    |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
                if !d.contains('.') || !d.split('.').all(label_ok) {
                    return Err(ConfigError::new(
                        format!("identity.allowed_email_domains[{i}]"),
                        format!("{d:?} is not a domain such as example.com"),
                    ));
                }
            }
        }
        // `{local}` drops the domain: alice@a.com and alice@b.com would be one IAM user.
        if let Some(AwsUserMappingConfig::Template(t)) = &aws.user_mapping
            && t.contains("{local}")
            && self.allowed_domains().is_none_or(|d| d.len() != 1)
        {
            return Err(ConfigError::new(
                "aws.user_mapping.template",
                format!(
                    "{t:?} uses {{local}}, which maps people of different email domains to one IAM user: \
                     use {{email}} or a tag, or allow exactly one domain in [identity] allowed_email_domains"
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OktaConfig {
    /// The value Okta sends in the `Authorization` header (set when registering the hook): at
    /// least 16 characters, not one character repeated.
    #[serde(default)]
    pub hook_secret: Option<SecretString>,
    /// Larger bodies are refused with 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// The Okta org this hook secret belongs to (e.g. `acme` for acme.okta.com): envelope ids are
    /// `okta:<org>:<uuid>`, namespaced by the org that proved itself, never by the payload.
    /// 1 to 128 of `A-Z a-z 0-9 . _ -`. Env: `GATEHOUSE_OKTA_ORG`.
    #[serde(default = "default_okta_org")]
    pub org: String,
    /// `[okta.api]`: the management API, for the System Log catch-up (off unless set).
    #[serde(default)]
    pub api: OktaApiConfig,
}

impl Default for OktaConfig {
    fn default() -> Self {
        OktaConfig {
            hook_secret: None,
            max_body_bytes: default_max_body(),
            org: default_okta_org(),
            api: OktaApiConfig::default(),
        }
    }
}

/// Looker connection. All of `url`, `client_id`, `client_secret` or none (dry-run mode).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookerSection {
    /// Instance base URL, e.g. `https://example.cloud.looker.com`; calls go to `{url}/api/4.0/...`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long names → ids of groups, roles and user attributes are cached.
    #[serde(default = "default_catalog_ttl", with = "humantime_serde")]
    pub catalog_ttl: Duration,
    /// Looker calls in flight at once, per process, whatever `[processor] workers` is (most
    /// events make no call: a replay, a no-op): Looker is spared bursts, the pipeline is not
    /// held to Looker's pace.
    #[serde(default = "default_looker_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// The monthly admin-API budget (`[looker.budget]`).
    #[serde(default)]
    pub budget: LookerBudgetConfig,
    /// At start, each user attribute the policy manages is checked in Looker: users must not
    /// be able to edit it and its default must be empty or the policy's deny value. `refuse`
    /// (default): the processor does not start; `warn`: it starts and logs an error per problem.
    #[serde(default)]
    pub attribute_check: AttributeCheck,
    /// `original` (default) or `core`: Looker (Google Cloud core), whose users appear at their
    /// first login and sign in through `roles/looker.instanceUser` (README "Looker (Google
    /// Cloud core)").
    #[serde(default)]
    pub platform: LookerPlatform,
    /// `[looker.core]`: the project the login binding is set on, and the first-login run.
    #[serde(default)]
    pub core: LookerCoreConfig,
}

/// What an unsafe Looker user attribute setting does at start (see [`LookerSection::attribute_check`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeCheck {
    #[default]
    Refuse,
    Warn,
}

impl Default for LookerSection {
    fn default() -> Self {
        LookerSection {
            url: None,
            client_id: None,
            client_secret: None,
            timeout: default_timeout(),
            catalog_ttl: default_catalog_ttl(),
            max_concurrent_calls: default_looker_max_concurrent_calls(),
            budget: LookerBudgetConfig::default(),
            attribute_check: AttributeCheck::default(),
            platform: LookerPlatform::default(),
            core: LookerCoreConfig::default(),
        }
    }
}

/// Looker meters admin-API calls per calendar month: Gatehouse counts its own calls (login
/// included) per UTC month in the state store, summed over every process, and reports what is
/// left of the quota.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookerBudgetConfig {
    /// Calls the Looker contract allows per calendar month (UTC). `None`: no budget gauges and
    /// no count kept.
    #[serde(default)]
    pub monthly_call_quota: Option<u64>,
    /// The budget is low (gauge `gatehouse_looker_api_budget_low` = 1, one warning logged) once
    /// the calls left are at most this fraction of the quota: 0.1 = the last 10 %.
    #[serde(default = "default_budget_warning")]
    pub warning_remaining: f64,
    /// How often a process adds its in-memory count to the state store and refreshes the
    /// gauges (and once more at shutdown).
    #[serde(default = "default_budget_flush", with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for LookerBudgetConfig {
    fn default() -> Self {
        LookerBudgetConfig {
            monthly_call_quota: None,
            warning_remaining: default_budget_warning(),
            flush_interval: default_budget_flush(),
        }
    }
}

impl LookerBudgetConfig {
    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA") {
            self.monthly_call_quota = Some(v.trim().parse().map_err(|_| {
                ConfigError::new(
                    "GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA",
                    format!("{v:?} is not a whole number of calls"),
                )
            })?);
        }
        if let Some(v) = env("GATEHOUSE_LOOKER_BUDGET_WARNING_REMAINING") {
            self.warning_remaining = v.trim().parse().map_err(|_| {
                ConfigError::new(
                    "GATEHOUSE_LOOKER_BUDGET_WARNING_REMAINING",
                    format!("{v:?} is not a fraction such as 0.1"),
                )
            })?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.monthly_call_quota == Some(0) {
            return Err(ConfigError::new(
                "looker.budget.monthly_call_quota",
                "must be at least 1 (leave it out for no budget)",
            ));
        }
        if !(0.0..=1.0).contains(&self.warning_remaining) {
            return Err(ConfigError::new(
                "looker.budget.warning_remaining",
                format!("{} is not a fraction between 0 and 1", self.warning_remaining),
            ));
        }
        if self.flush_interval.is_zero() {
            return Err(ConfigError::new(
                "looker.budget.flush_interval",
                "must be more than 0",
            ));
        }
        Ok(())
    }
}

/// How cloud audit events are read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudAuditConfig {
    /// The identities Gatehouse calls AWS/GCP as (role ARNs, principal ids, service-account
    /// emails): changes they made are not drift. See docs/cloud-audit.md.
    #[serde(default)]
    pub gatehouse_principals: Vec<String>,
}

/// A complete Looker connection (validated).
#[derive(Debug, Clone)]
pub struct LookerConnection {
    pub url: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub timeout: Duration,
    pub catalog_ttl: Duration,
    pub max_concurrent_calls: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Envelopes processed at once (always at most one per subject).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Deliveries of one message before it goes to the dead-letter table.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// A claimed message comes back after this long if the processor dies.
    #[serde(default = "default_visibility", with = "humantime_serde")]
    pub visibility_timeout: Duration,
    /// Retries of one Looker call on 429/5xx, inside one delivery.
    #[serde(default = "default_call_retries")]
    pub call_retries: usize,
    #[serde(default = "default_retry_min", with = "humantime_serde")]
    pub retry_min_delay: Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Idle wait between empty polls of the embedded queue.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often Looker users past their offboarding grace period are looked for and deleted.
    #[serde(default = "default_sweep", with = "humantime_serde")]
    pub deletion_sweep_interval: Duration,
    /// How far an event's own time (`published`, `occurred_at`, ...) may be ahead of the time
    /// Gatehouse received it. Beyond it the event is ordered by its receipt time instead, logged
    /// and counted (`gatehouse_event_time_clamped_total`). At most 1h.
    #[serde(default = "default_max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: Duration,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            workers: default_workers(),
            max_attempts: default_max_attempts(),
            visibility_timeout: default_visibility(),
            call_retries: default_call_retries(),
            retry_min_delay: default_retry_min(),
            retry_max_delay: default_retry_max(),
            poll_interval: default_poll(),
            deletion_sweep_interval: default_sweep(),
            max_clock_skew: default_max_clock_skew(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `gatehouse=debug`; `RUST_LOG` wins when set.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::default(),
            level: default_level(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_max_body() -> usize {
    256 * 1024
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
/// One hour (issue 14: every call counts): the catalog is three calls, and at 5 minutes an
/// instance with an event every few minutes spent up to 25,920 of them a month on it (Enterprise's
/// quota is 10,000); at 1 h it is at most 2,160. A write that Looker answers 404 drops the cache
/// at once (a deleted group), and a new policy restarts the process.
fn default_catalog_ttl() -> Duration {
    Duration::from_secs(3600)
}
/// 32: the embedded queue's group commit answers a write after one fsync shared by every
/// write waiting, so throughput grows with the events in flight (issue 13, bench/throughput.md);
/// Looker is held to `[looker] max_concurrent_calls` whatever this is.
fn default_workers() -> usize {
    32
}
fn default_looker_max_concurrent_calls() -> usize {
    8
}
fn default_max_attempts() -> u32 {
    5
}
fn default_visibility() -> Duration {
    Duration::from_secs(60)
}
fn default_call_retries() -> usize {
    4
}
fn default_retry_min() -> Duration {
    Duration::from_millis(200)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(10)
}
fn default_poll() -> Duration {
    Duration::from_millis(100)
}
fn default_sweep() -> Duration {
    Duration::from_secs(60)
}
fn default_max_clock_skew() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_okta_org() -> String {
    "default".into()
}
fn default_budget_warning() -> f64 {
    0.1
}
fn default_budget_flush() -> Duration {
    Duration::from_secs(30)
}
fn default_level() -> String {
    "info".into()
}

/// A configuration error; `field` is the TOML path or environment variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The environment variables Gatehouse reads (documented in the README).
pub const ENV_VARS: &[&str] = &[
    "GATEHOUSE_CONFIG",
    "GATEHOUSE_LISTEN",
    "GATEHOUSE_ADMIN_LISTEN",
    "GATEHOUSE_DATA_DIR",
    "GATEHOUSE_POLICY",
    "GATEHOUSE_OKTA_HOOK_SECRET",
    "GATEHOUSE_OKTA_ORG",
    "GATEHOUSE_OKTA_URL",
    "GATEHOUSE_OKTA_API_TOKEN",
    "GATEHOUSE_OKTA_CLIENT_ID",
    "GATEHOUSE_OKTA_PRIVATE_KEY",
    "GATEHOUSE_LOOKER_URL",
    "GATEHOUSE_LOOKER_CLIENT_ID",
    "GATEHOUSE_LOOKER_CLIENT_SECRET",
    "GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA",
    "GATEHOUSE_LOOKER_BUDGET_WARNING_REMAINING",
    "GATEHOUSE_LOOKER_PLATFORM",
    "GATEHOUSE_LOOKER_CORE_PROJECT",
    "GATEHOUSE_LOG_FORMAT",
    "GATEHOUSE_QUEUE",
    "GATEHOUSE_STATE",
    "GATEHOUSE_DATABASE_URL",
    "GATEHOUSE_SQS_QUEUE_URL",
    "GATEHOUSE_SQS_AUDIT_QUEUE_URL",
    "GATEHOUSE_SQS_ROTATION_QUEUE_URL",
    "GATEHOUSE_PUBSUB_TOPIC",
    "GATEHOUSE_PUBSUB_SUBSCRIPTION",
    "GATEHOUSE_PUBSUB_AUDIT_SUBSCRIPTION",
    "GATEHOUSE_PUBSUB_ROTATION_TOPIC",
    "GATEHOUSE_PUBSUB_ROTATION_SUBSCRIPTION",
    "GATEHOUSE_AUDIT_PRINCIPALS",
    "GATEHOUSE_SCIM_TOKEN",
    "GATEHOUSE_GRAPH_CLIENT_STATE",
    "GATEHOUSE_GRAPH_TENANT_ID",
    "GATEHOUSE_GRAPH_CLIENT_ID",
    "GATEHOUSE_GRAPH_CLIENT_SECRET",
    "GATEHOUSE_GOOGLE_CHANNEL_TOKEN",
    "GATEHOUSE_GOOGLE_CHANNEL_SECRET",
    "GATEHOUSE_GOOGLE_CREDENTIALS_FILE",
    "GATEHOUSE_GOOGLE_ACCESS_TOKEN",
    "GATEHOUSE_GENERIC_SECRET",
    "GATEHOUSE_GCP_SECRET_MANAGER_URL",
    "GATEHOUSE_GCP_IAM_URL",
    "GATEHOUSE_GCP_ACCESS_TOKEN",
    "GATEHOUSE_RECONCILE_SCHEDULE",
    "GATEHOUSE_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
];

impl Config {
    /// Built-in defaults (what `gatehouse standalone` runs on without `--config`).
    pub fn defaults() -> Self {
        toml::from_str("").expect("empty config uses defaults")
    }

    /// Load `path` (if any), then apply environment overrides from `env`, then validate.
    pub fn load(path: Option<&Path>, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::new(p.display().to_string(), format!("cannot read: {e}")))?;
                Self::from_toml(&text, p)?
            }
            None => Self::defaults(),
        };
        cfg.apply_env(env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let field = field_of(&e, text).unwrap_or_else(|| path.display().to_string());
            ConfigError::new(field, e.message().to_string())
        })
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.queue.apply_env(&env)?;
        self.state.apply_env(&env)?;
        if let Some(v) = env("GATEHOUSE_AUDIT_PRINCIPALS") {
            self.cloud_audit.gatehouse_principals = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
        }
        self.scim.apply_env(&env)?;
        self.graph.apply_env(&env)?;
        self.okta.api.apply_env(&env)?;
        self.google.apply_env(&env)?;
        self.generic.apply_env(&env)?;
        self.rotator.apply_env(&env)?;
        self.gcp.apply_env(&env)?;
        self.reconcile.apply_env(&env)?;
        self.looker.budget.apply_env(&env)?;
        LookerCoreConfig::apply_env(&mut self.looker.platform, &mut self.looker.core, &env)?;
        self.telemetry.apply_env(&env)?;
        if let Some(v) = env("GATEHOUSE_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|e| ConfigError::new("GATEHOUSE_LISTEN", format!("{v:?} is not an address: {e}")))?;
        }
        if let Some(v) = env("GATEHOUSE_ADMIN_LISTEN") {
            self.admin_listen = v.parse().map_err(|e| {
                ConfigError::new("GATEHOUSE_ADMIN_LISTEN", format!("{v:?} is not an address: {e}"))
            })?;
        }
        if let Some(v) = env("GATEHOUSE_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("GATEHOUSE_POLICY") {
            self.policy = Some(PathBuf::from(v));
        }
        if let Some(v) = env("GATEHOUSE_OKTA_ORG") {
            self.okta.org = v;
        }
        if let Some(v) = env("GATEHOUSE_OKTA_HOOK_SECRET") {
            // Empty is refused, never taken as "no authentication".
            let secret = SecretString::from(v);
            check_token("GATEHOUSE_OKTA_HOOK_SECRET", &secret, None)?;
            self.okta.hook_secret = Some(secret);
        }
        if let Some(v) = env("GATEHOUSE_LOOKER_URL") {
            self.looker.url = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_LOOKER_CLIENT_ID") {
            self.looker.client_id = Some(v);
        }
        if let Some(v) = env("GATEHOUSE_LOOKER_CLIENT_SECRET") {
            self.looker.client_secret = Some(SecretString::from(v));
        }
        if let Some(v) = env("GATEHOUSE_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                _ => {
                    return Err(ConfigError::new(
                        "GATEHOUSE_LOG_FORMAT",
                        format!("{v:?} is not text or json"),
                    ));
                }
            };
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(secret) = &self.okta.hook_secret {
            check_token("okta.hook_secret", secret, None)?;
        }
        self.looker_connection()?;
        self.okta.api.validate()?;
        self.queue.validate()?;
        self.queue.validate_rotation(!self.rotator.secrets.is_empty())?;
        self.state.validate()?;
        self.scim.validate()?;
        self.graph.validate()?;
        self.google.validate()?;
        self.generic.validate()?;
        self.rotator.validate()?;
        self.aws.validate()?;
        self.identity.validate(&self.aws)?;
        self.safety.validate()?;
        self.audit.validate()?;
        self.gcp.validate()?;
        self.reconcile.validate()?;
        self.looker.budget.validate()?;
        self.looker
            .core
            .validate(self.looker.platform, self.gcp.enabled)?;
        self.telemetry.validate()?;
        self.server.validate()?;
        if let Some(b) = &self.safety.breaker {
            b.validate()?;
        }
        if self.admin_listen == self.listen && self.listen.port() != 0 {
            return Err(ConfigError::new(
                "admin_listen",
                "must differ from listen: /metrics and /readyz stay off the intake port",
            ));
        }
        if let Some(url) = &self.looker.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "looker.url",
                format!("{url:?} is not an http(s) URL"),
            ));
        }
        if self.processor.workers == 0 {
            return Err(ConfigError::new("processor.workers", "must be at least 1"));
        }
        if self.looker.max_concurrent_calls == 0 {
            return Err(ConfigError::new(
                "looker.max_concurrent_calls",
                "must be at least 1",
            ));
        }
        if self.processor.max_attempts == 0 {
            return Err(ConfigError::new("processor.max_attempts", "must be at least 1"));
        }
        if self.processor.max_clock_skew > Duration::from_secs(3600) {
            return Err(ConfigError::new("processor.max_clock_skew", "must be at most 1h"));
        }
        let org = &self.okta.org;
        let org_ok = !org.is_empty()
            && org.len() <= 128
            && org
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !org_ok {
            return Err(ConfigError::new(
                "okta.org (GATEHOUSE_OKTA_ORG)",
                "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'",
            ));
        }
        if self.okta.max_body_bytes < 1024 {
            return Err(ConfigError::new("okta.max_body_bytes", "must be at least 1024"));
        }
        if let Some(p) = &self.policy
            && !p.is_file()
        {
            return Err(ConfigError::new(
                "policy",
                format!("{} is not a readable file", p.display()),
            ));
        }
        Ok(())
    }

    /// Looker (Google Cloud core)'s login grant (`None`: Looker (original)). Validated at load.
    pub fn looker_core(&self) -> Option<gatehouse_domain::looker_core::LookerCore> {
        match (self.looker.platform, &self.looker.core.project) {
            (LookerPlatform::Core, Some(project)) => Some(gatehouse_domain::looker_core::LookerCore {
                project: project.clone(),
                role: self.looker.core.role.clone(),
            }),
            _ => None,
        }
    }

    /// The Looker connection, or `None` for dry-run mode. Partial settings are an error.
    pub fn looker_connection(&self) -> Result<Option<LookerConnection>, ConfigError> {
        let l = &self.looker;
        match (&l.url, &l.client_id, &l.client_secret) {
            (None, None, None) => Ok(None),
            (Some(url), Some(id), Some(secret)) => Ok(Some(LookerConnection {
                url: url.trim_end_matches('/').to_string(),
                client_id: id.clone(),
                client_secret: secret.clone(),
                timeout: l.timeout,
                catalog_ttl: l.catalog_ttl,
                max_concurrent_calls: l.max_concurrent_calls,
            })),
            _ => {
                let missing = [
                    ("looker.url (GATEHOUSE_LOOKER_URL)", l.url.is_none()),
                    (
                        "looker.client_id (GATEHOUSE_LOOKER_CLIENT_ID)",
                        l.client_id.is_none(),
                    ),
                    (
                        "looker.client_secret (GATEHOUSE_LOOKER_CLIENT_SECRET)",
                        l.client_secret.is_none(),
                    ),
                ];
                let field = missing
                    .iter()
                    .find(|(_, m)| *m)
                    .map(|(f, _)| *f)
                    .unwrap_or("looker");
                Err(ConfigError::new(
                    field,
                    "is missing: set all of url, client_id and client_secret, or none for dry-run mode",
                ))
            }
        }
    }
}

/// Best effort: turn a toml error's byte span into the dotted key it sits under.
fn field_of(e: &toml::de::Error, text: &str) -> Option<String> {
    let span = e.span()?;
    let before = &text[..span.start.min(text.len())];
    let mut table = String::new();
    for line in before.lines() {
        let l = line.trim();
        if l.starts_with('[') && l.ends_with(']') {
            table = l.trim_matches(|c| c == '[' || c == ']').to_string();
        }
    }
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let rest = &text[line_start..];
    let key = rest.split(['=', '\n']).next().unwrap_or("").trim();
    let key = if key.starts_with('[') || key.is_empty() {
        None
    } else {
        Some(key)
    };
    match (table.is_empty(), key) {
        (true, Some(k)) => Some(k.to_string()),
        (false, Some(k)) => Some(format!("{table}.{k}")),
        (false, None) => Some(table),
        (true, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    /// Every variable the loader reads is in `ENV_VARS`, and the README documents each one.
    #[test]
    fn every_environment_variable_is_listed_and_documented() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut read = std::collections::BTreeSet::new();
        for entry in std::fs::read_dir(dir.join("src/config")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for part in text.split('"').skip(1).step_by(2) {
                if part.starts_with("GATEHOUSE_") && part.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                {
                    read.insert(part.to_string());
                }
            }
        }
        let listed: std::collections::BTreeSet<String> = ENV_VARS.iter().map(|s| s.to_string()).collect();
        read.extend(OTEL_ENV_VARS.iter().map(|s| s.to_string()));
        let missing: Vec<_> = read.difference(&listed).collect();
        assert!(missing.is_empty(), "read but not in ENV_VARS: {missing:?}");
        let readme = std::fs::read_to_string(dir.join("../../README.md")).unwrap();
        let undocumented: Vec<_> = ENV_VARS.iter().filter(|v| !readme.contains(*v)).collect();
        assert!(undocumented.is_empty(), "not in the README: {undocumented:?}");
    }

    #[test]
    fn defaults_are_dry_run_on_loopback() {
        let cfg = Config::load(None, env(&[])).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8080");
        assert!(cfg.looker_connection().unwrap().is_none());
    }

    #[test]
    fn env_overrides_the_file() {
        let f = write("listen = \"127.0.0.1:9000\"\n[okta]\nhook_secret = \"okta-secret-from-the-file\"\n");
        let cfg = Config::load(
            Some(f.path()),
            env(&[
                ("GATEHOUSE_LISTEN", "127.0.0.1:9100"),
                ("GATEHOUSE_OKTA_HOOK_SECRET", "okta-secret-from-env"),
                ("GATEHOUSE_LOOKER_URL", "https://x.looker.com/"),
                ("GATEHOUSE_LOOKER_CLIENT_ID", "id"),
                ("GATEHOUSE_LOOKER_CLIENT_SECRET", "s3cret"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 9100);
        assert_eq!(
            cfg.okta.hook_secret.as_ref().unwrap().expose_secret(),
            "okta-secret-from-env"
        );
        let l = cfg.looker_connection().unwrap().unwrap();
        assert_eq!(l.url, "https://x.looker.com");
        assert!(
            !format!("{l:?}").contains("s3cret"),
            "secret must not reach Debug output"
        );
    }

    /// An empty or weak Okta secret is a config error naming where it came from, never "no
    /// authentication" (issue 11, finding 1).
    #[test]
    fn weak_or_empty_okta_secret_is_refused() {
        for weak in ["", "   ", "short-secret", "xxxxxxxxxxxxxxxxxxxxxxxx"] {
            let e = Config::load(None, env(&[("GATEHOUSE_OKTA_HOOK_SECRET", weak)])).unwrap_err();
            assert_eq!(e.field, "GATEHOUSE_OKTA_HOOK_SECRET", "{weak:?}: {e}");
            let f = write(&format!("[okta]\nhook_secret = {weak:?}\n"));
            let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
            assert_eq!(e.field, "okta.hook_secret", "{weak:?}: {e}");
            assert!(weak.trim().is_empty() || !e.to_string().contains(weak), "{e}");
        }
        let cfg = Config::load(
            None,
            env(&[("GATEHOUSE_OKTA_HOOK_SECRET", "Okta-hook-s3cret-0123")]),
        )
        .unwrap();
        assert!(cfg.okta.hook_secret.is_some());
    }

    /// Issue 16: `[identity.looker_sso]` is off by default, parsed when set, and a wrong or
    /// missing value names its field.
    #[test]
    fn identity_looker_sso() {
        use gatehouse_domain::sso::{SsoCredential, SsoId};
        let cfg = Config::load(None, env(&[])).unwrap();
        assert!(cfg.identity.looker_sso().is_none(), "off by default");
        let f = write("[identity.looker_sso]\ncredential = \"oidc\"\nid = \"attribute:externalId\"\n");
        let sso = Config::load(Some(f.path()), env(&[]))
            .unwrap()
            .identity
            .looker_sso()
            .unwrap();
        assert_eq!(sso.credential, SsoCredential::Oidc);
        assert_eq!(sso.id, SsoId::Attribute("externalId".into()));
        for (text, field) in [
            ("id = \"email\"\n", "identity.looker_sso.credential"),
            (
                "credential = \"embed\"\nid = \"email\"\n",
                "identity.looker_sso.credential",
            ),
            ("credential = \"saml\"\n", "identity.looker_sso.id"),
            (
                "credential = \"saml\"\nid = \"attribute:\"\n",
                "identity.looker_sso.id",
            ),
        ] {
            let f = write(&format!("[identity.looker_sso]\n{text}"));
            let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
    }

    /// Issue 11, finding 3: `{local}` maps alice@a.com and alice@b.com to one IAM user unless
    /// exactly one email domain is allowed.
    #[test]
    fn identity_domains_and_the_aws_local_mapping() {
        let cfg = Config::load(None, env(&[])).unwrap();
        assert!(cfg.identity.allowed_domains().is_none(), "unset: any domain");
        let f = write("[identity]\nallowed_email_domains = [\"Example.COM\", \"corp.example.org\"]\n");
        let cfg = Config::load(Some(f.path()), env(&[])).unwrap();
        assert_eq!(
            cfg.identity
                .allowed_domains()
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["corp.example.org", "example.com"]
        );
        for (text, field) in [
            (
                "[identity]\nallowed_email_domains = []\n",
                "identity.allowed_email_domains",
            ),
            (
                "[identity]\nallowed_email_domains = [\"@example.com\"]\n",
                "identity.allowed_email_domains[0]",
            ),
            (
                "[identity]\nallowed_email_domains = [\"example.com\", \"localhost\"]\n",
                "identity.allowed_email_domains[1]",
            ),
        ] {
            let e = Config::load(Some(write(text).path()), env(&[])).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
        let local = "[aws]\nenabled = true\nuser_mapping = { template = \"{local}\" }\n";
        for identity in ["", "[identity]\nallowed_email_domains = [\"a.com\", \"b.com\"]\n"] {
            let e = Config::load(Some(write(&format!("{local}{identity}")).path()), env(&[])).unwrap_err();
            assert_eq!(e.field, "aws.user_mapping.template", "{e}");
        }
        Config::load(
            Some(
                write(&format!(
                    "{local}[identity]\nallowed_email_domains = [\"a.com\"]\n"
                ))
                .path(),
            ),
            env(&[]),
        )
        .unwrap();
        Config::load(
            Some(write("[aws]\nenabled = true\nuser_mapping = { template = \"{email}\" }\n").path()),
            env(&[]),
        )
        .unwrap();
    }

    #[test]
    fn unknown_field_is_named() {
        let f = write("[processor]\nworkerz = 3\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "processor.workerz", "{e}");
        assert!(e.to_string().contains("workerz"));
    }

    #[test]
    fn wrong_type_is_named() {
        let f = write("[processor]\nworkers = \"many\"\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "processor.workers", "{e}");
    }

    /// Issue 13: workers and Looker's concurrency are separate; neither may be zero.
    /// Issue 14: the catalog (3 Looker calls) is cached for an hour unless configured; a
    /// duration string sets it.
    #[test]
    fn the_looker_catalog_is_cached_for_an_hour_by_default() {
        let cfg = Config::load(None, env(&[])).unwrap();
        assert_eq!(cfg.looker.catalog_ttl, Duration::from_secs(3600));
        let f = write("[looker]\ncatalog_ttl = \"10m\"\n");
        let cfg = Config::load(Some(f.path()), env(&[])).unwrap();
        assert_eq!(cfg.looker.catalog_ttl, Duration::from_secs(600));
    }

    #[test]
    fn the_processor_runs_32_events_and_looker_sees_8_calls_at_once_by_default() {
        let cfg = Config::load(None, env(&[])).unwrap();
        assert_eq!((cfg.processor.workers, cfg.looker.max_concurrent_calls), (32, 8));
        let f = write("[looker]\nmax_concurrent_calls = 0\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "looker.max_concurrent_calls", "{e}");
        let f = write("[looker]\nmax_concurrent_calls = 2\n");
        assert_eq!(
            Config::load(Some(f.path()), env(&[]))
                .unwrap()
                .looker
                .max_concurrent_calls,
            2
        );
    }

    #[test]
    fn partial_looker_names_the_missing_field() {
        let e = Config::load(None, env(&[("GATEHOUSE_LOOKER_URL", "https://x")])).unwrap_err();
        assert!(e.field.starts_with("looker.client_id"), "{e}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let e = Config::load(None, env(&[("GATEHOUSE_LISTEN", "nope")])).unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_LISTEN");
    }

    #[test]
    fn looker_budget_is_off_by_default_and_set_from_file_or_env() {
        let cfg = Config::load(None, env(&[])).unwrap();
        assert_eq!(cfg.looker.budget.monthly_call_quota, None);
        assert_eq!(cfg.looker.budget.warning_remaining, 0.1);
        let f = write(
            "[looker.budget]\nmonthly_call_quota = 5000\nwarning_remaining = 0.25\nflush_interval = \"5s\"\n",
        );
        let cfg = Config::load(Some(f.path()), env(&[])).unwrap();
        assert_eq!(cfg.looker.budget.monthly_call_quota, Some(5000));
        assert_eq!(cfg.looker.budget.warning_remaining, 0.25);
        assert_eq!(cfg.looker.budget.flush_interval, Duration::from_secs(5));
        let cfg = Config::load(
            Some(f.path()),
            env(&[
                ("GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA", "100000"),
                ("GATEHOUSE_LOOKER_BUDGET_WARNING_REMAINING", "0.05"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.looker.budget.monthly_call_quota, Some(100_000));
        assert_eq!(cfg.looker.budget.warning_remaining, 0.05);
    }

    #[test]
    fn bad_looker_budget_names_the_field() {
        let e = Config::load(None, env(&[("GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA", "lots")])).unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA");
        let e = Config::load(None, env(&[("GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA", "0")])).unwrap_err();
        assert_eq!(e.field, "looker.budget.monthly_call_quota");
        let e = Config::load(None, env(&[("GATEHOUSE_LOOKER_BUDGET_WARNING_REMAINING", "1.5")])).unwrap_err();
        assert_eq!(e.field, "looker.budget.warning_remaining");
        let f = write("[looker.budget]\nmonthly_calls = 3\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "looker.budget.monthly_calls", "{e}");
    }

    #[test]
    fn okta_org_and_clock_skew_have_defaults_and_are_checked() {
        let cfg = Config::load(None, env(&[])).unwrap();
        assert_eq!(cfg.okta.org, "default");
        assert_eq!(cfg.processor.max_clock_skew, Duration::from_secs(300));
        let f = write("[okta]\norg = \"acme.okta.com\"\n[processor]\nmax_clock_skew = \"90s\"\n");
        let cfg = Config::load(Some(f.path()), env(&[])).unwrap();
        assert_eq!(cfg.okta.org, "acme.okta.com");
        assert_eq!(cfg.processor.max_clock_skew, Duration::from_secs(90));
        let cfg = Config::load(None, env(&[("GATEHOUSE_OKTA_ORG", "globex")])).unwrap();
        assert_eq!(cfg.okta.org, "globex");
        for bad in ["", "a:b", "a b", "okta/x"] {
            let e = Config::load(None, env(&[("GATEHOUSE_OKTA_ORG", bad)])).unwrap_err();
            assert_eq!(e.field, "okta.org (GATEHOUSE_OKTA_ORG)", "{bad:?}");
        }
        let f = write("[processor]\nmax_clock_skew = \"2h\"\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "processor.max_clock_skew");
    }

    #[test]
    fn missing_policy_file_is_named() {
        let e = Config::load(None, env(&[("GATEHOUSE_POLICY", "/no/such/policy.toml")])).unwrap_err();
        assert_eq!(e.field, "policy");
    }

    /// Issue 14 item 5: `platform = "core"` needs the instance's project and the GCP target; the
    /// default is original, with no login grant.
    #[test]
    fn looker_core_needs_its_project_and_the_gcp_target() {
        let cfg = Config::load(None, env(&[])).unwrap();
        assert_eq!(cfg.looker.platform, LookerPlatform::Original);
        assert!(cfg.looker_core().is_none());
        let f = write("[looker]\nplatform = \"core\"\n[gcp]\nenabled = true\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "looker.core.project (GATEHOUSE_LOOKER_CORE_PROJECT)");
        let f = write("[looker]\nplatform = \"core\"\n[looker.core]\nproject = \"projects/lk\"\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "looker.platform");
        assert!(e.message.contains("[gcp] enabled = true"), "{}", e.message);
        let f = write("[looker.core]\nproject = \"projects/lk\"\n");
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "looker.core.project");
        let f = write(
            "[looker]\nplatform = \"core\"\n[looker.core]\nproject = \"projects/lk/datasets/d\"\n[gcp]\nenabled = true\n",
        );
        let e = Config::load(Some(f.path()), env(&[])).unwrap_err();
        assert_eq!(e.field, "looker.core.project");
        let f = write("[gcp]\nenabled = true\n");
        let cfg = Config::load(
            Some(f.path()),
            env(&[
                ("GATEHOUSE_LOOKER_PLATFORM", "core"),
                ("GATEHOUSE_LOOKER_CORE_PROJECT", "projects/lk"),
            ]),
        )
        .unwrap();
        let core = cfg.looker_core().unwrap();
        assert_eq!(
            (core.project.as_str(), core.role.as_str()),
            ("projects/lk", "roles/looker.instanceUser")
        );
        assert_eq!(cfg.looker.core.first_login_interval, Duration::from_secs(3600));
        let e = Config::load(None, env(&[("GATEHOUSE_LOOKER_PLATFORM", "cloud")])).unwrap_err();
        assert_eq!(e.field, "GATEHOUSE_LOOKER_PLATFORM");
    }
}
