//! Several replicas side by side: three in-process processors on one SQS FIFO queue (moto) and
//! one PostgreSQL database, many events for many people, and two rotators on the same database
//! rotating AWS IAM access keys (moto) kept in AWS Secrets Manager (moto). The final Looker state
//! is right, nobody is created twice, every write call has exactly one ledger row, and the
//! ledger's hash chain is one line; each secret is rotated for each trigger, in order
//! (offboarding one of its holders, then a Secrets Manager "rotation failed" audit event), with
//! exactly one new key per rotation at the provider, never two rotations of one secret at a time,
//! and no step done twice although both rotators go after the same requests and rotations. (A
//! known race may rotate a secret twice for one request, one after the other: see
//! `docs/rotation.md`; the test counts it.)
//!
//! The events go out in waves (everyone's first event, then everyone's second, ...), each wave
//! processed before the next: moto's FIFO receive is not atomic across concurrent receivers (two
//! `ReceiveMessage` calls racing can each take a message of the same group), which real SQS never
//! does. Within a wave the replicas share the work on different people; across waves each
//! person's state, written by one replica, is read by another.

use aws_sdk_iam::Client as Iam;
use aws_sdk_iam::types::StatusType;
use aws_sdk_secretsmanager::Client as Sm;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Builder, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Utc};
use gatehouse_app::{self as app, Components};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Source, Subject};
use gatehouse_domain::ledger_chain;
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{
    BackendError, LedgerEntry, LedgerRow, QueueProducer, RotationRequest, StateStore,
};
use gatehouse_e2e::{example_policy, seed_catalog};
use gatehouse_platform::config::Config;
use gatehouse_rotation::any::AnyRotations;
use gatehouse_rotation::state::SecretState;
use gatehouse_rotation::{Phase, Rotation, RotationStore, Rotator, Started, SystemClock};
use gatehouse_store::sqs::SqsQueue;
use gatehouse_testkit::FakeLooker;
use gatehouse_testkit::oracle::{Oracle, assert_no_duplicate_writes};
use gatehouse_testkit::progress::Progress;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const SUBJECTS: usize = 12;
const REPLICAS: usize = 3;
const ROTATORS: usize = 2;
/// Service accounts whose key is rotated when their holder, `replica-user-{2k+1}`, is
/// offboarded (the odd users are, in the third wave).
const HELD: usize = 3;

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: this test needs moto. Run `make test` (it starts \
             moto with scripts/moto.sh)"
        )
    })
}

fn sqs() -> Client {
    Client::from_conf(
        Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .endpoint_url(moto_url())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build(),
    )
}

/// A FIFO queue with a FIFO dead-letter queue, fresh names.
async fn fifo_queue(client: &Client) -> String {
    let base = format!(
        "gh-replicas-{}-{}",
        std::process::id(),
        gatehouse_domain::clock::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
    );
    let dlq = client
        .create_queue()
        .queue_name(format!("{base}-dlq.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create dlq")
        .queue_url
        .unwrap();
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
    let policy = serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": "5"});
    client
        .create_queue()
        .queue_name(format!("{base}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::RedrivePolicy, policy.to_string())
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap()
}

fn email(i: usize) -> String {
    format!("replica-user-{i}@example.com")
}

fn event(i: usize, n: i64, event: IdentityEvent) -> Envelope {
    let profile = [
        ("email", email(i)),
        ("firstName", format!("User{i}")),
        ("lastName", "Replica".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("replica-{i}-{n}")),
        source: Source::Manual,
        subject: Subject {
            key: format!("okta:replica{i}"),
            email: Some(email(i)),
            display_name: None,
        },
        occurred_at: DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap(),
        received_at: gatehouse_domain::clock::now(),
        event,
        profile,
        source_event_type: "replica-test".into(),
        raw: serde_json::Value::Null,
    }
}

/// Per person: activated, added to Engineering; every other one then deactivated. One wave per
/// step.
fn waves() -> Vec<Vec<Envelope>> {
    let engineering = GroupRef {
        id: "00g-eng".into(),
        name: "Engineering".into(),
    };
    vec![
        (0..SUBJECTS)
            .map(|i| event(i, 1, IdentityEvent::UserActivated))
            .collect(),
        (0..SUBJECTS)
            .map(|i| {
                event(
                    i,
                    2,
                    IdentityEvent::GroupMemberAdded {
                        group: engineering.clone(),
                    },
                )
            })
            .collect(),
        (0..SUBJECTS)
            .filter(|i| i % 2 == 1)
            .map(|i| event(i, 3, IdentityEvent::UserDeactivated))
            .collect(),
    ]
}

/// The AWS SDK configuration of the rotators and of the checks: moto, dummy credentials.
async fn aws_sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await
}

/// A service account whose access key Gatehouse rotates.
struct ServiceAccount {
    /// The declared secret's name.
    name: String,
    user: String,
    secret_id: String,
    initial_key: String,
    /// Who holds it (`replica-user-{holder}`).
    holder: usize,
    /// The triggers it must be rotated for, in order.
    triggers: Vec<&'static str>,
}

/// IAM users with one access key each, the key stored in Secrets Manager as consumers read it.
/// `svc-k` is held by `replica-user-{2k+1}` (offboarded); `svc-kept` by `replica-user-0` (not).
async fn service_accounts(sdk: &aws_config::SdkConfig, run: &str) -> Vec<ServiceAccount> {
    let (iam, sm) = (Iam::new(sdk), Sm::new(sdk));
    let mut out = Vec::new();
    let held = (0..HELD).map(|k| {
        (
            format!("svc-{k}"),
            2 * k + 1,
            vec!["holder_offboarded", "secret_event"],
        )
    });
    for (name, holder, triggers) in held.chain([("svc-kept".to_string(), 0, vec!["secret_event"])]) {
        let user = format!("{run}-{name}");
        iam.create_user()
            .user_name(&user)
            .send()
            .await
            .expect("create user");
        let key = iam
            .create_access_key()
            .user_name(&user)
            .send()
            .await
            .expect("create key")
            .access_key
            .unwrap();
        let secret_id = format!("gatehouse/{run}/{name}");
        let doc = serde_json::json!({
            "access_key_id": key.access_key_id(), "secret_access_key": key.secret_access_key(),
        });
        sm.create_secret()
            .name(&secret_id)
            .secret_string(doc.to_string())
            .send()
            .await
            .expect("create secret");
        out.push(ServiceAccount {
            name,
            user,
            secret_id,
            initial_key: key.access_key_id().to_string(),
            holder,
            triggers,
        });
    }
    out
}

fn rotator_toml(accounts: &[ServiceAccount]) -> String {
    let mut t = String::from(
        "[rotator]\npoll_interval = \"50ms\"\nretry_min_delay = \"50ms\"\nretry_max_delay = \"200ms\"\n",
    );
    for a in accounts {
        t.push_str(&format!(
            "[[rotator.secrets]]\nname = {:?}\nholders = [{:?}]\ngrace = \"1ms\"\ndestroy_after = \"1ms\"\n\
             kind = {{ type = \"aws_access_key\", user_name = {:?} }}\n\
             store = {{ type = \"aws_secrets_manager\", secret_id = {:?} }}\n",
            a.name,
            email(a.holder),
            a.user,
            a.secret_id
        ));
    }
    t
}

/// What the audit translator publishes for a Secrets Manager `RotationFailed` CloudTrail event.
fn rotation_failed(a: &ServiceAccount) -> Envelope {
    Envelope {
        version: Envelope::VERSION,
        id: EnvelopeId(format!("aws:rotation-failed-{}", a.name)),
        source: Source::AwsCloudTrail,
        subject: Subject {
            key: format!("aws:secret:{}", a.secret_id),
            email: None,
            display_name: None,
        },
        occurred_at: gatehouse_domain::clock::now(),
        received_at: gatehouse_domain::clock::now(),
        event: IdentityEvent::RotationRequested {
            provider: "aws".into(),
            reason: "secrets manager rotation failed".into(),
            secret: Some(a.secret_id.clone()),
        },
        profile: Default::default(),
        source_event_type: "RotationFailed".into(),
        raw: serde_json::Value::Null,
        trace_parent: None,
    }
}

/// What one rotator instance asked of the shared store and what it got.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Started { secret: String, new: bool },
    Claimed { id: String, won: bool },
    Saved { id: String, phase: Phase, ok: bool },
}

/// The production store (`AnyRotations` from `[state]`) with a record of the calls that decide
/// who does what, per rotator instance, in the order they returned.
#[derive(Clone)]
struct Recorded {
    inner: AnyRotations,
    me: usize,
    log: Arc<Mutex<Vec<(usize, Seen)>>>,
}

impl Recorded {
    fn note(&self, s: Seen) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((self.me, s));
    }
}

impl RotationStore for Recorded {
    async fn start(&self, r: &Rotation) -> Result<Started, BackendError> {
        let s = self.inner.start(r).await?;
        self.note(Seen::Started {
            secret: r.secret.clone(),
            new: matches!(s, Started::New(_)),
        });
        Ok(s)
    }
    async fn get(&self, id: &str) -> Result<Option<Rotation>, BackendError> {
        self.inner.get(id).await
    }
    async fn history(&self, secret: &str) -> Result<Vec<Rotation>, BackendError> {
        self.inner.history(secret).await
    }
    async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Rotation>, BackendError> {
        self.inner.due(now).await
    }
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, BackendError> {
        self.inner.next_due().await
    }
    async fn claim(
        &self,
        id: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        let won = self.inner.claim(id, owner, until, now).await?;
        self.note(Seen::Claimed { id: id.into(), won });
        Ok(won)
    }
    async fn save(&self, r: &Rotation, owner: &str) -> Result<bool, BackendError> {
        let ok = self.inner.save(r, owner).await?;
        self.note(Seen::Saved {
            id: r.id.clone(),
            phase: r.phase,
            ok,
        });
        Ok(ok)
    }
    async fn release(&self, id: &str, owner: &str) -> Result<(), BackendError> {
        self.inner.release(id, owner).await
    }
    async fn secret_state(&self, secret: &str) -> Result<SecretState, BackendError> {
        self.inner.secret_state(secret).await
    }
    async fn set_backoff(
        &self,
        secret: &str,
        failures: u32,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), BackendError> {
        self.inner.set_backoff(secret, failures, retry_at).await
    }
    async fn claim_fire(
        &self,
        secret: &str,
        prev: Option<DateTime<Utc>>,
        fire: DateTime<Utc>,
    ) -> Result<bool, BackendError> {
        self.inner.claim_fire(secret, prev, fire).await
    }
    async fn append_ledger(&self, entries: &[LedgerEntry]) -> Result<(), BackendError> {
        self.inner.append_ledger(entries).await
    }
    async fn ledger(&self) -> Result<Vec<LedgerEntry>, BackendError> {
        self.inner.ledger().await
    }
    async fn record_request(&self, r: &RotationRequest, at: DateTime<Utc>) -> Result<bool, BackendError> {
        self.inner.record_request(r, at).await
    }
    async fn pending_requests(&self) -> Result<Vec<RotationRequest>, BackendError> {
        self.inner.pending_requests().await
    }
    async fn mark_handled(&self, envelope_id: &str, at: DateTime<Utc>) -> Result<(), BackendError> {
        self.inner.mark_handled(envelope_id, at).await
    }
}

/// Publish a wave and wait until a replica has processed every envelope of it: no bound on the
/// total time, only on progress (`gatehouse_testkit::progress`: fails if no further envelope of
/// the wave is processed for the window), so a busy machine makes it slower, not red.
async fn send_wave(producer: &SqsQueue, state: &gatehouse_store::state::AnyState, wave: &[Envelope]) {
    producer.publish(wave).await.unwrap();
    let mut progress = Progress::from_env("every event of the wave processed by some replica");
    loop {
        let mut missing = Vec::new();
        for e in wave {
            if !state.is_processed(&e.id).await.unwrap() {
                missing.push(e.id.0.clone());
            }
        }
        if missing.is_empty() {
            return;
        }
        progress.note(&[(wave.len() - missing.len()) as u64], || missing);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The triggers of `history`, in order: what the secret was rotated for.
fn triggers_of(history: &[Rotation]) -> Vec<&str> {
    history.iter().map(|r| r.trigger.as_str()).collect()
}

/// Tick both rotators at once, again and again (what their `run` loops do, without the idle
/// wait, so they meet on every request and every due step) until every request is handled and
/// each secret has been rotated for `want(secret)`, every rotation done.
async fn rotate_until(
    rotators: &[Rotator<Recorded>],
    store: &AnyRotations,
    accounts: &[ServiceAccount],
    want: impl Fn(&ServiceAccount) -> &[&'static str],
) {
    // No bound on the total time, only on progress: a rotation started or a step saved (phases
    // only move forward) restarts the window of `gatehouse_testkit::progress`.
    let mut progress = Progress::from_env("rotating");
    loop {
        // Requests arrive on the rotation queue and one rotator or the other records each in
        // the shared inbox; both then drain the inbox at once, so they meet on every request
        // (as they would on requests recorded while both were busy).
        let (a, b) = tokio::join!(rotators[0].take_requests(), rotators[1].take_requests());
        a.expect("rotator 0 takes requests");
        b.expect("rotator 1 takes requests");
        let (a, b) = tokio::join!(rotators[0].tick(), rotators[1].tick());
        a.expect("rotator 0 tick");
        b.expect("rotator 1 tick");
        let mut done = store.pending_requests().await.unwrap().is_empty();
        for acc in accounts {
            let h = store.history(&acc.name).await.unwrap();
            let got = triggers_of(&h);
            assert!(
                want(acc).starts_with(&got),
                "{} rotated for {got:?}, expected {:?}: {:?}",
                acc.name,
                want(acc),
                rotation_phases(store, accounts).await
            );
            done &= got == want(acc) && h.iter().all(|r| r.phase == Phase::Done);
        }
        if done {
            return;
        }
        let phases = rotation_phases(store, accounts).await;
        let steps: u64 = phases.iter().map(|(_, _, p)| *p as u64 + 1).sum();
        progress.note(&[steps], || phases);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (secret, trigger, phase) of every rotation, for a timeout message.
async fn rotation_phases(store: &AnyRotations, accounts: &[ServiceAccount]) -> Vec<(String, String, Phase)> {
    let mut out = Vec::new();
    for a in accounts {
        for r in store.history(&a.name).await.unwrap() {
            out.push((r.secret, r.trigger, r.phase));
        }
    }
    out
}

/// The steps a rotation of an AWS key into Secrets Manager writes to the ledger, each once, and
/// the phase each saves.
const STEPS: [(&str, Phase); 7] = [
    ("snapshot", Phase::Started),
    ("created", Phase::Created),
    ("set", Phase::Set),
    ("tested", Phase::Tested),
    ("finished", Phase::Finished),
    ("revoked", Phase::Revoked),
    ("done", Phase::Done),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processors_and_two_rotators_on_one_queue_and_database_apply_every_change_once() {
    let client = sqs();
    let queue_url = fifo_queue(&client).await;
    // Issue 12, item 4: the processors publish rotation requests here, the rotators consume it.
    let rotation_url = fifo_queue(&client).await;
    let database = gatehouse_testkit::postgres::fresh_database().await;
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let sdk = aws_sdk().await;
    let run = format!(
        "replicas-{}",
        gatehouse_domain::clock::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
    );
    let accounts = service_accounts(&sdk, &run).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, example_policy()).unwrap();

    // Every process reads the same configuration but its own data directory.
    let config = |name: &str| {
        let toml = format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\npolicy = {:?}\n\
             [looker]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n\
             [processor]\nworkers = 4\npoll_interval = \"20ms\"\nretry_min_delay = \"5ms\"\nretry_max_delay = \"50ms\"\n\
             [queue]\nbackend = \"sqs\"\nqueue_url = {queue_url:?}\nrotation_queue_url = {rotation_url:?}\nwait_time = \"1s\"\n\
             [state]\nbackend = \"postgres\"\nurl = {database:?}\nmax_connections = 4\n{}",
            dir.path().join(name).display().to_string(),
            policy.display().to_string(),
            fake.base_url(),
            fake.client_id(),
            fake.client_secret(),
            rotator_toml(&accounts),
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        Config::load(Some(&path), |_| None).expect("config")
    };

    let mut replicas = Vec::new();
    for r in 0..REPLICAS {
        let cfg = config(&format!("replica-{r}"));
        let queue = SqsQueue::with_client(client.clone(), &queue_url, Duration::from_secs(1));
        let rotation = SqsQueue::with_client(client.clone(), &rotation_url, Duration::from_secs(1));
        let running = app::start_with_queues(
            &cfg,
            Components {
                ingress: false,
                processor: true,
            },
            queue,
            app::RotationQueue::of(rotation),
        )
        .await
        .expect("replica starts");
        assert_eq!(running.state.backend(), "postgres");
        replicas.push(running);
    }

    // Two rotators, wired as `gatehouse-rotator` is (`[state]` → the store), each recording
    // what it asked of the store and what it got.
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut rotators = Vec::new();
    for me in 0..ROTATORS {
        let cfg = config(&format!("rotator-{me}"));
        let store = AnyRotations::from(app::open_state_alone(&cfg).await.expect("rotator state"));
        assert_eq!(store.backend(), "postgres");
        let store = Recorded {
            inner: store,
            me,
            log: log.clone(),
        };
        rotators.push(
            gatehouse_rotation::build::rotator_with(&cfg, store, Some(sdk.clone()), Arc::new(SystemClock))
                .await
                .expect("rotator builds")
                // Requests reach the rotators only through the rotation queue. Short polls: a
                // rotator that finds the queue empty goes on at once to the requests and steps
                // the other one recorded, so the two meet on them (a long poll would keep it
                // waiting while the other does all the work).
                .with_requests(Arc::new(SqsQueue::with_client(
                    client.clone(),
                    &rotation_url,
                    Duration::ZERO,
                ))),
        );
    }

    let producer = SqsQueue::with_client(client.clone(), &queue_url, Duration::from_secs(1));
    let state = replicas[0].state.clone();
    let rotations = AnyRotations::from(state.clone());
    for wave in waves() {
        send_wave(&producer, &state, &wave).await;
    }
    // Offboarding a holder is the first trigger; svc-kept's holder stays.
    rotate_until(&rotators, &rotations, &accounts, |a| {
        &a.triggers[..usize::from(a.holder % 2 == 1)]
    })
    .await;
    // Then a "rotation failed" audit event for every secret.
    let audit: Vec<Envelope> = accounts.iter().map(rotation_failed).collect();
    send_wave(&producer, &state, &audit).await;
    rotate_until(&rotators, &rotations, &accounts, |a| &a.triggers[..]).await;

    // Final Looker state: what the events alone want (gatehouse_testkit::oracle, the one
    // definition of the crash, replica and soak tests), and no state-changing write twice.
    let oracle = Oracle::from_events(
        &Policy::from_toml(&example_policy()).unwrap(),
        waves().iter().flatten(),
    );
    assert_eq!(
        oracle.counts(),
        (SUBJECTS / 2, SUBJECTS / 2),
        "active, offboarded"
    );
    oracle.assert_mixed();
    oracle.assert_converged(&fake);
    assert_no_duplicate_writes(&fake);
    // No duplicated effect: one create per person, one ledger row per Looker write call.
    let calls = fake.calls();
    let creates = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/users")
        .count();
    assert_eq!(creates, SUBJECTS, "every person created exactly once");
    assert_eq!(
        fake.users()
            .iter()
            .filter(|u| u.email.as_deref().is_some_and(|e| e.starts_with("replica-user-")))
            .count(),
        SUBJECTS
    );
    let ledger = state.ledger_since(None).await.unwrap();
    let (rotator_rows, looker_rows): (Vec<&LedgerRow>, Vec<&LedgerRow>) =
        ledger.iter().partition(|r| r.entry.target == "rotator");
    assert_eq!(
        looker_rows.len(),
        fake.write_calls(),
        "one ledger row per write call"
    );
    let ok = ledger_chain::verify_store(&state)
        .await
        .unwrap()
        .expect("one intact chain, processors' and rotators' rows together");
    assert_eq!(ok.rows, ledger.len());

    let (iam, sm) = (Iam::new(&sdk), Sm::new(&sdk));
    let seen = log.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut rotations_total = 0;
    for a in &accounts {
        let history = rotations.history(&a.name).await.unwrap();
        // Exactly once per trigger, in order: a rotator that read a request before the other
        // marked it handled asks for the same rotation id, which the store starts once.
        assert_eq!(triggers_of(&history), a.triggers, "{}", a.name);
        // Exactly one new key per rotation: each rotation replaced the key the previous one
        // made, and the provider holds nothing else.
        let mut current = a.initial_key.clone();
        for r in &history {
            assert_eq!(
                r.old_key_id.as_deref(),
                Some(current.as_str()),
                "{}: {r:?}",
                a.name
            );
            current = r.new_key_id.clone().expect("a new key");
        }
        let keys: Vec<(String, bool)> = iam
            .list_access_keys()
            .user_name(&a.user)
            .send()
            .await
            .unwrap()
            .access_key_metadata()
            .iter()
            .map(|k| {
                (
                    k.access_key_id().unwrap_or_default().to_string(),
                    k.status() == Some(&StatusType::Active),
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![(current.clone(), true)],
            "{}: only the last new key is left",
            a.name
        );
        // The stored secret is that key, and it works.
        let v = sm
            .get_secret_value()
            .secret_id(&a.secret_id)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap();
        let doc: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
        assert_eq!(doc["access_key_id"], current.as_str(), "{}", a.name);
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&sdk)
                .credentials_provider(aws_sdk_sts::config::Credentials::new(
                    current.as_str(),
                    doc["secret_access_key"].as_str().unwrap(),
                    None,
                    None,
                    "stored",
                ))
                .build(),
        );
        let who = sts.get_caller_identity().send().await.unwrap();
        assert!(
            who.arn()
                .unwrap_or_default()
                .ends_with(&format!(":user/{}", a.user))
        );

        // Every step of every rotation done and ledgered exactly once, nothing else (no orphan
        // key deleted, no key made room for, no error); saved once, by the lease holder.
        rotations_total += history.len();
        let mut active = Vec::new();
        for r in &history {
            let rows: Vec<&&LedgerRow> = rotator_rows
                .iter()
                .filter(|l| l.entry.envelope_id == r.id)
                .collect();
            let steps: Vec<&str> = rows
                .iter()
                .map(|l| l.entry.call.path.rsplit('/').next().unwrap_or_default())
                .collect();
            let want: Vec<&str> = STEPS.iter().map(|(step, _)| *step).collect();
            assert_eq!(steps, want, "{} rotation {}: {rows:?}", a.name, r.id);
            assert!(rows.iter().all(|l| l.entry.status == "ok"), "{rows:?}");
            let saved: Vec<Phase> = seen
                .iter()
                .filter_map(|(_, s)| match s {
                    Seen::Saved { id, phase, ok } if *id == r.id => {
                        assert!(ok, "{}: a save was refused: a step ran without the lease", r.id);
                        Some(*phase)
                    }
                    _ => None,
                })
                .collect();
            let want: Vec<Phase> = STEPS.iter().map(|(_, phase)| *phase).collect();
            assert_eq!(saved, want, "{}: each step saved once", r.id);
            // Active = from the snapshot to the promotion of the new key.
            active.push((rows[0].seq, rows[4].seq, r.id.clone()));
        }
        // One rotation of a secret at a time: active spans in the one ledger chain are disjoint.
        active.sort();
        for w in active.windows(2) {
            assert!(
                w[0].1 < w[1].0,
                "{}: rotations {} and {} overlap",
                a.name,
                w[0].2,
                w[1].2
            );
        }
    }

    // Who did what: both rotators went after the same requests and rotations.
    let mut per: BTreeMap<usize, [usize; 5]> = BTreeMap::new();
    for (me, s) in &seen {
        let c = per.entry(*me).or_default();
        match s {
            Seen::Started { new: true, .. } => c[0] += 1,
            Seen::Started { new: false, .. } => c[1] += 1,
            Seen::Claimed { won: true, .. } => c[2] += 1,
            Seen::Claimed { won: false, .. } => c[3] += 1,
            Seen::Saved { ok: true, .. } => c[4] += 1,
            Seen::Saved { ok: false, .. } => {}
        }
    }
    for (me, c) in &per {
        eprintln!(
            "rotator {me}: started {} (found active {}), leases won {} lost {}, steps saved {}",
            c[0], c[1], c[2], c[3], c[4]
        );
    }
    eprintln!("rotations: {rotations_total}");
    assert_eq!(
        per.values().map(|c| c[0]).sum::<usize>(),
        rotations_total,
        "one start per rotation"
    );
    assert_eq!(
        per.values().map(|c| c[4]).sum::<usize>(),
        rotations_total * STEPS.len()
    );
    // Both did work, and they met: one found the other's rotation active or lost a lease.
    assert_eq!(per.len(), ROTATORS, "both rotators asked the store for work");
    assert!(per.values().all(|c| c[4] > 0), "both rotators did steps: {per:?}");
    assert!(
        per.values().any(|c| c[1] + c[3] > 0),
        "the rotators competed: {per:?}"
    );

    for r in replicas {
        r.stop().await;
    }
}
