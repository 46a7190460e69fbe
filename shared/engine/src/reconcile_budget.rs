//! What a reconcile will cost, before it runs (issue 14), and whether the month's Looker
//! admin-API budget can pay for it while keeping a reserve for events. Estimating makes no
//! call to any target: it counts from the directory and the policy.
//!
//! Looker: the login, the 3 catalog lists, `floor(N / page) + 1` pages (the last one short),
//! and the audit's attribute reads (`ceil(M / k)`, M = people with managed attributes).
//! AWS: `ListUsers` pages, one `GetGroup` per managed group, `ListUserTags` per person when tags
//! are managed, `ListAccessKeys` + `GetLoginProfile` per person whose credentials are read.
//! GCP: one `getIamPolicy` per managed resource. Writes (drift found) come on top.

use crate::reconcile::CloudShape;
use crate::reconcile_paged::{CATALOG_CALLS, ReadOptions};
use chrono::{DateTime, Utc};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::policy::{self, Policy, Presence};
use serde::Serialize;
use std::collections::BTreeSet;

/// Expected read calls per target (`None`: the target is not configured).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Estimate {
    pub looker: Option<u64>,
    pub aws: Option<u64>,
    pub gcp: Option<u64>,
}

/// Expected read calls of one reconcile of `identities`.
pub fn estimate(
    policy: &Policy,
    identities: &[Identity],
    looker: bool,
    shape: &CloudShape,
    opts: &ReadOptions,
    now: DateTime<Utc>,
) -> Estimate {
    let desired: Vec<_> = identities.iter().map(|id| policy::evaluate(policy, id)).collect();
    let looker = looker.then(|| {
        let people = desired.iter().filter(|d| d.email.is_some()).count() as u64;
        let with_attributes = desired
            .iter()
            .filter(|d| {
                d.email.is_some()
                    && matches!(d.presence, Presence::Active { .. })
                    && !d.managed_attributes.is_empty()
            })
            .count() as u64;
        let page = opts.page_size.clamp(1, 1000) as u64;
        let k = u64::from(opts.audit_every.max(1));
        1 + CATALOG_CALLS as u64 + people / page + 1 + with_attributes.div_ceil(k)
    });
    let aws = shape.aws.as_ref().map(|mapping| {
        let mut calls = (identities.len() as u64) / 1000 + 1 + policy.managed_aws_groups().len() as u64;
        if matches!(mapping, gatehouse_domain::cloud::AwsUserMapping::Tag { .. }) {
            calls += (identities.len() as u64) / 1000 + 1;
        }
        for id in identities {
            let dc = gatehouse_domain::cloud::evaluate(policy, id, Some(mapping), shape.gcp, now);
            if let Some(d) = &dc.aws {
                calls += u64::from(!d.managed_tags.is_empty()) + 2 * u64::from(d.needs().credentials);
            }
        }
        calls
    });
    let gcp = shape.gcp.then(|| {
        let resources: BTreeSet<String> = policy
            .managed_gcp_grants()
            .into_iter()
            .map(|g| g.resource)
            .collect();
        // Google groups: a lookup and at least one page of members each.
        resources.len() as u64 + 2 * policy.managed_gcp_groups().len() as u64
    });
    Estimate { looker, aws, gcp }
}

/// Whether the month's Looker budget covers a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BudgetCheck {
    pub quota: u64,
    /// Calls counted this month (every process).
    pub used: u64,
    /// Calls kept for events.
    pub reserve: u64,
    /// What the reconcile is expected to cost.
    pub needed: u64,
}

impl BudgetCheck {
    /// `reserve`: `[reconcile] event_reserve`, default 10 % of the quota.
    pub fn new(quota: u64, used: u64, reserve: Option<u64>, needed: u64) -> Self {
        BudgetCheck {
            quota,
            used,
            reserve: reserve.unwrap_or(quota / 10),
            needed,
        }
    }

    /// Calls left this month beyond the reserve (negative once into it).
    pub fn spare(&self) -> i64 {
        let i = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        i(self.quota) - i(self.used) - i(self.reserve)
    }

    pub fn covers(&self) -> bool {
        self.spare() >= i64::try_from(self.needed).unwrap_or(i64::MAX)
    }

    /// One line for logs, the ledger and `gatehouse reconcile`.
    pub fn render(&self) -> String {
        format!(
            "looker budget: {} of {} calls used this month, {} kept for events, {} spare; this reconcile needs ~{}{}",
            self.used,
            self.quota,
            self.reserve,
            self.spare(),
            self.needed,
            if self.covers() {
                ""
            } else {
                ": not covered, skipped"
            }
        )
    }
}

/// Human-readable estimate (`gatehouse reconcile --estimate`).
pub fn render_estimate(
    people: usize,
    e: &Estimate,
    opts: &ReadOptions,
    budget: Option<&BudgetCheck>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reconcile estimate for {people} people (pages of {}, attribute audit every {} runs), read calls per target:",
        opts.page_size, opts.audit_every
    );
    for (name, n) in [("looker", e.looker), ("aws", e.aws), ("gcp", e.gcp)] {
        match n {
            Some(n) => {
                let _ = writeln!(out, "  {name}: {n}");
            }
            None => {
                let _ = writeln!(out, "  {name}: not configured");
            }
        }
    }
    let _ = writeln!(out, "writes for drift found come on top (one per change)");
    if let Some(b) = budget {
        let _ = writeln!(out, "{}", b.render());
    }
    out
}

/// The counter a budget skip increments.
pub const METRIC_SKIPPED: &str = gatehouse_platform::events::RECONCILE_SKIPPED.name;

/// The ledger note of a skipped scheduled reconcile (no call was made: a `GET` of nothing).
pub fn skip_note(tick: &str, check: &BudgetCheck) -> gatehouse_domain::ports::LedgerEntry {
    gatehouse_domain::ports::LedgerEntry {
        at: gatehouse_domain::clock::now(),
        envelope_id: format!("reconcile:{tick}"),
        subject: "*".into(),
        event: "reconcile".into(),
        rule: "looker.budget".into(),
        target: "looker".into(),
        call: gatehouse_domain::looker::HttpCall {
            method: gatehouse_domain::looker::Method::Get,
            path: "/users".into(),
            body: None,
        },
        status: format!("skipped: {}", check.render()),
        policy_digest: None,
        actor: Some(gatehouse_domain::actor::SCHEDULER.into()),
    }
}

/// The options a configured reconcile reads Looker with (`run`: the audit's run number).
pub fn read_options(cfg: &gatehouse_platform::config::ReconcileConfig, run: u64) -> ReadOptions {
    ReadOptions {
        page_size: cfg.page_size,
        audit_every: cfg.attribute_audit_runs,
        audit_run: run,
    }
}

/// The cloud shape of an engine (for the estimate and the planner).
pub fn shape_of<S, L>(engine: &crate::engine::Engine<S, L>) -> CloudShape
where
    S: gatehouse_domain::ports::StateStore,
    L: gatehouse_domain::ports::LookerPort,
{
    CloudShape {
        aws: engine
            .cloud()
            .and_then(|c| c.aws.as_ref().map(|a| a.mapping.clone())),
        gcp: engine.cloud().is_some_and(|c| c.gcp.is_some()),
    }
}

/// The budget check of a reconcile of `identities` (`None` without a Looker budget or Looker).
pub async fn check<S, L>(
    engine: &crate::engine::Engine<S, L>,
    counts: &impl gatehouse_domain::ports::LookerCallCounts,
    identities: &[Identity],
    cfg: &gatehouse_platform::config::ReconcileConfig,
    quota: Option<u64>,
) -> Result<Option<BudgetCheck>, gatehouse_domain::ports::BackendError>
where
    S: gatehouse_domain::ports::StateStore,
    L: gatehouse_domain::ports::LookerPort,
{
    let Some(quota) = quota.filter(|_| engine.looker().is_some()) else {
        return Ok(None);
    };
    let e = estimate(
        engine.policy(),
        identities,
        true,
        &shape_of(engine),
        &read_options(cfg, 0),
        gatehouse_domain::clock::now(),
    );
    let used = counts
        .looker_calls(&gatehouse_domain::ports::call_month(
            gatehouse_domain::clock::now(),
        ))
        .await?;
    Ok(Some(BudgetCheck::new(
        quota,
        used,
        cfg.event_reserve,
        e.looker.unwrap_or(0),
    )))
}

/// One scheduled reconcile (the leader's job): skipped with one WARN, a metric and a ledger
/// note when the month's Looker budget minus the events' reserve cannot cover it; else run
/// with the next slice of the attribute audit.
pub async fn scheduled_run<S, L, D, C>(
    engine: &crate::engine::Engine<S, L>,
    directory: &D,
    shared: &C,
    cfg: &gatehouse_platform::config::ReconcileConfig,
    quota: Option<u64>,
    tick: &str,
) where
    S: gatehouse_domain::ports::StateStore,
    L: gatehouse_domain::ports::LookerPort,
    D: gatehouse_domain::ports::Directory,
    C: gatehouse_domain::ports::LookerCallCounts
        + gatehouse_domain::schedule::ReconcileSchedule
        + gatehouse_domain::access::AccessSnapshots,
{
    let identities: Vec<Identity> = match directory.subjects().await {
        Ok(s) => s.into_iter().map(|s| s.identity).collect(),
        Err(e) => {
            tracing::error!(error = %e, "scheduled reconcile failed: cannot read the directory");
            return;
        }
    };
    match check(engine, shared, &identities, cfg, quota).await {
        Ok(Some(c)) if !c.covers() => {
            tracing::warn!(
                tick,
                used = c.used,
                quota = c.quota,
                reserve = c.reserve,
                needed = c.needed,
                "scheduled reconcile skipped: the month's looker budget minus the events' reserve cannot cover it"
            );
            gatehouse_platform::events::reconcile_skipped(
                gatehouse_platform::events::SkipReason::LookerBudget,
            );
            if let Err(e) = engine.store().append_ledger(&[skip_note(tick, &c)]).await {
                tracing::error!(error = %e, "cannot ledger the skipped reconcile");
            }
            return;
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot read the looker call count; reconciling anyway"),
    }
    let run = match shared.next_audit_run().await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "scheduled reconcile failed: cannot count the run");
            return;
        }
    };
    let opts = read_options(cfg, run);
    // Validated at load: an unknown value never gets here.
    let orphans = cfg.orphan_mode().unwrap_or_default();
    let result = crate::reconcile::run_full(
        engine,
        directory,
        true,
        &opts,
        orphans,
        &crate::reconcile::LogProgress,
    )
    .await;
    if let Ok(r) = &result
        && let Err(e) = crate::reconcile::record(shared, r, cfg.snapshot_retention()).await
    {
        tracing::error!(tick, error = %e, "cannot store the access snapshot");
    }
    match result {
        Ok(r) => tracing::info!(
            orphans = r.orphans.len(),
            tick,
            people = r.people,
            drift = r.plans.len(),
            writes = r.writes,
            reported = r.reported,
            looker_reads = r.reads.looker,
            aws_reads = r.reads.aws,
            gcp_reads = r.reads.gcp,
            "scheduled reconcile done"
        ),
        Err(e) => tracing::error!(tick, error = %e, "scheduled reconcile failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconcile_is_covered_only_by_what_is_left_beyond_the_reserve() {
        // Enterprise: 10,000 a month, 1,000 kept for events by default.
        let c = BudgetCheck::new(10_000, 8_990, None, 10);
        assert_eq!(c.reserve, 1_000);
        assert_eq!(c.spare(), 10);
        assert!(c.covers(), "{}", c.render());
        let c = BudgetCheck::new(10_000, 8_991, None, 10);
        assert!(!c.covers(), "{}", c.render());
        assert!(c.render().contains("not covered, skipped"));
        let c = BudgetCheck::new(1_000, 100, Some(0), 900);
        assert!(c.covers());
        assert!(!BudgetCheck::new(1_000, 1_200, Some(0), 1).covers(), "over quota");
    }
}
