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

/// A Looker client of `fake` (no catalog cache, so each test sees the fake's catalog as it is).
pub(crate) fn looker_client(
    fake: &gatehouse_testkit::FakeLooker,
) -> gatehouse_targets::client::looker::LookerClient {
    gatehouse_targets::client::looker::LookerClient::new(gatehouse_targets::client::looker::LookerConfig {
        base_url: fake.base_url(),
        client_id: fake.client_id().to_string(),
        client_secret: fake.client_secret().to_string().into(),
        timeout: std::time::Duration::from_secs(30),
        catalog_ttl: std::time::Duration::ZERO,
        max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
    })
    .unwrap()
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
