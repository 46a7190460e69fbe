//! Issue 12, item 4: the processor and the rotator meet through the rotation queue, never
//! through a shared table. An offboarding of a declared secret's holder rotates the secret end to
//! end; a rotator whose state is nowhere near the processor's database still gets the request,
//! because the queue is the only way a request travels.

use gatehouse_app::{self as app, Components};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, IdentityEvent, Source, Subject};
use gatehouse_domain::ports::{QueueProducer, StateStore};
use gatehouse_e2e::{Options, okta_fixture, spawn_app, wait_until};
use gatehouse_platform::config::Config;
use gatehouse_rotation::memory::MemoryRotations;
use gatehouse_rotation::sqlite::SqliteRotations;
use gatehouse_rotation::{Phase, Rotation, RotationStore, SystemClock};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_testkit::gcp_sa_keys_fake::{FakeSaKeys, SaKeyInSecret};
use gatehouse_testkit::secret_manager_fake::FakeSecretManager;
use std::sync::Arc;

const SA: &str = "svc-export@gatehouse-test.iam.gserviceaccount.com";
const SECRET: &str = "projects/gatehouse-test/secrets/svc-export-key";
/// The person the deactivation fixture offboards.
const HOLDER: &str = "john.doe@example.com";

/// A GCP service-account key kept in Secret Manager (fakes), held by [`HOLDER`].
struct Gcp {
    sm: FakeSecretManager,
    iam: FakeSaKeys,
    old_key: String,
}

impl Gcp {
    async fn start() -> Gcp {
        let SaKeyInSecret { sm, iam, old_key } = SaKeyInSecret::start(SA, SECRET).await;
        Gcp { sm, iam, old_key }
    }

    fn toml(&self) -> String {
        format!(
            "[rotator]\npoll_interval = \"50ms\"\n[rotator.gcp]\nsecret_manager_url = {:?}\niam_url = {:?}\naccess_token = {:?}\n\n\
             [[rotator.secrets]]\nname = \"export\"\ngrace = \"1h\"\ndestroy_after = \"1d\"\nholders = [{HOLDER:?}]\n\
             kind = {{ type = \"gcp_service_account_key\", email = {SA:?} }}\n\
             store = {{ type = \"gcp_secret_manager\", name = {SECRET:?} }}\n",
            self.sm.url(),
            self.iam.url(),
            self.sm.token()
        )
    }

    /// The secret's readers now get a new key, one that works.
    fn rotated(&self) -> bool {
        let Some(latest) = self.sm.latest(SECRET) else {
            return false;
        };
        self.iam.can_authenticate(&latest) && !latest.contains(&self.old_key)
    }
}

/// Rotation requests and rotations kept in `db`'s rotator tables (`rotation_inbox`,
/// `rotations`).
async fn rotator_rows(db: &Sqlite) -> (usize, usize) {
    let rotations = SqliteRotations::new(db.clone());
    (
        rotations.pending_requests().await.unwrap().len(),
        rotations.history("export").await.unwrap().len(),
    )
}

/// `gatehouse standalone` with a declared secret: an Okta deactivation of its holder, over HTTP,
/// ends with the secret rotated (events queue → processor → rotation queue → rotator).
#[tokio::test]
async fn offboarding_a_holder_over_http_rotates_the_secret_through_the_rotation_queue() {
    let gcp = Gcp::start().await;
    let app = spawn_app(Options {
        extra_toml: gcp.toml(),
        ..Default::default()
    })
    .await;
    app.deliver(&okta_fixture(
        "event-hook.user.lifecycle.deactivate.constructed.json",
    ))
    .await;
    wait_until("the holder's secret rotated", || {
        let ok = gcp.rotated();
        async move { ok }
    })
    .await;
    let rotations = SqliteRotations::new(app.store.clone());
    let history = rotations.history("export").await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].trigger, "holder_offboarded");
    let rotation_queue = app.store.rotation_queue();
    wait_until("the request acked", || {
        let q = rotation_queue.clone();
        async move { q.depth().await.unwrap() == 0 }
    })
    .await;
    app.stop().await;
}

fn okta(id: &str, secs: i64, event: IdentityEvent) -> Envelope {
    Envelope {
        version: Envelope::VERSION,
        id: EnvelopeId(id.into()),
        source: Source::Okta,
        subject: Subject {
            key: "okta:00uholder".into(),
            email: Some(HOLDER.into()),
            display_name: None,
        },
        occurred_at: chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
        received_at: gatehouse_domain::clock::now(),
        event,
        profile: [("email".to_string(), HOLDER.to_string())].into_iter().collect(),
        source_event_type: "test".into(),
        raw: serde_json::Value::Null,
        trace_parent: None,
    }
}

/// The processor alone (no rotator in its process), and a rotator whose state is in memory, far
/// from the processor's database: the holder's offboarding still rotates the secret, because the
/// request travels as an envelope on the rotation queue and the rotator takes it from there. The
/// processor writes no rotation-request row anywhere; if it wrote one to a table instead of
/// publishing, this rotator would never see it.
#[tokio::test]
async fn the_rotator_learns_of_a_request_only_from_the_rotation_queue() {
    let gcp = Gcp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\
             [processor]\npoll_interval = \"10ms\"\n{}",
            dir.path().join("data").display().to_string(),
            gcp.toml()
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&path), |_| None).unwrap();
    let processor = app::start(
        &cfg,
        Components {
            ingress: false,
            processor: true,
        },
    )
    .await
    .unwrap();
    let db = processor.store.clone();
    let offboarding = okta("okta:acme:deactivate-1", 2, IdentityEvent::UserDeactivated);
    db.publish(&[okta("okta:acme:activate-1", 1, IdentityEvent::UserActivated)])
        .await
        .unwrap();
    db.publish(std::slice::from_ref(&offboarding)).await.unwrap();
    wait_until("the offboarding processed", || {
        let (db, id) = (db.clone(), offboarding.id.clone());
        async move { db.is_processed(&id).await.unwrap() }
    })
    .await;
    // Published, durably, before the offboarding was acked; no table row written for it.
    let rotation_queue = db.rotation_queue();
    assert_eq!(rotation_queue.depth().await.unwrap(), 1);
    assert_eq!(
        rotator_rows(&db).await,
        (0, 0),
        "the processor records no request"
    );

    let state = MemoryRotations::default();
    let rotator = gatehouse_rotation::build::rotator_with(&cfg, state.clone(), None, Arc::new(SystemClock))
        .await
        .unwrap()
        .with_requests(Arc::new(
            Sqlite::open(&cfg.data_dir).await.unwrap().rotation_queue(),
        ));
    let report = rotator.tick().await.unwrap();
    assert_eq!(report.received, 1, "{report:?}");
    assert_eq!(
        report.started,
        vec![("export".to_string(), "holder_offboarded".to_string())]
    );
    let history = state.history("export").await.unwrap();
    assert_eq!(history[0].phase, Phase::Finished, "{history:?}");
    // One request per secret and offboarding event, keyed by the offboarding's envelope id.
    let expected = Rotation::for_request(
        "export",
        "holder_offboarded",
        "offboarding:okta:acme:deactivate-1:export",
        gatehouse_domain::clock::now(),
    );
    assert_eq!(history[0].id, expected.id);
    assert!(gcp.rotated(), "the holder's secret has a new working key");
    assert_eq!(rotation_queue.depth().await.unwrap(), 0, "acked once recorded");
    // The rotator's state never touched the processor's database.
    assert_eq!(rotator_rows(&db).await, (0, 0));
    // A second tick: nothing new (the request is handled).
    assert!(rotator.tick().await.unwrap().started.is_empty());
    processor.stop().await;
}

/// A rotation queue that refuses every publish (the backend is down).
#[derive(Clone)]
struct Down;

impl QueueProducer for Down {
    async fn publish(&self, _batch: &[Envelope]) -> Result<(), gatehouse_domain::ports::BackendError> {
        Err(gatehouse_domain::ports::BackendError::new(
            "cannot publish to the rotation queue",
            "connection refused",
        ))
    }
}

/// The processor acks a rotation request only once its publish to the rotation queue is
/// durable: while the queue refuses it, the event is released (not acked, not marked processed)
/// and comes back; once the queue takes it, the request is there and the event is acked.
#[tokio::test]
async fn the_processor_acks_a_request_only_once_it_is_published() {
    use gatehouse_engine::worker::{Disposition, Worker, WorkerConfig};
    use gatehouse_store::state::AnyState;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[processor]\nretry_min_delay = \"5ms\"\nretry_max_delay = \"50ms\"\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&path), |_| None).unwrap();
    let db = Sqlite::open(&cfg.data_dir).await.unwrap();
    let request = Envelope {
        event: IdentityEvent::RotationRequested {
            provider: "aws".into(),
            reason: "access key created outside gatehouse".into(),
            secret: None,
        },
        subject: Subject {
            key: "aws:iam-user:alice".into(),
            email: None,
            display_name: None,
        },
        ..okta("aws:cloudtrail:evt-1", 1, IdentityEvent::UserActivated)
    };
    db.publish(std::slice::from_ref(&request)).await.unwrap();
    let worker_config = WorkerConfig {
        concurrency: 4,
        max_attempts: 5,
        visibility_timeout: std::time::Duration::from_secs(60),
        poll_interval: std::time::Duration::from_millis(10),
        sweep_interval: std::time::Duration::from_secs(3600),
    };

    let down = app::engine(&cfg, AnyState::Sqlite(db.clone()))
        .unwrap()
        .with_rotation_queue(Arc::new(Down));
    let worker = Worker::new(db.clone(), Arc::new(down), worker_config.clone());
    let out = worker.run_once().await.unwrap();
    assert!(
        matches!(out.as_slice(), [Disposition::Released { .. }]),
        "{out:?}"
    );
    assert!(!db.is_processed(&request.id).await.unwrap());
    assert_eq!(db.queue_depth().await.unwrap(), 1, "the event is kept");
    assert_eq!(db.rotation_queue().depth().await.unwrap(), 0);

    let up = app::engine(&cfg, AnyState::Sqlite(db.clone()))
        .unwrap()
        .with_rotation_queue(Arc::new(db.rotation_queue()));
    let worker = Worker::new(db.clone(), Arc::new(up), worker_config);
    // Released with a retry delay (milliseconds here): claimed again once it is visible.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let out = loop {
        let out = worker.run_once().await.unwrap();
        if !out.is_empty() {
            break out;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the released event never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(
        matches!(
            out.as_slice(),
            [Disposition::Acked(
                gatehouse_engine::engine::Handled::RotationRequested
            )]
        ),
        "{out:?}"
    );
    assert!(db.is_processed(&request.id).await.unwrap());
    assert_eq!(db.queue_depth().await.unwrap(), 0);
    let published = gatehouse_domain::ports::QueueConsumer::receive(
        &db.rotation_queue(),
        10,
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    let bodies: Vec<Envelope> = published
        .iter()
        .map(|d| Envelope::from_json(&d.body).unwrap())
        .collect();
    assert_eq!(bodies, vec![request]);
}

/// The Pub/Sub emulator's `host:port` (gRPC) and its REST admin port (the next one).
fn pubsub_emulator() -> (String, String) {
    let grpc = std::env::var("GATEHOUSE_TEST_PUBSUB_EMULATOR").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_PUBSUB_EMULATOR is not set: run this under scripts/with-servers.sh \
             (or `make test`)"
        )
    });
    let (host, port) = grpc.rsplit_once(':').expect("host:port");
    let admin = std::env::var("GATEHOUSE_TEST_PUBSUB_ADMIN")
        .unwrap_or_else(|_| format!("{host}:{}", port.parse::<u16>().unwrap() + 1));
    (grpc, admin)
}

/// Create `projects/gatehouse-test/topics/NAME` and a subscription of the same name on it
/// (Pub/Sub REST: `PUT /v1/projects/P/topics/T`, `PUT /v1/projects/P/subscriptions/S`).
async fn pubsub_channel(admin: &str, name: &str) -> (String, String) {
    let topic = format!("projects/gatehouse-test/topics/{name}");
    let sub = format!("projects/gatehouse-test/subscriptions/{name}");
    let http = reqwest::Client::new();
    for (path, body) in [
        (&topic, serde_json::json!({})),
        (
            &sub,
            serde_json::json!({"topic": topic, "ackDeadlineSeconds": 10}),
        ),
    ] {
        let res = http
            .put(format!("http://{admin}/v1/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_success(),
            "PUT {path}: {}",
            res.text().await.unwrap_or_default()
        );
    }
    (topic, sub)
}

/// `[queue] backend = "pubsub"` with `rotation_topic` + `rotation_subscription` (the emulator):
/// what the processor's side of `app::rotation_queue` publishes, the rotator's side receives and
/// records; poison goes to the configured dead-letter topic with its reason.
#[tokio::test]
async fn the_pubsub_rotation_topic_carries_requests_and_dead_letters_poison() {
    use gatehouse_store::pubsub::{DEAD_LETTER_REASON_ATTRIBUTE, PubsubOptions, PubsubQueue};
    let (grpc, admin) = pubsub_emulator();
    let run = gatehouse_domain::clock::now()
        .timestamp_nanos_opt()
        .unwrap_or_default();
    let (events_topic, events_sub) = pubsub_channel(&admin, &format!("events-{run}")).await;
    let (rotation_topic, rotation_sub) = pubsub_channel(&admin, &format!("rotation-{run}")).await;
    let (dlq_topic, dlq_sub) = pubsub_channel(&admin, &format!("dlq-{run}")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {:?}\n[queue]\nbackend = \"pubsub\"\ntopic = {events_topic:?}\nsubscription = {events_sub:?}\n\
             rotation_topic = {rotation_topic:?}\nrotation_subscription = {rotation_sub:?}\n\
             dead_letter_topic = {dlq_topic:?}\nemulator_host = {grpc:?}\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&path), |_| None).unwrap();
    let queue = app::rotation_queue(&cfg, None)
        .await
        .unwrap()
        .expect("a rotation queue");

    let request = Envelope {
        event: IdentityEvent::RotationRequested {
            provider: "gcp".into(),
            reason: "SECRET_ROTATE".into(),
            secret: Some("projects/p/secrets/s".into()),
        },
        ..okta("gcp:pubsub:rot-1", 1, IdentityEvent::UserActivated)
    };
    queue
        .publisher
        .publish(std::slice::from_ref(&request))
        .await
        .unwrap();
    let poison = PubsubQueue::connect_with({
        let mut o = PubsubOptions::new(&rotation_topic, &rotation_sub);
        o.emulator_host = Some(grpc.clone());
        o
    })
    .await
    .unwrap();
    poison.publish_raw("{\"truncated\":", &[]).await.unwrap();

    let store = MemoryRotations::default();
    let rotator = gatehouse_rotation::build::rotator_with(&cfg, store.clone(), None, Arc::new(SystemClock))
        .await
        .unwrap()
        .with_requests(queue.requests.clone());
    let (mut received, mut dead) = (0, 0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while received + dead < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "received {received}, dead-lettered {dead}"
        );
        let report = rotator.tick().await.unwrap();
        received += report.received;
        dead += report.poison;
    }
    assert_eq!((received, dead), (1, 1));
    // Recorded, then matched against no declared secret (none here) and marked handled.
    assert!(store.pending_requests().await.unwrap().is_empty());
    assert!(!store.add_request(gatehouse_domain::ports::RotationRequest::from_envelope(&request).unwrap()));

    let reader = PubsubQueue::connect_with({
        let mut o = PubsubOptions::new(&dlq_topic, &dlq_sub);
        o.emulator_host = Some(grpc.clone());
        o
    })
    .await
    .unwrap();
    let mut letters = Vec::new();
    while letters.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        letters =
            gatehouse_domain::ports::QueueConsumer::receive(&reader, 10, std::time::Duration::from_secs(30))
                .await
                .unwrap();
    }
    assert_eq!(letters[0].body, "{\"truncated\":");
    let reason = reader.attributes(&letters[0]).unwrap()[DEAD_LETTER_REASON_ATTRIBUTE].clone();
    assert!(reason.starts_with("not an envelope: "), "{reason}");
    queue.shutdown().await;
    poison.shutdown().await;
    reader.shutdown().await;
}
