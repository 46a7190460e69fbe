//! Bench `pg_state` (issue 13): the PostgreSQL state with 3 processors. Three engines, each with
//! its own connection pool as three replicas would have, handle events for disjoint people
//! (as a queue's per-subject ordering hands them out) from 32 tasks each, against one
//! database, in dry-run mode (no Looker: each plan goes to the ledger, so every event appends to
//! the one hash chain all replicas share and commits its outcome). Reports events/s and the
//! database's transactions per event (`pg_stat_database.xact_commit`, read after the pools are
//! closed so every backend has flushed its counts). Writes `bench/pg_state.json` and
//! `bench/pg_state.md` at the repository root.
//!
//! Needs the PostgreSQL cluster `make bench` starts (`GATEHOUSE_TEST_POSTGRES_URL`). That
//! cluster runs with `fsync=off` (it is the test suite's): the figures are round trips, locks
//! and CPU, not disk flushes. A cluster started with `POSTGRES_DURABLE=1 scripts/postgres.sh
//! start` keeps the durability defaults, so its figures include the commits' flushes; the
//! report names the server's `fsync` and `synchronous_commit` as read from it.
//! Sizes: `GATEHOUSE_BENCH_PG_PEOPLE` (600) people, `GATEHOUSE_BENCH_PG_EVENTS_PER_PERSON` (10)
//! events each.

// The engine's future on PostgreSQL is deeper than the default limit lets rustc lay out.
#![recursion_limit = "256"]

use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::policy::Policy;
use gatehouse_e2e::{env_size, example_policy, loadavg};
use gatehouse_engine::engine::{Engine, RetryPolicy};
use gatehouse_store::postgres::Postgres;
use gatehouse_targets::client::looker::LookerClient;
use serde_json::json;
use sqlx::{Connection, Row};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const PROCESSORS: usize = 3;
const TASKS: usize = 32;

/// Event `k` of person `p`: deactivated when `k` is even, activated when odd, each later than
/// the one before, so every event changes the person and plans something.
fn event(p: usize, k: usize) -> Envelope {
    let email = format!("pg{p}@example.com");
    let at = DateTime::from_timestamp(1_700_000_000 + k as i64, 0).unwrap();
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("pg-bench-{p}-{k}")),
        source: Source::Okta,
        subject: Subject {
            key: format!("okta:00upg{p}"),
            email: Some(email.clone()),
            display_name: None,
        },
        occurred_at: at,
        received_at: at,
        event: if k.is_multiple_of(2) {
            IdentityEvent::UserDeactivated
        } else {
            IdentityEvent::UserActivated
        },
        profile: Profile::from([("email".to_string(), email)]),
        source_event_type: "bench".into(),
        raw: serde_json::Value::Null,
    }
}

/// The server's `fsync` and `synchronous_commit` settings, as it reports them.
async fn durability(url: &str) -> (String, String) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let mut show = async |statement: &'static str| -> String {
        sqlx::query(statement)
            .fetch_one(&mut conn)
            .await
            .expect("SHOW")
            .get(0)
    };
    let settings = (show("SHOW fsync").await, show("SHOW synchronous_commit").await);
    conn.close().await.ok();
    settings
}

/// Transactions committed in the bench's database so far (every backend that ended has
/// flushed its counts).
async fn xact_commit(url: &str) -> i64 {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let n: i64 = sqlx::query("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_database")
        .get(0);
    conn.close().await.ok();
    n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let people = env_size("GATEHOUSE_BENCH_PG_PEOPLE", 600);
    let per_person = env_size("GATEHOUSE_BENCH_PG_EVENTS_PER_PERSON", 10);
    let url = gatehouse_testkit::postgres::fresh_database().await;
    let secret: secrecy::SecretString = url.clone().into();
    // Migrate once, alone, then measure from a quiet database.
    Postgres::connect(&secret, 1)
        .await
        .expect("migrate")
        .close()
        .await;
    let policy = Arc::new(Policy::from_toml(&example_policy()).unwrap());
    let retry = RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    let mut stores = Vec::new();
    for _ in 0..PROCESSORS {
        // A replica's default pool size.
        stores.push(Postgres::connect(&secret, 10).await.expect("connect"));
    }
    let before = xact_commit(&url).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (r, store) in stores.iter().enumerate() {
        let engine = Arc::new(Engine::<Postgres, LookerClient>::new(
            store.clone(),
            None,
            policy.clone(),
            retry.clone(),
        ));
        for t in 0..TASKS {
            // Replica r's people, task t's share of them: each person handled by one task, in order.
            let mine: Vec<usize> = (0..people)
                .filter(|p| p % PROCESSORS == r && (p / PROCESSORS) % TASKS == t)
                .collect();
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0..per_person {
                    for &p in &mine {
                        let env = event(p, k);
                        let mut attempt = 0;
                        loop {
                            attempt += 1;
                            match engine.handle(&env).await {
                                Ok(_) => break,
                                Err(e) if attempt < 5 => {
                                    eprintln!("bench pg_state: {} retried: {e}", env.id);
                                }
                                Err(e) => panic!("{}: {e}", env.id),
                            }
                        }
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    let elapsed = start.elapsed();
    let events = people * per_person;
    let ledger_rows: i64 = sqlx::query("SELECT COUNT(*) FROM ledger")
        .fetch_one(stores[0].pool())
        .await
        .expect("count the ledger")
        .get(0);
    for s in &stores {
        s.close().await;
    }
    let after = xact_commit(&url).await;
    // Every event planned something, so every one appended to the ledger.
    assert!(
        ledger_rows >= events as i64,
        "{ledger_rows} ledger rows for {events} events"
    );
    let rate = events as f64 / elapsed.as_secs_f64();
    let per_event = (after - before - 1) as f64 / events as f64;
    let load = loadavg();
    let (fsync, synchronous_commit) = durability(&url).await;
    let flushes = if fsync == "on" && synchronous_commit == "on" {
        "a durable server: each commit waits for its WAL flush"
    } else {
        "so these are round trips, locks and CPU, not disk flushes"
    };
    let results = json!({
        "fsync": fsync,
        "synchronous_commit": synchronous_commit,
        "processors": PROCESSORS,
        "tasks_per_processor": TASKS,
        "people": people,
        "events": events,
        "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "events_per_second": rate.round() as u64,
        "transactions_per_event": (per_event * 100.0).round() / 100.0,
        "ledger_rows": ledger_rows,
        "load_average_after": load,
        "note": std::env::var("GATEHOUSE_BENCH_NOTE").unwrap_or_default(),
    });
    let md = format!(
        "# PostgreSQL state, 3 processors (issue 13)\n\n\
         Written by `tests/benches/pg_state.rs` (`make bench`). {PROCESSORS} engines, each with a \
         pool of its own as three replicas would have, handle {events} events ({people} people × \
         {per_person}, deactivated and activated in turn) from {TASKS} tasks each, every person \
         handled by one task in order, in dry-run mode: each plan goes to the one ledger chain the \
         replicas share, and each event commits its outcome. On a 2-worker runtime, the database \
         server on the same machine (`fsync={fsync}`, `synchronous_commit={synchronous_commit}`: \
         {flushes}).\n\n\
         | events/s | seconds | database transactions per event | ledger rows |\n|---|---|---|---|\n\
         | {} | {} | {} | {} |\n\n\
         Transactions are `pg_stat_database.xact_commit` of the bench's database over the run \
         (reads included: each read outside a transaction is one). Load average after: {load}.\n",
        results["events_per_second"],
        results["seconds"],
        results["transactions_per_event"],
        results["ledger_rows"],
    );
    gatehouse_e2e::write_bench_results("pg_state", &results, &md);
    println!("{md}");
}
