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

use crate::engine::{Engine, Handled, ProcessError, Via};
use chrono::Utc;
use gatehouse_domain::breaker::{
    self, ALL_SOURCES, AdmitLimits, Change, ChangeKind, HeldChange, Privileged, Settle, Trip, Verdict,
};
use gatehouse_domain::cloud::CloudPlan;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::plan::Plan;
use gatehouse_domain::policy::DesiredLooker;
use gatehouse_domain::ports::{BackendError, Directory, LedgerEntry, LookerPort, StateStore};
use gatehouse_platform::config::{BreakerConfig, BreakerLimits};
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
        let now = Utc::now();
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
        let now = Utc::now();
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
                        metrics::counter!("gatehouse_breaker_trips_total", "kind" => kind.as_str(),
                            "scope" => if t.scope == ALL_SOURCES { "all" } else { "source" })
                        .increment(1);
                    }
                    tracing::warn!(kind = kind.as_str(), source, envelope_id = %env.id,
                        subject = %env.subject.key, "change held by the mass-change breaker");
                    metrics::counter!("gatehouse_breaker_held_total", "kind" => kind.as_str(), "source" => source.to_string())
                        .increment(1);
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
fn ledger(
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
        at: Utc::now(),
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
struct By<'a> {
    actor: String,
    policy_digest: Option<&'a str>,
}

/// The decision row of a `safety release|discard` (one per run, naming who ran it).
fn decision_row(
    action: &str,
    actor: &str,
    source: Option<&str>,
    trips: &[Trip],
    held: usize,
    policy_digest: Option<&str>,
) -> LedgerEntry {
    LedgerEntry {
        at: Utc::now(),
        envelope_id: format!("safety:{action}:{}", Utc::now().timestamp_millis()),
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decided {
    pub trips_closed: usize,
    pub changes: usize,
}

/// `gatehouse safety release [--source]`: close the trips (of one source, or all) so counting
/// starts afresh, then handle every held envelope (of that source) in the order it was held,
/// each exactly once (a handled envelope is marked processed in its own commit; a rerun after a
/// failure finds it processed and only records the decision). Stops at the first failure, which
/// leaves the rest held.
pub async fn release<S: StateStore, L: LookerPort>(
    engine: &Engine<S, L>,
    source: Option<&str>,
    actor: &str,
) -> Result<Decided, ProcessError> {
    let store = engine.store();
    let trips = store.breaker_reset(source).await?;
    let held = store.breaker_held(source).await?;
    store
        .append_ledger(&[decision_row(
            "release",
            actor,
            source,
            &trips,
            held.len(),
            Some(engine.policy().digest.as_str()),
        )])
        .await?;
    tracing::warn!(
        actor,
        source = source.unwrap_or(ALL_SOURCES),
        trips = trips.len(),
        held = held.len(),
        "mass-change breaker released"
    );
    for h in &held {
        let env = Envelope::from_json(&h.envelope)
            .map_err(|e| BackendError::new("a held envelope is not a valid envelope", e))?;
        let handled = engine.handle_via(&env, Via::Released).await?;
        store.breaker_settle(h.seq, Settle::Released, actor).await?;
        store
            .append_ledger(&[ledger(
                &h.envelope_id,
                &h.subject,
                &env.source_event_type,
                h.kind,
                "release",
                serde_json::json!({ "actor": actor, "source": h.source, "handled": format!("{handled:?}") }),
                &format!("released by {actor}"),
                By {
                    actor: gatehouse_domain::actor::operator(actor),
                    policy_digest: Some(engine.policy().digest.as_str()),
                },
            )])
            .await?;
    }
    Ok(Decided {
        trips_closed: trips.len(),
        changes: held.len(),
    })
}

/// `gatehouse safety discard [--source]`: close the trips and drop the held envelopes (of one
/// source, or all) unapplied; each gets a ledger row naming who discarded it. A later delivery
/// of a discarded envelope is not applied either.
pub async fn discard<S: StateStore>(
    store: &S,
    source: Option<&str>,
    actor: &str,
) -> Result<Decided, BackendError> {
    let trips = store.breaker_reset(source).await?;
    let held = store.breaker_held(source).await?;
    store
        .append_ledger(&[decision_row("discard", actor, source, &trips, held.len(), None)])
        .await?;
    tracing::warn!(
        actor,
        source = source.unwrap_or(ALL_SOURCES),
        trips = trips.len(),
        held = held.len(),
        "mass-change breaker: held changes discarded"
    );
    for h in &held {
        store.breaker_settle(h.seq, Settle::Discarded, actor).await?;
        store
            .append_ledger(&[ledger(
                &h.envelope_id,
                &h.subject,
                "safety_discard",
                h.kind,
                "discard",
                serde_json::json!({ "actor": actor, "source": h.source }),
                &format!("discarded by {actor}"),
                By {
                    actor: gatehouse_domain::actor::operator(actor),
                    policy_digest: None,
                },
            )])
            .await?;
    }
    Ok(Decided {
        trips_closed: trips.len(),
        changes: held.len(),
    })
}

/// What `gatehouse offboard` did.
#[derive(Debug, Clone)]
pub struct Offboarded {
    pub subject: String,
    pub envelope_id: String,
    pub handled: Handled,
}

/// `gatehouse offboard EMAIL`: offboard one person everywhere now, whatever the IdP says.
///
/// A `Source::Manual` deactivation of the person (found in the directory by email; a person it
/// does not know gets the subject `manual:EMAIL`) goes through the engine's normal path with a
/// fresh read of every target (`Via::Operator`: never held by the breaker, never skipped as
/// converged). The engine should be built [`Engine::with_full_offboarding`]. The deactivation is
/// stamped now, so the identity keeps it against any IdP event dated before it (a delayed or
/// replayed "activate" is stale); an IdP lifecycle event dated after it (a reactivation the IdP
/// makes later) lifts it, as does a reconcile only in that it follows the directory. The decision
/// is a ledger row with the operator and the reason, written before anything is sent.
pub async fn offboard<S: StateStore + Directory, L: LookerPort>(
    engine: &Engine<S, L>,
    email: &str,
    reason: &str,
    actor: &str,
) -> Result<Offboarded, ProcessError> {
    let store = engine.store();
    let wanted = email.trim().to_lowercase();
    let subject = store
        .subjects()
        .await?
        .into_iter()
        .find(|s| s.identity.email().is_some_and(|e| e.to_lowercase() == wanted))
        .map(|s| s.identity.key)
        .unwrap_or_else(|| format!("manual:{wanted}"));
    let now = Utc::now();
    let id = format!("manual:offboard:{}", uuid::Uuid::new_v4());
    let env = Envelope {
        version: Envelope::VERSION,
        id: EnvelopeId(id.clone()),
        source: Source::Manual,
        subject: Subject {
            key: subject.clone(),
            email: Some(wanted.clone()),
            display_name: None,
        },
        occurred_at: now,
        received_at: now,
        event: IdentityEvent::UserDeactivated,
        profile: Default::default(),
        source_event_type: "gatehouse.offboard".into(),
        raw: serde_json::json!({ "actor": actor, "reason": reason }),
        trace_parent: None,
    };
    store
        .append_ledger(&[LedgerEntry {
            at: now,
            envelope_id: id.clone(),
            subject: subject.clone(),
            event: "gatehouse.offboard".into(),
            rule: "safety.offboard".into(),
            target: LEDGER_TARGET.into(),
            call: HttpCall {
                method: Method::Post,
                path: "/safety/offboard".into(),
                body: Some(serde_json::json!({ "actor": actor, "reason": reason, "email": wanted })),
            },
            status: format!("ok: by {actor}"),
            policy_digest: Some(engine.policy().digest.to_string()),
            actor: Some(gatehouse_domain::actor::operator(actor)),
        }])
        .await?;
    tracing::warn!(actor, reason, subject = %subject, envelope_id = %id, "emergency offboarding");
    let handled = engine.handle_via(&env, Via::Operator).await?;
    Ok(Offboarded {
        subject,
        envelope_id: id,
        handled,
    })
}

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
