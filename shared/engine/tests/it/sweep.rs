//! Issue 16: the scheduled deletion finds the person's Looker users through their links first,
//! and deletes every one still disabled and none that was enabled again.

use chrono::Duration as Days;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::StateStore;
use gatehouse_engine::engine::{Engine, RetryPolicy};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_testkit::FakeLooker;
use std::sync::Arc;
use std::time::Duration;

const PERSON: &str = "okta:00usweep1";

fn deactivate(email: &str) -> Envelope {
    let now = gatehouse_domain::clock::now();
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId("okta:sweep-1".into()),
        source: Source::Okta,
        subject: Subject {
            key: PERSON.into(),
            email: Some(email.into()),
            display_name: None,
        },
        occurred_at: now,
        received_at: now,
        source_event_type: "user.lifecycle.deactivate".into(),
        event: IdentityEvent::UserDeactivated,
        profile: Default::default(),
        raw: serde_json::Value::Null,
    }
}

#[tokio::test]
async fn the_sweep_deletes_every_linked_user_still_disabled_and_none_enabled_again() {
    let fake = FakeLooker::start().await;
    // The person's two linked users, under emails the person no longer has.
    let old = fake.add_user("john.doe@example.com", "John", "Doe");
    let dup = fake.add_user("john.d@example.com", "John", "D");
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    store
        .link_accounts("looker", PERSON, &[old.clone(), dup.clone()])
        .await
        .unwrap();
    let client = crate::looker_client(&fake);
    let policy = Policy::from_toml("[offboarding]\ndelete_after_days = 1\nhandover = \"none\"\n").unwrap();
    let retry = RetryPolicy {
        retries: 2,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    };
    let engine = Engine::new(store.clone(), Some(client), Arc::new(policy), retry);

    // Renamed at the IdP: nobody in Looker has the new email.
    engine.handle(&deactivate("jd.new@example.com")).await.unwrap();
    for u in [&old, &dup] {
        assert!(fake.user(u).unwrap().is_disabled, "user {u} offboarded");
    }
    // An admin enables the old account again before the deletion is due.
    fake.set_disabled(&old, false);

    let swept = engine
        .sweep_deletions(gatehouse_domain::clock::now() + Days::days(2))
        .await
        .unwrap();
    assert_eq!(swept, 1);
    assert!(
        fake.user(&dup).is_none(),
        "the linked, still disabled user is deleted"
    );
    assert!(
        fake.user(&old).is_some_and(|u| !u.is_disabled),
        "the user enabled again is kept"
    );
}
