//! Real-client check of the SQS backend: EventBridge events sent with boto3
//! (`scripts/send-eventbridge.py`) to moto's SQS reach `gatehouse standalone` through its audit
//! queue and are processed.
//!
//! The SQS backend builds its client from the AWS SDK's environment chain (`AWS_ENDPOINT_URL`,
//! `AWS_REGION`, credentials), and tests must not set environment variables in their own process,
//! so Gatehouse runs here as the `gatehouse` binary in a child process with those variables set.
//! Needs moto (`GATEHOUSE_TEST_MOTO_URL`) and its venv's python, both provided by `make test`.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Builder, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use gatehouse_domain::envelope::{Envelope, EnvelopeId};
use gatehouse_domain::ports::{QueueConsumer, RotationRequest, StateStore};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_store::sqs::SqsQueue;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "testing";
/// A secret that must never reach Gatehouse's logs.
const SECRET_KEY: &str = "moto-secret-d0-not-leak";
/// Dead-letter reason attribute set by the SQS adapter.
const REASON_ATTRIBUTE: &str = gatehouse_store::sqs::DEAD_LETTER_REASON_ATTRIBUTE;

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: this test needs moto. Run `make test` (it starts \
             moto with scripts/moto.sh), or `scripts/moto.sh start` and \
             GATEHOUSE_TEST_MOTO_URL=http://127.0.0.1:5000 cargo test -p gatehouse --test it queues"
        )
    })
}

/// The python of the venv `scripts/moto.sh` installs moto (and so boto3) into.
fn moto_python() -> PathBuf {
    let tools = std::env::var_os("GATEHOUSE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/gatehouse-tools")
        });
    let python = tools.join("moto-venv/bin/python");
    assert!(
        python.exists(),
        "{} does not exist: run `scripts/moto.sh start` (or `make test`) to install moto and boto3",
        python.display()
    );
    python
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn aws_fixture(name: &str) -> PathBuf {
    repo().join("../shared/fixtures/aws").join(name)
}

fn client() -> Client {
    let conf = Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .build();
    Client::from_conf(conf)
}

/// A fresh queue (unique name), with a redrive policy to `dlq_url` when given.
async fn create_queue(client: &Client, name: &str, dlq_url: Option<&str>) -> String {
    let name = format!("{name}-{}", std::process::id());
    let name = format!(
        "{name}-{}",
        (gatehouse_domain::clock::now()
            .timestamp_nanos_opt()
            .unwrap_or_default() as u128)
    );
    let mut req = client.create_queue().queue_name(name);
    if let Some(dlq) = dlq_url {
        let arn = client
            .get_queue_attributes()
            .queue_url(dlq)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()
            .remove(&QueueAttributeName::QueueArn)
            .unwrap();
        let policy = serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": "5" });
        req = req.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
    }
    req.send().await.expect("create queue").queue_url.unwrap()
}

/// The AWS SDK / boto3 environment pointing at moto, without a developer's real settings.
fn aws_env(cmd: &mut tokio::process::Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("GATEHOUSE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_ENDPOINT_URL", moto_url())
        .env("AWS_REGION", REGION)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

/// Run `scripts/send-eventbridge.py QUEUE FILES...` with the moto venv's python.
async fn send_with_boto3(queue_url: &str, files: &[PathBuf]) {
    let mut cmd = tokio::process::Command::new(moto_python());
    cmd.arg(repo().join("scripts/send-eventbridge.py"))
        .arg(queue_url)
        .args(files);
    aws_env(&mut cmd);
    let out = cmd.output().await.expect("run send-eventbridge.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send-eventbridge.py failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("sent ")).count(),
        files.len(),
        "{stdout}"
    );
}

/// Poll `cond` until it holds; panic with `what` after 30 s.
async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_events_sent_with_boto3_to_moto_are_processed() {
    let sqs = client();
    let main_dlq = create_queue(&sqs, "gh-main-dlq", None).await;
    let main = create_queue(&sqs, "gh-main", Some(&main_dlq)).await;
    let audit_dlq = create_queue(&sqs, "gh-audit-dlq", None).await;
    let audit = create_queue(&sqs, "gh-audit", Some(&audit_dlq)).await;
    let rotation_dlq = create_queue(&sqs, "gh-rotation-dlq", None).await;
    let rotation = create_queue(&sqs, "gh-rotation", Some(&rotation_dlq)).await;

    let fake = gatehouse_testkit::FakeLooker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (port, admin_port) = (super::free_port(), super::free_port());
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\ndata_dir = {:?}\n\
             [okta]\nhook_secret = \"hook-secret-0123456789\"\n\
             [looker]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n\
             [processor]\npoll_interval = \"20ms\"\n\
             [queue]\nbackend = \"sqs\"\nqueue_url = {main:?}\naudit_queue_url = {audit:?}\n\
             rotation_queue_url = {rotation:?}\nwait_time = \"1s\"\n",
            data_dir.display().to_string(),
            fake.base_url(),
            fake.client_id(),
            fake.client_secret(),
        ),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("--config").arg(&config).arg("standalone");
    aws_env(&mut cmd);
    // Logs go to a file: a pipe nobody reads while the test waits could fill up and block it.
    let log_path = dir.path().join("gatehouse.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_until("gatehouse ready", || {
        let r = http.get(format!("{admin}/readyz")).send();
        async move { r.await.map(|r| r.status() == 200).unwrap_or(false) }
    })
    .await;

    // The EventBridge events verbatim, plus one malformed body, sent the way AWS clients do.
    let malformed = dir.path().join("malformed.json");
    let malformed_body = "{\"version\":\"0\",\"detail-type\":\"AWS API Call via CloudTrail\",\"detail\":";
    std::fs::write(&malformed, malformed_body).unwrap();
    send_with_boto3(
        &audit,
        &[
            aws_fixture("eventbridge.iam.CreateAccessKey.constructed.json"),
            aws_fixture("eventbridge.iam.AddUserToGroup.constructed.json"),
            malformed,
        ],
    )
    .await;

    // Gatehouse's own store, opened beside the running process (SQLite WAL).
    let store = Sqlite::open(&data_dir).await.unwrap();
    // CreateAccessKey for alice → a rotation request for the IAM user, published to the
    // rotation queue the rotator consumes (issue 12, item 4: no table between them).
    let rotation_queue = SqsQueue::with_client(sqs.clone(), &rotation, Duration::from_secs(1));
    let mut requests = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while requests.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no rotation request reached the rotation queue"
        );
        for d in rotation_queue.receive(10, Duration::from_secs(30)).await.unwrap() {
            let env = Envelope::from_json(&d.body).unwrap();
            requests.push(RotationRequest::from_envelope(&env).expect("a rotation request"));
        }
    }
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].subject, "aws:iam-user:alice");
    assert_eq!(requests[0].provider, "aws");
    assert_eq!(
        requests[0].envelope_id,
        "aws:cloudtrail:e1d2c3b4-0002-4a5b-8c9d-222222220002"
    );
    // The processor marks it processed after the publish (then acks it).
    let request_id = EnvelopeId(requests[0].envelope_id.clone());
    wait_until("rotation request processed", || {
        let (s, id) = (store.clone(), request_id.clone());
        async move { s.is_processed(&id).await.unwrap() }
    })
    .await;

    // AddUserToGroup on alice, an identity no directory told Gatehouse about → drift processed
    // as ignored: recorded as processed, no identity, no ledger row, no Looker call.
    let drift = EnvelopeId("aws:cloudtrail:e1d2c3b4-0001-4a5b-8c9d-222222220001".into());
    wait_until("drift event processed", || {
        let (s, id) = (store.clone(), drift.clone());
        async move { s.is_processed(&id).await.unwrap() }
    })
    .await;
    assert!(store.load_subject("aws:iam-user:alice").await.unwrap().is_none());
    assert!(store.ledger_since(None).await.unwrap().is_empty());
    assert!(fake.calls().is_empty(), "{:?}", fake.calls());
    // The worker counts an envelope just after its commit: poll, do not race it.
    let processed = |metrics: &str, outcome: &str| {
        metrics.lines().any(|l| {
            l.starts_with("gatehouse_events_processed_total")
                && l.contains(&format!("outcome=\"{outcome}\""))
                && l.ends_with(" 1")
        })
    };
    wait_until("ignored and rotation_requested counted once each", || {
        let r = http.get(format!("{admin}/metrics")).send();
        async move {
            let metrics = r.await.unwrap().text().await.unwrap();
            processed(&metrics, "ignored") && processed(&metrics, "rotation_requested")
        }
    })
    .await;

    // The malformed body lands in the audit queue's DLQ, verbatim, with the reason.
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.is_empty() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the malformed message in the dlq"
        );
        let out = sqs
            .receive_message()
            .queue_url(&audit_dlq)
            .message_attribute_names("All")
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        dead.extend(out.messages.unwrap_or_default());
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body(), Some(malformed_body));
    let reason = dead[0]
        .message_attributes()
        .and_then(|a| a.get(REASON_ATTRIBUTE))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_string();
    assert!(reason.starts_with("unparseable aws audit event"), "{reason}");
    // Nothing is left on the audit queue (the good deliveries were acked, the bad one moved).
    wait_until("audit queue empty", || {
        let r = sqs
            .get_queue_attributes()
            .queue_url(&audit)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send();
        async move {
            let attrs = r.await.unwrap().attributes.unwrap_or_default();
            attrs.len() == 2 && attrs.values().all(|v| v == "0")
        }
    })
    .await;
    // A webhook accepted by the ingress travels through SQS, not the embedded queue.
    let john = fake.add_user("john.doe@example.com", "John", "Doe");
    fake.add_session(&john);
    let hook = std::fs::read(
        repo().join("../shared/fixtures/okta/event-hook.user.lifecycle.deactivate.constructed.json"),
    )
    .unwrap();
    let r = http
        .post(format!("{base}/hooks/okta"))
        .header("authorization", "hook-secret-0123456789")
        .body(hook)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        store.queue_depth().await.unwrap(),
        0,
        "the hook went to the embedded queue"
    );
    wait_until("john offboarded through sqs", || {
        let u = fake.user(&john);
        async move { u.is_some_and(|u| u.is_disabled && u.session_ids.is_empty()) }
    })
    .await;
    store.close().await;

    // Graceful stop; the AWS secret never reached the logs.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("gatehouse stops after SIGTERM")
        .unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{logs}");
    assert!(!logs.contains(SECRET_KEY), "the AWS secret reached the logs");
    assert!(logs.contains("dead-lettering audit delivery"), "{logs}");
}
