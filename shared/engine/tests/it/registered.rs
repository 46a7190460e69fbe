//! A new target, registered with the engine (`Engine::with_target`), is driven by IdP events
//! like the built-in ones: converged on an event, left alone on a replay or a no-op, closed on
//! offboarding, and every write ledgered.

use crate::toy_target::{Wiki, WikiTarget};
use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::StateStore;
use gatehouse_engine::engine::{Engine, Handled};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::RetryPolicy;
use gatehouse_targets::client::looker::LookerClient;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const ADA: &str = "ada@example.com";

fn envelope(id: &str, secs: i64, event: IdentityEvent) -> Envelope {
    let at = DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap();
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Okta,
        subject: Subject {
            key: "okta:00uada".into(),
            email: Some(ADA.into()),
            display_name: Some("Ada Lovelace".into()),
        },
        occurred_at: at,
        received_at: at,
        source_event_type: "test".into(),
        event,
        profile: Profile::from([("email".to_string(), ADA.to_string())]),
        raw: serde_json::Value::Null,
    }
}

fn added(name: &str) -> IdentityEvent {
    IdentityEvent::GroupMemberAdded {
        group: GroupRef {
            id: format!("00g-{name}"),
            name: name.into(),
        },
    }
}

#[tokio::test]
async fn a_registered_target_follows_idp_events_through_the_one_loop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    let wiki = Wiki::default();
    let retry = RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    // No Looker configured (its plans are dry-run), only the wiki.
    let engine = Engine::new(
        store.clone(),
        None::<LookerClient>,
        Arc::new(Policy::default()),
        retry,
    )
    .with_target(WikiTarget {
        wiki: wiki.clone(),
        spaces: BTreeMap::from([("Engineering".to_string(), "eng".to_string())]),
    });
    let wiki_rows = || async {
        store
            .ledger_since(None)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.entry.target == "wiki")
            .map(|r| (r.entry.call.path, r.entry.status))
            .collect::<Vec<_>>()
    };

    // Created without a group: nothing for the wiki. Then the group alone changes nothing
    // Looker cares about here, only the wiki: its desired state is part of the fingerprint.
    let r = engine
        .handle(&envelope("e0", 0, IdentityEvent::UserCreated))
        .await
        .unwrap();
    assert_eq!(r, Handled::Applied { writes: 0 });
    assert_eq!(wiki.spaces_of(ADA), None);
    let r = engine
        .handle(&envelope("e1", 1, added("Engineering")))
        .await
        .unwrap();
    assert_eq!(r, Handled::Applied { writes: 2 }, "create, then join");
    assert_eq!(wiki.spaces_of(ADA), Some(BTreeSet::from(["eng".to_string()])));
    assert_eq!(
        wiki_rows().await,
        [
            ("/wiki/accounts".to_string(), "200".to_string()),
            (format!("/wiki/spaces/eng/members/{ADA}"), "200".to_string()),
        ]
    );

    // A replay is a duplicate; an event that changes nothing the wiki cares about is a no-op.
    let replay = engine
        .handle(&envelope("e1", 1, added("Engineering")))
        .await
        .unwrap();
    assert_eq!(replay, Handled::Duplicate);
    let noop = engine
        .handle(&envelope("e2", 2, IdentityEvent::ProfileUpdated))
        .await
        .unwrap();
    assert_eq!(noop, Handled::NoOp { stale: false });
    assert_eq!(wiki_rows().await.len(), 2, "no call, no row");

    // Offboarding takes the space away.
    let off = engine
        .handle(&envelope("e3", 3, IdentityEvent::UserDeactivated))
        .await
        .unwrap();
    assert_eq!(off, Handled::Applied { writes: 1 });
    assert_eq!(wiki.spaces_of(ADA), Some(BTreeSet::new()));
    assert_eq!(wiki_rows().await.len(), 3);
}
