//! One leader per scheduled reconcile (issue 14, item 4), with real processes: two
//! `gatehouse standalone` processes share one PostgreSQL state store and reconcile the fake
//! Looker every 2 seconds. Every finished tick was reconciled by exactly one of them (one
//! "scheduled reconcile done" log line across both, one page read at the fake, one access
//! snapshot, one audit run). Then the fake holds the page read of a tick, the replica holding
//! that tick's lease is killed with SIGKILL mid-run, and the other one takes the tick over once
//! the lease lapses and finishes it: the tick is neither lost nor completed twice.
//!
//! Needs PostgreSQL: `scripts/with-servers.sh cargo test -p gatehouse --test it leader`.

use super::{bin, free_port, wait_ready};
use gatehouse_testkit::FakeLooker;
use serde_json::Value;
use sqlx::{PgPool, Row};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::time::Instant;

const DONE: &str = "scheduled reconcile done";
const STANDING_BY: &str = "another replica runs this scheduled reconcile; standing by";
const TAKING_OVER: &str = "the leader of this scheduled reconcile stopped renewing; taking it over";

struct Replica {
    child: Mutex<Child>,
    pid: u32,
    /// Its JSON log lines (stderr), as they come.
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Replica {
    async fn start(fake: &FakeLooker, db: &str, cfg: &std::path::Path, data: &std::path::Path) -> Replica {
        let (port, admin) = (free_port(), free_port());
        let mut child = tokio::process::Command::from(bin())
            .args(["--config", cfg.to_str().unwrap(), "standalone"])
            .env("RUST_LOG", "warn,gatehouse_engine=info")
            .env("GATEHOUSE_LOG_FORMAT", "json")
            .env("GATEHOUSE_LISTEN", format!("127.0.0.1:{port}"))
            .env("GATEHOUSE_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
            .env("GATEHOUSE_DATA_DIR", data)
            .env("GATEHOUSE_OKTA_HOOK_SECRET", "s3cret-hook-0123456789")
            .env("GATEHOUSE_LOOKER_URL", fake.base_url())
            .env("GATEHOUSE_LOOKER_CLIENT_ID", fake.client_id())
            .env("GATEHOUSE_LOOKER_CLIENT_SECRET", fake.client_secret())
            .env("GATEHOUSE_STATE", "postgres")
            .env("GATEHOUSE_DATABASE_URL", db)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let v = serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                sink.lock().unwrap_or_else(PoisonError::into_inner).push(v);
            }
        });
        let http = reqwest::Client::new();
        wait_ready(
            &http,
            &format!("http://127.0.0.1:{admin}"),
            Instant::now() + Duration::from_secs(60),
        )
        .await;
        Replica {
            child: Mutex::new(child),
            pid,
            logs,
        }
    }

    /// The ticks of its log lines with this message.
    fn ticks(&self, message: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|l| l["message"] == message)
            .filter_map(|l| l["tick"].as_str().map(str::to_owned))
            .collect()
    }

    fn exited(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.try_wait().unwrap().is_some()
    }

    fn dump(&self) -> String {
        let logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.iter().map(|l| format!("{l}\n")).collect()
    }

    /// Whether `holder` (a lease row's holder: host:pid:random) is this process.
    fn holds(&self, holder: &str) -> bool {
        holder.split(':').nth(1) == Some(self.pid.to_string().as_str())
    }
}

/// tick → (holder, finished)
async fn ticks(pool: &PgPool) -> BTreeMap<String, (String, bool)> {
    sqlx::query("SELECT tick, holder, finished_at IS NOT NULL AS done FROM reconcile_ticks")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get("tick"), (r.get("holder"), r.get("done"))))
        .collect()
}

fn finished(t: &BTreeMap<String, (String, bool)>) -> Vec<String> {
    t.iter()
        .filter(|(_, (_, d))| *d)
        .map(|(k, _)| k.clone())
        .collect()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_optional(pool)
        .await
        .unwrap()
        .map(|r| r.get::<i64, _>(0))
        .unwrap_or(0)
}

/// `GET /users` page reads the fake answered.
fn page_reads(fake: &FakeLooker) -> usize {
    fake.calls()
        .iter()
        .filter(|c| c.method == "GET" && c.path == "/users" && c.status == 200)
        .count()
}

/// How many replicas logged "done" for each tick.
fn done_counts(replicas: &[&Replica]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in replicas {
        for t in r.ticks(DONE) {
            *m.entry(t).or_default() += 1;
        }
    }
    m
}

async fn until<F: AsyncFnMut() -> bool>(what: &str, deadline: Instant, mut f: F, logs: &dyn Fn() -> String) {
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_reconcile_each_tick_once_and_a_survivor_finishes_a_killed_leaders_tick() {
    let db = gatehouse_testkit::postgres::fresh_database().await;
    let fake = FakeLooker::start().await;
    for i in 0..5 {
        fake.add_user(&format!("leader-{i}@example.com"), "Lead", &format!("Er{i}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg,
        // A held page read must not time out (and fail the run) while the test counts.
        "[looker]\ntimeout = \"300s\"\n\n[reconcile]\nscheduled = true\nschedule = \"*/2 * * * * *\"\nleader_lease = \"3s\"\nsnapshot_keep_runs = 1000\n",
    )
    .unwrap();
    let a = Replica::start(&fake, &db, &cfg, &dir.path().join("a")).await;
    let b = Replica::start(&fake, &db, &cfg, &dir.path().join("b")).await;
    let pool = PgPool::connect(&db).await.unwrap();
    let logs = || {
        format!(
            "--- a (pid {}):\n{}--- b (pid {}):\n{}",
            a.pid,
            a.dump(),
            b.pid,
            b.dump()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(180);

    // Several ticks with both replicas competing: each one is claimed by one and reconciled once.
    let started = ticks(&pool).await.len();
    until(
        "three finished ticks with both replicas up",
        deadline,
        async || finished(&ticks(&pool).await).len() >= started + 3,
        &logs,
    )
    .await;
    // Stop the next run at its page read: a stable point to count at, and the run to kill.
    fake.hold("GET", "/users");
    until(
        "a run held at its page read",
        deadline,
        async || fake.held_calls() == 1,
        &logs,
    )
    .await;
    let t = ticks(&pool).await;
    let done = finished(&t);
    let open: Vec<_> = t.iter().filter(|(_, (_, d))| !*d).collect();
    assert_eq!(open.len(), 1, "one tick runs: {t:?}");
    let (tick, (holder, _)) = open[0];
    let tick = tick.clone();
    // Both log lines of every finished run have arrived before counting them.
    until(
        "a done line for every finished tick",
        deadline,
        async || done.iter().all(|d| done_counts(&[&a, &b]).contains_key(d)),
        &logs,
    )
    .await;
    let per_tick = done_counts(&[&a, &b]);
    for d in &done {
        assert_eq!(per_tick.get(d), Some(&1), "tick {d} reconciled once\n{}", logs());
    }
    assert_eq!(
        per_tick.len(),
        done.len(),
        "no run outside a finished tick: {per_tick:?}"
    );
    assert_eq!(
        page_reads(&fake),
        done.len(),
        "one page read per tick (5 users, pages of 1000)"
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM access_snapshots").await,
        done.len() as i64,
        "one snapshot per tick"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT value FROM reconcile_counters WHERE name = 'attribute_audit'"
        )
        .await,
        done.len() as i64 + 1,
        "one audit run per finished tick, plus the held one"
    );

    // The other replica stands by for the held tick while its leader renews the lease.
    let (leader, survivor) = match (a.holds(holder), b.holds(holder)) {
        (true, false) => (a, b),
        (false, true) => (b, a),
        _ => panic!("holder {holder} is neither {} nor {}", a.pid, b.pid),
    };
    let logs = || {
        format!(
            "--- leader (pid {}):\n{}--- survivor (pid {}):\n{}",
            leader.pid,
            leader.dump(),
            survivor.pid,
            survivor.dump()
        )
    };
    until(
        "the other replica standing by",
        deadline,
        async || survivor.ticks(STANDING_BY).contains(&tick),
        &logs,
    )
    .await;
    let kill = std::process::Command::new("kill")
        .args(["-KILL", &leader.pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    until("the leader gone", deadline, async || leader.exited(), &logs).await;
    fake.release();

    // The survivor takes the tick over once the lease lapses and finishes it.
    until(
        "the held tick finished",
        deadline,
        async || ticks(&pool).await.get(&tick).is_some_and(|(_, d)| *d),
        &logs,
    )
    .await;
    let t = ticks(&pool).await;
    assert!(survivor.holds(&t[&tick].0), "finished by the survivor: {t:?}");
    until(
        "the survivor's done line",
        deadline,
        async || survivor.ticks(DONE).contains(&tick),
        &logs,
    )
    .await;
    assert!(survivor.ticks(TAKING_OVER).contains(&tick), "{}", logs());
    assert!(
        !leader.ticks(DONE).contains(&tick),
        "the killed leader never finished it"
    );
    // The schedule goes on with the survivor alone.
    until(
        "a tick after the taken-over one",
        deadline,
        async || finished(&ticks(&pool).await).iter().any(|d| *d > tick),
        &logs,
    )
    .await;
    fake.hold("GET", "/users");
    until(
        "the next run held",
        deadline,
        async || fake.held_calls() == 1,
        &logs,
    )
    .await;
    let done = finished(&ticks(&pool).await);
    until(
        "a done line for every finished tick",
        deadline,
        async || {
            done.iter()
                .all(|d| done_counts(&[&leader, &survivor]).contains_key(d))
        },
        &logs,
    )
    .await;
    let per_tick = done_counts(&[&leader, &survivor]);
    for d in &done {
        assert_eq!(per_tick.get(d), Some(&1), "tick {d} completed once\n{}", logs());
    }
    assert_eq!(per_tick.len(), done.len(), "{per_tick:?}");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM access_snapshots").await,
        done.len() as i64,
        "one snapshot per finished tick: the killed run stored none"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT value FROM reconcile_counters WHERE name = 'attribute_audit'"
        )
        .await,
        done.len() as i64 + 2,
        "the killed run and the held one started, every other run finished"
    );
    fake.release();
    pool.close().await;
}
