//! Issue 18: offboardings that happen while Gatehouse is down are read back from Okta's System
//! Log at start (fake Okta), applied in Looker once each, also when their hook arrives late.

use gatehouse_e2e::{Options, TestApp, spawn_app, wait_until};
use gatehouse_testkit::{FakeLooker, FakeOkta};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

const PEOPLE: usize = 50;
const POLL_SECS: f64 = 2.0;

async fn start(looker: &FakeLooker, okta: &FakeOkta, data_dir: &Path) -> TestApp {
    spawn_app(Options {
        looker: Some(looker.clone()),
        data_dir: Some(data_dir.to_path_buf()),
        extra_toml: format!(
            "[okta.api]\nurl = {:?}\napi_token = {:?}\npoll_interval = \"{POLL_SECS}s\"\ninitial_lookback = \"1h\"\n",
            okta.base_url(),
            okta.api_token()
        ),
        ..Default::default()
    })
    .await
}

/// `gatehouse_intake_catchup_lag_seconds{source="okta"}`, if exported.
async fn lag(app: &TestApp) -> Option<f64> {
    app.metrics().await.lines().find_map(|l| {
        l.strip_prefix("gatehouse_intake_catchup_lag_seconds{source=\"okta\"} ")
            .and_then(|v| v.trim().parse().ok())
    })
}

fn hook_body(events: &[Value]) -> Vec<u8> {
    json!({"eventType": "com.okta.event_hook", "eventTypeVersion": "1.0", "cloudEventsVersion": "0.1",
           "source": "https://acme.okta.com/api/v1/eventHooks/whoql0HfiLGPWc8Hq0g3", "eventId": format!("delivery-{}", events[0]["uuid"].as_str().unwrap_or("none")),
           "data": {"events": events}})
    .to_string()
    .into_bytes()
}

/// Looker writes per user id (`PATCH /users/{id}` and everything under it).
fn writes_per_user(looker: &FakeLooker) -> BTreeMap<String, usize> {
    let mut per = BTreeMap::new();
    for c in looker.calls().iter().filter(|c| c.is_write) {
        if let Some(id) = c
            .path
            .strip_prefix("/users/")
            .map(|r| r.split('/').next().unwrap_or(r))
        {
            *per.entry(id.to_string()).or_default() += 1;
        }
    }
    per
}

#[tokio::test]
async fn offboardings_while_stopped_are_caught_up_at_restart_once_each_even_with_late_hooks() {
    let looker = FakeLooker::start().await;
    let okta = FakeOkta::start().await;
    let people: Vec<(String, String)> = (0..PEOPLE)
        .map(|i| {
            let email = format!("person{i}@example.com");
            (looker.add_user(&email, "Person", &format!("N{i}")), email)
        })
        .collect();
    let data = tempfile::tempdir().unwrap();

    // First run: the catch-up reads the (empty) log and stores its cursor.
    let app = start(&looker, &okta, data.path()).await;
    wait_until("the first poll is done", || async {
        lag(&app).await.is_some_and(|l| l < POLL_SECS)
    })
    .await;
    app.stop().await;
    let calls_before_restart = okta.calls().len();

    // Gatehouse is down: 50 people are deactivated at Okta; the hook deliveries are lost.
    let events: Vec<Value> = people
        .iter()
        .enumerate()
        .map(|(i, (_, email))| okta.deactivate(&format!("00uperson{i:03}"), email))
        .collect();
    let okta_user_of: BTreeMap<&str, &str> = people
        .iter()
        .zip(&events)
        .map(|((id, _), e)| (id.as_str(), e["target"][0]["id"].as_str().unwrap()))
        .collect();
    assert_eq!(okta_user_of.len(), PEOPLE);

    // Restart on the same data directory.
    let app = start(&looker, &okta, data.path()).await;
    // Some hook deliveries arrive late, racing the catch-up...
    let r = app.post_okta(&hook_body(&events[..10])).await;
    assert_eq!(r.status(), 200);
    wait_until("all 50 are offboarded in Looker", || async {
        people
            .iter()
            .all(|(id, _)| looker.user(id).is_some_and(|u| u.is_disabled))
    })
    .await;
    app.drained().await;
    // ... and some after it.
    app.deliver(&hook_body(&events[10..20])).await;
    wait_until("the lag is back under the poll interval", || async {
        lag(&app).await.is_some_and(|l| l < POLL_SECS)
    })
    .await;
    app.drained().await;

    // Each person's offboarding was written once: one disable, none repeated.
    let per = writes_per_user(&looker);
    for (id, _) in &people {
        assert_eq!(per.get(id), Some(&1), "looker user {id}: {per:?}");
    }
    let ledger = app.ledger().await;
    assert_eq!(ledger.len(), PEOPLE, "one ledger row per person");
    let mut ids: Vec<&str> = ledger.iter().map(|r| r.entry.envelope_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), PEOPLE, "each event applied under its one envelope id");
    for e in &events {
        let id = format!("okta:default:{}", e["uuid"].as_str().unwrap());
        assert!(ids.contains(&id.as_str()), "{id} not applied");
    }

    // The cursor survived the restart: the first call after it followed the stored next link.
    let after_restart = &okta.calls()[calls_before_restart];
    assert!(
        after_restart.query_param("after").is_some() && after_restart.query_param("since").is_none(),
        "{after_restart:?}"
    );
    app.stop().await;
}
