//! Crash safety through real queues (see docs/crash-test.md): lifecycle events flow through SQS
//! (moto) or Pub/Sub (the emulator) into `gatehouse standalone` child processes that are killed
//! with SIGKILL and restarted; at the end the fake Looker must hold exactly the state computed from
//! the events alone, nothing may be dead-lettered, and no write may have been applied twice.

use super::bin;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Builder, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{QueueConsumer, QueueProducer, StateStore};
use gatehouse_store::pubsub::{PubsubOptions, PubsubQueue};
use gatehouse_store::sqs::SqsQueue;
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::oracle::{Oracle, assert_no_duplicate_writes};
use gatehouse_testkit::progress::Progress;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::process::Child;
use tokio::time::Instant;

const POLICY: &str = r#"
[offboarding]
disable = true
revoke_sessions = true
revoke_api_keys = true
remove_managed_groups = true

[[rule]]
name = "everyone"
when = "everyone"
looker_roles = ["Viewer"]

[[rule]]
name = "engineering"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]
looker_roles = ["Developer"]

[[rule]]
name = "finance"
when = { idp_group = "Finance" }
looker_groups = ["Finance Analysts"]

[[rule]]
name = "sales"
when = { idp_group = "Sales" }
looker_groups = ["Sales Team"]

[[rule]]
name = "sales-department"
when = { attribute = { name = "department", equals = "sales" } }
looker_roles = ["Sales Viewer"]
"#;

const IDP_GROUPS: [&str; 3] = ["Engineering", "Finance", "Sales"];
const LOOKER_GROUPS: [&str; 3] = ["Engineers", "Finance Analysts", "Sales Team"];
const LOOKER_ROLES: [&str; 3] = ["Viewer", "Developer", "Sales Viewer"];
const DEPARTMENTS: [&str; 3] = ["engineering", "sales", "operations"];

/// SplitMix64: a tiny deterministic generator, so a failing seed can be replayed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

pub(crate) fn seed() -> u64 {
    std::env::var("GATEHOUSE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6a7e_4007)
}

fn email(user: usize) -> String {
    format!("user{user:04}@example.com")
}

/// `users` × `per_user` Okta-like envelopes, strictly increasing in time per user, shuffled
/// across (and within) users.
pub(crate) fn generate(rng: &mut Rng, run: &str, users: usize, per_user: usize) -> Vec<Envelope> {
    let base = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let mut out = Vec::with_capacity(users * per_user);
    for u in 0..users {
        let mut at = base;
        for n in 0..per_user {
            at += chrono::Duration::milliseconds(1 + rng.below(5_000) as i64);
            let event = if n == 0 {
                IdentityEvent::UserCreated
            } else {
                match rng.below(20) {
                    0 => IdentityEvent::UserActivated,
                    1 => IdentityEvent::UserSuspended,
                    2 => IdentityEvent::UserUnsuspended,
                    3 => IdentityEvent::UserDeactivated,
                    4..=6 => IdentityEvent::ProfileUpdated,
                    7..=13 => IdentityEvent::GroupMemberAdded {
                        group: group(rng.below(3) as usize),
                    },
                    _ => IdentityEvent::GroupMemberRemoved {
                        group: group(rng.below(3) as usize),
                    },
                }
            };
            let mut profile = Profile::from([
                ("email".to_string(), email(u)),
                ("login".to_string(), email(u)),
                ("firstName".to_string(), format!("First{u}")),
                ("lastName".to_string(), format!("Last{u}")),
            ]);
            if event == IdentityEvent::ProfileUpdated || n == 0 {
                let dept = DEPARTMENTS[rng.below(3) as usize];
                profile.insert("department".into(), dept.into());
            }
            let source_event_type = match &event {
                IdentityEvent::UserCreated => "user.lifecycle.create",
                IdentityEvent::UserActivated => "user.lifecycle.activate",
                IdentityEvent::UserSuspended => "user.lifecycle.suspend",
                IdentityEvent::UserUnsuspended => "user.lifecycle.unsuspend",
                IdentityEvent::UserDeactivated => "user.lifecycle.deactivate",
                IdentityEvent::ProfileUpdated => "user.account.update_profile",
                IdentityEvent::GroupMemberAdded { .. } => "group.user_membership.add",
                _ => "group.user_membership.remove",
            };
            out.push(Envelope {
                trace_parent: None,
                version: Envelope::VERSION,
                id: EnvelopeId(format!("{run}-{u}-{n}")),
                source: Source::Okta,
                subject: Subject {
                    key: format!("okta:00u{u:06}"),
                    email: Some(email(u)),
                    display_name: Some(format!("First{u} Last{u}")),
                },
                occurred_at: at,
                received_at: gatehouse_domain::clock::now(),
                event,
                profile,
                source_event_type: source_event_type.into(),
                raw: serde_json::Value::Null,
            });
        }
    }
    rng.shuffle(&mut out);
    out
}

fn group(i: usize) -> GroupRef {
    GroupRef {
        id: format!("00g{i}"),
        name: IDP_GROUPS[i].into(),
    }
}

/// The groups and roles the policy names, in the fake Looker.
pub(crate) fn seed_looker(fake: &FakeLooker) {
    for g in LOOKER_GROUPS {
        fake.add_group(g);
    }
    for r in LOOKER_ROLES {
        fake.add_role(r);
    }
}

pub(crate) fn oracle(events: &[Envelope]) -> Oracle {
    Oracle::from_events(&Policy::from_toml(POLICY).unwrap(), events)
}

/// Every processor's stderr goes to one file in the run's directory; a processor that dies on
/// its own has its log printed (see [`still_running`]).
fn stderr_log(dir: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("processors.log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// A `gatehouse standalone` child with the given queue settings.
pub(crate) fn processor(dir: &Path, data: &Path, fake: &FakeLooker, queue_env: &[(&str, String)]) -> Child {
    let mut cmd = tokio::process::Command::from(bin());
    cmd.arg("--config")
        .arg(dir.join("gatehouse.toml"))
        .arg("standalone")
        .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_DATA_DIR", data)
        .env("GATEHOUSE_POLICY", dir.join("policy.toml"))
        .env("GATEHOUSE_LOOKER_URL", fake.base_url())
        .env("GATEHOUSE_LOOKER_CLIENT_ID", fake.client_id())
        .env("GATEHOUSE_LOOKER_CLIENT_SECRET", fake.client_secret())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_log(dir))
        .kill_on_drop(true);
    for (k, v) in queue_env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start gatehouse standalone")
}

pub(crate) async fn sigkill(child: &mut Child) {
    child.start_kill().expect("SIGKILL the processor");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the killed processor exits")
        .unwrap();
    assert!(!status.success(), "killed, not exited: {status:?}");
}

/// Fails the test if a processor died on its own (a crash we did not cause).
pub(crate) fn still_running(children: &mut [Child], dir: &Path) {
    for c in children {
        if let Some(status) = c.try_wait().unwrap() {
            panic!(
                "a processor exited on its own: {status:?}; its log:\n{}",
                log(dir)
            );
        }
    }
}

/// The last lines the processors wrote to stderr.
pub(crate) fn log(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("processors.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub(crate) fn write_files(dir: &Path, queue_toml: &str) {
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    std::fs::write(
        dir.join("gatehouse.toml"),
        format!(
            "[processor]\nvisibility_timeout = \"5s\"\nmax_attempts = 50\nretry_min_delay = \"50ms\"\n\
             retry_max_delay = \"500ms\"\n\n[queue]\n{queue_toml}"
        ),
    )
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// SQS

pub(crate) fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: the crash test needs moto. Run `make test`, or \
             `scripts/moto.sh start` and GATEHOUSE_TEST_MOTO_URL=http://127.0.0.1:5000 cargo test ..."
        )
    })
}

pub(crate) fn sqs_client() -> Client {
    let conf = Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    Client::from_conf(conf)
}

pub(crate) fn unique(prefix: &str) -> String {
    let nanos = gatehouse_domain::clock::now()
        .timestamp_nanos_opt()
        .unwrap_or_default() as u128;
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A fresh queue (FIFO or standard) with a dead-letter queue; returns (queue url, dlq url).
pub(crate) async fn sqs_queues(client: &Client, prefix: &str, fifo: bool) -> (String, String) {
    let base = unique(prefix);
    let (suffix, fifo_attr) = if fifo { (".fifo", "true") } else { ("", "false") };
    let mut dlq_req = client.create_queue().queue_name(format!("{base}-dlq{suffix}"));
    if fifo {
        dlq_req = dlq_req.attributes(QueueAttributeName::FifoQueue, fifo_attr);
    }
    let dlq = dlq_req.send().await.expect("create dlq").queue_url.unwrap();
    let arn = client
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()
        .remove(&QueueAttributeName::QueueArn)
        .unwrap();
    let redrive = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": "20"});
    let mut req = client.create_queue().queue_name(format!("{base}{suffix}"));
    if fifo {
        req = req.attributes(QueueAttributeName::FifoQueue, fifo_attr);
    }
    let url = req
        .attributes(QueueAttributeName::VisibilityTimeout, "5")
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap();
    (url, dlq)
}

struct SqsRun {
    dir: tempfile::TempDir,
    fake: FakeLooker,
    oracle: Oracle,
    events: Vec<Envelope>,
    queue: SqsQueue,
    dlq: SqsQueue,
    queue_env: Vec<(&'static str, String)>,
}

async fn sqs_run(prefix: &str, fifo: bool, users: usize, per_user: usize, rng: &mut Rng) -> SqsRun {
    let client = sqs_client();
    let (url, dlq_url) = sqs_queues(&client, prefix, fifo).await;
    let queue = SqsQueue::with_client(client.clone(), &url, Duration::from_secs(1));
    let dlq = SqsQueue::with_client(client, &dlq_url, Duration::from_secs(1));
    let fake = FakeLooker::start().await;
    seed_looker(&fake);
    let events = generate(rng, prefix, users, per_user);
    let oracle = oracle(&events);
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &format!("backend = \"sqs\"\nqueue_url = \"{url}\"\nwait_time = \"1s\"\n"),
    );
    let queue_env = vec![("AWS_ENDPOINT_URL", moto_url())];
    SqsRun {
        dir,
        fake,
        oracle,
        events,
        queue,
        dlq,
        queue_env,
    }
}

/// How many envelopes a background publisher has sent so far (a progress counter).
pub(crate) type Sent = Arc<AtomicU64>;

/// Publishes the events in chunks of 100, four chunks at a time, while the test goes on (the
/// processors are started and killed while events still arrive).
pub(crate) fn publish_in_background<Q>(
    queue: Q,
    events: Vec<Envelope>,
    sent: Sent,
) -> tokio::task::JoinHandle<Duration>
where
    Q: QueueProducer + Clone + 'static,
{
    tokio::spawn(async move {
        let started = Instant::now();
        let chunks: Vec<Vec<Envelope>> = events.chunks(100).map(<[Envelope]>::to_vec).collect();
        let mut chunks = chunks.into_iter();
        loop {
            let batch: Vec<_> = chunks.by_ref().take(4).collect();
            if batch.is_empty() {
                break;
            }
            let results = futures::future::join_all(batch.iter().map(|c| queue.publish(c))).await;
            for (r, c) in results.into_iter().zip(&batch) {
                r.expect("publish");
                sent.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
        }
        started.elapsed()
    })
}

/// Most messages moto is asked to hold at once. moto's SQS model scans (and re-times) every
/// message of a queue on each send, receive and delete: with 10,000 queued, one receive took
/// four seconds of CPU (measured in-process, moto 5.2.5). Real SQS has no such cost; the
/// publisher waits while more than this many are queued, so all 10,000 events still flow
/// through the queue, a few hundred at a time.
const MOTO_BACKLOG: u64 = 300;

/// [`publish_in_background`] for SQS on moto: chunks of 100 while the queue holds fewer than
/// [`MOTO_BACKLOG`] messages.
pub(crate) fn publish_to_sqs_in_background(
    queue: SqsQueue,
    events: Vec<Envelope>,
    sent: Sent,
) -> tokio::task::JoinHandle<Duration> {
    tokio::spawn(async move {
        let started = Instant::now();
        for chunk in events.chunks(100) {
            while queue.depth().await.expect("sqs depth") > MOTO_BACKLOG {
                tokio::time::sleep(Duration::from_millis(200)).await; // backpressure, not a wait for a result
            }
            queue.publish(chunk).await.expect("publish to sqs");
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        started.elapsed()
    })
}

/// Kills: `kills` processors in turn, each SIGKILLed 2–15 s (seeded) after it started, then a
/// last one that is left running. Returns the last.
async fn kill_repeatedly(
    rng: &mut Rng,
    kills: usize,
    fake: &FakeLooker,
    dir: &Path,
    start: impl Fn() -> Child,
) -> Child {
    for kill in 0..kills {
        let mut child = start();
        let after = Duration::from_millis(2_000 + rng.below(13_000));
        tokio::time::sleep(after).await; // the crash point itself, not a wait for work
        still_running(std::slice::from_mut(&mut child), dir);
        sigkill(&mut child).await;
        eprintln!(
            "kill {kill} after {after:?}: {} looker writes so far",
            fake.write_calls()
        );
    }
    start()
}

/// What a run polls while its processors work.
pub(crate) struct Watch<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) data: &'a Path,
    pub(crate) fake: &'a FakeLooker,
    pub(crate) oracle: &'a Oracle,
    pub(crate) events: &'a [Envelope],
    pub(crate) sent: &'a Sent,
    /// SQS: "drained" also needs the queue's depth (visible + in flight) at 0. Pub/Sub has no
    /// depth to read; there "drained" is every envelope recorded as processed (Looker alone is
    /// not enough: a message a killed processor held comes back only when its lease lapses, and
    /// Looker may look right without it).
    pub(crate) queue: Option<&'a SqsQueue>,
}

/// Polls until the publisher is done, every envelope is recorded as processed in the
/// processors' store (read while they run), Looker equals the expected state and (SQS) the queue
/// is empty. There is no bound on the total time: it fails only when nothing progresses
/// (envelopes published, envelopes processed, people converged: none reaches a new high) for
/// the window of [`gatehouse_testkit::progress`], so a busy machine makes the test slower, not
/// red, while a lost event or a stale commit (everything processed, a person still wrong) still
/// fails it, with the people who differ and the events missing.
pub(crate) async fn converge(
    w: &Watch<'_>,
    children: &mut [Child],
    publisher: &tokio::task::JoinHandle<Duration>,
) {
    let mut progress = Progress::from_env("crash test convergence");
    let mut store = None;
    let mut unprocessed: Vec<EnvelopeId> = w.events.iter().map(|e| e.id.clone()).collect();
    loop {
        still_running(children, w.dir);
        let diff = w.oracle.mismatches(w.fake);
        if store.is_none() && w.data.join("gatehouse.db").exists() {
            store = Some(gatehouse_store::sqlite::Sqlite::open(w.data).await.unwrap());
        }
        if let Some(s) = &store {
            // A rotating window of at most CHECK_PER_ROUND lookups per round (those still
            // unprocessed go to the back): with 100,000 events a full pass every round kept a
            // core busy on point queries, slowing the processors it watches.
            const CHECK_PER_ROUND: usize = 2_000;
            let n = unprocessed.len().min(CHECK_PER_ROUND);
            let mut still = Vec::new();
            for id in unprocessed.drain(..n) {
                if !s.is_processed(&id).await.unwrap() {
                    still.push(id);
                }
            }
            unprocessed.extend(still);
        }
        let depth = match w.queue {
            Some(q) => q.depth().await.unwrap(),
            None => 0,
        };
        if store.is_some()
            && publisher.is_finished()
            && unprocessed.is_empty()
            && diff.is_empty()
            && depth == 0
        {
            return;
        }
        let counters = [
            w.sent.load(Ordering::Relaxed),
            (w.events.len() - unprocessed.len()) as u64,
            (w.oracle.expected().len() - diff.len()) as u64,
        ];
        progress.note(&counters, || {
            format!(
                "[published, processed, people converged] of {} events and {} people; {depth} \
                 messages queued; {} people differ, e.g. {:?}; not processed, e.g. {:?}",
                w.events.len(),
                w.oracle.expected().len(),
                diff.len(),
                diff.iter().take(5).collect::<Vec<_>>(),
                unprocessed.iter().take(5).map(|id| &id.0).collect::<Vec<_>>()
            )
        });
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) async fn assert_no_dead_letters(dlq: &SqsQueue) {
    assert_eq!(dlq.depth().await.unwrap(), 0, "an event was dead-lettered");
    let got = dlq.receive(10, Duration::from_secs(1)).await.unwrap();
    assert!(got.is_empty(), "dead-lettered: {:?}", got[0].body);
}

/// Every envelope was recorded as processed in the processor's store (read after it is gone).
pub(crate) async fn assert_all_processed(data: &Path, events: &[Envelope]) {
    let store = gatehouse_store::sqlite::Sqlite::open(data).await.unwrap();
    let mut missing = Vec::new();
    for e in events {
        if !store.is_processed(&e.id).await.unwrap() {
            missing.push(e.id.0.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} events were never processed, e.g. {:?}",
        missing.len(),
        events.len(),
        &missing[..missing.len().min(5)]
    );
}

const CRASH_USERS: usize = 400;
const CRASH_EVENTS_PER_USER: usize = 25;
const KILLS: usize = 5;

impl SqsRun {
    fn watch<'a>(&'a self, data: &'a Path, sent: &'a Sent) -> Watch<'a> {
        Watch {
            dir: self.dir.path(),
            data,
            fake: &self.fake,
            oracle: &self.oracle,
            events: &self.events,
            sent,
            queue: Some(&self.queue),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_sigkill_at_random_points_loses_nothing_and_applies_nothing_twice() {
    let mut rng = Rng(seed());
    let run = sqs_run("crash", false, CRASH_USERS, CRASH_EVENTS_PER_USER, &mut rng).await;
    let data = run.dir.path().join("data");
    let started = Instant::now();
    let sent = Sent::default();
    let publisher = publish_to_sqs_in_background(run.queue.clone(), run.events.clone(), sent.clone());
    let last = kill_repeatedly(&mut rng, KILLS, &run.fake, run.dir.path(), || {
        processor(run.dir.path(), &data, &run.fake, &run.queue_env)
    })
    .await;
    let mut last = [last];
    converge(&run.watch(&data, &sent), &mut last, &publisher).await;
    let published = publisher.await.expect("the publisher finished");
    eprintln!("published {} envelopes to sqs in {published:?}", run.events.len());
    eprintln!("converged after {:?}", started.elapsed());
    // Stays converged: nothing left in flight undoes it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.oracle.assert_converged(&run.fake);
    sigkill(&mut last[0]).await;

    assert_no_dead_letters(&run.dlq).await;
    assert_all_processed(&data, &run.events).await;
    assert_no_duplicate_writes(&run.fake);
    run.oracle.assert_mixed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_two_processors_on_one_queue_converge_without_duplicate_writes() {
    let mut rng = Rng(seed() ^ 0x2);
    let run = sqs_run("pair", true, 50, 10, &mut rng).await;
    let data = run.dir.path().join("data");
    let started = Instant::now();
    let sent = Sent::default();
    let publisher = publish_in_background(run.queue.clone(), run.events.clone(), sent.clone());
    // The second starts once the first has created the database and begun work, so the two
    // overlap on the queue, not on creating one SQLite file (several replicas at scale use
    // PostgreSQL: tests/it/replicas.rs).
    let mut first = [processor(run.dir.path(), &data, &run.fake, &run.queue_env)];
    let mut began = Progress::from_env("the first processor's first write");
    while run.fake.write_calls() == 0 {
        still_running(&mut first, run.dir.path());
        began.note(&[sent.load(Ordering::Relaxed)], || log(run.dir.path()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let [first] = first;
    let mut both = [first, processor(run.dir.path(), &data, &run.fake, &run.queue_env)];
    converge(&run.watch(&data, &sent), &mut both, &publisher).await;
    publisher.await.expect("the publisher finished");
    eprintln!("converged after {:?}", started.elapsed());
    for c in &mut both {
        sigkill(c).await;
    }
    assert_no_dead_letters(&run.dlq).await;
    assert_all_processed(&data, &run.events).await;
    assert_no_duplicate_writes(&run.fake);
    run.oracle.assert_mixed();
}

/// A run with a queue the processors read and nothing else watches (embedded, Pub/Sub): the
/// events are published in the background while [`KILLS`] processors are SIGKILLed in turn,
/// then the last one (returned, still running) works until [`converge`] says done.
#[allow(clippy::too_many_arguments)]
async fn kill_and_converge<Q>(
    rng: &mut Rng,
    fake: &FakeLooker,
    dir: &Path,
    data: &Path,
    oracle: &Oracle,
    events: &[Envelope],
    queue: Q,
    queue_env: &[(&str, String)],
) -> Child
where
    Q: QueueProducer + Clone + 'static,
{
    let sent = Sent::default();
    let publisher = publish_in_background(queue, events.to_vec(), sent.clone());
    let last = kill_repeatedly(rng, KILLS, fake, dir, || processor(dir, data, fake, queue_env)).await;
    let mut last = [last];
    let watch = Watch {
        dir,
        data,
        fake,
        oracle,
        events,
        sent: &sent,
        queue: None,
    };
    converge(&watch, &mut last, &publisher).await;
    let published = publisher.await.expect("the publisher finished");
    eprintln!("published {} envelopes in {published:?}", events.len());
    let [last] = last;
    last
}

// ---------------------------------------------------------------------------------------------
// Embedded SQLite queue (the default): the test publishes into the same database file the
// processors claim from, as a separate `gatehouse-ingress` would.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sigkill_at_random_points_loses_nothing_and_applies_nothing_twice() {
    let mut rng = Rng(seed() ^ 0x4);
    let fake = FakeLooker::start().await;
    seed_looker(&fake);
    let events = generate(&mut rng, "ecrash", CRASH_USERS, CRASH_EVENTS_PER_USER);
    let oracle = oracle(&events);
    let dir = tempfile::tempdir().unwrap();
    // The embedded queue in the data directory (the default, named).
    write_files(dir.path(), "backend = \"embedded\"\n");
    let data = dir.path().join("data");
    let db = gatehouse_store::sqlite::Sqlite::open(&data).await.unwrap();
    let started = Instant::now();
    let last = kill_and_converge(
        &mut rng,
        &fake,
        dir.path(),
        &data,
        &oracle,
        &events,
        db.clone(),
        &[],
    )
    .await;
    let mut last = [last];
    eprintln!("converged after {:?}", started.elapsed());
    // Every event finished: the transaction that recorded its outcome also took its message
    // off the queue, so nothing is left for a later processor to redo.
    let mut drained = Progress::from_env("the embedded queue emptying");
    loop {
        let depth = db.queue_depth().await.unwrap();
        if depth == 0 {
            break;
        }
        still_running(&mut last, dir.path());
        let gone = (events.len() as i64 - depth).max(0) as u64;
        drained.note(&[gone], || format!("{depth} messages still queued"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    oracle.assert_converged(&fake);
    sigkill(&mut last[0]).await;

    assert!(db.dead_letters().await.unwrap().is_empty(), "dead letters");
    assert_all_processed(&data, &events).await;
    assert_no_duplicate_writes(&fake);
    oracle.assert_mixed();
}

// ---------------------------------------------------------------------------------------------
// Pub/Sub

const PROJECT: &str = "gatehouse-test";

pub(crate) fn emulator() -> String {
    std::env::var("GATEHOUSE_TEST_PUBSUB_EMULATOR").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_PUBSUB_EMULATOR is not set: run `make test`, or \
             `scripts/pubsub-emulator.sh start` and GATEHOUSE_TEST_PUBSUB_EMULATOR=127.0.0.1:8085"
        )
    })
}

async fn admin_put(path: &str, body: serde_json::Value) {
    let (host, port) = emulator()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .unwrap();
    let port: u16 = port.parse().unwrap();
    let url = format!("http://{host}:{}/v1/{path}", port + 1);
    let res = reqwest::Client::new()
        .put(&url)
        .json(&body)
        .send()
        .await
        .expect("emulator admin");
    assert!(
        res.status().is_success(),
        "PUT {url}: {}",
        res.text().await.unwrap_or_default()
    );
}

/// A fresh topic and ordered subscription; returns (topic, subscription).
pub(crate) async fn pubsub_names(prefix: &str) -> (String, String) {
    let name = unique(prefix);
    let topic = format!("projects/{PROJECT}/topics/{name}");
    let sub = format!("projects/{PROJECT}/subscriptions/{name}");
    admin_put(&topic, serde_json::json!({})).await;
    admin_put(
        &sub,
        serde_json::json!({"topic": topic, "ackDeadlineSeconds": 10, "enableMessageOrdering": true}),
    )
    .await;
    (topic, sub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_sigkill_at_random_points_loses_nothing_and_applies_nothing_twice() {
    let mut rng = Rng(seed() ^ 0x3);
    let (topic, sub) = pubsub_names("crash").await;
    let (dlq_topic, dlq_sub) = pubsub_names("crash-dlq").await;
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
    let events = generate(&mut rng, "pcrash", CRASH_USERS, CRASH_EVENTS_PER_USER);
    let oracle = oracle(&events);
    let started = Instant::now();

    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &format!(
            "backend = \"pubsub\"\ntopic = \"{topic}\"\nsubscription = \"{sub}\"\n\
             dead_letter_topic = \"{dlq_topic}\"\nemulator_host = \"{}\"\n",
            emulator()
        ),
    );
    let data = dir.path().join("data");
    let env = vec![("PUBSUB_EMULATOR_HOST", emulator())];
    let last = kill_and_converge(
        &mut rng,
        &fake,
        dir.path(),
        &data,
        &oracle,
        &events,
        queue.clone(),
        &env,
    )
    .await;
    let mut last = [last];
    eprintln!("converged after {:?}", started.elapsed());
    sigkill(&mut last[0]).await;
    let dead = dlq.receive(10, Duration::from_secs(30)).await.unwrap();
    assert!(dead.is_empty(), "dead-lettered: {:?}", dead[0].body);
    assert_all_processed(&data, &events).await;
    assert_no_duplicate_writes(&fake);
    oracle.assert_mixed();
}
