//! Several processor replicas side by side: three in-process processors on one SQS FIFO queue
//! (moto) and one PostgreSQL database, many events for many people. The final Looker state is
//! right, nobody is created twice, every write call has exactly one ledger row, and the ledger's
//! hash chain is one line.
//!
//! The events go out in waves (everyone's first event, then everyone's second, ...), each wave
//! processed before the next: moto's FIFO receive is not atomic across concurrent receivers (two
//! `ReceiveMessage` calls racing can each take a message of the same group), which real SQS never
//! does. Within a wave the replicas share the work on different people; across waves each
//! person's state, written by one replica, is read by another.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Builder, Credentials, Region};
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Utc};
use gatehouse_adapters::sqs::SqsQueue;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Source, Subject};
use gatehouse_domain::ledger_chain;
use gatehouse_domain::ports::{QueueProducer, StateStore};
use gatehouse_e2e::{example_policy, seed_catalog, wait_until};
use gatehouse_platform::config::Config;
use gatehouse_runtime::app::{self, Components};
use gatehouse_testkit::FakeLooker;
use std::time::Duration;

const SUBJECTS: usize = 12;
const REPLICAS: usize = 3;

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
        Utc::now().timestamp_nanos_opt().unwrap_or_default()
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
        received_at: Utc::now(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_queue_and_database_apply_every_change_once() {
    let client = sqs();
    let queue_url = fifo_queue(&client).await;
    let database = gatehouse_testkit::postgres::fresh_database().await;
    let fake = FakeLooker::start().await;
    let catalog = seed_catalog(&fake);
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, example_policy()).unwrap();

    let mut replicas = Vec::new();
    for r in 0..REPLICAS {
        let toml = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\npolicy = {:?}\n\
             [looker]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n\
             [processor]\nworkers = 4\npoll_interval = \"20ms\"\nretry_min_delay = \"5ms\"\nretry_max_delay = \"50ms\"\n\
             [queue]\nbackend = \"sqs\"\nqueue_url = {queue_url:?}\nwait_time = \"1s\"\n\
             [state]\nbackend = \"postgres\"\nurl = {database:?}\nmax_connections = 4\n",
            dir.path().join(format!("replica-{r}")).display().to_string(),
            policy.display().to_string(),
            fake.base_url(),
            fake.client_id(),
            fake.client_secret(),
        );
        let path = dir.path().join(format!("replica-{r}.toml"));
        std::fs::write(&path, toml).unwrap();
        let cfg = Config::load(Some(&path), |_| None).expect("replica config");
        let queue = SqsQueue::with_client(client.clone(), &queue_url, Duration::from_secs(1));
        let running = app::start_with_queue(
            &cfg,
            Components {
                ingress: false,
                processor: true,
            },
            queue,
        )
        .await
        .expect("replica starts");
        assert_eq!(running.state.backend(), "postgres");
        replicas.push(running);
    }

    let producer = SqsQueue::with_client(client.clone(), &queue_url, Duration::from_secs(1));
    let state = replicas[0].state.clone();
    for wave in waves() {
        producer.publish(&wave).await.unwrap();
        wait_until("every event of the wave processed by some replica", || {
            let (state, ids) = (
                state.clone(),
                wave.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
            );
            async move {
                for id in &ids {
                    if !state.is_processed(id).await.unwrap() {
                        return false;
                    }
                }
                true
            }
        })
        .await;
    }

    // Final Looker state per person.
    for i in 0..SUBJECTS {
        let u = fake
            .user_by_email(&email(i))
            .unwrap_or_else(|| panic!("{} was never created", email(i)));
        if i % 2 == 1 {
            assert!(u.is_disabled, "{} is offboarded", email(i));
            assert!(u.group_ids.is_empty(), "{}: {:?}", email(i), u.group_ids);
        } else {
            assert!(!u.is_disabled, "{}", email(i));
            assert_eq!(
                u.group_ids.iter().cloned().collect::<Vec<_>>(),
                vec![catalog.engineers.clone()],
                "{}",
                email(i)
            );
        }
    }
    // No duplicated effect: one create per person, one ledger row per write call.
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
    assert_eq!(ledger.len(), fake.write_calls(), "one ledger row per write call");
    let ok = ledger_chain::verify_store(&state)
        .await
        .unwrap()
        .expect("one intact chain");
    assert_eq!(ok.rows, ledger.len());

    for r in replicas {
        r.stop().await;
    }
}
