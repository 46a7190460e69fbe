//! `gatehouse plan --policy NEW.toml` (issue 15): the blast radius of a policy change, for a
//! reviewer, before it is merged. Everyone in the directory (the configured state store) is
//! evaluated under the running policy and under NEW; no target is called.

use anyhow::Context;
use gatehouse_app::{AppError, load_policy};
use gatehouse_domain::cloud::AwsUserMapping;
use gatehouse_domain::policy::{Policy, PolicyError};
use gatehouse_domain::policy_review::{self, Targets};
use gatehouse_domain::ports::Directory;
use gatehouse_platform::config::{AwsUserMappingConfig, Config};
use std::io::Write;
use std::path::Path;

/// NEW, read and validated like the running policy (a bad file is a configuration error: exit
/// 64 naming the field).
pub fn load_new(cfg: &Config, path: &Path) -> Result<Policy, AppError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| AppError::Policy {
        path: shown.clone(),
        source: PolicyError::Parse(format!("cannot read: {e}")),
    })?;
    let mut policy = Policy::from_toml(&text).map_err(|source| AppError::Policy { path: shown, source })?;
    policy.allowed_email_domains = cfg.identity.allowed_domains();
    policy.set_looker_core(cfg.looker_core());
    Ok(policy)
}

/// The targets as configured (evaluation needs the AWS identity mapping and whether GCP is on).
pub fn targets(cfg: &Config) -> Targets {
    Targets {
        aws: match (&cfg.aws.enabled, &cfg.aws.user_mapping) {
            (true, Some(AwsUserMappingConfig::Tag(key))) => Some(AwsUserMapping::Tag { key: key.clone() }),
            (true, Some(AwsUserMappingConfig::Template(t))) => {
                Some(AwsUserMapping::Template { template: t.clone() })
            }
            _ => None,
        },
        gcp: cfg.gcp.enabled,
    }
}

pub async fn plan_policy(cfg: &Config, new: &Path, json: bool) -> anyhow::Result<()> {
    let new = load_new(cfg, new)?;
    let current = load_policy(cfg)?;
    let store = crate::ops::state(cfg).await?;
    let subjects = store.subjects().await.context("cannot read the directory");
    store.close().await;
    let people: Vec<_> = subjects?.into_iter().map(|s| s.identity).collect();
    let review = policy_review::review(
        &current,
        &new,
        &people,
        &targets(cfg),
        gatehouse_domain::clock::now(),
    );
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&review)?)?;
    } else {
        write!(out, "{}", policy_review::render_text(&review))?;
    }
    Ok(())
}
