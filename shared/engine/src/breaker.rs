//! Safety rails a person drives (issue 19): the mass-change circuit breaker (`[safety.breaker]`,
//! `gatehouse safety status|release|discard`) and emergency offboarding (`gatehouse offboard`).
//!
//! The breaker decides per envelope, after its plan is computed and before anything is written:
//! the kinds of change the plan makes ([`classify`]) are counted in the state store (shared by
//! every replica) over a sliding window; a change that would cross a limit trips the breaker for
//! its kind (overall or for its source), and it and every later change of that kind and scope are
//! held — the envelope stored in the same transaction that decides, so its message is acked with
//! nothing lost and nothing dead-lettered. A person then releases (each held envelope handled in
//! order, exactly once) or discards them; every decision is a ledger row naming who made it.

use chrono::Utc;
use gatehouse_domain::breaker::{
    self, ALL_SOURCES, AdmitLimits, Change, ChangeKind, HeldChange, Privileged, Trip, Verdict,
};
use gatehouse_domain::cloud::CloudPlan;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::plan::Plan;
use gatehouse_domain::policy::DesiredLooker;
use gatehouse_domain::ports::{BackendError, LedgerEntry, StateStore};
use gatehouse_platform::config::{BreakerConfig, BreakerLimits};
use gatehouse_platform::events;
use std::time::Duration;

/// The ledger's `target` for decisions Gatehouse or its operators made (no call was sent).
pub const LEDGER_TARGET: &str = "gatehouse";

/// The breaker's source for reconcile's orphan disables (issue 15).
pub const RECONCILE_SOURCE: &str = "reconcile";

/// The event type of a held orphan disable.
pub const ORPHAN_DISABLE: &str = "reconcile.orphan_disable";

/// The configured breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    window: Duration,
    offboardings: Option<BreakerLimits>,
    removals: Option<BreakerLimits>,
    privileged_grants: Option<BreakerLimits>,
    privileged: Privileged,
}

impl Breaker {
    pub fn new(cfg: &BreakerConfig) -> Self {
        Breaker {
            window: cfg.window,
            offboardings: cfg.offboardings,
            removals: cfg.removals,
            privileged_grants: cfg.privileged_grants,
            privileged: Privileged::new(&cfg.privileged_groups, &cfg.privileged_roles),
        }
    }

    fn limits(&self, kind: ChangeKind, now: chrono::DateTime<Utc>) -> Option<AdmitLimits> {
        let l = match kind {
            ChangeKind::Offboarding => self.offboardings,
            ChangeKind::Removal => self.removals,
            ChangeKind::PrivilegedGrant => self.privileged_grants,
        }?;
        Some(AdmitLimits {
            since: now - chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX),
            max: l.max,
            max_percent: l.max_percent,
            max_per_source: l.max_per_source,
        })
    }

    /// Count the changes `env`'s plans make; `true` when the envelope is held (or was before)
    /// and must not be applied.
    #[allow(clippy::too_many_arguments)] // the plans to classify, and the ledger row's digest
    pub(crate) async fn admit<S: StateStore>(
        &self,
        store: &S,
        env: &Envelope,
        before: &DesiredLooker,
        after: &DesiredLooker,
        looker: &Plan,
        cloud: &CloudPlan,
        policy_digest: &str,
    ) -> Result<bool, BackendError> {
        let kinds = breaker::classify(before, after, looker, cloud, &self.privileged);
        let by = By {
            actor: gatehouse_domain::actor::of_envelope(env),
            policy_digest: Some(policy_digest),
        };
        self.admit_kinds(store, env, env.source.as_str(), kinds, by).await
    }

    /// Count an orphan account's disable (issue 15) as an offboarding from the source
    /// [`RECONCILE_SOURCE`]; `true` when it is held and must not be applied. What is held is an
    /// envelope Gatehouse does not act on (`reconcile.orphan_disable`): `safety release` closes
    /// the trip and the next reconcile disables the orphan (counted afresh), `discard` drops it
    /// (the next reconcile finds the orphan again).
    pub(crate) async fn admit_orphan<S: StateStore>(
        &self,
        store: &S,
        ctx: &gatehouse_targets::Ctx,
        policy_digest: &str,
    ) -> Result<bool, BackendError> {
        let now = gatehouse_domain::clock::now();
        let env = Envelope {
            version: Envelope::VERSION,
            id: EnvelopeId(format!("{}:{}", ctx.envelope_id, ctx.subject)),
            source: Source::Manual,
            subject: Subject {
                key: ctx.subject.clone(),
                email: ctx.email.clone(),
                display_name: None,
            },
            occurred_at: now,
            received_at: now,
            event: IdentityEvent::Ignored {
                event_type: ORPHAN_DISABLE.into(),
            },
            profile: Default::default(),
            source_event_type: ORPHAN_DISABLE.into(),
            raw: serde_json::Value::Null,
            trace_parent: None,
        };
        let kinds = [ChangeKind::Offboarding].into();
        let by = By {
            actor: ctx.actor.clone(),
            policy_digest: Some(policy_digest),
        };
        self.admit_kinds(store, &env, RECONCILE_SOURCE, kinds, by).await
    }

    async fn admit_kinds<S: StateStore>(
        &self,
        store: &S,
        env: &Envelope,
        source: &str,
        kinds: std::collections::BTreeSet<ChangeKind>,
        by: By<'_>,
    ) -> Result<bool, BackendError> {
        let now = gatehouse_domain::clock::now();
        for kind in kinds {
            let Some(limits) = self.limits(kind, now) else {
                continue;
            };
            let change = Change {
                kind,
                source: source.to_string(),
                envelope_id: env.id.0.clone(),
                subject: env.subject.key.clone(),
                at: now,
                envelope: env.to_json(),
            };
            match store.breaker_admit(&change, &limits).await? {
                Verdict::Admitted => {}
                Verdict::AlreadyHeld => {
                    tracing::info!(envelope_id = %env.id, subject = %env.subject.key,
                        "envelope was held by the mass-change breaker before; nothing to do");
                    return Ok(true);
                }
                Verdict::Held { tripped } => {
                    if let Some(t) = &tripped {
                        tracing::warn!(kind = kind.as_str(), scope = %t.scope, count = t.count, limit = t.limit,
                            window = ?self.window,
                            "mass-change breaker tripped: holding these changes until `gatehouse safety release` or `discard`");
                        let scope = if t.scope == ALL_SOURCES {
                            events::BreakerScope::All
                        } else {
                            events::BreakerScope::Source
                        };
                        events::breaker_tripped(kind, scope);
                    }
                    events::breaker_held(kind, source, env);
                    store
                        .append_ledger(&[ledger(
                            &env.id.0,
                            &env.subject.key,
                            &env.source_event_type,
                            kind,
                            "hold",
                            serde_json::json!({ "source": source, "trip": tripped }),
                            "held",
                            by,
                        )])
                        .await?;
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

#[allow(clippy::too_many_arguments)] // one breaker row's fields
pub(crate) fn ledger(
    envelope_id: &str,
    subject: &str,
    event: &str,
    kind: ChangeKind,
    action: &str,
    body: serde_json::Value,
    status: &str,
    by: By<'_>,
) -> LedgerEntry {
    LedgerEntry {
        at: gatehouse_domain::clock::now(),
        envelope_id: envelope_id.into(),
        subject: subject.into(),
        event: event.into(),
        rule: format!("safety.breaker.{}", kind.as_str()),
        target: LEDGER_TARGET.into(),
        call: HttpCall {
            method: Method::Post,
            path: format!("/safety/breaker/{action}"),
            body: Some(body),
        },
        status: status.into(),
        policy_digest: by.policy_digest.map(str::to_string),
        actor: Some(by.actor),
    }
}

/// Who a breaker row is by (issue 15): the actor and the policy digest it records.
pub(crate) struct By<'a> {
    pub(crate) actor: String,
    pub(crate) policy_digest: Option<&'a str>,
}

/// The decision row of a `safety release|discard` (one per run, naming who ran it).
pub(crate) fn decision_row(
    action: &str,
    actor: &str,
    source: Option<&str>,
    trips: &[Trip],
    held: usize,
    policy_digest: Option<&str>,
) -> LedgerEntry {
    LedgerEntry {
        at: gatehouse_domain::clock::now(),
        envelope_id: format!(
            "safety:{action}:{}",
            gatehouse_domain::clock::now().timestamp_millis()
        ),
        subject: source.unwrap_or(ALL_SOURCES).into(),
        event: format!("safety_{action}"),
        rule: "safety.breaker".into(),
        target: LEDGER_TARGET.into(),
        call: HttpCall {
            method: Method::Post,
            path: format!("/safety/breaker/{action}"),
            body: Some(serde_json::json!({
                "actor": actor, "source": source, "trips_closed": trips, "held": held,
            })),
        },
        status: format!("ok: by {actor}"),
        policy_digest: policy_digest.map(str::to_string),
        actor: Some(gatehouse_domain::actor::operator(actor)),
    }
}

/// What `gatehouse safety status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub trips: Vec<Trip>,
    pub held: Vec<HeldChange>,
}

pub async fn status<S: StateStore>(store: &S) -> Result<Status, BackendError> {
    Ok(Status {
        trips: store.breaker_trips().await?,
        held: store.breaker_held(None).await?,
    })
}

/// What a release or discard did.
/// Who runs a command: `--actor`, else the OS user (`USER`, `LOGNAME`, `USERNAME`).
pub fn actor(explicit: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    explicit
        .map(str::to_string)
        .or_else(|| ["USER", "LOGNAME", "USERNAME"].iter().find_map(|k| env(k)))
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_is_the_flag_else_the_os_user_and_never_empty() {
        let env = |k: &str| (k == "LOGNAME").then(|| "alice".to_string());
        assert_eq!(actor(Some("bob"), env).as_deref(), Some("bob"));
        assert_eq!(actor(None, env).as_deref(), Some("alice"));
        assert_eq!(actor(None, |_| None), None);
        assert_eq!(actor(Some("  "), |_| None), None);
    }
}
