//! The `gatehouse` binary as a user runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod breaker;
mod conformance;
mod crash;
mod estimate;
mod leader;
mod looker_core;
mod ops;
mod policy_audit;
mod queues;
mod report_access;
mod report_sla;
mod rotate;
mod safety;
mod traces;

/// A port free right now on loopback.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Poll `{admin}/readyz` (the admin listener) until it answers 200; panic at `deadline`.
async fn wait_ready(http: &reqwest::Client, admin: &str, deadline: tokio::time::Instant) {
    while http
        .get(format!("{admin}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "standalone did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    // Never inherit a developer's real settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("GATEHOUSE_") || k.starts_with("OTEL_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    // The admin listener's default port would collide between tests running at once.
    c.env("GATEHOUSE_ADMIN_LISTEN", "127.0.0.1:0");
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("../shared/fixtures/okta").join(name)
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_subcommands() {
    let o = bin().arg("--help").output().unwrap();
    assert!(o.status.success());
    let (out, _) = text(&o);
    for cmd in ["standalone", "plan", "reconcile", "audit", "dlq"] {
        assert!(out.contains(cmd), "{cmd} missing from --help:\n{out}");
    }
}

#[test]
fn a_bad_config_exits_64_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[processor]\nworkers = \"lots\"\n").unwrap();
    let o = bin()
        .args(["--config", cfg.to_str().unwrap(), "standalone"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).1.contains("processor.workers"), "{}", text(&o).1);

    let o = bin()
        .arg("standalone")
        .env("GATEHOUSE_LOOKER_URL", "https://x.example")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).1.contains("looker.client_id"), "{}", text(&o).1);

    let o = bin()
        .arg("standalone")
        .env("GATEHOUSE_POLICY", dir.path().join("none.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).1.contains("policy"), "{}", text(&o).1);
}

/// Issue 11, finding 1: an empty Okta secret used to start an intake that accepted hooks with
/// no `Authorization` at all. Empty or weak, it is a config error naming the variable.
#[test]
fn an_empty_or_weak_okta_secret_exits_64_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for secret in ["", "hook", "ssssssssssssssssssss"] {
        let o = bin()
            .arg("standalone")
            .env("GATEHOUSE_DATA_DIR", dir.path().join("data"))
            .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
            .env("GATEHOUSE_OKTA_HOOK_SECRET", secret)
            .output()
            .unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(64), "{secret:?}: {err}");
        assert!(err.contains("GATEHOUSE_OKTA_HOOK_SECRET"), "{secret:?}: {err}");
    }
}

#[test]
fn a_bad_policy_exits_64_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[offboarding]\ndisabel = true\n").unwrap();
    let o = bin()
        .args(["plan", "--event"])
        .arg(fixture("event-hook.user.lifecycle.deactivate.constructed.json"))
        .env("GATEHOUSE_POLICY", &policy)
        .env("GATEHOUSE_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).1.contains("disabel"), "{}", text(&o).1);
}

#[test]
fn plan_in_dry_run_prints_every_call_that_may_apply() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["plan", "--event"])
        .arg(fixture("event-hook.user.lifecycle.deactivate.constructed.json"))
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("PATCH /api/4.0/users/{id of john.doe@example.com} {\"is_disabled\":true}"),
        "{out}"
    );
    assert!(out.contains("# rule: offboarding.revoke_sessions"), "{out}");
    assert!(out.contains("no Looker is configured"), "{out}");
}

#[test]
fn plan_for_a_non_event_file_is_a_clear_error() {
    let o = bin()
        .args(["plan", "--event"])
        .arg(fixture("event-hook-verification.response.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).1.contains("not an okta event hook body"),
        "{}",
        text(&o).1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_json_reads_looker_and_changes_nothing() {
    let fake = gatehouse_testkit::FakeLooker::start().await;
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    let session = fake.add_session(&uid);
    let key = fake.add_api3_key(&uid);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::from(bin());
    let o = cmd
        .args(["plan", "--json", "--event"])
        .arg(fixture("event-hook.user.lifecycle.deactivate.constructed.json"))
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .env("GATEHOUSE_LOOKER_URL", fake.base_url())
        .env("GATEHOUSE_LOOKER_CLIENT_ID", fake.client_id())
        .env("GATEHOUSE_LOOKER_CLIENT_SECRET", fake.client_secret())
        .output()
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        !out.contains(fake.client_secret()) && !err.contains(fake.client_secret()),
        "secret printed"
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = v[0]["steps"].as_array().unwrap();
    let calls: Vec<String> = steps
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["method"].as_str().unwrap(),
                s["path"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            format!("PATCH /api/4.0/users/{uid}"),
            format!("DELETE /api/4.0/users/{uid}/sessions/{session}"),
            format!("DELETE /api/4.0/users/{uid}/credentials_api3/{key}"),
        ]
    );
    assert_eq!(steps[0]["body"], serde_json::json!({"is_disabled": true}));
    assert_eq!(fake.write_calls(), 0, "plan changes nothing");
}

/// A one-off command's Looker reads count against the month's budget too: `plan` adds them to
/// the state store before it exits (a process of its own, so nothing else would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_adds_its_looker_calls_to_the_month_budget() {
    use gatehouse_domain::ports::LookerCallCounts;
    let fake = gatehouse_testkit::FakeLooker::start().await;
    fake.add_user("john.doe@example.com", "John", "Doe");
    let dir = tempfile::tempdir().unwrap();
    let month = gatehouse_domain::ports::call_month(gatehouse_domain::clock::now());
    for round in 1..=2u64 {
        let o = tokio::process::Command::from(bin())
            .args(["plan", "--event"])
            .arg(fixture("event-hook.user.lifecycle.deactivate.constructed.json"))
            .env("GATEHOUSE_DATA_DIR", dir.path())
            .env("GATEHOUSE_LOOKER_URL", fake.base_url())
            .env("GATEHOUSE_LOOKER_CLIENT_ID", fake.client_id())
            .env("GATEHOUSE_LOOKER_CLIENT_SECRET", fake.client_secret())
            .env("GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA", "1000")
            .output()
            .await
            .unwrap();
        assert!(o.status.success(), "{}", text(&o).1);
        let db = gatehouse_store::sqlite::Sqlite::open(dir.path()).await.unwrap();
        let counted = db.looker_calls(&month).await.unwrap();
        db.close().await;
        let made = fake.calls().len() as u64;
        assert!(made >= 3 * round, "login, catalog and search each run: {made}");
        assert_eq!(counted, made, "round {round}: every call of every run is counted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_accepts_a_hook_records_the_plan_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let mut child = tokio::process::Command::from(bin())
        .arg("standalone")
        .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .env("GATEHOUSE_OKTA_HOOK_SECRET", "s3cret-hook-0123456789")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    wait_ready(&http, &format!("http://127.0.0.1:{admin_port}"), deadline).await;
    let body = std::fs::read(fixture("event-hook.user.lifecycle.deactivate.constructed.json")).unwrap();
    let r = http
        .post(format!("{base}/hooks/okta"))
        .header("authorization", "s3cret-hook-0123456789")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The dry-run plan reaches the ledger; `gatehouse audit export` shows it.
    let mut rows = Vec::new();
    while rows.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no ledger rows");
        let o = tokio::process::Command::from(bin())
            .args(["audit", "export"])
            .env("GATEHOUSE_DATA_DIR", dir.path())
            .output()
            .await
            .unwrap();
        rows = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
    }
    assert!(rows.iter().all(|r| r["status"] == "dry_run"
        && r["envelope_id"] == "okta:default:ab62c0bc-2837-11eb-9823-9fb8f750c5a9"));
    // Issue 15: each row names the event that caused it and the policy it was decided with
    // (the built-in default: the digest of an empty file).
    for r in &rows {
        assert_eq!(
            r["actor"], "event:okta:default:ab62c0bc-2837-11eb-9823-9fb8f750c5a9",
            "{r}"
        );
        assert_eq!(
            r["policy_digest"], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "{r}"
        );
    }

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    let mut err = String::new();
    use tokio::io::AsyncReadExt;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert!(
        !err.contains("s3cret-hook-0123456789"),
        "the hook secret reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_reconcile_show_cloud_calls_and_change_nothing() {
    let gcp = gatehouse_testkit::gcp_iam_fake::FakeGcpIam::start().await;
    gcp.add_resource(
        "projects/p1",
        serde_json::json!([{ "role": "roles/viewer", "members": ["user:john.doe@example.com"] }]),
    );
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"all\"\nwhen = \"everyone\"\n\
         gcp_bindings = [{ resource = \"projects/p1\", role = \"roles/viewer\" }]\n",
    )
    .unwrap();
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\npolicy = {:?}\n{}",
            dir.path().join("data"),
            policy,
            gcp.toml()
        ),
    )
    .unwrap();
    let o = tokio::process::Command::from(bin())
        .args(["--config", cfg.to_str().unwrap(), "plan", "--event"])
        .arg(fixture("event-hook.user.lifecycle.deactivate.constructed.json"))
        .output()
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains(
            "gcp projects/p1: getIamPolicy → remove user:john.doe@example.com from roles/viewer → setIamPolicy"
        ),
        "{out}"
    );
    assert!(
        !out.contains(&gcp.token()) && !err.contains(&gcp.token()),
        "token printed"
    );
    let o = tokio::process::Command::from(bin())
        .args(["--config", cfg.to_str().unwrap(), "reconcile", "--json"])
        .output()
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["people"].as_u64(), v["applied"].as_bool()),
        (Some(0), Some(false))
    );
    assert_eq!(v["reads"]["gcp"], 1, "{out}");
    assert_eq!(
        gcp.count("setIamPolicy"),
        0,
        "plan and a dry-run reconcile change nothing"
    );
    assert_eq!(
        gcp.members("projects/p1", "roles/viewer"),
        vec!["user:john.doe@example.com"]
    );
}
