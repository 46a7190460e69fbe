//! Bench `queues`: events per second end to end through each queue backend (embedded SQLite, SQS
//! on moto, Pub/Sub on Google's emulator) against the fake Looker with no added latency, and the
//! peak RSS of the process running the processor. Writes `bench/queues.json` and
//! `bench/queues.md` at the repository root.
//!
//! Each backend runs in a fresh child process (this bench binary re-executed with
//! `--queues-child BACKEND`): the whole Gatehouse in-process there (`spawn_app`, ingress +
//! processor, `[queue] backend = ...`), the fake Looker and the publisher. The child reports its
//! own `VmHWM` from `/proc/self/status` once Looker has converged, so each backend's peak RSS is
//! measured on its own and not inflated by the previous backend's run. The SQS backend reads its
//! endpoint from the AWS SDK's environment, which is why the child (and not this process) gets
//! `AWS_ENDPOINT_URL` & co.
//!
//! Needs the servers `make test` starts: `GATEHOUSE_TEST_MOTO_URL` and
//! `GATEHOUSE_TEST_PUBSUB_EMULATOR` (see docs/bench-queues.md for the command).

use aws_sdk_sqs::config::{Builder, Credentials, Region};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::ports::QueueProducer;
use gatehouse_e2e::{Options, spawn_app};
use gatehouse_store::pubsub::{PubsubOptions, PubsubQueue};
use gatehouse_store::sqs::SqsQueue;
use gatehouse_testkit::FakeLooker;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// Envelopes per backend (override with `GATEHOUSE_BENCH_QUEUE_EVENTS`).
const EVENTS: usize = 1_000;
/// Envelopes per `publish` call (SQS sends them in batches of ten).
const PUBLISH_BATCH: usize = 50;
const BACKENDS: [&str; 3] = ["embedded", "sqs", "pubsub"];
const CHILD_FLAG: &str = "--queues-child";
const RESULT_PREFIX: &str = "QUEUES-BENCH-RESULT ";
const REGION: &str = "us-east-1";
const PUBSUB_PROJECT: &str = "gatehouse-bench";

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!(
            "bench queues: {name} is not set. This bench needs moto (SQS) and the Pub/Sub emulator, \
             started the way `make test` does:\n  scripts/moto.sh start && scripts/pubsub-emulator.sh start\n  \
             GATEHOUSE_TEST_MOTO_URL=http://127.0.0.1:5000 GATEHOUSE_TEST_PUBSUB_EMULATOR=127.0.0.1:8085 \
             cargo bench --locked -p gatehouse-e2e --bench queues"
        );
        std::process::exit(2);
    })
}

fn events() -> usize {
    std::env::var("GATEHOUSE_BENCH_QUEUE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(EVENTS)
}

fn unique(prefix: &str) -> String {
    let nanos = gatehouse_domain::clock::now()
        .timestamp_nanos_opt()
        .unwrap_or_default() as u128;
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A deactivation of the Looker user `bench{i}@example.com`.
fn envelope(run: &str, i: usize, at: DateTime<Utc>) -> Envelope {
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("{run}-{i}")),
        source: Source::Okta,
        subject: Subject {
            key: format!("okta:bench{i}"),
            email: Some(format!("bench{i}@example.com")),
            display_name: None,
        },
        occurred_at: at,
        received_at: at,
        event: IdentityEvent::UserDeactivated,
        profile: [
            ("email", format!("bench{i}@example.com")),
            ("login", format!("bench{i}@example.com")),
            ("firstName", "Bench".to_string()),
            ("lastName", format!("User{i}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
        source_event_type: "user.lifecycle.deactivate".into(),
        raw: Value::Null,
    }
}

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

// ---------------------------------------------------------------------------------------------
// Child: one backend, end to end.

enum Publisher {
    Embedded,
    Sqs(SqsQueue),
    Pubsub(PubsubQueue),
}

async fn emulator_put(path: &str, body: Value) {
    let grpc = required_env("GATEHOUSE_TEST_PUBSUB_EMULATOR");
    let (host, port) = grpc
        .rsplit_once(':')
        .expect("GATEHOUSE_TEST_PUBSUB_EMULATOR is host:port");
    let port: u16 = port.parse().expect("GATEHOUSE_TEST_PUBSUB_EMULATOR port");
    let url = format!("http://{host}:{}/v1/{path}", port + 1);
    let r = reqwest::Client::new()
        .put(&url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("pubsub emulator admin at {url} did not answer: {e}"));
    assert!(
        r.status().is_success(),
        "PUT {url}: {}",
        r.text().await.unwrap_or_default()
    );
}

/// The `[queue]` section for `backend` (creating its queues), and the publisher the bench uses.
async fn setup(backend: &str) -> (String, Publisher) {
    match backend {
        "embedded" => (String::new(), Publisher::Embedded),
        "sqs" => {
            let conf = Builder::new()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .endpoint_url(required_env("GATEHOUSE_TEST_MOTO_URL"))
                .region(Region::new(REGION))
                .credentials_provider(Credentials::new("testing", "testing", None, None, "bench"))
                .build();
            let client = aws_sdk_sqs::Client::from_conf(conf);
            let url = client
                .create_queue()
                .queue_name(unique("gh-bench"))
                .send()
                .await
                .expect("create the sqs queue in moto")
                .queue_url
                .expect("queue url");
            let toml = format!("[queue]\nbackend = \"sqs\"\nqueue_url = {url:?}\nwait_time = \"1s\"\n");
            let queue = SqsQueue::with_client(client, &url, Duration::from_secs(1));
            (toml, Publisher::Sqs(queue))
        }
        "pubsub" => {
            let name = unique("gh-bench");
            let topic = format!("projects/{PUBSUB_PROJECT}/topics/{name}");
            let sub = format!("projects/{PUBSUB_PROJECT}/subscriptions/{name}");
            emulator_put(&topic, json!({})).await;
            emulator_put(&sub, json!({"topic": topic, "ackDeadlineSeconds": 30})).await;
            let emulator = required_env("GATEHOUSE_TEST_PUBSUB_EMULATOR");
            let toml = format!(
                "[queue]\nbackend = \"pubsub\"\ntopic = {topic:?}\nsubscription = {sub:?}\nemulator_host = {emulator:?}\n"
            );
            let mut opts = PubsubOptions::new(&topic, &sub);
            opts.emulator_host = Some(emulator);
            let queue = PubsubQueue::connect_with(opts)
                .await
                .expect("connect the publisher to the pubsub emulator");
            (toml, Publisher::Pubsub(queue))
        }
        other => panic!("unknown backend {other:?}"),
    }
}

async fn child(backend: &str) {
    let n = events();
    let fake = FakeLooker::start().await;
    for i in 0..n {
        fake.add_user(&format!("bench{i}@example.com"), "Bench", &format!("User{i}"));
    }
    let (extra_toml, publisher) = setup(backend).await;
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        extra_toml,
        ..Default::default()
    })
    .await;
    let run = unique(backend);
    let now = gatehouse_domain::clock::now();
    let envelopes: Vec<Envelope> = (0..n).map(|i| envelope(&run, i, now)).collect();

    let start = Instant::now();
    for chunk in envelopes.chunks(PUBLISH_BATCH) {
        match &publisher {
            Publisher::Embedded => app.store.publish(chunk).await,
            Publisher::Sqs(q) => q.publish(chunk).await,
            Publisher::Pubsub(q) => q.publish(chunk).await,
        }
        .expect("publish");
    }
    let published = start.elapsed();
    // Converged: every user disabled in the fake Looker. Polled every 25 ms (the end time is at
    // most that late).
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        let disabled = fake.users().iter().filter(|u| u.is_disabled).count();
        if disabled == n {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("{}", app.metrics().await);
            panic!("{backend}: only {disabled} of {n} users disabled after 600 s");
        }
        if Instant::now() > next_report {
            next_report += Duration::from_secs(5);
            eprintln!(
                "bench queues: {backend}: {disabled} of {n} users disabled, {} Looker calls",
                fake.calls().len()
            );
            if std::env::var_os("GATEHOUSE_BENCH_DEBUG").is_some() {
                for c in fake.calls() {
                    eprintln!("  {} {} {}", c.method, c.path, c.query);
                }
                eprintln!("{}", app.metrics().await);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let converged = start.elapsed();
    let peak_kib = peak_rss_kib();
    let writes = fake.write_calls();

    let result = json!({
        "backend": backend,
        "events": n,
        "publish_seconds": round2(published.as_secs_f64()),
        "end_to_end_seconds": round2(converged.as_secs_f64()),
        "events_per_second": (n as f64 / converged.as_secs_f64()).round() as u64,
        "looker_writes": writes,
        "peak_rss_mib": round1(peak_kib as f64 / 1024.0),
    });
    println!("{RESULT_PREFIX}{result}");
    if let Publisher::Pubsub(q) = publisher {
        q.shutdown().await;
    }
    app.stop().await;
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

// ---------------------------------------------------------------------------------------------
// Parent: one child per backend, then the results files.

fn run_child(backend: &str, moto: &str) -> Value {
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut cmd = Command::new(exe);
    cmd.args([CHILD_FLAG, backend]);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    // The SQS backend's client comes from the AWS SDK's environment chain.
    cmd.env("AWS_ENDPOINT_URL", moto)
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("bench queues: running {backend} ...");
    let out = cmd.output().expect("run the bench child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{backend} run failed ({}):\n{stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .unwrap_or_else(|| panic!("{backend} run printed no result:\n{stdout}"));
    serde_json::from_str(line).expect("child result is json")
}

fn parent() {
    let moto = required_env("GATEHOUSE_TEST_MOTO_URL");
    let emulator = required_env("GATEHOUSE_TEST_PUBSUB_EMULATOR");
    let results: Vec<Value> = BACKENDS.iter().map(|b| run_child(b, &moto)).collect();
    let n = events();
    let all = json!({
        "runtime": "one child process per backend: tokio multi-thread, 2 worker threads; Gatehouse \
                    (ingress + processor, 8 workers), fake Looker (no latency) and publisher in-process",
        "events_per_backend": n,
        "event": "user_deactivated for a distinct existing Looker user (one Looker write: disable)",
        "publish_batch": PUBLISH_BATCH,
        "peak_rss": "VmHWM of the child process (Gatehouse + fake Looker + publisher), read at convergence",
        "moto": moto,
        "pubsub_emulator": emulator,
        "backends": results,
    });
    let rows: String = results
        .iter()
        .map(|r| {
            format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                r["backend"].as_str().unwrap(),
                r["events_per_second"],
                r["end_to_end_seconds"],
                r["publish_seconds"],
                r["looker_writes"],
                r["peak_rss_mib"],
            )
        })
        .collect();
    let md = format!(
        "# Queue backends benchmark\n\n\
         Written by `tests/benches/queues.rs` (see docs/bench-queues.md). For each backend, {n} \
         `user_deactivated` envelopes (one per existing Looker user) are published straight to the \
         backend in batches of {PUBLISH_BATCH}; the clock stops when the fake Looker (no added \
         latency) shows every user disabled. Each backend runs in its own child process on a \
         2-worker tokio runtime with the whole Gatehouse in-process (processor with 8 workers), \
         the fake Looker and the publisher. SQS is moto and Pub/Sub is Google's emulator on \
         loopback: their numbers measure Gatehouse plus a local fake, not the cloud services.\n\n\
         | backend | events/s end to end | end to end (s) | of which publishing (s) | Looker writes | peak RSS (MiB) |\n\
         |---|---|---|---|---|---|\n{rows}\n\
         Peak RSS is the child process's `VmHWM` (from `/proc/self/status`) read once Looker has \
         converged: Gatehouse's processor and ingress, plus the fake Looker holding {n} users and the \
         {n} envelopes the publisher built, so it is an upper bound for the processor alone.\n"
    );
    gatehouse_e2e::write_bench_results("queues", &all, &md);
    println!("{md}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == CHILD_FLAG) {
        let backend = args.get(i + 1).expect("--queues-child BACKEND").clone();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(child(&backend));
    } else {
        parent();
    }
}
