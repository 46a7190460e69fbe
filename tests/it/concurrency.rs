//! Two processors handling one person at once (two processes on one database, or an unordered
//! queue redelivering while the first delivery still runs) must not lose each other's facts.

use chrono::{DateTime, Utc};
use gatehouse_domain::breaker::{AdmitLimits, Change, HeldChange, Settle, Trip, Verdict};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::ledger_chain::ChainHead;
use gatehouse_domain::policy::{self, Policy};
use gatehouse_domain::ports::{
    BackendError, LedgerEntry, LedgerRow, Outcome, ScheduledDeletion, StateStore, SubjectState,
};
use gatehouse_e2e::{example_policy, seed_catalog};
use gatehouse_engine::engine::{Engine, Handled, RetryPolicy};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::client::looker::{LookerClient, LookerConfig};
use gatehouse_testkit::FakeLooker;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

fn envelope(id: &str, secs: i64, event: IdentityEvent) -> Envelope {
    let email = "ada@example.com";
    Envelope {
        trace_parent: None,
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
fn processor<S: StateStore + Clone>(
    store: &S,
    fake: &FakeLooker,
    policy: &Arc<Policy>,
) -> Engine<S, LookerClient> {
    let looker = LookerClient::new(LookerConfig {
        base_url: fake.base_url(),
        client_id: fake.client_id().to_string(),
        client_secret: fake.client_secret().to_string().into(),
        timeout: Duration::from_secs(10),
        catalog_ttl: Duration::from_secs(300),
        max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
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
    // Created (1); then each event moved it twice: the fingerprint forgotten before the writes
    // of the handler that committed it (issue 17), and its commit.
    assert_eq!(s.version, 5, "created, then one forget and one commit per event");
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
    assert_eq!(
        person_reads(&fake),
        3,
        "one read of the person per handled event (a search, then by the link), none repeated"
    );
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

/// The shared store, except that one envelope's commits wait until the test lets them through.
#[derive(Clone)]
struct HeldCommit {
    inner: Sqlite,
    envelope: &'static str,
    reached: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

impl StateStore for HeldCommit {
    async fn is_processed(&self, id: &EnvelopeId) -> Result<bool, BackendError> {
        self.inner.is_processed(id).await
    }
    async fn load_subject(&self, key: &str) -> Result<Option<SubjectState>, BackendError> {
        self.inner.load_subject(key).await
    }
    async fn forget_converged(&self, key: &str, base_version: i64) -> Result<i64, BackendError> {
        self.inner.forget_converged(key, base_version).await
    }
    async fn commit(&self, outcome: Outcome) -> Result<(), BackendError> {
        if outcome.envelope_id.0 == self.envelope {
            self.reached.notify_one();
            self.release.acquire().await.expect("open").forget();
        }
        self.inner.commit(outcome).await
    }
    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        self.inner.append_ledger(entries).await
    }
    async fn ledger_head(&self) -> Result<Option<ChainHead>, BackendError> {
        self.inner.ledger_head().await
    }
    async fn ledger_since(&self, since: Option<DateTime<Utc>>) -> Result<Vec<LedgerRow>, BackendError> {
        self.inner.ledger_since(since).await
    }
    async fn due_deletions(&self, now: DateTime<Utc>) -> Result<Vec<ScheduledDeletion>, BackendError> {
        self.inner.due_deletions(now).await
    }
    async fn finish_deletion(&self, subject: &str) -> Result<(), BackendError> {
        self.inner.finish_deletion(subject).await
    }
    async fn account_links(&self, target: &str, person: &str) -> Result<Vec<String>, BackendError> {
        self.inner.account_links(target, person).await
    }
    async fn link_accounts(
        &self,
        target: &str,
        person: &str,
        accounts: &[String],
    ) -> Result<(), BackendError> {
        self.inner.link_accounts(target, person, accounts).await
    }
    async fn breaker_admit(&self, c: &Change, l: &AdmitLimits) -> Result<Verdict, BackendError> {
        self.inner.breaker_admit(c, l).await
    }
    async fn breaker_trips(&self) -> Result<Vec<Trip>, BackendError> {
        self.inner.breaker_trips().await
    }
    async fn breaker_held(&self, source: Option<&str>) -> Result<Vec<HeldChange>, BackendError> {
        self.inner.breaker_held(source).await
    }
    async fn breaker_settle(&self, seq: i64, d: Settle, actor: &str) -> Result<(), BackendError> {
        self.inner.breaker_settle(seq, d, actor).await
    }
    async fn breaker_reset(&self, source: Option<&str>) -> Result<Vec<Trip>, BackendError> {
        self.inner.breaker_reset(source).await
    }
}

#[tokio::test]
async fn a_handler_that_lost_the_race_reads_looker_before_calling_it_converged() {
    let World {
        fake,
        c,
        _dir,
        store,
        policy,
    } = world().await;
    let a = processor(&store, &fake, &policy);
    a.handle(&envelope("e0", 0, IdentityEvent::UserCreated))
        .await
        .unwrap();
    a.handle(&envelope("e1", 1, added("Engineering"))).await.unwrap();
    let converged = fake.user_by_email("ada@example.com").unwrap();
    assert_eq!(converged.group_ids, BTreeSet::from([c.engineers.clone()]));

    // X handles "removed from Engineering" (t=2) and has written it to Looker, but its commit
    // waits; meanwhile Y handles "added to Engineering" (t=3), whose desired state is the one
    // converged before X. X forgot that fingerprint before writing (issue 17), so Y does not
    // trust it: it reads Looker and puts the group back.
    let held = HeldCommit {
        inner: store.clone(),
        envelope: "x",
        reached: Arc::new(tokio::sync::Notify::new()),
        release: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let x = processor(&held, &fake, &policy);
    let removed = IdentityEvent::GroupMemberRemoved {
        group: GroupRef {
            id: "00g-Engineering".into(),
            name: "Engineering".into(),
        },
    };
    let x_env = envelope("x", 2, removed);
    let x_task = tokio::spawn(async move { x.handle(&x_env).await });
    held.reached.notified().await;
    assert!(
        fake.user_by_email("ada@example.com")
            .unwrap()
            .group_ids
            .is_empty(),
        "X wrote its removal before committing"
    );
    let y = processor(&store, &fake, &policy);
    let ry = y.handle(&envelope("y", 3, added("Engineering"))).await.unwrap();
    assert!(matches!(ry, Handled::Applied { writes } if writes > 0), "{ry:?}");

    // X's commit is refused (Y changed the person); handled again, its event is stale and the
    // desired state is the one Y recorded as converged: after the lost race X reads Looker
    // (and finds nothing left to do) before calling it converged.
    held.release.add_permits(COMMIT_PERMITS);
    let searches = person_reads;
    let before_redo = searches(&fake);
    let rx = x_task.await.unwrap().unwrap();
    assert_eq!(rx, Handled::Applied { writes: 0 });
    assert_eq!(searches(&fake), before_redo + 1, "X read Looker again");
    assert_eq!(
        fake.user_by_email("ada@example.com").unwrap(),
        converged,
        "the newest fact (added at t=3) is what Looker shows"
    );
    let s = store.load_subject("okta:00uada").await.unwrap().unwrap();
    assert!(s.identity.is_member("Engineering"));
}

/// Enough for every commit attempt X makes.
const COMMIT_PERMITS: usize = 16;

/// Issue 17 (`crash::pubsub_sigkill_at_random_points_...`: "want {Finance Analysts} {Viewer},
/// have {Engineers, Finance Analysts} {Developer, Viewer}"). A processor is killed after its
/// Looker writes and before its commit; the stored fingerprint still says "converged" for the
/// state before those writes. Pub/Sub (and SQS standard) may hand the person's events out of
/// order, so a newer event that undoes the killed one can be handled before it is redelivered:
/// its desired state equals the stored fingerprint, so it must not trust it — Looker holds the
/// killed plan's writes. The kill is the handler's task being dropped at its commit, exactly
/// where SIGKILL leaves a process that had written to Looker and not yet to the store.
#[tokio::test]
async fn writes_of_a_handler_killed_before_its_commit_are_not_trusted_as_converged() {
    let World {
        fake,
        c,
        _dir,
        store,
        policy,
    } = world().await;
    let a = processor(&store, &fake, &policy);
    a.handle(&envelope("e0", 0, IdentityEvent::UserCreated))
        .await
        .unwrap();
    let before = fake.user_by_email("ada@example.com").unwrap();
    assert!(before.group_ids.is_empty());

    // "Added to Engineering" (t=1) is written to Looker, then the process dies at its commit.
    let held = HeldCommit {
        inner: store.clone(),
        envelope: "killed",
        reached: Arc::new(tokio::sync::Notify::new()),
        release: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let killed = processor(&held, &fake, &policy);
    let added_env = envelope("killed", 1, added("Engineering"));
    let task = tokio::spawn(async move { killed.handle(&added_env).await });
    held.reached.notified().await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let half = fake.user_by_email("ada@example.com").unwrap();
    assert_eq!(
        half.group_ids,
        BTreeSet::from([c.engineers.clone()]),
        "the killed handler wrote before it died"
    );

    // The next process handles the newer "removed from Engineering" (t=2) first, then the
    // redelivered "added" (t=1, stale by then).
    let removed = IdentityEvent::GroupMemberRemoved {
        group: GroupRef {
            id: "00g-Engineering".into(),
            name: "Engineering".into(),
        },
    };
    let b = processor(&store, &fake, &policy);
    b.handle(&envelope("removed", 2, removed)).await.unwrap();
    let again = b
        .handle(&envelope("killed", 1, added("Engineering")))
        .await
        .unwrap();
    assert_eq!(again, Handled::NoOp { stale: true });

    // Looker is what the events want: never in Engineering (the removal is the newer fact).
    let s = store.load_subject("okta:00uada").await.unwrap().unwrap();
    assert!(!s.identity.is_member("Engineering"));
    let after = fake.user_by_email("ada@example.com").unwrap();
    assert_eq!(
        (&after.group_ids, &after.direct_role_ids),
        (&before.group_ids, &before.direct_role_ids),
        "the killed plan's group and role are undone"
    );
}

/// Reads of a person in Looker: a user search (the first time) or a read of their linked user
/// (`GET /users/{id}`, issue 16).
fn person_reads(fake: &FakeLooker) -> usize {
    fake.calls()
        .iter()
        .filter(|c| {
            c.method == "GET"
                && (c.path == "/users/search"
                    || c.path
                        .strip_prefix("/users/")
                        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())))
        })
        .count()
}
