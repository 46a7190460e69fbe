//! The Looker admin-API monthly budget end to end: calls counted by the client, flushed to the
//! state store, read back through the real `/metrics` endpoint, kept across a restart, and a
//! replayed event costs nothing.

use gatehouse_domain::ports::{LookerCallCounts, call_month};
use gatehouse_e2e::{Options, example_policy, okta_fixture, seed_catalog, spawn_app, wait_until};
use gatehouse_testkit::FakeLooker;

const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";
const BUDGET: &str =
    "[looker.budget]\nmonthly_call_quota = 20\nwarning_remaining = 0.5\nflush_interval = \"20ms\"\n";
/// Flushes only at start and at shutdown (within a test's time).
const BUDGET_AT_STOP: &str =
    "[looker.budget]\nmonthly_call_quota = 20\nwarning_remaining = 0.5\nflush_interval = \"1h\"\n";

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split(' ').next() == Some(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The three gauges as `/metrics` shows them once `calls_month` equals `want`.
async fn gauges_at(app: &gatehouse_e2e::TestApp, want: f64) -> (f64, f64, f64) {
    wait_until("the budget gauges show every call", || async {
        gauge(&app.metrics().await, "gatehouse_looker_api_calls_month") == Some(want)
    })
    .await;
    let seen = app.metrics().await;
    (
        gauge(&seen, "gatehouse_looker_api_calls_month").unwrap(),
        gauge(&seen, "gatehouse_looker_api_budget_remaining").expect("remaining gauge"),
        gauge(&seen, "gatehouse_looker_api_budget_low").expect("low gauge"),
    )
}

#[tokio::test]
async fn budget_gauges_on_metrics_count_every_looker_call_and_survive_a_restart() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    fake.add_session(&uid);
    fake.add_user_to_group(&uid, &c.engineers);
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_path_buf();
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        extra_toml: BUDGET_AT_STOP.into(),
        data_dir: Some(data_dir.clone()),
        ..Default::default()
    })
    .await;
    // The start checked the managed attributes' settings (login, GET /user_attributes); the
    // budget flushes that once as it starts.
    let month = call_month(gatehouse_domain::clock::now());
    let at_start = fake.calls().len() as u64;
    let store = app.store.clone();
    wait_until("the flush at start", || {
        let (s, m) = (store.clone(), month.clone());
        async move { s.looker_calls(&m).await.unwrap() == at_start }
    })
    .await;
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    assert!(fake.user(&uid).unwrap().is_disabled);
    // Login, catalog, search and the writes: every request Looker received counts.
    let made = fake.calls().len() as f64;
    assert!(made >= 5.0, "{made}");
    assert_eq!(
        app.store.looker_calls(&month).await.unwrap(),
        at_start,
        "not flushed before the hour"
    );
    app.stop().await;

    // A restart on the same database: the month's count is still there, and replaying the
    // same delivery (deduplicated) costs no call at all.
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        extra_toml: BUDGET.into(),
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .await;
    assert!(
        app.store.looker_calls(&month).await.unwrap() as f64 >= made,
        "the count was flushed to the database at shutdown"
    );
    // This start's own attribute check counts too.
    let made = fake.calls().len() as f64;
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    assert_eq!(fake.calls().len() as f64, made, "a replay makes no call");
    let (calls, remaining, low) = gauges_at(&app, made).await;
    assert_eq!(remaining, 20.0 - calls);
    assert_eq!(low, if remaining <= 10.0 { 1.0 } else { 0.0 });

    // Over half of the quota used: the low gauge is set.
    let more = fake.add_user("jane@example.com", "Jane", "Roe");
    let body = String::from_utf8(okta_fixture(DEACTIVATE))
        .unwrap()
        .replace("john.doe@example.com", "jane@example.com")
        .replace("00u3m90rxKjGQ0G6L1d6", "00u3m90rxKjGQ0G6L1d7");
    let mut body = serde_json::from_str::<serde_json::Value>(&body).unwrap();
    for (i, e) in body["data"]["events"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        e["uuid"] = serde_json::json!(format!("budget-second-event-{i}"));
    }
    app.deliver(body.to_string().as_bytes()).await;
    assert!(fake.user(&more).unwrap().is_disabled);
    let total = fake.calls().len() as f64;
    assert!(total > made);
    let (calls, remaining, low) = gauges_at(&app, total).await;
    assert_eq!((calls, remaining), (total, 20.0 - total));
    assert_eq!(low, if 20.0 - total <= 10.0 { 1.0 } else { 0.0 });
    assert_eq!(low, 1.0, "{total} of 20 calls used: past the 50 % warning");
    app.stop().await;
}

/// The README's metrics section names every budget and rotation-age metric.
#[test]
fn readme_lists_the_budget_and_rotation_age_metrics() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for name in [
        gatehouse_engine::budget::METRIC_CALLS_MONTH,
        gatehouse_engine::budget::METRIC_REMAINING,
        gatehouse_engine::budget::METRIC_LOW,
        "gatehouse_secret_age_seconds",
    ] {
        assert!(readme.contains(name), "README does not list {name}");
    }
}
