//! Who caused a ledger row (issue 15): the `actor` every row records, covered by the hash chain.
//!
//! - `event:<envelope id>`: an intake's event (the envelope id starts with its source:
//!   `okta:…`, `scim:…`, `aws:…`);
//! - `operator:<name>`: a CLI command (`gatehouse offboard`, `safety release|discard`, …), the
//!   name from `--actor` or the OS user;
//! - `reconcile`, `scheduler` (scheduled deletions, budget notes), `rotator`.

use crate::envelope::{Envelope, Source};

pub const RECONCILE: &str = "reconcile";
pub const SCHEDULER: &str = "scheduler";
pub const ROTATOR: &str = "rotator";

/// `operator:<name>`.
pub fn operator(name: &str) -> String {
    format!("operator:{name}")
}

/// The actor of the calls an envelope causes: the operator for a manual envelope that names one
/// (`gatehouse offboard` puts `{"actor": …}` in its raw body), else `event:<envelope id>`.
pub fn of_envelope(env: &Envelope) -> String {
    if env.source == Source::Manual
        && let Some(name) = env.raw.get("actor").and_then(|a| a.as_str())
    {
        return operator(name);
    }
    format!("event:{}", env.id.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{EnvelopeId, IdentityEvent, Subject};

    fn env(source: Source, id: &str, raw: serde_json::Value) -> Envelope {
        Envelope {
            version: Envelope::VERSION,
            id: EnvelopeId(id.into()),
            source,
            subject: Subject {
                key: "okta:1".into(),
                email: None,
                display_name: None,
            },
            occurred_at: crate::clock::now(),
            received_at: crate::clock::now(),
            event: IdentityEvent::UserDeactivated,
            profile: Default::default(),
            source_event_type: "x".into(),
            raw,
            trace_parent: None,
        }
    }

    #[test]
    fn an_event_names_its_envelope_and_a_manual_one_its_operator() {
        let raw = serde_json::json!({"actor": "alice"});
        assert_eq!(
            of_envelope(&env(Source::Okta, "okta:abc", raw.clone())),
            "event:okta:abc"
        );
        assert_eq!(
            of_envelope(&env(Source::Manual, "manual:offboard:1", raw)),
            "operator:alice"
        );
        assert_eq!(
            of_envelope(&env(Source::Manual, "manual:1", serde_json::json!({}))),
            "event:manual:1"
        );
    }
}
