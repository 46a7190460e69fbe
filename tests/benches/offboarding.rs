//! `make bench`: offboarding latency and Looker calls per scenario, with the fake Looker adding
//! 50 ms to every call. Writes `bench/results.json` and `bench/results.md` at the repository root.
//!
//! Latency = from the deactivate webhook's 200 to the completion of the last revoking call
//! (disable, session and API3-key deletions, group removals), as recorded by the fake.

use gatehouse_e2e::{Options, TestApp, example_policy, okta_fixture, seed_catalog, spawn_app, wait_until};
use gatehouse_testkit::FakeLooker;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

const LATENCY: Duration = Duration::from_millis(50);
const RUNS: usize = 40;

fn deactivate_body(i: usize, email: &str) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&okta_fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .unwrap();
    let e = &mut v["data"]["events"][0];
    e["uuid"] = json!(format!("bench-deactivate-{i}"));
    e["target"][0]["id"] = json!(format!("00ubench{i}"));
    e["target"][0]["alternateId"] = json!(email);
    serde_json::to_vec(&v).unwrap()
}

struct Counted {
    total: usize,
    writes: usize,
    reads: usize,
    logins: usize,
}

fn count(fake: &FakeLooker, from: usize) -> Counted {
    let calls = &fake.calls()[from..];
    let logins = calls.iter().filter(|c| c.path == "/login").count();
    let writes = calls.iter().filter(|c| c.is_write).count();
    Counted {
        total: calls.len(),
        writes,
        reads: calls.len() - writes - logins,
        logins,
    }
}

async fn offboard_once(app: &TestApp, fake: &FakeLooker, i: usize, groups: &[String]) -> Duration {
    let email = format!("bench{i}@example.com");
    let uid = fake.add_user(&email, "Bench", "User");
    for _ in 0..2 {
        fake.add_session(&uid);
        fake.add_api3_key(&uid);
    }
    for g in groups {
        fake.add_user_to_group(&uid, g);
    }
    let from = fake.calls().len();
    let r = app.post_okta(&deactivate_body(i, &email)).await;
    assert_eq!(r.status(), 200);
    let acked = Instant::now();
    wait_until("offboarded", || async {
        fake.user(&uid).is_some_and(|u| {
            u.is_disabled && u.session_ids.is_empty() && u.api3_key_ids.is_empty() && u.group_ids.is_empty()
        })
    })
    .await;
    app.drained().await;
    let last = fake.calls()[from..]
        .iter()
        .filter(|c| c.is_write)
        .map(|c| c.finished_at)
        .max()
        .expect("revoking calls were made");
    last.saturating_duration_since(acked)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let fake = FakeLooker::start().await;
    let c = seed_catalog(&fake);
    fake.set_latency(LATENCY);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(example_policy()),
        ..Default::default()
    })
    .await;
    let groups = vec![c.engineers.clone(), c.finance.clone()];

    // Cold: first event after start (login and catalog not cached yet).
    let from = fake.calls().len();
    let cold = offboard_once(&app, &fake, 0, &groups).await;
    let cold_calls = count(&fake, from);
    // Warm: token and catalog cached.
    let mut warm = Vec::new();
    let from = fake.calls().len();
    for i in 1..=RUNS {
        warm.push(offboard_once(&app, &fake, i, &groups).await);
    }
    let warm_calls = count(&fake, from);
    warm.sort();

    // Onboarding: create + activate + group add (one delivery, three events).
    let from = fake.calls().len();
    app.deliver(&okta_fixture(
        "event-hook.batch.create-activate-groupadd.constructed.json",
    ))
    .await;
    let onboard = count(&fake, from);
    // Replay of the same body.
    let from = fake.calls().len();
    app.deliver(&okta_fixture(
        "event-hook.batch.create-activate-groupadd.constructed.json",
    ))
    .await;
    let replay = count(&fake, from);
    // No-op: a new event that changes nothing the policy cares about.
    let from = fake.calls().len();
    app.deliver(&okta_fixture(
        "event-hook.user.account.update_profile.constructed.json",
    ))
    .await;
    let noop = count(&fake, from);
    app.stop().await;

    let per = |c: &Counted, n: usize| {
        json!({
            "calls": c.total as f64 / n as f64, "writes": c.writes as f64 / n as f64,
            "reads": c.reads as f64 / n as f64, "logins": c.logins as f64 / n as f64,
        })
    };
    let results = json!({
        "looker_latency_ms": LATENCY.as_millis(),
        "offboard_user": "2 sessions, 2 API3 keys, 2 managed groups (7 revoking writes)",
        "offboard_latency_ms": {
            "cold_first_event": cold.as_secs_f64() * 1000.0,
            "warm_runs": RUNS,
            "warm_p50": pct(&warm, 0.50),
            "warm_p99": pct(&warm, 0.99),
            "warm_max": pct(&warm, 1.0),
        },
        "looker_calls_per_scenario": {
            "offboard_cold": per(&cold_calls, 1),
            "offboard_warm": per(&warm_calls, RUNS),
            "onboard_create_activate_groupadd": per(&onboard, 1),
            "replay": per(&replay, 1),
            "noop": per(&noop, 1),
        },
    });
    let l = &results["offboard_latency_ms"];
    let k = &results["looker_calls_per_scenario"];
    let row = |name: &str, v: &Value| {
        format!(
            "| {name} | {} | {} | {} | {} |\n",
            v["calls"], v["writes"], v["reads"], v["logins"]
        )
    };
    let md = format!(
        "# Benchmark results\n\nWritten by `make bench` (tests/benches/offboarding.rs). The fake Looker adds \
         {} ms to every call.\n\n## Offboarding latency\nFrom the deactivate webhook's 200 to the last revoking \
         call completing; user with {}.\n\n| | ms |\n|---|---|\n| cold (first event: login + catalog) | {:.1} |\n\
         | warm p50 ({} runs) | {:.1} |\n| warm p99 | {:.1} |\n| warm max | {:.1} |\n\n\
         ## Looker calls per scenario\n\n| scenario | calls | writes | reads | logins |\n|---|---|---|---|---|\n{}{}{}{}{}",
        LATENCY.as_millis(),
        results["offboard_user"].as_str().unwrap(),
        l["cold_first_event"].as_f64().unwrap(),
        RUNS,
        l["warm_p50"].as_f64().unwrap(),
        l["warm_p99"].as_f64().unwrap(),
        l["warm_max"].as_f64().unwrap(),
        row("offboard, cold", &k["offboard_cold"]),
        row("offboard, warm (mean)", &k["offboard_warm"]),
        row(
            "onboard (create+activate+group add)",
            &k["onboard_create_activate_groupadd"]
        ),
        row("replay of a processed body", &k["replay"]),
        row("no-op event", &k["noop"]),
    );
    gatehouse_e2e::write_bench_results("results", &results, &md);
    print!("{md}");
}
