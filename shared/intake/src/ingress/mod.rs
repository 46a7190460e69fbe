//! HTTP intake. A request is answered 2xx only after every envelope it carries is durably
//! enqueued; a request that fails authentication, is too large or malformed enqueues nothing.
//! Each source lives in its own module with a `router` (and, if it needs one, `spawn_tasks`);
//! the webhook sources implement [`pipeline::Intake`] and share its one request path.

pub mod generic;
pub mod google;
pub mod google_reports;
pub mod google_upkeep;
pub mod graph;
pub mod okta;
pub mod okta_api;
pub mod okta_catchup;
pub mod okta_import;
pub mod pipeline;
#[cfg(test)]
mod pipeline_tests;
pub mod scim;
#[cfg(test)]
mod toy;

use axum::body::{Body, Bytes, to_bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use gatehouse_domain::ports::QueueProducer;
use gatehouse_platform::config::Config;
use gatehouse_platform::events;
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_store::sqlite::Sqlite;
use gatehouse_store::state::AnyState;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What every intake may use: the queue to publish to, the local SQLite store (SCIM's directory
/// and outbox, Graph's inbox and subscriptions), the configured state store (`[state]`: the
/// catch-up cursors, deltaLinks and Google channels every replica must share) and the validated
/// configuration.
#[derive(Clone)]
pub struct Deps<Q> {
    pub queue: Q,
    pub store: Sqlite,
    pub state: AnyState,
    pub config: Arc<Config>,
}

/// All intake routes, each request in an `ingress` span. Mount next to
/// `gatehouse_platform::ops::router`.
pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    let s = &deps.config.server;
    let limit = |source, r| per_source_limit(source, r, s.per_source_concurrency, s.retry_after);
    Router::new()
        .merge(limit("okta", okta::router(deps)))
        .merge(limit("scim", scim::router(deps)))
        .merge(limit("graph", graph::router(deps)))
        .merge(limit("google", google::router(deps)))
        .merge(limit("generic", generic::router(deps)))
        .layer(axum::middleware::from_fn(trace_request))
}

/// At most `max` requests of one intake in flight (one semaphore for all its routes); one
/// more is shed at once with 429 and `Retry-After`, so a flood on one intake leaves the
/// others their share (tower's `GlobalConcurrencyLimit` + `LoadShed`).
fn per_source_limit(source: &'static str, router: Router, max: usize, retry_after: Duration) -> Router {
    let secs = retry_after.as_secs().max(1);
    router.layer(
        tower::ServiceBuilder::new()
            .layer(axum::error_handling::HandleErrorLayer::new(
                move |_: tower::BoxError| async move {
                    count_rejection(source, "overloaded");
                    tracing::warn!(source, "intake busy; request shed with 429");
                    let mut resp = error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too_many_requests",
                        format!("too many concurrent requests to this intake; retry in {secs} s"),
                    );
                    resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
                    resp
                },
            ))
            .load_shed()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max)),
    )
}

/// The intake a route belongs to (a span attribute).
fn source_of(route: &str) -> &'static str {
    match route {
        r if r.starts_with("/hooks/okta") => "okta",
        r if r.starts_with("/scim/") => "scim",
        r if r.starts_with("/hooks/graph") => "graph",
        r if r.starts_with("/hooks/google") => "google",
        r if r.starts_with("/hooks/generic") => "generic",
        _ => "unknown",
    }
}

/// One server span per intake request: method, route template, source, status, and the number
/// of envelopes accepted (recorded by the handler with [`record_accepted`]). Never headers or bodies.
async fn trace_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "ingress",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        source = source_of(&route),
        accepted = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    resp
}

/// Stamp envelopes with the request span's trace context, so the processor's span joins the
/// same trace. Call just before publishing.
pub fn trace_envelopes(envelopes: &mut [gatehouse_domain::envelope::Envelope]) {
    let parent = gatehouse_platform::telemetry::current_traceparent();
    for env in envelopes {
        env.trace_parent.clone_from(&parent);
    }
}

/// Record on the request's span how many envelopes it durably enqueued.
pub fn record_accepted(n: usize) {
    tracing::Span::current().record("accepted", n);
}

/// Background work the intakes need (SCIM outbox relay, Graph subscription renewal and delta
/// catch-up, Google channel upkeep and catch-up).
pub fn spawn_tasks<Q: QueueProducer + Clone + 'static>(
    deps: &Deps<Q>,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    tasks.extend(scim::spawn_tasks(deps, shutdown));
    tasks.extend(graph::spawn_tasks(deps, shutdown));
    tasks.extend(google_upkeep::spawn_tasks(deps, shutdown));
    tasks
}

/// `{"error": ..., "detail": ...}` with a status.
pub fn error(status: StatusCode, error: &str, detail: impl Into<String>) -> Response {
    (status, Json(json!({ "error": error, "detail": detail.into() }))).into_response()
}

/// Count accepted envelopes (`gatehouse_events_received_total{source,kind,actionable}`): the
/// envelope's own source and normalized kind, never the payload's own event type (labels come
/// from closed sets). For every intake Gatehouse ships the envelope's source is the intake's
/// name; an intake that reuses another source's parser (the guide's toy reuses the generic
/// one) counts under that source.
pub fn count_received(_intake: &'static str, env: &gatehouse_domain::envelope::Envelope) {
    events::event_received(env.source, &env.event, env.event.is_actionable());
}

/// Count a refused request (`gatehouse_ingress_rejected_total{source,reason}`).
pub fn count_rejection(source: &'static str, reason: &'static str) {
    events::ingress_rejected(source, reason);
}

/// Refuse a request whose events name a subject email outside the email rule
/// ([`gatehouse_domain::email`]): a control character would forge log lines, a look-alike
/// would be someone else. `Err` is the 400 to send (counted as `invalid_email`); the detail
/// says which event and why, never the address.
pub fn check_emails(
    source: &'static str,
    envelopes: &[gatehouse_domain::envelope::Envelope],
) -> Result<(), Box<Response>> {
    for (i, env) in envelopes.iter().enumerate() {
        if let Some(email) = &env.subject.email
            && let Err(e) = gatehouse_domain::email::validate(email)
        {
            count_rejection(source, "invalid_email");
            tracing::warn!(
                source,
                event = i,
                reason = e.0,
                "event refused: invalid subject email"
            );
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "invalid_email",
                format!("event {i}: subject {e}"),
            )));
        }
    }
    Ok(())
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
