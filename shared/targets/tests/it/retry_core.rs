//! The one error and retry core against each client: every client classifies its failures once
//! (`gatehouse_domain::error::Classified`), the one policy (`gatehouse_platform::retry`) retries
//! what is retryable a bounded number of times, no sooner than a `Retry-After`, and never what
//! is not; the SDKs' own retries are off, so a failure costs exactly the policy's attempts.

use gatehouse_domain::error::{Classified, Kind, chain};
use gatehouse_targets::RetryPolicy;
use gatehouse_targets::client::aws_iam::{AwsConnect, AwsIam};
use gatehouse_targets::client::cloud_identity::{CloudIdentity, CloudIdentityConfig};
use gatehouse_targets::client::gcp_iam::{GcpIam, GcpIamConfig, TokenSource};
use gatehouse_targets::client::looker::{LookerClient, LookerConfig};
use gatehouse_testkit::cloud_identity_fake::FakeCloudIdentity;
use gatehouse_testkit::gcp_iam_fake::FakeGcpIam;
use gatehouse_testkit::looker_fake::FakeLooker;
use secrecy::SecretString;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Two retries, short delays (a `Retry-After` still wins).
fn policy() -> RetryPolicy {
    RetryPolicy {
        retries: 2,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

/// A stand-in for IAM that answers every request with `status` and counts them.
async fn failing_iam(status: u16) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "text/xml")],
                "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceFailure</Code>\
                 <Message>internal failure</Message></Error><RequestId>r</RequestId></ErrorResponse>",
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

async fn iam_at(url: &str, dir: &tempfile::TempDir) -> AwsIam {
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing-secret\n",
    )
    .unwrap();
    AwsIam::connect(&AwsConnect {
        endpoint_url: Some(url.into()),
        region: Some("us-east-1".into()),
        profile: None,
        credentials_file: Some(creds),
    })
    .await
}

#[tokio::test]
async fn aws_sdk_retries_are_off_so_a_500_costs_exactly_the_policys_attempts() {
    let (url, hits) = failing_iam(500).await;
    let dir = tempfile::tempdir().unwrap();
    let iam = iam_at(&url, &dir).await;
    let e = policy()
        .call("ListUsers", || iam.list_users())
        .await
        .expect_err("iam answers 500");
    assert_eq!(e.kind, Kind::Transient, "{e}");
    // One first attempt + two retries of OUR policy; with the SDK's standard retries on, each
    // of them would be three requests (nine in all).
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn aws_failures_keep_their_cause_chain_for_the_log() {
    // A port nothing listens on: the SDK's dispatch failure, and why, stay the error's source.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let iam = iam_at(&closed, &dir).await;
    let e = iam.list_users().await.expect_err("nothing listens");
    assert_eq!(e.kind(), Kind::Transient);
    assert_eq!(e.to_string(), "aws Transient: ListUsers: cannot reach iam");
    assert!(std::error::Error::source(&e).is_some(), "the sdk error is kept");
    let text = chain(&e);
    assert!(
        text.starts_with("aws Transient: ListUsers: cannot reach iam: "),
        "{text}"
    );
    assert!(
        text.len() > e.to_string().len() + 10,
        "the cause says why: {text}"
    );
}

fn gcp(fake: &FakeGcpIam) -> GcpIam {
    GcpIam::new(GcpIamConfig {
        resource_manager_url: fake.base_url(),
        bigquery_url: fake.base_url(),
        iam_url: fake.base_url(),
        token: TokenSource::Static(SecretString::from(fake.token())),
        timeout: Duration::from_secs(10),
    })
    .unwrap()
}

#[tokio::test]
async fn gcp_429_waits_for_retry_after_5xx_is_bounded_401_and_404_are_not_retried() {
    let fake = FakeGcpIam::start().await;
    fake.add_resource("projects/p1", json!([]));
    let c = gcp(&fake);
    let p = policy();
    let get = || c.get_policy("projects/p1");

    // 429 with Retry-After: 1 s, then success: two calls, at least a second apart.
    fake.set_retry_after_secs(1);
    fake.fail_next(429, 1);
    let start = Instant::now();
    p.call("getIamPolicy", get).await.expect("retried after the 429");
    assert!(start.elapsed() >= Duration::from_secs(1), "retry-after honoured");
    assert_eq!(fake.count("getIamPolicy"), 2);

    // 503 forever: the first attempt and two retries, then the failure.
    fake.reset_calls();
    fake.fail_next(503, 3);
    let e = p.call("getIamPolicy", get).await.expect_err("503");
    assert_eq!((e.kind(), e.status), (Kind::Transient, Some(503)));
    assert_eq!(fake.count("getIamPolicy"), 3);

    for status in [401, 404] {
        let fake = FakeGcpIam::start().await;
        fake.add_resource("projects/p1", json!([]));
        let c = gcp(&fake);
        fake.fail_next(status, 10);
        let e = p
            .call("getIamPolicy", || c.get_policy("projects/p1"))
            .await
            .expect_err("refused");
        assert!(!e.is_retryable(), "{status}: {e}");
        assert_eq!(fake.count("getIamPolicy"), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn looker_429_waits_for_retry_after_5xx_is_bounded_403_and_404_are_not_retried() {
    let fake = FakeLooker::start().await;
    let c = LookerClient::new(LookerConfig {
        base_url: fake.base_url(),
        client_id: fake.client_id().to_owned(),
        client_secret: SecretString::from(fake.client_secret().to_owned()),
        timeout: Duration::from_secs(10),
        catalog_ttl: Duration::from_secs(60),
        max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
    })
    .unwrap();
    c.whoami().await.expect("logged in");
    let p = policy();
    let calls = |fake: &FakeLooker| fake.calls().len();

    fake.reset_calls();
    fake.set_retry_after_secs(1);
    fake.fail_next(429, 1);
    let start = Instant::now();
    p.call("GET /user", || c.whoami())
        .await
        .expect("retried after the 429");
    assert!(start.elapsed() >= Duration::from_secs(1), "retry-after honoured");
    assert_eq!(calls(&fake), 2);

    // As many 503s as the policy makes attempts (a fourth call would succeed).
    fake.reset_calls();
    fake.fail_next(503, 3);
    let e = p.call("GET /user", || c.whoami()).await.expect_err("503");
    assert_eq!((e.kind, e.status), (Kind::Transient, Some(503)));
    assert_eq!(calls(&fake), 3);

    for status in [403, 404] {
        fake.reset_calls();
        fake.fail_next(status, 1);
        let e = p.call("GET /user", || c.whoami()).await.expect_err("refused");
        assert!(!e.is_retryable(), "{status}: {e}");
        assert_eq!(calls(&fake), 1, "{status} is not retried");
    }
}

/// A stand-in for a Google REST API that answers every request 429 `RESOURCE_EXHAUSTED` with
/// `retry_after` as the `Retry-After` header.
async fn throttling_google(retry_after: String) -> String {
    let app = axum::Router::new().fallback(move || {
        let retry_after = retry_after.clone();
        async move {
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [
                    ("content-type", "application/json".to_owned()),
                    ("retry-after", retry_after),
                ],
                r#"{"error":{"code":429,"message":"quota exceeded","status":"RESOURCE_EXHAUSTED"}}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// `Retry-After` as an HTTP date (RFC 9110 allows it) a minute from now.
fn http_date_in_a_minute() -> String {
    (gatehouse_domain::clock::now() + chrono::Duration::seconds(60))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

/// The wait a date-form `Retry-After` a minute ahead yields, allowing a busy machine's delay.
fn assert_about_a_minute(got: Option<Duration>, who: &str) {
    let got = got.unwrap_or_else(|| panic!("{who}: a date-form Retry-After is honoured"));
    assert!(
        got > Duration::from_secs(30) && got <= Duration::from_secs(60),
        "{who}: {got:?}"
    );
}

#[tokio::test]
async fn gcp_iam_and_cloud_identity_read_retry_after_with_the_one_parser() {
    // Seconds and HTTP dates alike (the shared `parse_retry_after`; a hand-parsed copy read
    // only seconds and dropped the date form, so the policy retried at once).
    let url = throttling_google(http_date_in_a_minute()).await;
    let token = TokenSource::Static(SecretString::from("token".to_owned()));
    let iam = GcpIam::new(GcpIamConfig {
        resource_manager_url: url.clone(),
        bigquery_url: url.clone(),
        iam_url: url.clone(),
        token: token.clone(),
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    let e = iam.get_policy("projects/p1").await.expect_err("429");
    assert_eq!(e.kind(), Kind::Throttled, "{e}");
    assert_about_a_minute(e.retry_after(), "gcp iam");

    let groups = CloudIdentity::new(CloudIdentityConfig {
        url: url.clone(),
        token: token.clone(),
        timeout: Duration::from_secs(10),
        page_size: 100,
    })
    .unwrap();
    let e = groups.group_name("eng@example.com").await.expect_err("429");
    assert_eq!(e.kind(), Kind::Throttled, "{e}");
    assert_about_a_minute(e.retry_after(), "cloud identity");

    // The delay-seconds form too.
    let url = throttling_google("7".into()).await;
    let groups = CloudIdentity::new(CloudIdentityConfig {
        url,
        token,
        timeout: Duration::from_secs(10),
        page_size: 100,
    })
    .unwrap();
    let e = groups.group_name("eng@example.com").await.expect_err("429");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn cloud_identity_429_is_retried_by_the_policy_and_a_403_is_not() {
    let fake = FakeCloudIdentity::start().await;
    fake.add_group("eng@example.com");
    let c = CloudIdentity::new(CloudIdentityConfig {
        url: fake.base_url(),
        token: TokenSource::Static(SecretString::from(fake.token())),
        timeout: Duration::from_secs(10),
        page_size: 100,
    })
    .unwrap();
    let p = policy();

    fake.set_retry_after_secs(0);
    fake.fail_next(429, 1);
    p.call("groups.lookup", || c.group_name("eng@example.com"))
        .await
        .expect("retried after the 429");
    assert_eq!(fake.count("groups.lookup"), 2);

    let other = FakeCloudIdentity::start().await;
    other.add_group("eng@example.com");
    other.fail_next(403, 5);
    let c = CloudIdentity::new(CloudIdentityConfig {
        url: other.base_url(),
        token: TokenSource::Static(SecretString::from(other.token())),
        timeout: Duration::from_secs(10),
        page_size: 100,
    })
    .unwrap();
    let e = p
        .call("groups.lookup", || c.group_name("eng@example.com"))
        .await
        .expect_err("refused");
    assert_eq!(e.kind(), Kind::Unauthorized, "{e}");
    assert_eq!(other.count("groups.lookup"), 1, "a refusal is not retried");
}
