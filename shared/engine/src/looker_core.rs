//! Looker (Google Cloud core), issue 14 item 5: the first-login run.
//!
//! In core a person's Looker user is created by their first login, so onboarding leaves them
//! *pending first login* (the engine writes nothing in Looker and keeps no converged
//! fingerprint). This run finds the users created since its last run and converges those
//! people (groups, roles, attributes) at once, so nobody waits for the nightly reconcile.
//!
//! Cost: one `GET /users/search?is_service_account=false&sorts=id desc&fields=id,email&limit=N`
//! per run when nothing is new (the newest id is the one seen last time: the page is not read
//! further); one more page per `N` new users; and, per new user who is a person of the directory
//! not linked to it yet, the reads and writes of that person's plan. The directory is read only
//! when a new user is found. Every call goes through the Looker client, so the budget counts it.
//!
//! The highest user id seen is kept in memory: a process that starts (or a replica that was not
//! the leader for a while) reads one page first, and skips every user already linked to its
//! person, so nothing is converged twice and a restart costs one page.

use crate::engine::{Engine, ProcessError};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker_core::SeenUser;
use gatehouse_domain::ports::{Directory, LookerPort, StateStore};
use gatehouse_domain::target::TargetName;
use gatehouse_platform::events;
use serde::Serialize;
use std::collections::HashMap;

/// The first-login run's state: the highest Looker user id seen, and the page size.
#[derive(Debug, Clone)]
pub struct FirstLogins {
    seen: Option<u64>,
    page_size: usize,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FirstLoginRun {
    /// Looker search calls (pages) this run made.
    pub pages: usize,
    /// Users newer than the last run (on a process's first run: the newest page).
    pub new_users: usize,
    /// People converged because their user appeared (subject keys).
    pub converged: Vec<String>,
    /// Looker writes made converging them.
    pub writes: usize,
    /// New users whose email is nobody's in the directory (left alone).
    pub unmatched: usize,
    /// People whose convergence failed (retried next run).
    pub failed: usize,
}

impl FirstLogins {
    /// `page_size`: users per search call (1..=1000).
    pub fn new(page_size: usize) -> Self {
        FirstLogins {
            seen: None,
            page_size: page_size.clamp(1, 1000),
        }
    }

    /// The highest Looker user id seen so far.
    pub fn seen(&self) -> Option<u64> {
        self.seen
    }

    /// One run: read the users newer than the last one seen, then converge each new user's
    /// person who is not linked to it yet. A person whose convergence fails is logged and
    /// counted, and the run's cursor stays where it was, so the next run tries again (people
    /// converged meanwhile are linked by then, and skipped).
    pub async fn run<S: StateStore, L: LookerPort>(
        &mut self,
        engine: &Engine<S, L>,
        directory: &impl Directory,
    ) -> Result<FirstLoginRun, ProcessError> {
        let mut out = FirstLoginRun::default();
        if engine.looker().is_none() {
            return Ok(out);
        }
        let (fresh, top) = self.read_new(engine, &mut out).await?;
        out.new_users = fresh.len();
        if fresh.is_empty() {
            self.seen = top.max(self.seen);
            return Ok(out);
        }
        let subjects = directory.subjects().await?;
        let by_email: HashMap<String, &Identity> = subjects
            .iter()
            .filter_map(|s| s.identity.email().map(|e| (e.to_lowercase(), &s.identity)))
            .collect();
        let looker = TargetName::LOOKER.as_str();
        for u in &fresh {
            let Some(identity) = u.email.as_deref().and_then(|e| by_email.get(&e.to_lowercase())) else {
                tracing::debug!(user_id = %u.id, "new looker user matches nobody in the directory; left alone");
                out.unmatched += 1;
                continue;
            };
            let linked = engine.store().account_links(looker, &identity.key).await?;
            if linked.contains(&u.id) {
                continue;
            }
            match engine.converge_first_login(identity, &u.id).await {
                Ok(writes) => {
                    events::looker_core_first_login(&identity.key, &u.id, writes);
                    out.writes += writes;
                    out.converged.push(identity.key.clone());
                }
                Err(e) => {
                    events::looker_core_first_login_failed(&identity.key, &u.id, &e);
                    out.failed += 1;
                }
            }
        }
        if out.failed == 0 {
            self.seen = top.max(self.seen);
        }
        Ok(out)
    }

    /// The users newer than the last one seen, newest first, and the highest id read. Pages are
    /// read until one reaches a seen id or is short; on the first run, one page.
    async fn read_new<S: StateStore, L: LookerPort>(
        &self,
        engine: &Engine<S, L>,
        out: &mut FirstLoginRun,
    ) -> Result<(Vec<SeenUser>, Option<u64>), ProcessError> {
        let mut fresh = Vec::new();
        let mut top = None;
        let mut offset = 0;
        loop {
            let page = engine
                .looker_target()
                .newest_users(offset, self.page_size)
                .await?;
            out.pages += 1;
            let full = page.len() >= self.page_size;
            let mut reached = false;
            for u in page {
                let Some(n) = u.number() else {
                    tracing::warn!(user_id = %u.id, "looker user id is not a number; skipped");
                    continue;
                };
                top = top.max(Some(n));
                if self.seen.is_some_and(|seen| n <= seen) {
                    reached = true;
                    break;
                }
                fresh.push(u);
            }
            if reached || !full || self.seen.is_none() {
                return Ok((fresh, top));
            }
            offset += self.page_size;
        }
    }
}

/// How the first-login run is scheduled.
#[derive(Debug, Clone)]
pub struct Every {
    pub interval: std::time::Duration,
    pub page_size: usize,
    /// `[looker.budget] monthly_call_quota`: with one, a run is skipped once the month's calls
    /// reach the quota minus `reserve` (the calls kept for events).
    pub quota: Option<u64>,
    /// `[reconcile] event_reserve` (default 10 % of the quota).
    pub reserve: Option<u64>,
}

/// The first-login run every `interval` until `shutdown`, on one process at a time: each
/// interval is a tick (`looker-core:<time>`) claimed in the state store like the scheduled
/// reconcile's (the replicas that lose the claim skip it). With a quota, a run that the month's
/// budget minus the events' reserve cannot cover is skipped (DEBUG log and
/// `gatehouse_looker_core_first_login_skipped_total{reason="looker_budget"}`, one WARN a
/// process). `now` is the wall clock.
pub async fn run_every<S, L, D, C>(
    engine: &Engine<S, L>,
    directory: &D,
    schedule: &C,
    holder: &str,
    every: Every,
    clock: impl gatehouse_domain::clock::Clock,
    shutdown: gatehouse_platform::shutdown::Shutdown,
) where
    S: StateStore,
    L: LookerPort,
    D: Directory,
    C: gatehouse_domain::schedule::ReconcileSchedule + gatehouse_domain::ports::LookerCallCounts,
{
    use gatehouse_domain::schedule::Claim;
    let Every {
        interval,
        page_size,
        quota,
        reserve,
    } = every;
    let mut state = FirstLogins::new(page_size);
    let mut warned = false;
    let step = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
    let millis = interval.as_millis().max(1) as i64;
    loop {
        // The tick is the interval's start: every replica names it alike.
        let at = clock.now();
        let start = at.timestamp_millis() - at.timestamp_millis().rem_euclid(millis);
        let tick_at = chrono::DateTime::from_timestamp_millis(start).unwrap_or(at);
        let tick = format!(
            "looker-core:{}",
            tick_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        let affordable = match quota {
            None => true,
            Some(q) => match schedule
                .looker_calls(&gatehouse_domain::ports::call_month(at))
                .await
            {
                Ok(used) => crate::reconcile_budget::BudgetCheck::new(q, used, reserve, 1).covers(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the looker call count; first-login run goes ahead");
                    true
                }
            },
        };
        if !affordable {
            if !warned {
                tracing::warn!(
                    "looker (google cloud core) first-login runs skipped: the month's looker budget minus the events' reserve is spent"
                );
                warned = true;
            }
            tracing::debug!(tick, "first-login run skipped: looker budget");
            events::looker_core_first_login_skipped(events::SkipReason::LookerBudget);
        }
        let claim = match affordable {
            true => schedule.claim_tick(&tick, holder, at, at + step).await,
            false => Ok(Claim::Finished),
        };
        match claim {
            Ok(Claim::Won) => {
                match state.run(engine, directory).await {
                    Ok(r) if r.new_users > 0 => tracing::info!(
                        pages = r.pages,
                        new_users = r.new_users,
                        converged = r.converged.len(),
                        writes = r.writes,
                        unmatched = r.unmatched,
                        failed = r.failed,
                        "looker (google cloud core) first-login run"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "looker (google cloud core) first-login run failed"),
                }
                if let Err(e) = schedule.finish_tick(&tick, holder).await {
                    tracing::warn!(tick, error = %e, "cannot mark the first-login run finished");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(tick, error = %e, "cannot claim the first-login run"),
        }
        let next = tick_at + step;
        let wait = (next - clock.now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
