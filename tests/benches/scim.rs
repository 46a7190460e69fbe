//! `make bench` (bench `scim`): SCIM requests per second for create and PATCH with the whole
//! Gatehouse (SCIM server, outbox relay, processor, fake Looker) on a 2-thread runtime, and the
//! Looker calls each SCIM operation causes. Writes `bench/scim.json` and `bench/scim.md` at the
//! repository root.

use gatehouse_e2e::{Options, TestApp, example_policy, seed_catalog, spawn_app, wait_until};
use gatehouse_testkit::FakeLooker;
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::time::Instant;

const TOKEN: &str = "scim-bench-token-0123456789";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const CLIENTS: usize = 16;
const SEQUENCES: usize = 10;

/// Requests of each kind in the throughput part (`GATEHOUSE_BENCH_SCIM_REQUESTS`, default 5,000:
/// at a few thousand per second a thousand is over before the rate settles).
fn requests() -> usize {
    gatehouse_e2e::env_size("GATEHOUSE_BENCH_SCIM_REQUESTS", 5_000)
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: &Value) -> Value {
    let r = app
        .http
        .request(method.clone(), format!("{}/scim/v2{path}", app.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!((200..300).contains(&status), "{method} {path}: {status} {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

fn user(name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Bench", "familyName": "User"},
        "emails": [{"primary": true, "type": "work", "value": name}],
        "active": true,
    })
}

fn ops(ops: Value) -> Value {
    json!({ "schemas": [PATCH_OP], "Operations": ops })
}

async fn settled(app: &TestApp) {
    let store = app.store.clone();
    wait_until("scim outbox relayed", || {
        let s = store.clone();
        async move { s.scim_outbox_depth().await.unwrap() == 0 }
    })
    .await;
    app.drained().await;
}

/// Run `requests` requests from `CLIENTS` concurrent clients; requests per second.
async fn throughput<F, Fut>(requests: usize, make: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let make = Arc::new(make);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let make = make.clone();
            tokio::spawn(async move {
                let mut i = c;
                while i < requests {
                    make(i).await;
                    i += CLIENTS;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    requests as f64 / start.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fake = FakeLooker::start().await;
    let catalog = seed_catalog(&fake);
    let app = Arc::new(
        spawn_app(Options {
            looker: Some(fake.clone()),
            policy: Some(example_policy()),
            extra_toml: format!(
                "[scim]\nrelay_interval = \"100ms\"\n[[scim.tokens]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\n"
            ),
            ..Default::default()
        })
        .await,
    );

    // Throughput: POST /Users, then PATCH (a real change each time) on those users.
    let n = requests();
    let ids = Arc::new(std::sync::Mutex::new(vec![String::new(); n]));
    let (a, i2) = (app.clone(), ids.clone());
    let commits_before = app.store.writer_commits();
    let create_rps = throughput(n, move |i| {
        let (app, ids) = (a.clone(), i2.clone());
        async move {
            let r = send(
                &app,
                reqwest::Method::POST,
                "/Users",
                &user(&format!("bench{i}@example.com")),
            )
            .await;
            ids.lock().unwrap()[i] = r["id"].as_str().unwrap().to_string();
        }
    })
    .await;
    let commits_created = app.store.writer_commits();
    let (a, i2) = (app.clone(), ids.clone());
    let patch_rps = throughput(n, move |i| {
        let (app, ids) = (a.clone(), i2.clone());
        async move {
            let id = ids.lock().unwrap()[i].clone();
            send(
                &app,
                reqwest::Method::PATCH,
                &format!("/Users/{id}"),
                &ops(json!([{"op": "replace", "path": "title", "value": format!("title {i}")}])),
            )
            .await;
        }
    })
    .await;
    let commits_patched = app.store.writer_commits();
    // Every write transaction of the process while the requests ran (SCIM writes, the relay's
    // enqueues, the processor's claims and commits), each one WAL fsync.
    let fsyncs_per_create = (commits_created.commits - commits_before.commits) as f64 / n as f64;
    let fsyncs_per_patch = (commits_patched.commits - commits_created.commits) as f64 / n as f64;
    let drain_start = Instant::now();
    settled(&app).await;
    let drain_secs = drain_start.elapsed().as_secs_f64();

    // Looker calls per SCIM operation (warm: token and catalog cached).
    let group = send(
        &app,
        reqwest::Method::POST,
        "/Groups",
        &json!({"displayName": "Engineering"}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    settled(&app).await;
    let steps = [
        "create user",
        "add to group (mapped)",
        "PATCH nickName (not used by Looker)",
        "PATCH same value (no change)",
        "deactivate (active=false)",
        "reactivate (active=true)",
        "remove from group",
        "delete user",
    ];
    let mut totals = vec![(0usize, 0usize); steps.len()];
    for n in 0..SEQUENCES {
        let name = format!("seq{n}@example.com");
        let mut uid = String::new();
        for (s, step) in steps.iter().enumerate() {
            let before = fake.calls().len();
            let before_writes = fake.write_calls();
            match s {
                0 => {
                    uid = send(&app, reqwest::Method::POST, "/Users", &user(&name)).await["id"]
                        .as_str()
                        .unwrap()
                        .to_string();
                }
                1 | 6 => {
                    let op = if s == 1 {
                        json!([{"op": "add", "path": "members", "value": [{"value": uid}]}])
                    } else {
                        json!([{"op": "remove", "path": format!("members[value eq \"{uid}\"]")}])
                    };
                    send(
                        &app,
                        reqwest::Method::PATCH,
                        &format!("/Groups/{group}"),
                        &ops(op),
                    )
                    .await;
                }
                2 | 3 => {
                    let op = json!([{"op": "replace", "path": "nickName", "value": "Nick"}]);
                    send(&app, reqwest::Method::PATCH, &format!("/Users/{uid}"), &ops(op)).await;
                }
                4 | 5 => {
                    let op = json!([{"op": "replace", "value": {"active": s == 5}}]);
                    send(&app, reqwest::Method::PATCH, &format!("/Users/{uid}"), &ops(op)).await;
                }
                _ => {
                    send(
                        &app,
                        reqwest::Method::DELETE,
                        &format!("/Users/{uid}"),
                        &Value::Null,
                    )
                    .await;
                }
            }
            settled(&app).await;
            totals[s].0 += fake.calls().len() - before;
            totals[s].1 += fake.write_calls() - before_writes;
            let _ = step;
        }
    }
    let _ = catalog;
    let per_op: Vec<Value> = steps
        .iter()
        .zip(&totals)
        .map(|(step, (calls, writes))| {
            json!({
                "operation": step,
                "looker_calls": *calls as f64 / SEQUENCES as f64,
                "looker_writes": *writes as f64 / SEQUENCES as f64,
            })
        })
        .collect();
    let results = json!({
        "runtime": "tokio multi-thread, 2 worker threads (whole app + fake Looker + clients in-process)",
        "clients": CLIENTS,
        "requests": n,
        "create_requests_per_second": create_rps.round() as u64,
        "patch_requests_per_second": patch_rps.round() as u64,
        "write_transactions_per_create": (fsyncs_per_create * 1000.0).round() / 1000.0,
        "write_transactions_per_patch": (fsyncs_per_patch * 1000.0).round() / 1000.0,
        "load_average": gatehouse_e2e::loadavg(),
        "drain_after_load_seconds": (drain_secs * 100.0).round() / 100.0,
        "looker_calls_per_operation": per_op,
    });
    let rows: String = results["looker_calls_per_operation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "| {} | {} | {} |\n",
                r["operation"].as_str().unwrap(),
                r["looker_calls"],
                r["looker_writes"]
            )
        })
        .collect();
    let md = format!(
        "# SCIM benchmark\n\nWritten by `make bench` (tests/benches/scim.rs): the whole Gatehouse \
         in-process on a 2-worker tokio runtime (SCIM server, outbox relay, processor, fake Looker \
         with no added latency), SQLite with `synchronous=FULL`.\n\n\
         ## Throughput ({CLIENTS} concurrent clients, {n} requests of each kind)\n\n\
         | request | requests/s | write transactions (fsyncs) per request |\n|---|---|---|\n\
         | `POST /Users` | {} | {} |\n| `PATCH /Users/{{id}}` (title) | {} | {} |\n\n\
         Every request commits the directory change and its outbox envelope in one write of the \
         group commit (issue 13): the requests waiting for the writer share one transaction and \
         one fsync. The transactions counted are all of the process's while the requests ran: the \
         SCIM writes, the relay's enqueues and the processor's claims and commits. The processor \
         and the clients share the same 2 threads; the processor had converged Looker for all of \
         them {} s after the last PATCH. Load average at the end: {}.\n\n\
         ## Looker calls per SCIM operation (mean of {SEQUENCES} users, warm)\n\n\
         | operation | Looker calls | of which writes |\n|---|---|---|\n{rows}\n\
         A PATCH that changes nothing is not written (no outbox row); one that changes only \
         attributes Looker does not use is relayed and costs zero Looker calls (fingerprint check).\n",
        results["create_requests_per_second"],
        results["write_transactions_per_create"],
        results["patch_requests_per_second"],
        results["write_transactions_per_patch"],
        results["drain_after_load_seconds"],
        results["load_average"].as_str().unwrap_or_default(),
    );
    gatehouse_e2e::write_bench_results("scim", &results, &md);
    println!("{md}");
    Arc::try_unwrap(app).ok().expect("no other handle").stop().await;
}
