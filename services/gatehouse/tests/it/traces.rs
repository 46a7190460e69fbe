//! OpenTelemetry traces end to end: `gatehouse standalone` with the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a fake collector takes an Okta hook, applies the
//! offboarding to the fake Looker, stops on SIGTERM (which flushes the exporter), and the
//! collector holds one trace from the intake request to every Looker call, with no secret.

use super::{bin, fixture, wait_ready};
use gatehouse_testkit::{FakeCollector, FakeLooker, ReceivedSpan};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::process::Child;
use tokio::time::Instant;

const HOOK_SECRET: &str = "s3cret-hook-for-traces";
const ENVELOPE_ID: &str = "okta:default:ab62c0bc-2837-11eb-9823-9fb8f750c5a9";

/// Start standalone with `env`, send the deactivate hook, wait until `done`, stop with SIGTERM.
async fn run_standalone(env: &[(&str, String)], done: impl Fn() -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (super::free_port(), super::free_port());
    let mut cmd = tokio::process::Command::from(bin());
    cmd.arg("standalone")
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .env("GATEHOUSE_OKTA_HOOK_SECRET", HOOK_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    wait_ready(&http, &format!("http://127.0.0.1:{admin_port}"), deadline).await;
    let body = std::fs::read(fixture("event-hook.user.lifecycle.deactivate.constructed.json")).unwrap();
    let r = http
        .post(format!("{base}/hooks/okta"))
        .header("authorization", HOOK_SECRET)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    while !done() {
        assert!(Instant::now() < deadline, "the event was not processed in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop(&mut child).await;
}

async fn stop(child: &mut Child) {
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("standalone did not stop after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {name:?} span in {:#?}",
        names(spans)
    );
    found[0]
}

fn names(spans: &[ReceivedSpan]) -> Vec<(&str, &str, &str)> {
    spans
        .iter()
        .map(|s| (s.name.as_str(), s.span_id.as_str(), s.parent_span_id.as_str()))
        .collect()
}

/// Is `span` below `ancestor` (following parent links)?
fn descends_from(spans: &[ReceivedSpan], span: &ReceivedSpan, ancestor: &ReceivedSpan) -> bool {
    let mut parent = span.parent_span_id.as_str();
    while !parent.is_empty() {
        if parent == ancestor.span_id {
            return true;
        }
        parent = spans
            .iter()
            .find(|s| s.span_id == parent)
            .map_or("", |s| s.parent_span_id.as_str());
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_hook_to_every_looker_call_without_secrets() {
    let looker = FakeLooker::start().await;
    let uid = looker.add_user("john.doe@example.com", "John", "Doe");
    looker.add_session(&uid);
    looker.add_api3_key(&uid);
    let collector = FakeCollector::start().await;
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.base_url()),
        ("OTEL_SERVICE_NAME", "gatehouse-e2e".to_string()),
        ("GATEHOUSE_LOOKER_URL", looker.base_url()),
        ("GATEHOUSE_LOOKER_CLIENT_ID", looker.client_id().to_string()),
        (
            "GATEHOUSE_LOOKER_CLIENT_SECRET",
            looker.client_secret().to_string(),
        ),
    ];
    // Disable, delete the session, delete the API3 key.
    run_standalone(&env, || looker.write_calls() >= 3).await;

    // The exporter was flushed on SIGTERM: everything is here once the process has exited.
    let spans = collector.spans();
    assert!(
        collector.statuses().iter().all(|s| *s == 200),
        "{:?}",
        collector.statuses()
    );
    let ingress = one(&spans, "POST /hooks/okta");
    assert_eq!(ingress.kind, "server");
    assert_eq!(ingress.attr("source"), Some("okta"));
    assert_eq!(ingress.attr("accepted"), Some("1"));
    assert_eq!(ingress.attr("http.route"), Some("/hooks/okta"));
    assert_eq!(ingress.attr("http.response.status_code"), Some("200"));
    assert_eq!(ingress.parent_span_id, "", "the intake request starts the trace");
    assert_eq!(
        ingress.resource.get("service.name").map(String::as_str),
        Some("gatehouse-e2e")
    );

    // The processor's span continues the intake's trace through the queue (the envelope's
    // traceparent), with what an operator needs to find the event.
    let process = one(&spans, "process");
    assert_eq!(process.kind, "consumer");
    assert_eq!(
        (process.trace_id.as_str(), process.parent_span_id.as_str()),
        (ingress.trace_id.as_str(), ingress.span_id.as_str())
    );
    assert_eq!(process.attr("envelope_id"), Some(ENVELOPE_ID));
    assert_eq!(process.attr("source"), Some("okta"));
    assert_eq!(process.attr("subject"), Some("okta:00u3m90rxKjGQ0G6L1d6"));
    assert_eq!(process.attr("outcome"), Some("applied"));

    let plan = one(&spans, "plan");
    let apply = one(&spans, "apply");
    assert_eq!(plan.parent_span_id, process.span_id);
    assert_eq!(apply.parent_span_id, process.span_id);
    assert_eq!(plan.attr("looker_steps"), Some("3"));
    assert_eq!(
        (apply.attr("writes"), apply.attr("dry_run")),
        (Some("3"), Some("false"))
    );

    // Every Looker call is a client span in the trace: reads under `plan`, writes under
    // `apply`, named by method and endpoint template, with the status.
    let looker_spans: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.attributes.contains_key("url.template"))
        .collect();
    assert_eq!(
        looker_spans.len(),
        looker.calls().len(),
        "one span per Looker call"
    );
    for s in &looker_spans {
        assert_eq!(s.kind, "client");
        assert_eq!(s.trace_id, ingress.trace_id, "{} is in another trace", s.name);
        assert_eq!(
            s.name,
            format!(
                "{} {}",
                s.attr("http.request.method").unwrap(),
                s.attr("url.template").unwrap()
            )
        );
        let status = s.attr("http.response.status_code").unwrap_or_default();
        assert!(status.starts_with('2'), "{}: {status}", s.name);
    }
    for (name, under) in [
        ("POST /login", plan),
        ("GET /users/search", plan),
        ("PATCH /users/{id}", apply),
        ("DELETE /users/{id}/sessions/{id}", apply),
        ("DELETE /users/{id}/credentials_api3/{id}", apply),
    ] {
        let s = one(&spans, name);
        assert!(
            descends_from(&spans, s, under),
            "{name} is not under {}",
            under.name
        );
    }

    // No secret, token or raw payload in any span: the hook secret, the Looker client secret,
    // every access token Looker issued, the hook body's own text.
    let tokens: Vec<String> = looker
        .calls()
        .iter()
        .filter_map(|c| {
            c.authorization
                .as_deref()?
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        })
        .collect();
    assert!(!tokens.is_empty());
    let mut forbidden = vec![
        HOOK_SECRET.to_string(),
        looker.client_secret().to_string(),
        "Deactivate Okta User".to_string(),
    ];
    forbidden.extend(tokens);
    for s in &spans {
        let text = s.all_text();
        for f in &forbidden {
            assert!(
                !text.contains(f.as_str()),
                "{} carries a secret or payload: {text}",
                s.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_traces_disabled_nothing_reaches_the_collector() {
    let collector = FakeCollector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger_rows = || {
        let o = bin()
            .args(["audit", "export"])
            .env("GATEHOUSE_DATA_DIR", dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count()
    };
    // The endpoint is set, but the standard switch turns the SDK off: no exporter is built.
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.base_url()),
        ("OTEL_SDK_DISABLED", "true".to_string()),
        ("GATEHOUSE_DATA_DIR", dir.path().display().to_string()),
    ];
    run_standalone(&env, || ledger_rows() > 0).await;
    assert_eq!(collector.statuses(), Vec::<u16>::new(), "nothing may be exported");
}
