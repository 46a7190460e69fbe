//! One leader per scheduled reconcile tick (issue 14). Every processor runs the schedule; at
//! each occurrence each one claims the tick in the state store (a lease row: SQLite and
//! PostgreSQL alike, one atomic upsert). The winner runs the job and renews its lease every
//! third of it; the others poll the tick until it is finished, and take it over when the
//! leader's lease lapses (it crashed or was stopped): the run is finished by a replica. A
//! process starting also takes over the schedule's previous tick if it was left unfinished.

use chrono::{DateTime, Utc};
use gatehouse_domain::clock::Clock;
use gatehouse_domain::schedule::{Claim, ReconcileSchedule};
use gatehouse_platform::shutdown::Shutdown;
use std::future::Future;
use std::time::Duration;

/// A name for this process in the lease rows: host, pid and a random part.
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gatehouse".into());
    format!("{host}:{}:{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// Run `job(tick)` at every occurrence of `cron`, on one of the processes that share `store`.
/// `clock` is the wall clock (injected for tests); waiting uses tokio time.
pub async fn run_on_schedule_once<S, F, Fut>(
    cron: &croner::Cron,
    clock: impl Clock,
    shutdown: Shutdown,
    store: &S,
    holder: &str,
    lease: Duration,
    mut job: F,
) where
    S: ReconcileSchedule,
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    if let Ok(prev) = cron.find_previous_occurrence(&clock.now(), false) {
        // Only a tick some process claimed and left unfinished: never a fresh run at start.
        settle(
            store,
            &tick_of(prev),
            holder,
            lease,
            &clock,
            &shutdown,
            true,
            &mut job,
        )
        .await;
    }
    loop {
        let at = clock.now();
        let Ok(next) = cron.find_next_occurrence(&at, false) else {
            tracing::error!("reconcile schedule has no next occurrence; scheduled reconcile stops");
            return;
        };
        let wait = (next - at).to_std().unwrap_or_default();
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        settle(
            store,
            &tick_of(next),
            holder,
            lease,
            &clock,
            &shutdown,
            false,
            &mut job,
        )
        .await;
        if shutdown.is_triggered() {
            return;
        }
    }
}

fn tick_of(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Claim `tick` (or, `existing_only`, take over an unfinished claimed one), run it if won,
/// else wait until it is finished or its leader's lease lapses.
#[allow(clippy::too_many_arguments)]
async fn settle<S, F, Fut>(
    store: &S,
    tick: &str,
    holder: &str,
    lease: Duration,
    clock: &impl Clock,
    shutdown: &Shutdown,
    existing_only: bool,
    job: &mut F,
) where
    S: ReconcileSchedule,
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let until = |at: DateTime<Utc>| at + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let poll = lease / 3;
    let mut waiting = false;
    loop {
        let at = clock.now();
        let claim = match existing_only {
            true => store.take_over_tick(tick, holder, at, until(at)).await,
            false => store.claim_tick(tick, holder, at, until(at)).await,
        };
        match claim {
            Ok(Claim::Won) => break,
            Ok(Claim::Finished) => return,
            Ok(Claim::Held) => {
                if !waiting {
                    tracing::info!(tick, "another replica runs this scheduled reconcile; standing by");
                    waiting = true;
                }
            }
            Err(e) => tracing::error!(tick, error = %e, "cannot claim the scheduled reconcile"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
    if waiting {
        tracing::warn!(
            tick,
            "the leader of this scheduled reconcile stopped renewing; taking it over"
        );
    }
    let renew = async {
        loop {
            tokio::time::sleep(poll).await;
            let at = clock.now();
            match store.claim_tick(tick, holder, at, until(at)).await {
                Ok(Claim::Won) => {}
                Ok(_) => return,
                Err(e) => tracing::error!(tick, error = %e, "cannot renew the scheduled reconcile's lease"),
            }
        }
    };
    tokio::select! {
        _ = job(tick.to_string()) => {
            match store.finish_tick(tick, holder).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(tick, "scheduled reconcile finished after another replica took it over"),
                Err(e) => tracing::error!(tick, error = %e, "cannot mark the scheduled reconcile finished"),
            }
        }
        _ = renew => tracing::warn!(tick, "lost the scheduled reconcile's lease to another replica; stopped"),
        _ = shutdown.wait() => {}
    }
}
