//! Issue 14: reconcile reads Looker in pages at the API floor, and hand-made drift is still
//! reverted within a bounded number of scheduled reconciles.

use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::identity::{Identity, Membership, Stamp, Stamped, Status};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{BackendError, Directory, StateStore, SubjectState};
use gatehouse_engine::engine::{Engine, RetryPolicy};
use gatehouse_engine::reconcile::{self, LogProgress, ReadOptions};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::client::looker::{LookerClient, SEARCH_FIELDS, SEARCH_FIELDS_WITH_LOGINS};
use gatehouse_testkit::FakeLooker;
use std::sync::Arc;
use std::time::Duration;

const POLICY: &str = r#"
[[rule]]
name = "eng"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]
looker_roles = ["Developer"]
looker_attributes = { team = "engineering" }

[attributes.team]
deny_value = "__none__"
"#;

const GROUPS_AND_ROLES: &str = r#"
[[rule]]
name = "eng"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]
looker_roles = ["Developer"]
"#;

struct People(Vec<SubjectState>);

impl Directory for People {
    async fn subjects(&self) -> Result<Vec<SubjectState>, BackendError> {
        Ok(self.0.clone())
    }
}

fn person(i: usize) -> Identity {
    let stamp = Stamp {
        at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        id: EnvelopeId(format!("e{i}")),
    };
    let mut id = Identity::new(format!("00u{i:05}"));
    id.status = Status::Active;
    id.status_stamp = Some(stamp.clone());
    id.profile.insert(
        "email".into(),
        Stamped {
            value: email(i),
            stamp: stamp.clone(),
            source: None,
        },
    );
    id.groups.insert(
        "00gEng".into(),
        Membership {
            name: "Engineering".into(),
            member: true,
            stamp,
            source: None,
        },
    );
    id
}

fn email(i: usize) -> String {
    format!("p{i}@example.com")
}

struct World {
    fake: FakeLooker,
    engine: Engine<Sqlite, LookerClient>,
    people: People,
    _dir: tempfile::TempDir,
}

/// `n` people in Engineering, each already converged in the fake Looker.
async fn world(n: usize, policy: &str) -> World {
    let fake = FakeLooker::start().await;
    let group = fake.add_group("Engineers");
    let role = fake.add_role("Developer");
    let team = fake.add_user_attribute("team");
    let mut people = Vec::new();
    for i in 0..n {
        let u = fake.add_user(&email(i), "P", &i.to_string());
        fake.add_user_to_group(&u, &group);
        fake.set_direct_roles(&u, &[&role]);
        fake.set_user_attribute(&u, &team, "engineering");
        people.push(SubjectState {
            identity: person(i),
            converged: None,
            version: 0,
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    let client = crate::looker_client(&fake);
    let retry = RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    let policy = Arc::new(Policy::from_toml(policy).unwrap());
    World {
        fake,
        engine: Engine::new(store, Some(client), policy, retry),
        people: People(people),
        _dir: dir,
    }
}

fn opts(audit_every: u32, run: u64) -> ReadOptions {
    ReadOptions {
        page_size: 1000,
        audit_every,
        audit_run: run,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reconcile_of_1000_people_costs_pages_catalog_and_login() {
    // Groups and roles managed: everything comes with the pages.
    let w = world(1000, GROUPS_AND_ROLES).await;
    w.fake.reset_calls();
    let r = reconcile::run_with(&w.engine, &w.people, false, &opts(7, 1), &LogProgress)
        .await
        .unwrap();
    assert_eq!(r.people, 1000);
    assert!(r.plans.is_empty(), "converged: no drift, {:?}", r.plans.first());
    let calls = w.fake.calls();
    // 1,001 users (the admin too) = 2 pages of 1,000; 3 catalog lists; 1 login.
    let bound = 1001usize.div_ceil(1000) + 3 + 1;
    assert!(
        calls.len() <= bound && bound <= 12,
        "{} calls: {:?}",
        calls.len(),
        calls
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect::<Vec<_>>()
    );
    let pages: Vec<_> = calls.iter().filter(|c| c.path == "/users").collect();
    assert_eq!(pages.len(), 2);
    for p in &pages {
        assert_eq!(p.query_param("limit").as_deref(), Some("1000"));
        assert!(p.query_param("fields").unwrap().contains("role_ids"));
    }
    assert_eq!(w.fake.write_calls(), 0);

    // Attributes managed too: the audit adds about N / k reads (k = 7), not N.
    let w = world(1000, POLICY).await;
    w.fake.reset_calls();
    let r = reconcile::run_with(&w.engine, &w.people, false, &opts(7, 1), &LogProgress)
        .await
        .unwrap();
    assert!(r.plans.is_empty(), "converged: no drift, {:?}", r.plans.first());
    let audits = w
        .fake
        .calls()
        .iter()
        .filter(|c| c.path.ends_with("/attribute_values"))
        .count();
    assert!(audits > 0 && audits < 1000 / 7 * 2, "{audits} attribute reads");
    assert_eq!(w.fake.calls().len(), 2 + 3 + 1 + audits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_made_drift_is_reverted_within_k_scheduled_reconciles() {
    const K: u32 = 5;
    let w = world(40, POLICY).await;
    let f = &w.fake;
    let victim = f.user_by_email(&email(3)).unwrap().id;
    let id_of = |names: std::collections::HashMap<String, String>, want: &str| {
        names.into_iter().find(|(_, n)| n == want).unwrap().0
    };
    let engineers = id_of(f.group_names(), "Engineers");
    let developer = id_of(f.role_names(), "Developer");
    let by_hand = f.add_role("Admin-by-hand");
    let team = f
        .user(&victim)
        .unwrap()
        .attribute_values
        .keys()
        .next()
        .unwrap()
        .clone();
    let mut run = 0u64;
    for kind in ["attribute", "role", "group"] {
        match kind {
            "attribute" => f.set_user_attribute(&victim, &team, "finance"),
            // The managed role taken away, another one given, by hand.
            "role" => f.set_direct_roles(&victim, &[&by_hand]),
            _ => f.remove_user_from_group(&victim, &engineers),
        }
        let holds = || {
            let u = f.user(&victim).unwrap();
            match kind {
                "attribute" => u.attribute_values.get(&team).map(String::as_str) == Some("engineering"),
                // The managed role is back; the unmanaged one given by hand stays (only managed
                // objects change).
                "role" => u.direct_role_ids.contains(&developer) && u.direct_role_ids.contains(&by_hand),
                _ => u.group_ids.contains(&engineers),
            }
        };
        assert!(!holds(), "{kind}: drift injected");
        let mut runs = 0;
        while !holds() {
            assert!(
                runs < K,
                "{kind} drift not reverted within {K} scheduled reconciles"
            );
            run += 1;
            runs += 1;
            reconcile::run_with(&w.engine, &w.people, true, &opts(K, run), &LogProgress)
                .await
                .unwrap();
        }
        // Groups and direct roles come with every page: the first run reverts them.
        if kind != "attribute" {
            assert_eq!(runs, 1, "{kind}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_reconcile_the_budget_cannot_cover_is_skipped_and_ledgered() {
    use gatehouse_domain::ports::{LookerCallCounts, StateStore, call_month};
    use gatehouse_engine::reconcile_budget::{estimate, scheduled_run, shape_of};
    let w = world(50, GROUPS_AND_ROLES).await;
    let ids: Vec<Identity> = w.people.0.iter().map(|s| s.identity.clone()).collect();
    let e = estimate(
        w.engine.policy(),
        &ids,
        true,
        &shape_of(&w.engine),
        &opts(7, 0),
        gatehouse_domain::clock::now(),
    );
    // login + 3 catalog lists + 1 page (51 users).
    assert_eq!(e.looker, Some(5));
    assert_eq!((e.aws, e.gcp), (None, None));
    let cfg = gatehouse_platform::config::ReconcileConfig {
        event_reserve: Some(100),
        ..Default::default()
    };
    let store = w.engine.store().clone();
    let month = call_month(gatehouse_domain::clock::now());
    // 1,000 a month, 896 used, 100 kept for events: 4 spare < 5 needed.
    store.add_looker_calls(&month, 896).await.unwrap();
    w.fake.reset_calls();
    scheduled_run(
        &w.engine,
        &w.people,
        &store,
        &cfg,
        Some(1000),
        "2026-12-06T03:00:00Z",
    )
    .await;
    assert_eq!(w.fake.calls().len(), 0, "skipped: no looker call");
    let rows = store.ledger_since(None).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0].entry.status.starts_with("skipped: looker budget"),
        "{}",
        rows[0].entry.status
    );
    // One call less used: covered, and it runs.
    let w2 = world(50, GROUPS_AND_ROLES).await;
    let s2 = w2.engine.store().clone();
    s2.add_looker_calls(&month, 895).await.unwrap();
    w2.fake.reset_calls();
    scheduled_run(
        &w2.engine,
        &w2.people,
        &s2,
        &cfg,
        Some(1000),
        "2026-12-06T03:00:00Z",
    )
    .await;
    assert!(
        w2.fake.calls().iter().any(|c| c.path == "/users"),
        "covered: it ran"
    );
    assert!(
        s2.ledger_since(None).await.unwrap().is_empty(),
        "no drift, no skip note"
    );
}

/// Issue 15, license reclamation: four people in Engineering, converged in Looker. p0 last
/// logged in 120 days ago; p1 too, but is in the exempt IdP group; p2 logged in with SAML 3
/// days ago (by email 200 days ago: the latest credential counts); p3 never logged in and
/// their credentials were created 120 days ago (counted from then).
async fn reclamation_world(mode: &str) -> World {
    reclamation_world_with(mode, "").await
}

/// [`reclamation_world`] with more policy (before `[inactivity]`).
async fn reclamation_world_with(mode: &str, extra: &str) -> World {
    let policy = format!(
        "{GROUPS_AND_ROLES}\n{extra}\n[inactivity]\ndisable_after_days = 90\nmode = \"{mode}\"\nexempt_groups = [\"On leave\"]\n"
    );
    let mut w = world(4, &policy).await;
    let now = gatehouse_domain::clock::now();
    let days = chrono::TimeDelta::days;
    let uid = |i: usize| w.fake.user_by_email(&email(i)).unwrap().id;
    w.fake
        .set_logins(&uid(0), Some(now - days(120)), None, now - days(400));
    w.fake
        .set_logins(&uid(1), Some(now - days(120)), None, now - days(400));
    w.fake.set_logins(
        &uid(2),
        Some(now - days(200)),
        Some(now - days(3)),
        now - days(400),
    );
    w.fake.set_logins(&uid(3), None, None, now - days(120));
    let leave = w.people.0[1].identity.groups["00gEng"].stamp.clone();
    w.people.0[1].identity.groups.insert(
        "00gLeave".into(),
        Membership {
            name: "On leave".into(),
            member: true,
            stamp: leave,
            source: None,
        },
    );
    w
}

fn disabled(w: &World) -> Vec<bool> {
    (0..4)
        .map(|i| w.fake.user_by_email(&email(i)).unwrap().is_disabled)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_users_are_listed_in_report_mode_and_disabled_in_enforce_mode() {
    // Without [inactivity]: the calls a reconcile costs.
    let plain = world(4, GROUPS_AND_ROLES).await;
    plain.fake.reset_calls();
    reconcile::run_with(&plain.engine, &plain.people, false, &opts(1, 1), &LogProgress)
        .await
        .unwrap();
    let baseline = plain.fake.calls().len();

    // Report mode: listed, nothing written, not one call more.
    let w = reclamation_world("report").await;
    w.fake.reset_calls();
    let r = reconcile::run_with(&w.engine, &w.people, true, &opts(1, 1), &LogProgress)
        .await
        .unwrap();
    assert_eq!(
        w.fake.calls().len(),
        baseline,
        "the login times come with the pages"
    );
    assert_eq!(w.fake.write_calls(), 0);
    let i = r.inactivity.as_ref().expect("inactivity report");
    let listed: Vec<&str> = i.users.iter().map(|u| u.subject.as_str()).collect();
    assert_eq!(listed, ["00u00000", "00u00003"], "{i:?}");
    assert_eq!((i.reclaimable, i.reclaimed), (2, 0));
    assert_eq!(i.users[0].inactive_days, 120);
    assert!(i.users[0].last_login_at.is_some() && i.users[1].last_login_at.is_none());
    assert!(r.plans.is_empty(), "report mode plans nothing: {:?}", r.plans);
    assert_eq!(disabled(&w), [false; 4]);
    assert!(reconcile::render_text(&r).contains("2 seat(s) reclaimable"));

    // Enforce mode: disabled through the apply loop and ledgered; exempt and active untouched.
    let w = reclamation_world("enforce").await;
    w.fake.reset_calls();
    let r = reconcile::run_with(&w.engine, &w.people, true, &opts(1, 1), &LogProgress)
        .await
        .unwrap();
    assert_eq!(disabled(&w), [true, false, false, true]);
    assert_eq!(r.writes, 2);
    let reads = w.fake.calls().len() - w.fake.write_calls();
    assert_eq!(reads, baseline, "no extra reads in enforce mode either");
    let rows = w.engine.store().ledger_since(None).await.unwrap();
    let mut ledgered: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.entry.rule == gatehouse_domain::inactivity::RULE)
        .map(|r| (r.entry.subject.as_str(), r.entry.status.as_str()))
        .collect();
    ledgered.sort();
    assert_eq!(ledgered, [("00u00000", "ok"), ("00u00003", "ok")]);
    // The next reconcile does not enable them again: the seats stay reclaimed.
    let r = reconcile::run_with(&w.engine, &w.people, true, &opts(1, 2), &LogProgress)
        .await
        .unwrap();
    assert_eq!(disabled(&w), [true, false, false, true]);
    assert_eq!(r.writes, 0, "{:?}", r.plans);
    // The example in docs/reports.md (`-- --nocapture`).
    println!("{}", reconcile::render_text(&r));
    let i = r.inactivity.unwrap();
    assert_eq!((i.reclaimable, i.reclaimed), (0, 2));
}

/// An IdP event about person `i` (as the Okta intake makes it: key and email of the subject).
fn event(i: usize, id: &str, secs: i64, event: IdentityEvent) -> Envelope {
    let at = DateTime::from_timestamp(1_700_000_100 + secs, 0).unwrap();
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Okta,
        subject: Subject {
            key: format!("00u{i:05}"),
            email: Some(email(i)),
            display_name: None,
        },
        occurred_at: at,
        received_at: at,
        source_event_type: "test".into(),
        event,
        profile: Profile::from([("email".to_string(), email(i))]),
        raw: serde_json::Value::Null,
    }
}

fn joined(name: &str) -> IdentityEvent {
    IdentityEvent::GroupMemberAdded {
        group: GroupRef {
            id: format!("00g{name}"),
            name: name.into(),
        },
    }
}

/// `PATCH /users/{id}` calls that enable a user.
fn enables(w: &World) -> usize {
    w.fake
        .calls()
        .iter()
        .filter(|c| c.method == "PATCH" && c.path.starts_with("/users/"))
        .filter(|c| {
            serde_json::from_str::<serde_json::Value>(&c.body)
                .is_ok_and(|b| b["is_disabled"] == serde_json::Value::Bool(false))
        })
        .count()
}

/// Method, path and body of every write since the last reset (no token in a failure message).
fn writes(w: &World) -> Vec<(String, String, String)> {
    w.fake
        .calls()
        .into_iter()
        .filter(|c| c.is_write)
        .map(|c| (c.method, c.path, c.body))
        .collect()
}

/// The `fields` of every user read (`GET /users/search`, `GET /users/{id}`) since the last reset.
fn search_fields(w: &World) -> Vec<String> {
    w.fake
        .calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path.starts_with("/users/"))
        .filter(|c| c.path == "/users/search" || c.path.matches('/').count() == 2)
        .map(|c| c.query_param("fields").unwrap_or_default())
        .collect()
}

/// Issue 15: an IdP event about a person reconcile disabled for inactivity (a group change, an
/// activate replayed) does not enable their user again; its other steps apply; a recently
/// active person's event is not held; without `[inactivity]` the search reads what it did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_event_does_not_undo_an_inactivity_disable() {
    const ANALYTICS: &str = r#"
[[rule]]
name = "analytics"
when = { idp_group = "Analytics" }
looker_groups = ["Analysts"]
"#;
    let w = reclamation_world_with("enforce", ANALYTICS).await;
    let analysts = w.fake.add_group("Analysts");
    reconcile::run_with(&w.engine, &w.people, true, &opts(1, 1), &LogProgress)
        .await
        .unwrap();
    assert_eq!(disabled(&w), [true, false, false, true]);

    // p0 (inactive, disabled): a group change the policy already matches, a new group, an
    // activate replayed. The new group is added; the user is never enabled.
    w.fake.reset_calls();
    for (id, secs, e) in [
        ("g0", 0, joined("Engineering")),
        ("g1", 1, joined("Analytics")),
        ("a0", 2, IdentityEvent::UserActivated),
        ("p0", 3, IdentityEvent::ProfileUpdated),
    ] {
        w.engine.handle(&event(0, id, secs, e)).await.unwrap();
    }
    assert_eq!(enables(&w), 0, "{:?}", writes(&w));
    assert_eq!(disabled(&w), [true, false, false, true]);
    let p0 = w.fake.user_by_email(&email(0)).unwrap();
    assert!(
        p0.group_ids.contains(&analysts),
        "the event's other steps apply: {p0:?}"
    );
    let fields = search_fields(&w);
    assert!(!fields.is_empty());
    assert!(
        fields.iter().all(|f| f == SEARCH_FIELDS_WITH_LOGINS),
        "the linked user's read carries the login times: {fields:?}"
    );

    // Not linked yet (no reconcile ran): found by the one search, which carries the login times.
    let fresh = reclamation_world("enforce").await;
    let f0 = fresh.fake.user_by_email(&email(0)).unwrap().id;
    fresh.fake.set_disabled(&f0, true);
    fresh.fake.reset_calls();
    fresh
        .engine
        .handle(&event(0, "g0", 0, joined("Engineering")))
        .await
        .unwrap();
    assert_eq!(enables(&fresh), 0, "{:?}", writes(&fresh));
    assert_eq!(search_fields(&fresh), [SEARCH_FIELDS_WITH_LOGINS]);
    assert!(fresh.fake.user_by_email(&email(0)).unwrap().is_disabled);

    // p2 logged in 3 days ago: disabled by hand, an event about them enables the user (not held).
    let p2 = w.fake.user_by_email(&email(2)).unwrap().id;
    w.fake.set_disabled(&p2, true);
    w.fake.reset_calls();
    w.engine
        .handle(&event(2, "g2", 0, joined("Engineering")))
        .await
        .unwrap();
    assert_eq!(enables(&w), 1);
    assert_eq!(disabled(&w), [true, false, false, true]);

    // Without [inactivity]: the same event reads the same fields as before, and enables.
    let plain = world(1, GROUPS_AND_ROLES).await;
    let p = plain.fake.user_by_email(&email(0)).unwrap().id;
    plain.fake.set_disabled(&p, true);
    plain.fake.reset_calls();
    plain
        .engine
        .handle(&event(0, "g0", 0, joined("Engineering")))
        .await
        .unwrap();
    assert_eq!(search_fields(&plain), [SEARCH_FIELDS]);
    assert_eq!(enables(&plain), 1);
}
