//! The Okta System Log catch-up against `FakeOkta`: paging, the durable cursor, the rate-limit
//! headers, authentication.

use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::okta_log::LogCursors;
use gatehouse_domain::ports::{BackendError, QueueProducer};
use gatehouse_intake::ingress::okta_api::{OktaApi, OktaApiError};
use gatehouse_intake::ingress::okta_catchup::{Catchup, CatchupConfig, CatchupError, filter};
use gatehouse_platform::config::OktaApiConnection;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_testkit::FakeOkta;
use secrecy::SecretString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Envelope>>>);

impl QueueProducer for Recorded {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
        self.0.lock().unwrap().extend_from_slice(batch);
        Ok(())
    }
}

impl Recorded {
    fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|e| e.id.0.clone()).collect()
    }
}

fn catchup(
    fake: &FakeOkta,
    token: &str,
    queue: Recorded,
    store: Sqlite,
    page_size: u32,
) -> Catchup<Recorded, Sqlite> {
    let api = OktaApi::new(
        &OktaApiConnection {
            url: fake.base_url(),
            api_token: SecretString::from(token.to_string()),
        },
        Duration::from_secs(10),
    )
    .unwrap();
    Catchup::new(
        api,
        queue,
        store,
        CatchupConfig {
            org: "acme".into(),
            page_size,
            poll_interval: Duration::from_secs(60),
            initial_lookback: Duration::from_secs(3600),
        },
    )
}

fn offboard(fake: &FakeOkta, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let e = fake.deactivate(&format!("00u{i:04}"), &format!("p{i}@example.com"));
            format!("okta:acme:{}", e["uuid"].as_str().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn follows_next_links_to_the_empty_page_and_resumes_from_the_stored_cursor() {
    let fake = FakeOkta::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    // Noise the filter leaves out.
    let mut session: serde_json::Value = serde_json::from_str(include_str!(
        "../../../testkit/fixtures/okta/system-log.logevent.docs.json"
    ))
    .unwrap();
    session["published"] = serde_json::json!(gatehouse_domain::clock::now().to_rfc3339());
    fake.push_event(session);
    let first = offboard(&fake, 5);
    let q = Recorded::default();
    let report = catchup(&fake, &fake.api_token(), q.clone(), store.clone(), 2)
        .poll_once()
        .await
        .unwrap();
    assert_eq!(
        q.ids(),
        first,
        "every offboarding once, in order, with the hook's envelope ids"
    );
    assert_eq!(
        (report.pages, report.events),
        (4, 5),
        "2 + 2 + 1 + the empty page"
    );
    let calls = fake.calls();
    assert!(calls[0].query_param("since").is_some());
    assert_eq!(calls[0].query_param("filter"), Some(filter().as_str()));
    assert!(
        calls[1..]
            .iter()
            .all(|c| c.query_param("after").is_some() && c.query_param("since").is_none())
    );
    let envs = q.0.lock().unwrap().clone();
    assert!(
        envs.iter()
            .all(|e| e.event.is_actionable() && e.source_event_type == "user.lifecycle.deactivate")
    );
    assert_eq!(envs[0].subject.key, "okta:00u0000");

    // A new poller (a restart) on the same store resumes from the stored link: only what is new.
    let cursor = store
        .load_okta_cursor("acme")
        .await
        .unwrap()
        .expect("cursor stored");
    assert!(cursor.next_url.unwrap().contains("after="));
    let second = offboard(&fake, 3);
    let q2 = Recorded::default();
    let before = fake.calls().len();
    catchup(&fake, &fake.api_token(), q2.clone(), store.clone(), 2)
        .poll_once()
        .await
        .unwrap();
    assert_eq!(q2.ids(), second);
    assert!(
        fake.calls()[before].query_param("after").is_some(),
        "resumed with the stored next link"
    );
}

#[tokio::test]
async fn a_429_is_retried_only_after_its_reset() {
    let fake = FakeOkta::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    let ids = offboard(&fake, 3);
    fake.throttle_next(Duration::from_secs(2));
    let q = Recorded::default();
    catchup(&fake, &fake.api_token(), q.clone(), store, 10)
        .poll_once()
        .await
        .unwrap();
    assert_eq!(q.ids(), ids);
    let calls = fake.calls();
    assert_eq!(calls[0].status, 429);
    let reset = reset_after(calls[0].at, 2);
    assert!(
        calls[1].at >= reset,
        "retried at {} before the reset {reset}",
        calls[1].at
    );
    assert!(calls[1..].iter().all(|c| c.status == 200), "one 429 only");
}

#[tokio::test]
async fn a_spent_window_is_waited_out_before_okta_has_to_say_429() {
    let fake = FakeOkta::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    let ids = offboard(&fake, 4);
    fake.set_rate_limit(2, Duration::from_secs(2));
    let q = Recorded::default();
    catchup(&fake, &fake.api_token(), q.clone(), store, 2)
        .poll_once()
        .await
        .unwrap();
    assert_eq!(q.ids(), ids);
    let calls = fake.calls();
    assert_eq!(calls.len(), 3, "2 pages + the empty one: {calls:?}");
    assert!(calls.iter().all(|c| c.status == 200), "never a 429: {calls:?}");
    assert!(
        calls[2].at >= reset_after(calls[0].at, 2),
        "the third call waited for the window's reset"
    );
}

#[tokio::test]
async fn a_wrong_token_is_an_error_that_never_shows_it() {
    let fake = FakeOkta::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Sqlite::open(dir.path()).await.unwrap();
    offboard(&fake, 1);
    let q = Recorded::default();
    let wrong = "00Wrong-okta-token-0123456789";
    let e = catchup(&fake, wrong, q.clone(), store.clone(), 10)
        .poll_once()
        .await
        .unwrap_err();
    assert!(
        matches!(e, CatchupError::Api(OktaApiError::Unauthorized { status: 401 })),
        "{e}"
    );
    assert!(!e.to_string().contains(wrong) && !format!("{e:?}").contains(wrong));
    assert!(q.ids().is_empty());
    assert!(
        store.load_okta_cursor("acme").await.unwrap().is_none(),
        "no cursor moved"
    );
}

/// Okta's `X-Rate-Limit-Reset` for a window ending `secs` after `at`: whole seconds, rounded up.
fn reset_after(at: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    let t = at + chrono::Duration::seconds(secs);
    let s = t.timestamp() + i64::from(t.timestamp_subsec_millis() > 0);
    DateTime::from_timestamp(s, 0).unwrap()
}
