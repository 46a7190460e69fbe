//! Third-party conformance checkers against the real binary, from the pinned venv that
//! `scripts/conformance-venv.sh` installs (`make test` does it first): scim2-tester against
//! `/scim/v2`; the OCSF schemas (ocsf-json-schema, validated with jsonschema) against
//! `gatehouse audit export --format ocsf`.

use super::{bin, free_port, repo, wait_ready};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Every check scim2-tester 0.5.2 runs against our two resource types (133 while `/.search`
/// failed, whose success unlocks two more): fewer means checks were skipped or the suite broke,
/// and the run must not pass.
const SCIM2_TESTER_CHECKS: &str = "135";

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

