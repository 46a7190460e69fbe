//! Two processors handling one person at once (two processes on one database, or an unordered
//! queue redelivering while the first delivery still runs) must not lose each other's facts.

use chrono::DateTime;
use gatehouse_adapters::looker::{LookerClient, LookerConfig};
use gatehouse_adapters::sqlite::Sqlite;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::policy::{self, Policy};
use gatehouse_domain::ports::StateStore;
use gatehouse_e2e::{example_policy, seed_catalog};
use gatehouse_runtime::engine::{Engine, Handled, RetryPolicy};
use gatehouse_testkit::FakeLooker;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

fn envelope(id: &str, secs: i64, event: IdentityEvent) -> Envelope {
    let email = "ada@example.com";
    Envelope {
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Okta,
        subject: Subject {
            key: "okta:00uada".into(),
            email: Some(email.into()),
            display_name: Some("Ada Lovelace".into()),
        },
        occurred_at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
        received_at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
        source_event_type: "test".into(),
        event,
        profile: Profile::from([("email".to_string(), email.to_string())]),
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

/// A fake Looker with the example policy's objects, and one shared store.
struct World {
    fake: FakeLooker,
    c: gatehouse_e2e::Seeded,
    _dir: tempfile::TempDir,
    store: Sqlite,
    policy: Arc<Policy>,
}

async fn world() -> World {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    let policy = Arc::new(Policy::from_toml(&example_policy()).unwrap());
    World {
        fake,
        c,
        _dir: dir,
        store,
        policy,
    }
}

/// What a separate processor process has: its own engine and Looker client, the shared store.
fn processor(store: &Sqlite, fake: &FakeLooker, policy: &Arc<Policy>) -> Engine<Sqlite, LookerClient> {
    let looker = LookerClient::new(LookerConfig {
        base_url: fake.base_url(),
        client_id: fake.client_id().to_string(),
        client_secret: fake.client_secret().to_string().into(),
        timeout: Duration::from_secs(10),
        catalog_ttl: Duration::from_secs(300),
    })
    .unwrap();
    let retry = RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    Engine::new(store.clone(), Some(looker), policy.clone(), retry)
}

#[tokio::test]
async fn two_processors_on_one_subject_at_once_lose_no_fact() {
    let World {
        fake,
        c,
        _dir,
        store,
        policy,
    } = world().await;
    let (a, b) = (
        processor(&store, &fake, &policy),
        processor(&store, &fake, &policy),
    );
    let created = a
        .handle(&envelope("e0", 0, IdentityEvent::UserCreated))
        .await
        .unwrap();
    assert!(matches!(created, Handled::Applied { .. }), "{created:?}");

    // Every Looker call takes 50 ms, so both handlers load the same version of the person
    // before either commits: one commit must lose and be handled again.
    fake.set_latency(Duration::from_millis(50));
    let (e1, e2) = (
        envelope("e1", 1, added("Engineering")),
        envelope("e2", 2, added("Finance")),
    );
    let (ra, rb) = tokio::join!(a.handle(&e1), b.handle(&e2));
    assert!(matches!(ra, Ok(Handled::Applied { .. })), "{ra:?}");
    assert!(matches!(rb, Ok(Handled::Applied { .. })), "{rb:?}");

    // The stored identity holds both facts ...
    let s = store.load_subject("okta:00uada").await.unwrap().unwrap();
    let desired = policy::evaluate(&policy, &s.identity);
    let want: BTreeSet<&str> = ["Engineers", "Finance Analysts"].into();
    assert_eq!(
        desired.groups.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        want
    );
    assert_eq!(s.version, 3, "created, then one commit per event");
    // ... and so does Looker.
    let u = fake.user_by_email("ada@example.com").unwrap();
    let have: BTreeSet<&str> = u.group_ids.iter().map(String::as_str).collect();
    assert_eq!(have, [c.engineers.as_str(), c.finance.as_str()].into());
    // Replaying either is a duplicate: both were recorded as processed.
    for (id, secs, g) in [("e1", 1, "Engineering"), ("e2", 2, "Finance")] {
        assert_eq!(
            a.handle(&envelope(id, secs, added(g))).await.unwrap(),
            Handled::Duplicate
        );
    }
}

#[tokio::test]
async fn one_processor_handles_one_subject_at_a_time() {
    let World {
        fake,
        _dir,
        store,
        policy,
        ..
    } = world().await;
    let a = processor(&store, &fake, &policy);
    a.handle(&envelope("e0", 0, IdentityEvent::UserCreated))
        .await
        .unwrap();
    fake.set_latency(Duration::from_millis(50));
    let e1 = envelope("e1", 1, added("Engineering"));
    let e2 = envelope("e2", 2, added("Finance"));
    let (ra, rb) = tokio::join!(a.handle(&e1), a.handle(&e2));
    assert!(ra.is_ok() && rb.is_ok(), "{ra:?} {rb:?}");
    // Within one process the second waits for the first instead of racing it: no commit was
    // refused, so the person's plan ran exactly twice (one search per event, no redo).
    let searches = fake.calls().iter().filter(|c| c.path == "/users/search").count();
    assert_eq!(searches, 3, "one user search per handled event, none repeated");
}

#[tokio::test]
async fn two_processors_creating_one_person_at_once_make_one_user() {
    let World {
        fake,
        c,
        _dir,
        store,
        policy,
    } = world().await;
    let (a, b) = (
        processor(&store, &fake, &policy),
        processor(&store, &fake, &policy),
    );
    // Both see no Looker user (each search answers before either create), both create it:
    // Looker refuses the second (the email is taken) and that handler starts again.
    fake.set_latency(Duration::from_millis(50));
    let (e0, e1) = (
        envelope("e0", 0, IdentityEvent::UserCreated),
        envelope("e1", 1, added("Engineering")),
    );
    let (ra, rb) = tokio::join!(a.handle(&e0), b.handle(&e1));
    assert!(ra.is_ok() && rb.is_ok(), "{ra:?} {rb:?}");
    let creates: Vec<u16> = fake
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/users")
        .map(|c| c.status)
        .collect();
    assert_eq!(creates, vec![200, 409], "both tried, Looker took one");
    let people: Vec<_> = fake
        .users()
        .into_iter()
        .filter(|u| u.id != fake.admin_user_id())
        .collect();
    assert_eq!(people.len(), 1, "one Looker user for one person");
    assert_eq!(people[0].email.as_deref(), Some("ada@example.com"));
    assert_eq!(people[0].group_ids, BTreeSet::from([c.engineers.clone()]));
}
