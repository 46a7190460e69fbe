//! The soak: see `main.rs` and docs/crash-test.md.

use crate::crash::{
    Rng, Sent, Watch, assert_all_processed, assert_no_dead_letters, converge, emulator, generate, oracle,
    processor, publish_to_sqs_in_background, pubsub_names, seed, seed_looker, sigkill, sqs_client,
    sqs_queues, still_running, write_files,
};
use gatehouse_domain::ports::QueueConsumer;
use gatehouse_store::pubsub::{PubsubOptions, PubsubQueue};
use gatehouse_store::sqs::SqsQueue;
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::fault_proxy::{FaultProxy, Faults};
use gatehouse_testkit::oracle::assert_no_duplicate_writes;
use gatehouse_testkit::progress::Progress;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PER_USER: usize = 25;
/// Share of the fake Looker's answers that are injected 429/500/503.
const LOOKER_FAULTS: f64 = 0.2;

/// Events per queue: `GATEHOUSE_SOAK_EVENTS`, default 100,000.
fn events_per_queue() -> usize {
    match std::env::var("GATEHOUSE_SOAK_EVENTS") {
        Err(_) => 100_000,
        Ok(s) => match s.trim().parse::<usize>() {
            Ok(n) if n >= PER_USER => n,
            _ => panic!("GATEHOUSE_SOAK_EVENTS must be a whole number of at least {PER_USER}, got {s:?}"),
        },
    }
}

/// Between the processors and the queue emulator: 5 in 1000 chunks cut the connection, and
/// `stall_per_mille` in 1000 are held for 3 s (longer than SQS's 1 s long poll, shorter than the
/// 5 s visibility). A stalled chunk holds the processor's one receive loop for the whole 3 s, so
/// the stall rate caps the rate of the run: SQS on moto speaks HTTP/1.1 without keep-alive
/// (~2.4 chunks an event, a connection per request), where 10 in 1000 capped a 1,000-event run at
/// ~13 events/s (19 stalls, 57 s of a 75 s run); Pub/Sub's streams carry many events a chunk.
fn network_faults(stall_per_mille: u32) -> Faults {
    Faults {
        drop_per_mille: 5,
        stall_per_mille,
        stall: Duration::from_secs(3),
    }
}

/// SQS: 1 stall in 1000 chunks (still ~240 stalls in 100,000 events, besides ~1,200 drops).
const SQS_STALLS_PER_MILLE: u32 = 1;
/// Pub/Sub: 10 in 1000.
const PUBSUB_STALLS_PER_MILLE: u32 = 10;

/// Processors started and SIGKILLed in turn, each 3–20 s (seeded) after it started, spread over
/// the events: kill `k` waits until `k / kills` of the `events` are published, so that a
/// publisher held back by its backlog bound does not multiply the kills. After `kills`, one is
/// left running. Fails if publishing stops progressing for the progress window (a stuck run,
/// not a slow one).
async fn kill_while_publishing(
    rng: &mut Rng,
    kills: usize,
    events: usize,
    dir: &Path,
    sent: &Sent,
    start: impl Fn() -> Child,
) -> (Child, usize) {
    let mut progress = Progress::from_env("soak publishing");
    for kill in 1..=kills {
        let mut child = start();
        let after = Duration::from_millis(3_000 + rng.below(17_000));
        tokio::time::sleep(after).await; // the crash point itself, not a wait for work
        // The processor keeps working until this kill's share of the events is published.
        let due = (kill * events / kills) as u64;
        loop {
            still_running(std::slice::from_mut(&mut child), dir);
            let published = sent.load(Ordering::Relaxed);
            progress.note(&[published, kill as u64], || "");
            if published >= due.min(events as u64) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // backpressure, not a wait for a result
        }
        sigkill(&mut child).await;
        eprintln!(
            "soak kill {kill} after {after:?}: {} sent",
            sent.load(Ordering::Relaxed)
        );
    }
    (start(), kills)
}

/// Most envelopes the Pub/Sub soak keeps published and not yet processed. Google's pstest walks
/// every message it holds on each delivery pass: with 90,000 queued it used most of a core and
/// delivered ~11 a second (bench/soak.md). Real Pub/Sub has no such cost; like the SQS
/// publisher's bound for moto, this keeps every event flowing through the emulator, a few
/// thousand at a time.
const PSTEST_BACKLOG: u64 = 2_000;

/// Envelopes the processors recorded as processed (their SQLite state, read-only; 0 before the
/// first processor created it).
async fn processed_count(data: &Path, pool: &mut Option<sqlx::SqlitePool>) -> u64 {
    if pool.is_none() {
        let db = data.join("gatehouse.db");
        if !db.exists() {
            return 0;
        }
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(db)
            .read_only(true);
        *pool = sqlx::SqlitePool::connect_with(opts).await.ok();
    }
    match pool {
        Some(p) => sqlx::query_scalar::<_, i64>("SELECT count(*) FROM processed")
            .fetch_one(&*p)
            .await
            .map_or(0, |n| n as u64),
        None => 0,
    }
}

/// Publishes in chunks of 100 while fewer than [`PSTEST_BACKLOG`] are published and unprocessed.
fn publish_to_pubsub_bounded(
    queue: PubsubQueue,
    events: Vec<gatehouse_domain::envelope::Envelope>,
    sent: Sent,
    data: std::path::PathBuf,
) -> JoinHandle<Duration> {
    use gatehouse_domain::ports::QueueProducer;
    tokio::spawn(async move {
        let started = Instant::now();
        let mut pool = None;
        for chunk in events.chunks(100) {
            while sent.load(Ordering::Relaxed) > processed_count(&data, &mut pool).await + PSTEST_BACKLOG {
                tokio::time::sleep(Duration::from_millis(200)).await; // backpressure, not a wait for a result
            }
            queue.publish(chunk).await.expect("publish to pubsub");
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        if let Some(p) = pool {
            p.close().await;
        }
        started.elapsed()
    })
}

/// The soak's directory (config, the processors' SQLite state and `processors.log`), kept after
/// the run so that a failure can be looked into; its path is printed.
fn kept_dir() -> tempfile::TempDir {
    let mut dir = tempfile::tempdir().unwrap();
    dir.disable_cleanup(true);
    eprintln!("soak directory (kept): {}", dir.path().display());
    dir
}

/// One line of figures for bench/soak.md.
fn report(
    queue: &str,
    events: usize,
    started: Instant,
    published: Duration,
    kills: usize,
    fake: &FakeLooker,
    proxy: &FaultProxy,
) {
    let calls = fake.calls();
    let faulted = calls.iter().filter(|c| c.fault_injected).count();
    let p = proxy.counts();
    eprintln!(
        "soak result: queue={queue} events={events} wall_s={} published_s={} kills={kills} \
         looker_calls={} looker_faults={faulted} looker_writes={} proxy_connections={} \
         proxy_chunks={} proxy_dropped={} proxy_stalled={} dead_letters=0 lost=0 duplicate_writes=0",
        started.elapsed().as_secs(),
        published.as_secs(),
        calls.len(),
        fake.write_calls(),
        p.connections,
        p.chunks,
        p.dropped,
        p.stalled
    );
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("{url}: not host:port: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_sqs_with_looker_faults_network_faults_and_kills() {
    let n = events_per_queue();
    let mut rng = Rng(seed() ^ 0x50a4);
    let client = sqs_client();
    let (url, dlq_url) = sqs_queues(&client, "soak", false).await;
    let queue = SqsQueue::with_client(client.clone(), &url, Duration::from_secs(1));
    let dlq = SqsQueue::with_client(client, &dlq_url, Duration::from_secs(1));
    let fake = FakeLooker::start().await;
    seed_looker(&fake);
    fake.set_fault_rate(LOOKER_FAULTS, rng.next());
    let events = generate(&mut rng, "soak", n / PER_USER, PER_USER);
    let oracle = oracle(&events);
    let proxy = FaultProxy::start(
        addr_of(&crate::crash::moto_url()),
        network_faults(SQS_STALLS_PER_MILLE),
        rng.next(),
    )
    .await;
    let dir = kept_dir();
    write_files(
        dir.path(),
        &format!("backend = \"sqs\"\nqueue_url = \"{url}\"\nwait_time = \"1s\"\n"),
    );
    let data = dir.path().join("data");
    let env = vec![("AWS_ENDPOINT_URL", format!("http://{}", proxy.addr()))];
    let started = Instant::now();
    let sent = Sent::default();
    let publisher = publish_to_sqs_in_background(queue.clone(), events.clone(), sent.clone());
    let (last, kills) = kill_while_publishing(&mut rng, 5.max(n / 2_000), n, dir.path(), &sent, || {
        processor(dir.path(), &data, &fake, &env)
    })
    .await;
    let mut last = [last];
    let watch = Watch {
        dir: dir.path(),
        data: &data,
        fake: &fake,
        oracle: &oracle,
        events: &events,
        sent: &sent,
        queue: Some(&queue),
    };
    converge(&watch, &mut last, &publisher).await;
    let published = publisher.await.expect("the publisher finished");
    sigkill(&mut last[0]).await;
    oracle.assert_converged(&fake);
    assert_no_dead_letters(&dlq).await;
    assert_all_processed(&data, &events).await;
    assert_no_duplicate_writes(&fake);
    oracle.assert_mixed();
    let p = proxy.counts();
    assert!(
        p.dropped + p.stalled > 0,
        "the network faults were injected: {p:?}"
    );
    assert!(
        fake.calls().iter().any(|c| c.fault_injected),
        "the Looker faults were injected"
    );
    report("sqs", n, started, published, kills, &fake, &proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_pubsub_with_looker_faults_network_faults_and_kills() {
    let n = events_per_queue();
    let mut rng = Rng(seed() ^ 0x50a5);
    let (topic, sub) = pubsub_names("soak").await;
    let (dlq_topic, dlq_sub) = pubsub_names("soak-dlq").await;
    let mut opts = PubsubOptions::new(&topic, &sub);
    opts.emulator_host = Some(emulator());
    let queue = PubsubQueue::connect_with(opts).await.expect("connect");
    let mut dlq_opts = PubsubOptions::new(&dlq_topic, &dlq_sub);
    dlq_opts.emulator_host = Some(emulator());
    dlq_opts.receive_wait = Duration::from_millis(500);
    let dlq = PubsubQueue::connect_with(dlq_opts)
        .await
        .expect("connect the dlq reader");
    let fake = FakeLooker::start().await;
    seed_looker(&fake);
    fake.set_fault_rate(LOOKER_FAULTS, rng.next());
    let events = generate(&mut rng, "psoak", n / PER_USER, PER_USER);
    let oracle = oracle(&events);
    let proxy = FaultProxy::start(
        addr_of(&emulator()),
        network_faults(PUBSUB_STALLS_PER_MILLE),
        rng.next(),
    )
    .await;
    let dir = kept_dir();
    write_files(
        dir.path(),
        &format!(
            "backend = \"pubsub\"\ntopic = \"{topic}\"\nsubscription = \"{sub}\"\n\
             dead_letter_topic = \"{dlq_topic}\"\nemulator_host = \"{}\"\n",
            proxy.addr()
        ),
    );
    let data = dir.path().join("data");
    let env = vec![("PUBSUB_EMULATOR_HOST", proxy.addr().to_string())];
    let started = Instant::now();
    let sent = Sent::default();
    let publisher = publish_to_pubsub_bounded(queue.clone(), events.clone(), sent.clone(), data.clone());
    let (last, kills) = kill_while_publishing(&mut rng, 5.max(n / 2_000), n, dir.path(), &sent, || {
        processor(dir.path(), &data, &fake, &env)
    })
    .await;
    let mut last = [last];
    let watch = Watch {
        dir: dir.path(),
        data: &data,
        fake: &fake,
        oracle: &oracle,
        events: &events,
        sent: &sent,
        queue: None,
    };
    converge(&watch, &mut last, &publisher).await;
    let published = publisher.await.expect("the publisher finished");
    sigkill(&mut last[0]).await;
    oracle.assert_converged(&fake);
    let dead = dlq.receive(10, Duration::from_secs(30)).await.unwrap();
    assert!(dead.is_empty(), "dead-lettered: {:?}", dead[0].body);
    assert_all_processed(&data, &events).await;
    assert_no_duplicate_writes(&fake);
    oracle.assert_mixed();
    let p = proxy.counts();
    assert!(
        p.dropped + p.stalled > 0,
        "the network faults were injected: {p:?}"
    );
    assert!(
        fake.calls().iter().any(|c| c.fault_injected),
        "the Looker faults were injected"
    );
    report("pubsub", n, started, published, kills, &fake, &proxy);
}
