//! Third-party conformance checkers against the real binary, from the pinned venv that
//! `scripts/conformance-venv.sh` installs (`make test` does it first): scim2-tester against
//! `/scim/v2`; the OCSF schemas (ocsf-json-schema, validated with jsonschema) against
//! `gatehouse audit export --format ocsf`.

use super::{bin, free_port, repo, wait_ready};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{LedgerEntry, StateStore};
use gatehouse_store::sqlite::Sqlite;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Every check scim2-tester 0.5.2 runs against our two resource types (133 while `/.search`
/// failed, whose success unlocks two more): fewer means checks were skipped or the suite broke,
/// and the run must not pass.
const SCIM2_TESTER_CHECKS: &str = "135";

/// The OCSF version `gatehouse audit export --format ocsf` follows (`ocsf::OCSF_VERSION`).
const OCSF_VERSION: &str = "1.1.0";

/// The python of the conformance venv.
fn conformance_python() -> PathBuf {
    let tools = std::env::var_os("GATEHOUSE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/gatehouse-tools")
        });
    let python = tools.join("conformance-venv/bin/python");
    assert!(
        python.exists(),
        "{} does not exist: run `scripts/conformance-venv.sh` (or `make test`) to install scim2-tester and the OCSF schemas",
        python.display()
    );
    python
}

/// scim2-tester (RFC 7643/7644 conformance, PyPI) passes every check against `gatehouse
/// standalone`'s `/scim/v2`, including `POST /.search` and PATCH of the whole enterprise
/// extension (issue 15, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scim2_tester_passes_every_check_against_the_scim_server() {
    const TOKEN: &str = "scim2-tester-token-0123456789";
    let python = conformance_python();
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\ndata_dir = {:?}\n\
             [[scim.tokens]]\nname = \"scim2-tester\"\ntoken = \"{TOKEN}\"\n",
            dir.path().join("data").display().to_string(),
        ),
    )
    .unwrap();
    let log_path = dir.path().join("gatehouse.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = tokio::process::Command::from(bin());
    cmd.arg("--config").arg(&config).arg("standalone");
    cmd.env_remove("GATEHOUSE_ADMIN_LISTEN");
    let _child = cmd
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    wait_ready(&http, &format!("http://127.0.0.1:{admin_port}"), deadline).await;

    let out = tokio::process::Command::new(python)
        .arg(repo().join("tools/conformance/scim2_tester_run.py"))
        .arg(format!("http://127.0.0.1:{port}/scim/v2"))
        .arg(SCIM2_TESTER_CHECKS)
        .env("SCIM_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scim2-tester failed:\n{stdout}\n{}\ngatehouse log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    assert!(
        stdout.contains(&format!("{SCIM2_TESTER_CHECKS} checks, 0 failed")),
        "{stdout}"
    );
}

fn ledger_entry(
    n: i64,
    target: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
    status: &str,
) -> LedgerEntry {
    LedgerEntry {
        at: chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + n * 1000).unwrap(),
        envelope_id: format!("okta:env-{n}"),
        subject: "okta:00u1".into(),
        event: "user_deactivated".into(),
        rule: "offboarding".into(),
        target: target.into(),
        call: HttpCall {
            method,
            path: path.into(),
            body,
        },
        status: status.into(),
        policy_digest: Some("d".repeat(64)),
        actor: Some(if n % 2 == 0 {
            format!("event:okta:env-{n}")
        } else {
            "operator:alice".into()
        }),
    }
}

/// Every kind of ledger row, exported with `gatehouse audit export --format ocsf`, is a valid
/// OCSF 1.1.0 event by the third-party ocsf-json-schema + jsonschema validator (issue 15,
/// item 4); both classes occur.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_ocsf_validates_against_the_ocsf_schema() {
    let python = conformance_python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Sqlite::open(&data).await.unwrap();
    let aws = |action: &str| {
        Some(serde_json::json!({"Action": action, "UserName": "pat", "Version": "2010-05-08"}))
    };
    let rows = vec![
        ledger_entry(
            1,
            "looker",
            Method::Post,
            "/users",
            Some(serde_json::json!({"email": "a@example.com"})),
            "ok",
        ),
        ledger_entry(
            2,
            "looker",
            Method::Patch,
            "/users/7",
            Some(serde_json::json!({"is_disabled": true})),
            "ok",
        ),
        ledger_entry(
            3,
            "looker",
            Method::Patch,
            "/users/7",
            Some(serde_json::json!({"is_disabled": false})),
            "dry_run",
        ),
        ledger_entry(4, "looker", Method::Delete, "/users/7", None, "404 already gone"),
        ledger_entry(
            5,
            "looker",
            Method::Patch,
            "/users/7",
            Some(serde_json::json!({"first_name": "A"})),
            "ok",
        ),
        ledger_entry(
            6,
            "looker",
            Method::Post,
            "/groups/3/users",
            Some(serde_json::json!({"user_id": "7"})),
            "ok",
        ),
        ledger_entry(
            7,
            "looker",
            Method::Delete,
            "/groups/3/users/7",
            None,
            "error: looker 500",
        ),
        ledger_entry(
            8,
            "looker",
            Method::Put,
            "/users/7/roles",
            Some(serde_json::json!([1, 2])),
            "ok",
        ),
        ledger_entry(9, "looker", Method::Delete, "/users/7/sessions/4", None, "ok"),
        ledger_entry(
            10,
            "looker",
            Method::Patch,
            "/users/7/attribute_values/2",
            Some(serde_json::json!({"value": "x"})),
            "ok",
        ),
        ledger_entry(11, "aws", Method::Post, "/", aws("CreateUser"), "200"),
        ledger_entry(12, "aws", Method::Post, "/", aws("AttachUserPolicy"), "200"),
        ledger_entry(13, "aws", Method::Post, "/", aws("DetachUserPolicy"), "200"),
        ledger_entry(14, "aws", Method::Post, "/", aws("RemoveUserFromGroup"), "200"),
        ledger_entry(15, "aws", Method::Post, "/", aws("UpdateAccessKey"), "429"),
        ledger_entry(16, "aws", Method::Post, "/", aws("DeleteLoginProfile"), "report"),
        ledger_entry(17, "aws", Method::Post, "/", aws("DeleteUser"), "200"),
        ledger_entry(
            18,
            "gcp",
            Method::Post,
            "/v1/projects/p:setIamPolicy",
            Some(serde_json::json!({"remove": {"role": "roles/viewer", "member": "user:a@example.com"}})),
            "200",
        ),
        ledger_entry(
            19,
            "gcp",
            Method::Post,
            "/v1/projects/p:setIamPolicy",
            Some(serde_json::json!({"add": {"role": "roles/viewer", "member": "user:a@example.com"}})),
            "200",
        ),
    ];
    db.append_ledger(&rows).await.unwrap();
    db.close().await;

    let o = bin()
        .args(["audit", "export", "--format", "ocsf"])
        .env("GATEHOUSE_DATA_DIR", &data)
        .output()
        .unwrap();
    let (events, err) = crate::text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(events.lines().count(), rows.len(), "{events}");

    let mut child = tokio::process::Command::new(python)
        .arg(repo().join("tools/conformance/ocsf_validate.py"))
        .arg(OCSF_VERSION)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(events.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "OCSF validation failed:\n{report}\n{}\nevents:\n{events}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("ocsf {OCSF_VERSION}: {} events, 0 invalid", rows.len()))
            && report.contains("'account_change': 8")
            && report.contains("'entity_management': 11"),
        "{report}"
    );
}
