//! From configuration to a running rotator: one kind and one store per declared secret, over
//! the configured state store (SQLite or PostgreSQL), with the system clock.

use crate::any::AnyRotations;
use crate::clock::{Clock, SystemClock};
use crate::error::RotationError;
use crate::gcp::GcpClient;
use crate::kinds::{Kind, aws_iam::AwsAccessKey, gcp_sa::GcpServiceAccountKey, looker::LookerApi3};
use crate::rotator::{Declared, Rotator, Settings};
use crate::state::RotationStore;
use crate::stores::{SecretStore, aws_sm::AwsSecretsManager, gcp_sm::GcpSecretManager};
use gatehouse_platform::config::{Config, KindConfig, RotatorConfig, StoreConfig};
use gatehouse_store::state::AnyState;
use gatehouse_targets::client::looker::{LookerClient, LookerConfig};
use std::sync::Arc;

/// The rotator's timing from `[rotator]`.
pub fn settings(cfg: &RotatorConfig) -> Settings {
    Settings {
        poll_interval: cfg.poll_interval,
        lease: cfg.lease,
        retry_min_delay: cfg.retry_min_delay,
        retry_max_delay: cfg.retry_max_delay,
        ..Settings::default()
    }
}

/// Kinds and stores for every declared secret. `aws` is the SDK configuration (endpoint,
/// region, credentials); it is loaded from the environment when `None` and some secret needs it.
pub async fn declared(
    cfg: &Config,
    aws: Option<aws_config::SdkConfig>,
) -> Result<Vec<Declared>, RotationError> {
    let r = &cfg.rotator;
    let needs_aws = r.secrets.iter().any(|s| {
        matches!(s.kind, KindConfig::AwsAccessKey { .. })
            || matches!(s.store, StoreConfig::AwsSecretsManager { .. })
    });
    let needs_gcp = r.secrets.iter().any(|s| {
        matches!(s.kind, KindConfig::GcpServiceAccountKey { .. })
            || matches!(s.store, StoreConfig::GcpSecretManager { .. })
    });
    let aws = match (aws, needs_aws) {
        (Some(a), _) => Some(a),
        // SDK retries off for every client built from it: the rotator's backoff owns retrying.
        (None, true) => Some(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .load()
                .await,
        ),
        (None, false) => None,
    };
    let gcp = needs_gcp.then(|| GcpClient::from_config(&r.gcp)).transpose()?;
    let looker = cfg
        .looker_connection()
        .map_err(|e| RotationError::permanent(e.to_string()))?;
    let mut out = Vec::new();
    for s in &r.secrets {
        let kind: Arc<dyn Kind> = match &s.kind {
            KindConfig::LookerApi3 { user_id } => {
                let c = looker.as_ref().ok_or_else(|| {
                    RotationError::permanent(format!(
                        "secret {}: looker_api3 needs the [looker] connection",
                        s.name
                    ))
                })?;
                let admin = LookerClient::new(LookerConfig {
                    base_url: c.url.clone(),
                    client_id: c.client_id.clone(),
                    client_secret: c.client_secret.clone(),
                    timeout: c.timeout,
                    catalog_ttl: c.catalog_ttl,
                    max_concurrent_calls: c.max_concurrent_calls,
                })
                .map_err(|e| RotationError::permanent("cannot build the looker client").caused_by(e))?;
                Arc::new(LookerApi3::new(admin, &c.url, user_id, c.timeout))
            }
            KindConfig::AwsAccessKey { user_name } => Arc::new(AwsAccessKey::new(aws_of(&aws)?, user_name)),
            KindConfig::GcpServiceAccountKey { email } => Arc::new(GcpServiceAccountKey::new(
                gcp_of(&gcp)?.clone(),
                &r.gcp.iam_url,
                email,
            )),
        };
        let store: Arc<dyn SecretStore> = match &s.store {
            StoreConfig::AwsSecretsManager { secret_id } => {
                Arc::new(AwsSecretsManager::new(aws_of(&aws)?, secret_id))
            }
            StoreConfig::GcpSecretManager { name } => Arc::new(GcpSecretManager::new(
                gcp_of(&gcp)?.clone(),
                &r.gcp.secret_manager_url,
                name,
            )),
        };
        out.push(Declared::new(s.clone(), kind, store));
    }
    Ok(out)
}

fn aws_of(a: &Option<aws_config::SdkConfig>) -> Result<&aws_config::SdkConfig, RotationError> {
    a.as_ref()
        .ok_or_else(|| RotationError::permanent("aws sdk configuration missing"))
}

fn gcp_of(g: &Option<GcpClient>) -> Result<&GcpClient, RotationError> {
    g.as_ref()
        .ok_or_else(|| RotationError::permanent("gcp client missing"))
}

/// The rotator of a configuration over the state store `[state]` selects (the processor's:
/// SQLite, or PostgreSQL shared by several rotator instances), on the system clock.
pub async fn rotator(cfg: &Config, state: AnyState) -> Result<Rotator<AnyRotations>, RotationError> {
    let store = AnyRotations::from(state);
    tracing::debug!(backend = store.backend(), "rotation store");
    rotator_with(cfg, store, None, Arc::new(SystemClock)).await
}

/// Same over any store, with an explicit AWS SDK configuration and clock (tests).
pub async fn rotator_with<S: RotationStore>(
    cfg: &Config,
    store: S,
    aws: Option<aws_config::SdkConfig>,
    clock: Arc<dyn Clock>,
) -> Result<Rotator<S>, RotationError> {
    let declared = declared(cfg, aws).await?;
    Ok(Rotator::new(declared, store, clock, settings(&cfg.rotator)))
}
