//! The queue backends' failures are classified once into the error core: an SQS throttling or
//! 5xx answer, a Pub/Sub `UNAVAILABLE` / `RESOURCE_EXHAUSTED` status is retryable (the one retry
//! policy tries again); an authorization or validation refusal is not, and costs one request.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{Builder, Credentials, Region};
use gatehouse_domain::error::{Classified, Kind, chain};
use gatehouse_domain::ports::{BackendError, Delivery, QueueConsumer, QueueProducer};
use gatehouse_platform::retry::RetryPolicy;
use gatehouse_store::classify;
use gatehouse_store::sqs::SqsQueue;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::{Code, Status};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SECRET: &str = "sqs-errors-test-secret";

/// A stand-in for SQS (JSON protocol) that answers every request with `status`, the error
/// shape's `x-amzn-query-error` header and `body`, and counts the requests.
async fn failing_sqs(
    status: u16,
    query_error: &'static str,
    body: &'static str,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            tokio::spawn(async move {
                // One request per connection is enough for the SDK (it reconnects on close).
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     x-amzn-query-error: {query_error}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, hits)
}

fn queue(url: &str) -> SqsQueue {
    let conf = Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", SECRET, None, None, "test"))
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .build();
    SqsQueue::with_client(
        Client::from_conf(conf),
        &format!("{url}/123456789012/gh-errors"),
        Duration::from_secs(1),
    )
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        retries: 2,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

fn delivery() -> Delivery {
    Delivery {
        receipt: "receipt-1".into(),
        attempt: 1,
        body: "{}".into(),
    }
}

/// Release a delivery through the one retry policy against a server answering `status`/`body`;
/// the final error and the number of requests SQS saw.
async fn release_against(
    status: u16,
    query_error: &'static str,
    body: &'static str,
) -> (BackendError, usize) {
    let (url, hits) = failing_sqs(status, query_error, body).await;
    let q = queue(&url);
    let d = delivery();
    let e = policy()
        .call("release", || q.release(&d, Duration::from_secs(5)))
        .await
        .expect_err("sqs refuses");
    (e, hits.load(Ordering::SeqCst))
}

#[tokio::test]
async fn sqs_throttling_and_5xx_are_retryable_and_retried_by_the_policy() {
    for (status, query_error, body, kind) in [
        (
            400,
            "ThrottlingException;Sender",
            r#"{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Rate exceeded"}"#,
            Kind::Throttled,
        ),
        (
            500,
            "InternalError;Receiver",
            r#"{"__type":"com.amazon.coral.service#InternalFailure","message":"internal failure"}"#,
            Kind::Transient,
        ),
        (
            503,
            "ServiceUnavailable;Receiver",
            r#"{"__type":"com.amazon.coral.service#ServiceUnavailable"}"#,
            Kind::Transient,
        ),
    ] {
        let (e, hits) = release_against(status, query_error, body).await;
        assert_eq!(e.kind(), kind, "{status}: {}", chain(&e));
        assert!(e.is_retryable());
        assert_eq!(
            hits, 3,
            "{status}: the first attempt and the policy's two retries"
        );
        // The cause chain says what SQS answered, never the credentials.
        let text = format!("{} {e:?}", chain(&e));
        assert!(
            text.starts_with("cannot release the sqs message: sqs answered "),
            "{text}"
        );
        assert!(!text.contains(SECRET), "credentials leaked: {text}");
    }
}

#[tokio::test]
async fn sqs_auth_and_validation_refusals_are_not_retried() {
    for (status, query_error, body, kind) in [
        (
            403,
            "AccessDenied;Sender",
            r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not authorized"}"#,
            Kind::Unauthorized,
        ),
        (
            400,
            "InvalidParameterValue;Sender",
            r#"{"__type":"com.amazonaws.sqs#InvalidParameterValue","message":"Value for parameter VisibilityTimeout is invalid"}"#,
            Kind::Permanent,
        ),
        (
            400,
            "AWS.SimpleQueueService.NonExistentQueue;Sender",
            r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#,
            Kind::NotFound,
        ),
    ] {
        let (e, hits) = release_against(status, query_error, body).await;
        assert_eq!(e.kind(), kind, "{status} {query_error}: {}", chain(&e));
        assert!(!e.is_retryable());
        assert_eq!(hits, 1, "{query_error}: a refusal costs one request");
        assert!(!format!("{} {e:?}", chain(&e)).contains(SECRET));
    }
}

#[tokio::test]
async fn sqs_receive_and_publish_are_classified_too_and_no_answer_is_transient() {
    let (url, _) = failing_sqs(
        403,
        "AccessDenied;Sender",
        r#"{"__type":"com.amazon.coral.service#AccessDeniedException","message":"not authorized"}"#,
    )
    .await;
    let q = queue(&url);
    let e = q.receive(1, Duration::from_secs(5)).await.expect_err("refused");
    assert_eq!(
        (e.context, e.kind()),
        ("cannot receive from sqs", Kind::Unauthorized)
    );
    let env = crate::queue_contract::envelope("env-1", "okta:00u1", 1);
    let e = q.publish(&[env]).await.expect_err("refused");
    assert_eq!(
        (e.context, e.kind()),
        ("cannot publish to sqs", Kind::Unauthorized)
    );

    // Nothing listens: no answer at all is transient.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = queue(&closed)
        .release(&delivery(), Duration::from_secs(5))
        .await
        .expect_err("nothing listens");
    assert_eq!(e.kind(), Kind::Transient, "{}", chain(&e));
}

fn rpc(code: Code) -> GaxError {
    GaxError::service(Status::default().set_code(code).set_message("from the test"))
}

#[tokio::test]
async fn pubsub_grpc_statuses_are_classified_and_only_the_retryable_retried() {
    for (code, kind) in [
        (Code::Unavailable, Kind::Transient),
        (Code::ResourceExhausted, Kind::Throttled),
        (Code::DeadlineExceeded, Kind::Transient),
        (Code::PermissionDenied, Kind::Unauthorized),
        (Code::Unauthenticated, Kind::Unauthorized),
        (Code::NotFound, Kind::NotFound),
        (Code::InvalidArgument, Kind::Permanent),
    ] {
        assert_eq!(classify::grpc_kind(code), kind, "{code:?}");
        // Through the BackendError the queue returns, as the one retry policy reads it.
        let calls = AtomicUsize::new(0);
        let e = policy()
            .call("pubsub", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err::<(), _>(classify::pubsub("pubsub streaming pull failed", rpc(code))) }
            })
            .await
            .expect_err("fails");
        assert_eq!(e.kind(), kind, "{code:?}: {}", chain(&e));
        let expected = if kind.is_retryable() { 3 } else { 1 };
        assert_eq!(calls.load(Ordering::SeqCst), expected, "{code:?}");
        assert!(
            chain(&e).contains("from the test"),
            "the status is kept as the cause: {}",
            chain(&e)
        );
    }
    // A publish that failed on its RPC is classified by the RPC's status.
    let e = classify::pubsub_publish(
        "pubsub publish failed",
        google_cloud_pubsub::error::PublishError::Rpc(Arc::new(rpc(Code::PermissionDenied))),
    );
    assert_eq!(e.kind(), Kind::Unauthorized);
    let e = classify::pubsub_publish(
        "pubsub publish failed",
        google_cloud_pubsub::error::PublishError::Rpc(Arc::new(rpc(Code::Unavailable))),
    );
    assert_eq!(e.kind(), Kind::Transient);
}

#[test]
fn a_backend_failure_without_a_classified_cause_stays_transient() {
    // A database or I/O failure: retried (as before), never given up on at once.
    let e = BackendError::new("cannot read the state", std::io::Error::other("disk"));
    assert_eq!(e.kind(), Kind::Transient);
}
