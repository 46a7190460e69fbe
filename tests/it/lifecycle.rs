//! Onboarding and offboarding end to end, through HTTP, against the fake Looker.

use gatehouse_e2e::{Options, example_policy, okta_fixture, seed_catalog, spawn_app, wait_until};
use gatehouse_testkit::FakeLooker;
use std::collections::BTreeSet;
use std::time::Duration;

const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";
const BATCH: &str = "event-hook.batch.create-activate-groupadd.constructed.json";

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn deactivate_disables_and_revokes_everything_in_one_concurrent_plan() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    for _ in 0..2 {
        fake.add_session(&uid);
        fake.add_api3_key(&uid);
    }
    for g in [&c.engineers, &c.finance, &c.unmanaged] {
        fake.add_user_to_group(&uid, g);
    }
    // another person's access is not touched
    let other = fake.add_user("jane@example.com", "Jane", "Roe");
    let other_session = fake.add_session(&other);
    // Every call takes 100 ms, so overlapping recorded times can only come from concurrency.
    fake.set_latency(Duration::from_millis(100));
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;
    // The start checked the managed attributes' settings (login, GET /user_attributes).
    let at_start = fake.calls().len();

    app.deliver(&okta_fixture(DEACTIVATE)).await;

    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled);
    assert!(u.session_ids.is_empty(), "sessions left: {:?}", u.session_ids);
    assert!(u.api3_key_ids.is_empty(), "API3 keys left: {:?}", u.api3_key_ids);
    assert_eq!(
        u.group_ids,
        set(&[&c.unmanaged]),
        "only the unmanaged group is kept"
    );
    assert_eq!(fake.user(&other).unwrap().session_ids, vec![other_session]);

    let calls = fake.calls();
    let writes: Vec<_> = calls.iter().filter(|c| c.is_write).collect();
    assert_eq!(
        writes.len(),
        7,
        "1 disable + 2 sessions + 2 keys + 2 managed groups: {writes:#?}"
    );
    // Independent calls are issued concurrently: every write started before any write finished.
    let last_start = writes.iter().map(|w| w.started_at).max().unwrap();
    let first_finish = writes.iter().map(|w| w.finished_at).min().unwrap();
    assert!(last_start < first_finish, "writes were serialized");
    // Dependent round trips: login → (catalog ∥ search) → revocations.
    let search = calls.iter().find(|c| c.path == "/users/search").unwrap();
    let login = calls.iter().find(|c| c.path == "/login").unwrap();
    assert!(login.finished_at <= search.started_at);
    let catalog_reads: Vec<_> = calls[at_start..]
        .iter()
        .filter(|c| ["/groups", "/roles", "/user_attributes"].contains(&c.path.as_str()))
        .collect();
    assert_eq!(catalog_reads.len(), 3);
    assert!(
        catalog_reads
            .iter()
            .all(|r| search.started_at < r.finished_at && r.started_at < search.finished_at),
        "catalog reads and the user search run side by side"
    );
    assert!(writes.iter().all(|w| w.started_at >= search.finished_at));

    // The ledger has one row per write call, citing the event and the rule.
    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), writes.len());
    for row in &ledger {
        assert_eq!(
            row.entry.envelope_id,
            "okta:default:ab62c0bc-2837-11eb-9823-9fb8f750c5a9"
        );
        assert_eq!(row.entry.subject, "okta:00u3m90rxKjGQ0G6L1d6");
        assert_eq!(row.entry.event, "user.lifecycle.deactivate");
        assert!(row.entry.rule.starts_with("offboarding."), "{}", row.entry.rule);
        assert_eq!(row.entry.status, "ok");
    }
    app.stop().await;
}

#[tokio::test]
async fn onboarding_converges_and_replays_and_noops_cost_zero_calls() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;

    app.deliver(&okta_fixture(BATCH)).await;
    let u = fake
        .user_by_email("isaac.brock@example.com")
        .expect("user created");
    assert!(!u.is_disabled);
    assert_eq!(
        (u.first_name.as_deref(), u.last_name.as_deref()),
        (Some("Isaac"), Some("Brock"))
    );
    assert_eq!(u.group_ids, set(&[&c.engineers]));
    assert_eq!(u.direct_role_ids, set(&[&c.viewer, &c.developer]));
    assert_eq!(
        u.attribute_values.get(&c.team).map(String::as_str),
        Some("engineering")
    );
    assert_eq!(
        u.attribute_values.get(&c.email_rls).map(String::as_str),
        Some("isaac.brock@example.com")
    );
    assert_eq!(
        app.ledger().await.len(),
        fake.write_calls(),
        "one ledger row per write call"
    );

    // Replay the same body (same event uuids): zero further calls of any kind.
    let before = fake.calls().len();
    app.deliver(&okta_fixture(BATCH)).await;
    assert_eq!(fake.calls().len(), before, "a replay makes no call");
    // The counter is bumped just after the ack that `deliver` waits for: poll for it.
    wait_until("the three replayed events are counted as duplicates", || async {
        let dupes: f64 = app
            .metrics()
            .await
            .lines()
            .find(|l| {
                l.starts_with("gatehouse_events_processed_total") && l.contains("outcome=\"duplicate\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0);
        dupes >= 3.0
    })
    .await;

    // A new event that changes nothing the policy cares about: zero calls.
    app.deliver(&okta_fixture(
        "event-hook.user.account.update_profile.constructed.json",
    ))
    .await;
    assert_eq!(fake.calls().len(), before, "a no-op event makes no call");

    // Leaving the IdP group removes exactly what it granted.
    let writes = fake.write_calls();
    app.deliver(&okta_fixture(
        "event-hook.group.user_membership.remove.constructed.json",
    ))
    .await;
    let u = fake.user_by_email("isaac.brock@example.com").unwrap();
    assert!(u.group_ids.is_empty());
    assert_eq!(u.direct_role_ids, set(&[&c.viewer]));
    // Row-level security fails closed: no rule sets `team` any more, so it gets its deny value.
    assert_eq!(
        u.attribute_values.get(&c.team).map(String::as_str),
        Some("__none__")
    );
    assert_eq!(
        fake.write_calls() - writes,
        3,
        "remove group, set roles, set the deny value"
    );
    app.stop().await;

    // A fresh Gatehouse (no memory) against a Looker already as desired: reads only, zero writes.
    let fresh = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;
    let writes = fake.write_calls();
    fresh
        .deliver(&okta_fixture(
            "event-hook.user.lifecycle.activate.constructed.json",
        ))
        .await;
    fresh
        .deliver(&okta_fixture(
            "event-hook.group.user_membership.remove.constructed.json",
        ))
        .await;
    assert_eq!(fake.write_calls(), writes, "state already as desired: no write");
    assert!(fresh.ledger().await.is_empty());
    fresh.stop().await;
}

#[tokio::test]
async fn an_older_activate_delivered_late_does_not_re_enable() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let uid = fake.add_user("isaac.brock@example.com", "Isaac", "Brock");
    fake.add_session(&uid);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;
    // suspend happened 2024-05-03; the activate (2024-05-01) arrives afterwards
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.suspend.constructed.json",
    ))
    .await;
    assert!(fake.user(&uid).unwrap().is_disabled);
    let writes = fake.write_calls();
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.activate.constructed.json",
    ))
    .await;
    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled, "an older activate re-enabled the user");
    assert_eq!(fake.write_calls(), writes, "the stale event made no write");
    // The counter is bumped just after the ack that `deliver` waits for: poll for it.
    wait_until("the stale outcome is counted", || async {
        app.metrics()
            .await
            .lines()
            .any(|l| l.starts_with("gatehouse_events_processed_total") && l.contains("outcome=\"stale\""))
    })
    .await;
    // Per source, and the queue lag of every handled event.
    let m = app.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("gatehouse_events_processed_total")
                && l.contains("source=\"okta\"")
                && l.contains("outcome=\"stale\"")),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("gatehouse_event_age_seconds_count{source=\"okta\"}")),
        "{m}"
    );
    app.stop().await;
}

#[tokio::test]
async fn without_looker_plans_go_to_the_ledger_and_nothing_is_sent() {
    let app = spawn_app(Options {
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    let ledger = app.ledger().await;
    let calls: Vec<String> = ledger.iter().map(|r| r.entry.call.to_string()).collect();
    assert!(ledger.iter().all(|r| r.entry.status == "dry_run"));
    assert!(
        calls
            .iter()
            .any(|c| c == "PATCH /api/4.0/users/{id of john.doe@example.com} {\"is_disabled\":true}"),
        "{calls:#?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("DELETE /api/4.0/users/{id of john.doe@example.com}/sessions/"))
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with("DELETE /api/4.0/users/{id of john.doe@example.com}/credentials_api3/"))
    );
    app.stop().await;
}

#[tokio::test]
async fn offboarded_users_are_deleted_after_the_grace_period() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let john = fake.add_user("john.doe@example.com", "John", "Doe");
    let policy = "[offboarding]\ndelete_after_days = 0\n";
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(policy.into()),
        ..Default::default()
    })
    .await;
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    wait_until("john deleted", || async { fake.user(&john).is_none() }).await;
    // the ledger row follows the call's answer
    wait_until("deletion ledgered", || async {
        app.ledger()
            .await
            .iter()
            .any(|r| r.entry.rule == "offboarding.delete_after_days")
    })
    .await;
    let rows = app.ledger().await;
    let delete = rows
        .iter()
        .find(|r| r.entry.rule == "offboarding.delete_after_days")
        .unwrap();
    assert_eq!(
        delete.entry.call.to_string(),
        format!("DELETE /api/4.0/users/{john}")
    );
    app.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_the_plan_in_flight_and_loses_nothing() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    for _ in 0..3 {
        fake.add_session(&uid);
    }
    // Slow enough that the stop below lands while the plan is running.
    fake.set_latency(Duration::from_millis(300));
    let data = tempfile::tempdir().unwrap();
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        data_dir: Some(data.path().to_path_buf()),
        ..Default::default()
    })
    .await;
    // The start checked the managed attributes' settings (login, GET /user_attributes).
    let at_start = fake.calls().len();
    let r = app.post_okta(&okta_fixture(DEACTIVATE)).await;
    assert_eq!(r.status(), 200);
    wait_until("the plan is in flight", || async {
        fake.calls().len() > at_start
    })
    .await;
    assert_eq!(
        fake.user(&uid).unwrap().session_ids.len(),
        3,
        "stopping before the plan is done"
    );
    app.stop().await;
    // `stop` returned only once the plan in flight was finished and its message settled.
    let u = fake.user(&uid).unwrap();
    assert!(u.is_disabled && u.session_ids.is_empty(), "{u:?}");
    let store = gatehouse_store::sqlite::Sqlite::open(data.path()).await.unwrap();
    assert_eq!(
        store.queue_depth().await.unwrap(),
        0,
        "nothing left behind on the queue"
    );
    let rows = gatehouse_domain::ports::StateStore::ledger_since(&store, None)
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        fake.write_calls(),
        "every write of the plan is in the ledger"
    );
}
