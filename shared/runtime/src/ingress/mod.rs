//! HTTP intake. A request is answered 2xx only after every envelope it carries is durably
//! enqueued; a request that fails authentication, is too large or malformed enqueues nothing.
//! Each source lives in its own module with a `router` (and, if it needs one, `spawn_tasks`).

pub mod generic;
pub mod google;
pub mod graph;
pub mod okta;
pub mod scim;

use axum::body::{Body, Bytes, to_bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use gatehouse_adapters::sqlite::Sqlite;
use gatehouse_domain::ports::QueueProducer;
use gatehouse_platform::config::Config;
use gatehouse_platform::shutdown::Shutdown;
use serde_json::json;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// What every intake may use: the queue to publish to, the state store (SCIM's directory and
/// outbox, Graph's subscriptions) and the validated configuration.
#[derive(Clone)]
pub struct Deps<Q> {
    pub queue: Q,
    pub store: Sqlite,
    pub config: Arc<Config>,
}

/// All intake routes. Mount next to `gatehouse_platform::ops::router`.
pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    Router::new()
        .merge(okta::router(deps))
        .merge(scim::router(deps))
        .merge(graph::router(deps))
        .merge(google::router(deps))
        .merge(generic::router(deps))
}

/// Background work the intakes need (SCIM outbox relay, Graph subscription renewal).
pub fn spawn_tasks<Q: QueueProducer + Clone + 'static>(
    deps: &Deps<Q>,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    tasks.extend(scim::spawn_tasks(deps, shutdown));
    tasks.extend(graph::spawn_tasks(deps, shutdown));
    tasks
}

/// `{"error": ..., "detail": ...}` with a status.
pub fn error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (status, Json(json!({ "error": error, "detail": detail.into() }))).into_response()
}

/// Count accepted envelopes (`gatehouse_events_received_total{source,event_type,actionable}`).
pub fn count_received(source: &'static str, env: &gatehouse_domain::envelope::Envelope) {
    let actionable = if env.event.is_actionable() {
        "true"
    } else {
        "false"
    };
    metrics::counter!(
        "gatehouse_events_received_total",
        "source" => source,
        "event_type" => env.source_event_type.clone(),
        "actionable" => actionable,
    )
    .increment(1);
}

/// Count a refused request (`gatehouse_ingress_rejected_total{source,reason}`).
pub fn count_rejection(source: &'static str, reason: &'static str) {
    metrics::counter!("gatehouse_ingress_rejected_total", "source" => source, "reason" => reason)
        .increment(1);
}

/// Read a body of at most `limit` bytes: refused up front by `Content-Length`, or while reading
/// a chunked body. A refusal is counted and answered 413.
pub async fn read_body(
    source: &'static str,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, Box<Response>> {
    let too_large = || {
        count_rejection(source, "too_large");
        Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds {limit} bytes"),
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    to_bytes(body, limit).await.map_err(|_| too_large())
}

#[cfg(test)]
pub(crate) mod test_support {
    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode};
    use gatehouse_domain::envelope::Envelope;
    use gatehouse_domain::ports::{BackendError, QueueProducer};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    /// An in-memory queue for router tests; `fail` makes every publish fail.
    #[derive(Clone, Default)]
    pub struct MemQueue {
        pub published: Arc<Mutex<Vec<Envelope>>>,
        pub fail: bool,
    }

    /// Send one request through a router; the status and the JSON body.
    pub async fn send(app: Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    impl QueueProducer for MemQueue {
        async fn publish(&self, batch: &[Envelope]) -> Result<(), BackendError> {
            if self.fail {
                return Err(BackendError::new("disk full", "test"));
            }
            self.published.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
    }
}
