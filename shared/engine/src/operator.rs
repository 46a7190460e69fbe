//! What a person decides (issue 19): `gatehouse safety release` (the envelopes the mass-change
//! breaker held, each handled once through the engine, in order), `gatehouse safety discard`
//! (dropped unapplied) and `gatehouse offboard` (one person offboarded everywhere now, through
//! the engine). The breaker itself (`crate::breaker`) decides inside the engine; these drive the
//! engine, so they live apart from it.

use crate::breaker::{By, LEDGER_TARGET, decision_row, ledger};
use crate::engine::{Engine, Handled, ProcessError, Via};
use gatehouse_domain::breaker::{ALL_SOURCES, Settle};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{BackendError, Directory, LedgerEntry, LookerPort, StateStore};

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
    let now = gatehouse_domain::clock::now();
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
