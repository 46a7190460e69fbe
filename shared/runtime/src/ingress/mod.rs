//! HTTP intake. A request is answered 2xx only after every envelope it carries is durably
//! enqueued; a request that fails authentication, is too large or malformed enqueues nothing.
//! Each source lives in its own module with a `router` (and, if it needs one, `spawn_tasks`).

pub mod generic;
pub mod google;
pub mod graph;
pub mod okta;
pub mod scim;

use axum::http::StatusCode;
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
