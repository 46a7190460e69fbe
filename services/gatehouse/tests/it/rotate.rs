//! `gatehouse rotate SECRET [--dry-run]` against the GCP fakes, on SQLite and on PostgreSQL state.

use super::{bin, text};
use gatehouse_testkit::gcp_sa_keys_fake::{FakeSaKeys, SaKeyInSecret};
use gatehouse_testkit::secret_manager_fake::FakeSecretManager;

const SA: &str = "svc-cli@gatehouse-test.iam.gserviceaccount.com";
const SECRET: &str = "projects/gatehouse-test/secrets/svc-cli-key";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_dry_run_prints_the_plan_and_changes_nothing_then_rotates() {
    let SaKeyInSecret { sm, iam, old_key } = SaKeyInSecret::start(SA, SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[rotator.gcp]\nsecret_manager_url = {:?}\niam_url = {:?}\n\n\
             [[rotator.secrets]]\nname = \"cli\"\n\
             kind = {{ type = \"gcp_service_account_key\", email = {SA:?} }}\n\
             store = {{ type = \"gcp_secret_manager\", name = {SECRET:?} }}\n",
            dir.path().join("data"),
            sm.url(),
            iam.url()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut c = tokio::process::Command::from(bin());
        c.arg("--config")
            .arg(&cfg)
            .args(args)
            .env("GATEHOUSE_GCP_ACCESS_TOKEN", sm.token());
        c
    };
    let o = run(&["rotate", "cli", "--dry-run"]).output().await.unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains(&format!("key {old_key}")), "{out}");
    assert!(out.contains("1. create"), "{out}");
    assert_eq!(sm.write_calls(), 0, "dry run changes nothing");
    assert_eq!(iam.create_calls(), 0);
    assert!(!out.contains(&sm.token()) && !err.contains(&sm.token()));

    let o = run(&["rotate", "cli"]).output().await.unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("finished"), "{out}");
    assert_eq!(iam.create_calls(), 1);
    assert_eq!(sm.versions(SECRET).len(), 2);
    assert!(iam.can_authenticate(&sm.latest(SECRET).unwrap()));
    let private = serde_json::from_str::<serde_json::Value>(&sm.latest(SECRET).unwrap()).unwrap();
    let pk = private["private_key"].as_str().unwrap();
    assert!(
        !out.contains(pk) && !err.contains(pk),
        "a secret value was printed"
    );

    let o = run(&["rotate", "nope"]).output().await.unwrap();
    assert_eq!(o.status.code(), Some(64));
}

/// `standalone` with a declared secret: an Okta deactivation of a holder makes the processor
/// request a rotation and the embedded rotator carries it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_a_holder_rotates_their_secret_in_standalone() {
    use std::time::Duration;
    let sm = FakeSecretManager::start().await;
    let iam = FakeSaKeys::start().await;
    iam.set_token(&sm.token());
    iam.add_service_account(SA);
    let file = iam.add_key(SA);
    sm.create_secret(SECRET);
    sm.add_version(SECRET, &file);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatehouse.toml");
    let (port, admin_port) = (super::free_port(), super::free_port());
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\ndata_dir = {:?}\n[okta]\nhook_secret = \"hook-secret-0123456789\"\n\
             [rotator]\npoll_interval = \"100ms\"\n[rotator.gcp]\nsecret_manager_url = {:?}\niam_url = {:?}\n\n\
             [[rotator.secrets]]\nname = \"held\"\nholders = [\"John.Doe@example.com\"]\n\
             kind = {{ type = \"gcp_service_account_key\", email = {SA:?} }}\n\
             store = {{ type = \"gcp_secret_manager\", name = {SECRET:?} }}\n",
            dir.path().join("data"),
            sm.url(),
            iam.url()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::from(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("standalone")
        .env_remove("GATEHOUSE_ADMIN_LISTEN")
        .env("GATEHOUSE_GCP_ACCESS_TOKEN", sm.token())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    super::wait_ready(&http, &format!("http://127.0.0.1:{admin_port}"), deadline).await;
    let body = std::fs::read(super::fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .unwrap();
    let r = http
        .post(format!("{base}/hooks/okta"))
        .header("authorization", "hook-secret-0123456789")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    while sm.versions(SECRET).len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the holder's secret was not rotated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(iam.can_authenticate(&sm.latest(SECRET).unwrap()));
    let o = tokio::process::Command::from(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["audit", "export"])
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.contains("\"rule\":\"holder_offboarded\"") && l.contains("secret:held")),
        "{out}"
    );
    child.kill().await.unwrap();
}

/// With `[state]` on PostgreSQL, `gatehouse rotate` keeps the rotation and its ledger rows in
/// that database (where the processors write rotation requests and other rotators look), and
/// opens no SQLite file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keeps_its_state_in_postgres_when_the_state_is_postgres() {
    use sqlx::{Connection, Row};
    let database = gatehouse_testkit::postgres::fresh_database().await;
    let sm = FakeSecretManager::start().await;
    let iam = FakeSaKeys::start().await;
    iam.set_token(&sm.token());
    iam.add_service_account(SA);
    let file = iam.add_key(SA);
    sm.create_secret(SECRET);
    sm.add_version(SECRET, &file);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {data:?}\n[rotator.gcp]\nsecret_manager_url = {:?}\niam_url = {:?}\n\n\
             [[rotator.secrets]]\nname = \"cli\"\n\
             kind = {{ type = \"gcp_service_account_key\", email = {SA:?} }}\n\
             store = {{ type = \"gcp_secret_manager\", name = {SECRET:?} }}\n",
            sm.url(),
            iam.url()
        ),
    )
    .unwrap();
    let o = tokio::process::Command::from(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["rotate", "cli"])
        .env("GATEHOUSE_GCP_ACCESS_TOKEN", sm.token())
        .env("GATEHOUSE_STATE", "postgres")
        .env("GATEHOUSE_DATABASE_URL", &database)
        .output()
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("finished"), "{out}");
    assert!(iam.can_authenticate(&sm.latest(SECRET).unwrap()));
    assert!(
        !data.join("gatehouse.db").exists(),
        "no sqlite database was opened"
    );

    let mut db = sqlx::PgConnection::connect(&database).await.unwrap();
    let rows = sqlx::query("SELECT secret, trigger, phase FROM rotations")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(rows, vec![("cli".into(), "manual".into(), "finished".into())]);
    let steps: Vec<String> =
        sqlx::query("SELECT call->>'path' FROM ledger WHERE subject = 'secret:cli' ORDER BY seq")
            .fetch_all(&mut db)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    assert_eq!(
        steps,
        ["snapshot", "created", "tested", "set", "finished"].map(|s| format!("/rotation/cli/{s}"))
    );
    db.close().await.ok();
}

/// A Looker API3 rotation's calls (the admin's list/create/delete and the login that tests the
/// new key) count against the month's Looker budget: `gatehouse rotate` adds them before exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_looker_key_counts_its_calls_against_the_budget() {
    use gatehouse_domain::ports::LookerCallCounts;
    const LOOKER_SECRET: &str = "projects/gatehouse-test/secrets/looker-etl";
    let fake = gatehouse_testkit::FakeLooker::start().await;
    let uid = fake.add_user("etl@example.com", "Etl", "Bot");
    let old_key = fake.add_api3_key(&uid);
    let (client_id, old_secret) = fake.api3_credentials(&old_key).unwrap();
    let sm = FakeSecretManager::start().await;
    sm.create_secret(LOOKER_SECRET);
    let doc = serde_json::json!({ "key_id": old_key, "client_id": client_id, "client_secret": old_secret });
    sm.add_version(LOOKER_SECRET, &doc.to_string());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[looker.budget]\nmonthly_call_quota = 1000\n\
             [rotator.gcp]\nsecret_manager_url = {:?}\n\n\
             [[rotator.secrets]]\nname = \"looker-etl\"\n\
             kind = {{ type = \"looker_api3\", user_id = {uid:?} }}\n\
             store = {{ type = \"gcp_secret_manager\", name = {LOOKER_SECRET:?} }}\n",
            dir.path().join("data"),
            sm.url(),
        ),
    )
    .unwrap();
    let o = tokio::process::Command::from(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["rotate", "looker-etl"])
        .env("GATEHOUSE_GCP_ACCESS_TOKEN", sm.token())
        .env("GATEHOUSE_LOOKER_URL", fake.base_url())
        .env("GATEHOUSE_LOOKER_CLIENT_ID", fake.client_id())
        .env("GATEHOUSE_LOOKER_CLIENT_SECRET", fake.client_secret())
        .output()
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("finished"), "{out}");
    let made = fake.calls().len() as u64;
    assert!(made >= 5, "admin login, list, create, test login, whoami: {made}");
    let db = gatehouse_store::sqlite::Sqlite::open(&dir.path().join("data"))
        .await
        .unwrap();
    let month = gatehouse_domain::ports::call_month(gatehouse_domain::clock::now());
    assert_eq!(
        db.looker_calls(&month).await.unwrap(),
        made,
        "every call Looker saw"
    );
    db.close().await;
}
