//! Faults: throttling and server errors from Looker, poison messages, retries and dead letters.

use gatehouse_e2e::{Options, example_policy, okta_fixture, seed_catalog, spawn_app};
use gatehouse_testkit::FakeLooker;

#[tokio::test]
async fn twenty_percent_429_and_5xx_still_converge_and_every_write_is_ledgered() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let jane = fake.add_user("john.doe@example.com", "John", "Doe");
    for _ in 0..3 {
        fake.add_session(&jane);
        fake.add_api3_key(&jane);
    }
    fake.add_user_to_group(&jane, &c.engineers);
    fake.set_fault_statuses(&[429, 500, 503]);
    fake.set_fault_rate(0.2, 7);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        max_attempts: 20,
        ..Default::default()
    })
    .await;
    app.deliver(&okta_fixture(
        "event-hook.batch.create-activate-groupadd.constructed.json",
    ))
    .await;
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .await;

    let faults = fake.calls().iter().filter(|c| c.fault_injected).count();
    assert!(faults > 0, "the fake injected no fault");
    let isaac = fake.user_by_email("isaac.brock@example.com").unwrap();
    assert_eq!(isaac.group_ids.len(), 1);
    assert_eq!(isaac.direct_role_ids.len(), 2);
    let john = fake.user(&jane).unwrap();
    assert!(john.is_disabled && john.session_ids.is_empty() && john.api3_key_ids.is_empty());
    assert!(john.group_ids.is_empty());
    assert!(app.store.dead_letters().await.unwrap().is_empty());
    // Every write the fake received, faulted or not, has its ledger row with the status answered.
    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), fake.write_calls());
    let faulted_writes = fake
        .calls()
        .iter()
        .filter(|c| c.is_write && c.fault_injected)
        .count();
    let failed_rows = ledger
        .iter()
        .filter(|r| ["429", "500", "503"].contains(&r.entry.status.as_str()))
        .count();
    assert_eq!(failed_rows, faulted_writes);
    app.stop().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_with_the_reason() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    fake.add_user("john.doe@example.com", "John", "Doe");
    fake.set_fault_statuses(&[500]);
    fake.set_fault_rate(1.0, 1);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        max_attempts: 2,
        call_retries: 1,
        ..Default::default()
    })
    .await;
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .await;
    let dlq = app.store.dead_letters().await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].attempts, 2);
    assert!(dlq[0].reason.contains("after 2 attempt(s)"), "{}", dlq[0].reason);
    assert!(dlq[0].reason.contains("500"), "{}", dlq[0].reason);
    assert!(
        dlq[0].body.contains("ab62c0bc-2837-11eb-9823-9fb8f750c5a9"),
        "the message itself is kept"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_from_the_durable_queue() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let john = fake.add_user("john.doe@example.com", "John", "Doe");
    fake.add_session(&john);
    // Looker is down while the hook arrives: the hook is still accepted (durably queued).
    fake.set_fault_statuses(&[503]);
    fake.set_fault_rate(1.0, 1);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        max_attempts: 50,
        call_retries: 0,
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    })
    .await;
    let r = app
        .post_okta(&okta_fixture(
            "event-hook.user.lifecycle.deactivate.constructed.json",
        ))
        .await;
    assert_eq!(r.status(), 200);
    app.stop().await;
    assert_eq!(
        gatehouse_store::sqlite::Sqlite::open(&data_dir)
            .await
            .unwrap()
            .queue_depth()
            .await
            .unwrap(),
        1
    );
    assert!(!fake.user(&john).unwrap().is_disabled);

    // Looker is back; a new process on the same data directory finishes the work.
    fake.set_fault_rate(0.0, 1);
    let again = spawn_app(Options {
        looker: Some(fake.clone()),
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .await;
    again.drained().await;
    assert!(
        again.store.dead_letters().await.unwrap().is_empty(),
        "{:?}",
        again.store.dead_letters().await
    );
    let u = fake.user(&john).unwrap();
    assert!(u.is_disabled && u.session_ids.is_empty());
    again.stop().await;
}

#[tokio::test]
async fn a_429_retry_after_is_honoured() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let john = fake.add_user("john.doe@example.com", "John", "Doe");
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        ..Default::default()
    })
    .await;
    // Warm up (login, catalog) so the throttled call is the disable write itself.
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.activate.constructed.json",
    ))
    .await;
    fake.set_retry_after_secs(1);
    fake.fail_next(429, 1);
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .await;
    assert!(fake.user(&john).unwrap().is_disabled);
    let calls = fake.calls();
    let throttled = calls
        .iter()
        .position(|c| c.status == 429)
        .expect("a 429 was answered");
    let t = &calls[throttled];
    let retry = calls[throttled + 1..]
        .iter()
        .find(|c| c.method == t.method && c.path == t.path)
        .expect("the throttled call was retried");
    // The engine's own backoff is at most 50 ms here; only Retry-After explains a 1 s gap.
    assert!(
        retry.started_at >= t.finished_at + std::time::Duration::from_secs(1),
        "retried {:?} after the 429",
        retry.started_at - t.finished_at
    );
    app.stop().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_not_retried() {
    let app = spawn_app(Options::default()).await;
    app.store
        .enqueue_raw("poison-1", "okta:x", "{\"not\": \"an envelope\"}")
        .await
        .unwrap();
    app.drained().await;
    let dlq = app.store.dead_letters().await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].attempts, 1, "not retried");
    assert!(
        dlq[0].reason.starts_with("not a valid envelope"),
        "{}",
        dlq[0].reason
    );
    app.stop().await;
}
