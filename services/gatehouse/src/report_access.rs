//! `gatehouse report access` (issue 15 item 1): the access review from the state store — the
//! directory, the last reconcile snapshot at or before `--as-of` and the ledger after it. No
//! target is called unless `--refresh` asks for a reconcile read first (counted against the
//! Looker budget).

use anyhow::Context;
use chrono::{DateTime, Utc};
use gatehouse_app as app;
use gatehouse_domain::access::AccessSnapshots;
use gatehouse_domain::cloud::AwsUserMapping;
use gatehouse_domain::ports::{Directory, StateStore};
use gatehouse_engine::access;
use gatehouse_engine::reconcile::{self, CloudShape, LogProgress};
use gatehouse_platform::config::{AwsUserMappingConfig, Config};
use std::io::Write;

/// Output format of the review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
    Html,
}

/// The cloud shape the configuration names, without connecting to anything.
fn shape(cfg: &Config) -> CloudShape {
    CloudShape {
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

pub async fn report_access(
    cfg: &Config,
    as_of: Option<DateTime<Utc>>,
    format: Format,
    refresh: bool,
) -> anyhow::Result<()> {
    let store = gatehouse_store::sqlite::Sqlite::open(&cfg.data_dir).await?;
    let store = app::open_state(cfg, &store).await?;
    if refresh {
        // The paged reconcile reads (no write), stored as a snapshot like any reconcile's.
        let engine = app::engine_with_cloud(cfg, store.clone()).await?;
        let run = gatehouse_engine::reconcile_budget::read_options(
            &cfg.reconcile,
            gatehouse_domain::schedule::ReconcileSchedule::next_audit_run(&store).await?,
        );
        let report = reconcile::run_full(
            &engine,
            &store,
            false,
            &run,
            cfg.reconcile.orphan_mode()?,
            &LogProgress,
        )
        .await;
        app::count_looker_calls(cfg, &engine).await;
        reconcile::record(&store, &report?, cfg.reconcile.snapshot_retention()).await?;
    }
    let as_of = as_of.unwrap_or_else(gatehouse_domain::clock::now);
    let policy = app::load_policy(cfg)?;
    let identities: Vec<_> = store.subjects().await?.into_iter().map(|s| s.identity).collect();
    let snapshot = store.access_snapshot_at(as_of).await?;
    let ledger = match &snapshot {
        Some(s) => store.ledger_since(Some(s.run_at)).await?,
        None => Vec::new(),
    };
    let review = access::build(
        &policy,
        &identities,
        snapshot.as_ref(),
        &ledger,
        &shape(cfg),
        as_of,
    );
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&review)? + "\n",
        Format::Csv => gatehouse_engine::access_render::csv(&review),
        Format::Html => gatehouse_engine::access_render::html(&review),
    };
    if snapshot.is_none() {
        eprintln!(
            "gatehouse: no reconcile snapshot at or before {as_of}: what targets hold is unknown (run `gatehouse reconcile` or use --refresh)"
        );
    }
    store.close().await;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("cannot write the report")
}
