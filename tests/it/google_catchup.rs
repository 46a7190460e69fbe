//! Google Workspace catch-up end to end (issue 18): Gatehouse is stopped, people are suspended or
//! deleted in Google meanwhile, Gatehouse starts again on the same state → `activities.list` from
//! the stored cursor → every one offboarded in Looker, each once, and a late push of one of the
//! same events changes nothing.

use gatehouse_e2e::{Options, spawn_app, wait_until};
use gatehouse_store::catchup_state::CatchupStore;
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::google_reports_fake::{FakeGoogleReports, admin_activity};

const ACCESS: &str = "ya29.e2e-access-token";
const TOKEN: &str = "a-static-channel-token-0001";
const N: usize = 50;

fn toml(google: &FakeGoogleReports) -> String {
    format!(
        "[google]\nchannel_tokens = [{TOKEN:?}]\nadmin_url = {:?}\naccess_token = {ACCESS:?}\n\
         catchup_interval = \"2s\"\n",
        google.url()
    )
}

#[tokio::test]
async fn offboardings_while_down_are_applied_once_after_a_restart_even_with_a_late_push() {
    let looker = FakeLooker::start().await;
    let google = FakeGoogleReports::start(ACCESS).await;
    let uids: Vec<String> = (0..N)
        .map(|i| looker.add_user(&format!("p{i}@example.com"), "Person", &format!("N{i}")))
        .collect();
    for uid in &uids {
        looker.add_session(uid);
    }

    // First run: the first catch-up pass stores the cursor.
    let app = spawn_app(Options {
        looker: Some(looker.clone()),
        extra_toml: toml(&google),
        ..Default::default()
    })
    .await;
    let store = app.store.clone();
    wait_until("the first catch-up pass", || {
        let store = store.clone();
        async move { store.catchup_get("google_workspace").await.unwrap().is_some() }
    })
    .await;
    let data_dir = app.data_dir.clone();
    app.stop().await;

    // Down: N people suspended or deleted in Google.
    let now = gatehouse_domain::clock::now();
    let mut activities = Vec::new();
    for i in 0..N {
        let ev = if i % 2 == 0 { "SUSPEND_USER" } else { "DELETE_USER" };
        let at = now - chrono::Duration::milliseconds(10 * (N - i) as i64);
        let a = admin_activity(ev, &format!("p{i}@example.com"), at, &format!("-{i}"));
        google.add_activity(a.clone());
        activities.push(a);
    }
    assert!(uids.iter().all(|u| !looker.user(u).unwrap().is_disabled));

    // Restart on the same state.
    let app = spawn_app(Options {
        looker: Some(looker.clone()),
        extra_toml: toml(&google),
        data_dir: Some(data_dir),
        ..Default::default()
    })
    .await;
    let l = looker.clone();
    let ids = uids.clone();
    wait_until("every missed offboarding applied", || {
        let (l, ids) = (l.clone(), ids.clone());
        async move {
            ids.iter().all(|u| {
                l.user(u)
                    .is_some_and(|v| v.is_disabled && v.session_ids.is_empty())
            })
        }
    })
    .await;
    app.drained().await;
    // Let at least one more pass re-list the same window (its envelopes are duplicates).
    let lists = google.calls().len();
    let g = google.clone();
    wait_until("another catch-up pass", || {
        let g = g.clone();
        async move { g.calls().len() > lists }
    })
    .await;
    app.drained().await;
    for uid in &uids {
        let disables = looker
            .calls()
            .iter()
            .filter(|c| {
                c.method == "PATCH" && c.path == format!("/users/{uid}") && c.body.contains("is_disabled")
            })
            .count();
        assert_eq!(disables, 1, "user {uid} disabled once");
    }

    // The push of one of the same events arrives late: accepted, zero Looker calls.
    let before = looker.calls().len();
    let body = serde_json::to_vec(&activities[0]).unwrap();
    let r = app
        .http
        .post(format!("{}/hooks/google", app.base))
        .header("X-Goog-Channel-ID", "reportsApiId")
        .header("X-Goog-Channel-Token", TOKEN)
        .header("X-Goog-Resource-State", "SUSPEND_USER")
        .header("X-Goog-Message-Number", "99")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    app.drained().await;
    assert_eq!(
        looker.calls().len(),
        before,
        "a late push of a caught-up event makes no Looker call"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("gatehouse_intake_catchup_lag_seconds{source=\"google_workspace\"}"),
        "{metrics}"
    );
    app.stop().await;
}
