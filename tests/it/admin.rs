//! The admin surface and what it shows: `/metrics` and `/readyz` only on the admin listener,
//! and metric labels that payloads cannot multiply.

use gatehouse_e2e::{Options, okta_fixture, spawn_app};

#[tokio::test]
async fn metrics_and_readyz_answer_on_the_admin_listener_only() {
    let app = spawn_app(Options::default()).await;
    assert_ne!(app.base, app.admin);
    for (base, path, code) in [
        (&app.base, "/metrics", 404),
        (&app.base, "/readyz", 404),
        (&app.base, "/healthz", 200),
        (&app.admin, "/metrics", 200),
        (&app.admin, "/readyz", 200),
        (&app.admin, "/healthz", 200),
        (&app.admin, "/hooks/okta", 404),
    ] {
        let r = app.http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), code, "{base}{path}");
    }
    app.stop().await;
}

/// Series of one metric in a Prometheus text exposition.
fn series<'a>(metrics: &'a str, name: &str) -> Vec<&'a str> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .collect()
}

#[tokio::test]
async fn payload_event_types_and_paths_do_not_become_metric_labels() {
    let app = spawn_app(Options::default()).await;
    let template: serde_json::Value =
        serde_json::from_slice(&okta_fixture("event-hook.user.session.start.docs.json")).unwrap();
    let event = template["data"]["events"][0].clone();
    const REQUESTS: usize = 30;
    const PER_REQUEST: usize = 10;
    for r in 0..REQUESTS {
        let mut body = template.clone();
        body["data"]["events"] = (0..PER_REQUEST)
            .map(|i| {
                let n = r * PER_REQUEST + i;
                let mut e = event.clone();
                e["uuid"] = format!("0b5e7a1c-0000-4000-8000-{n:012x}").into();
                e["eventType"] = format!("flood{n}.x\u{1}\"y").into();
                e
            })
            .collect::<Vec<_>>()
            .into();
        let resp = app.post_okta(&serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
        // And a path nobody routes.
        let resp = app
            .http
            .get(format!("{}/nope/{r}/x{r}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
    // A known type still gets its own label.
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .await;
    let m = app.metrics().await;
    assert!(!m.contains("flood"), "a payload event type reached a label");
    assert!(!m.contains("/nope/"), "a raw path reached a label");
    let received = series(&m, "gatehouse_events_received_total");
    // Other tests of this process share the recorder: at least the flood, in one series.
    let ignored = received
        .iter()
        .find(|l| l.contains("source=\"okta\"") && l.contains("kind=\"ignored\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(ignored >= (REQUESTS * PER_REQUEST) as f64, "{received:#?}");
    assert!(
        received
            .iter()
            .any(|l| l.contains("source=\"okta\"") && l.contains("kind=\"user_deactivated\"")),
        "{received:#?}"
    );
    // Bounded by the closed label sets (sources x kinds x actionable), not by the 300 types.
    assert!(received.len() < 100, "{} series: {received:#?}", received.len());
    // The help text registered when the recorder was installed (gatehouse_platform::events).
    let help = format!(
        "# HELP gatehouse_events_received_total {}\n",
        gatehouse_platform::events::EVENTS_RECEIVED.help
    );
    assert!(m.contains(&help), "no {help:?} in /metrics");
    app.stop().await;
}
