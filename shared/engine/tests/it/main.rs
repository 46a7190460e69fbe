//! Integration tests of the processor, linked into one binary.

// The engine's per-event future nests deeper than rustc's default query depth (128).
#![recursion_limit = "256"]

use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};

/// A deactivation of person `id` (`okta:ID`, `ID@example.com`), dated now.
pub(crate) fn envelope(id: &str) -> Envelope {
    let now = gatehouse_domain::clock::now();
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Okta,
        subject: Subject {
            key: format!("okta:{id}"),
            email: Some(format!("{id}@example.com")),
            display_name: None,
        },
        occurred_at: now,
        received_at: now,
        source_event_type: "test".into(),
        event: IdentityEvent::UserDeactivated,
        profile: Default::default(),
        raw: serde_json::Value::Null,
    }
}

mod identity_center;
mod lease;
mod queue_errors;
mod reconcile_paged;
mod registered;
mod sweep;
mod wake;
// The worked example of a new target, shared with the target contract tests of `gatehouse-targets`.
#[path = "../../../targets/tests/it/toy_target.rs"]
mod toy_target;
