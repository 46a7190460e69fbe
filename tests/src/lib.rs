//! Harness for end-to-end tests and benches: a whole Gatehouse (ingress + processor, embedded
//! SQLite) started in-process on `127.0.0.1:0` with a fresh data directory, optionally against
//! the fake Looker.

use gatehouse_app::{self as app, Components, Running};
use gatehouse_domain::ports::{LedgerRow, StateStore};
use gatehouse_platform::config::Config;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_testkit::FakeLooker;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const OKTA_SECRET: &str = "test-okta-secret";

/// The handbook's fixtures folder (`../shared/fixtures` beside the repository).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

/// A bench's size from the environment: `name` if it is a positive integer, else `default`.
pub fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// The machine's load average (1, 5, 15 minutes), for a bench's report.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Write a bench's results at the repository root: `bench/<stem>.json` (pretty, one trailing
/// newline) and `bench/<stem>.md`.
pub fn write_bench_results(stem: &str, json: &serde_json::Value, md: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench");
    std::fs::create_dir_all(&dir).expect("create bench/");
    let text = serde_json::to_string_pretty(json).expect("bench results as JSON") + "\n";
    std::fs::write(dir.join(format!("{stem}.json")), text).expect("write the bench's JSON");
    std::fs::write(dir.join(format!("{stem}.md")), md).expect("write the bench's report");
}

pub fn okta_fixture(name: &str) -> Vec<u8> {
    let p = fixtures_dir().join("okta").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", p.display()))
}

pub struct Options {
    pub looker: Option<FakeLooker>,
    pub policy: Option<String>,
    pub max_attempts: u32,
    pub workers: usize,
    pub call_retries: usize,
    /// Reuse a data directory (to restart on the same state).
    pub data_dir: Option<PathBuf>,
    /// Appended to the generated config file (e.g. a `[scim]` or `[graph]` section).
    pub extra_toml: String,
    /// Run the intake alone, as `gatehouse-ingress` does (no processor: what is accepted stays
    /// queued).
    pub ingress_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            looker: None,
            policy: None,
            max_attempts: 5,
            workers: 8,
            call_retries: 6,
            data_dir: None,
            extra_toml: String::new(),
            ingress_only: false,
        }
    }
}

pub struct TestApp {
    /// The intake listener.
    pub base: String,
    /// The admin listener (`/metrics`, `/readyz`).
    pub admin: String,
    pub http: reqwest::Client,
    pub store: Sqlite,
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub data_dir: PathBuf,
}

pub async fn spawn_app(opts: Options) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| dir.path().join("data"));
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[okta]\nhook_secret = {:?}\n\
         [processor]\nworkers = {}\nmax_attempts = {}\ncall_retries = {}\n\
         retry_min_delay = \"5ms\"\nretry_max_delay = \"50ms\"\npoll_interval = \"10ms\"\ndeletion_sweep_interval = \"50ms\"\n",
        data_dir.display().to_string(),
        OKTA_SECRET,
        opts.workers,
        opts.max_attempts,
        opts.call_retries,
    );
    if let Some(policy) = &opts.policy {
        let p = dir.path().join("policy.toml");
        std::fs::write(&p, policy).unwrap();
        toml = format!("policy = {:?}\n{toml}", p.display().to_string());
    }
    if let Some(fake) = &opts.looker {
        toml.push_str(&format!(
            "[looker]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\ntimeout = \"5s\"\n",
            fake.base_url(),
            fake.client_id(),
            fake.client_secret()
        ));
    }
    toml.push('\n');
    toml.push_str(&opts.extra_toml);
    let cfg_path = dir.path().join("gatehouse.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let cfg = Config::load(Some(&cfg_path), |_| None).expect("test config is valid");
    let running = app::start(
        &cfg,
        Components {
            ingress: true,
            processor: !opts.ingress_only,
        },
    )
    .await
    .expect("app starts");
    TestApp {
        base: format!("http://{}", running.addr),
        admin: format!("http://{}", running.admin_addr),
        http: reqwest::Client::new(),
        store: running.store.clone(),
        running: Some(running),
        dir,
        data_dir,
    }
}

impl TestApp {
    pub async fn post_okta(&self, body: &[u8]) -> reqwest::Response {
        self.http
            .post(format!("{}/hooks/okta", self.base))
            .header("authorization", OKTA_SECRET)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Post a hook body, expect 200, and wait until the queue has drained.
    pub async fn deliver(&self, body: &[u8]) {
        let r = self.post_okta(body).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        self.drained().await;
    }

    /// Wait until every enqueued message is acked or dead-lettered.
    pub async fn drained(&self) {
        let store = self.store.clone();
        wait_until("queue drained", || {
            let s = store.clone();
            async move { s.queue_depth().await.unwrap() == 0 }
        })
        .await;
    }

    pub async fn ledger(&self) -> Vec<LedgerRow> {
        self.store.ledger_since(None).await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// Poll `cond` until it holds; panic with `what` after 20 s. Never a blind sleep.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The example policy shipped in the repository (moto has no service-specific credentials, so
/// the leaver sweep keeps them here; everything else is the example's).
pub fn example_policy() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml"))
        .unwrap()
        .replace(
            "service_specific_credentials = \"deactivate\"",
            "service_specific_credentials = \"keep\"",
        )
}

/// A Looker with the objects the example policy names.
pub struct Seeded {
    pub engineers: String,
    pub finance: String,
    pub unmanaged: String,
    pub viewer: String,
    pub developer: String,
    pub admin: String,
    pub team: String,
    pub email_rls: String,
}

pub fn seed_catalog(fake: &FakeLooker) -> Seeded {
    Seeded {
        engineers: fake.add_group("Engineers"),
        finance: fake.add_group("Finance Analysts"),
        unmanaged: fake.add_group("Hand Managed"),
        viewer: fake.add_role("Viewer"),
        developer: fake.add_role("Developer"),
        admin: fake.add_role("Hand Role"),
        team: fake.add_user_attribute("team"),
        email_rls: fake.add_user_attribute("email_rls"),
    }
}
