//! Microsoft Graph change notifications (Entra ID users and groups) at `/hooks/graph`.
//!
//! The request path only verifies and stores: the validation handshake is echoed as
//! `text/plain`; a notification collection is parsed, every `clientState` is compared in
//! constant time with `graph.client_state`, and the notifications Gatehouse acts on are written
//! to the inbox table in one transaction before the 202. The background task ([`spawn_tasks`])
//! reads each changed user or group from Graph, publishes envelopes and finishes the inbox row;
//! another keeps the subscriptions alive.

mod client;
mod delta;
mod service;

/// The time type [`GraphService::renew_due`] and [`GraphService::process_inbox`] take.
pub use chrono::{DateTime, Utc};
pub use client::{GRAPH_SCOPE, GraphClient, GraphClientConfig, GraphError, Subscription};
pub use delta::{DELTA_RESOURCES, DeltaPage, DeltaReport};
pub use service::{GraphService, GraphServiceError, RenewReport};

use super::{Deps, error};
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gatehouse_domain::graph::{self, Notification};
use gatehouse_domain::ports::QueueProducer;
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_store::sqlite::Sqlite;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;

/// Longest `validationToken` echoed back.
const MAX_VALIDATION_TOKEN: usize = 1024;
/// Graph retries a failed delivery for up to 4 hours; a notification whose subscription expired
/// longer ago than that (plus skew) cannot be a genuine delivery.
const EXPIRED_AFTER: Duration = Duration::from_secs(4 * 3600 + 300);
/// Finished inbox rows are kept this long so a redelivery stays a no-op.
const KEEP_DONE: Duration = Duration::from_secs(24 * 3600);

struct Intake {
    store: Sqlite,
    client_state: Option<SecretString>,
    tenant_id: Option<String>,
    max_body_bytes: usize,
}

pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    let g = &deps.config.graph;
    let state = Arc::new(Intake {
        store: deps.store.clone(),
        client_state: g.client_state.clone(),
        tenant_id: g.tenant_id.clone(),
        max_body_bytes: g.max_body_bytes,
    });
    Router::new()
        .route("/hooks/graph", post(graph_hook))
        .with_state(state)
}

fn reject(status: StatusCode, reason: &'static str, code: &str, detail: impl Into<String>) -> Response {
    crate::ingress::count_rejection("graph", reason);
    error(status, code, detail)
}

async fn graph_hook(
    State(ing): State<Arc<Intake>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(client_state) = &ing.client_state else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_configured",
            "no graph client state is configured (graph.client_state or GATEHOUSE_GRAPH_CLIENT_STATE)",
        );
    };
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return reject(StatusCode::BAD_REQUEST, "malformed", "bad_request", e.body_text()),
    };
    if let Some(token) = query.get("validationToken") {
        return validation(token);
    }
    let bytes = match crate::ingress::read_body("graph", &headers, body, ing.max_body_bytes).await {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let now = Utc::now();
    let notifications = match graph::parse_collection(&bytes) {
        Ok(n) => n,
        Err(e) => return reject(StatusCode::BAD_REQUEST, "malformed", "bad_request", e.to_string()),
    };
    if let Some(r) = check(&ing, client_state, &notifications, now) {
        return r;
    }
    let (stored, ignored): (Vec<&Notification>, Vec<&Notification>) =
        notifications.iter().partition(|n| service::is_stored(n));
    let rows: Vec<(String, String)> = stored.iter().map(|n| (n.key(), n.raw.to_string())).collect();
    let added = if rows.is_empty() {
        0
    } else {
        match ing.store.graph_inbox_put(&rows, now).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, source = ?std::error::Error::source(&e),
                    "graph inbox write failed; graph will retry");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "enqueue_failed",
                    "the notifications could not be stored; retry",
                );
            }
        }
    };
    for n in &notifications {
        let actionable = service::is_stored(n);
        gatehouse_platform::events::graph_notification_received(
            gatehouse_domain::metric_labels::GraphKind::of(n.kind()),
            actionable,
        );
        tracing::info!(key = %n.key(), subscription_id = %n.subscription_id, kind = n.kind(),
            resource = n.resource.as_deref().unwrap_or(""), actionable, "graph notification accepted");
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({
            "accepted": stored.len(),
            "duplicates": stored.len() as u64 - added.min(stored.len() as u64),
            "ignored": ignored.len(),
        })),
    )
        .into_response()
}

/// The subscription validation handshake: 200, `text/plain`, the decoded token.
fn validation(token: &str) -> Response {
    if token.is_empty() || token.len() > MAX_VALIDATION_TOKEN {
        return reject(
            StatusCode::BAD_REQUEST,
            "malformed",
            "bad_request",
            format!("validationToken must be 1 to {MAX_VALIDATION_TOKEN} bytes"),
        );
    }
    tracing::info!("graph subscription validation answered");
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        token.to_string(),
    )
        .into_response()
}

/// Every notification must carry our `clientState` (constant time), name our tenant, and
/// not belong to a subscription that expired longer ago than Graph retries. `Some` is the answer.
fn check(ing: &Intake, expected: &SecretString, ns: &[Notification], now: DateTime<Utc>) -> Option<Response> {
    let expected = expected.expose_secret().as_bytes();
    for (i, n) in ns.iter().enumerate() {
        let given = n.client_state.as_deref().unwrap_or("").as_bytes();
        // Evaluate both so a missing value costs the same as a wrong one.
        // An empty value never matches, even an empty configured one.
        let ok = bool::from(given.ct_eq(expected)) & !given.is_empty();
        if !ok {
            return Some(reject(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unauthorized",
                format!("value[{i}]: clientState is missing or does not match"),
            ));
        }
    }
    for (i, n) in ns.iter().enumerate() {
        // Every notification names its tenant, and it is ours (config requires `tenant_id`
        // with `client_state`; without one nothing matches).
        let ours = match (&ing.tenant_id, &n.tenant_id) {
            (Some(want), Some(got)) => want.eq_ignore_ascii_case(got),
            _ => false,
        };
        if !ours {
            return Some(reject(
                StatusCode::FORBIDDEN,
                "wrong_tenant",
                "forbidden",
                format!("value[{i}]: tenantId is missing or is not the configured tenant"),
            ));
        }
        if let Some(exp) = n.subscription_expiration
            && now
                .signed_duration_since(exp)
                .to_std()
                .is_ok_and(|late| late > EXPIRED_AFTER)
        {
            return Some(reject(
                StatusCode::BAD_REQUEST,
                "expired",
                "expired",
                format!("value[{i}]: subscription expired at {exp}, longer ago than graph retries"),
            ));
        }
    }
    None
}

/// The service acting on the inbox, when `[graph]` has credentials.
pub fn service<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Option<GraphService<Q>> {
    match GraphService::new(deps.store.clone(), deps.queue.clone(), &deps.config.graph) {
        Ok(s) => s.map(|s| s.with_catchup_store(deps.state.clone())),
        Err(e) => {
            tracing::error!(error = %e, "graph client cannot be built; graph notifications will not be acted on");
            None
        }
    }
}

/// The inbox worker (when a client state and credentials are configured) and, with a
/// `notification_url`, the subscription keeper.
pub fn spawn_tasks<Q: QueueProducer + Clone + 'static>(
    deps: &Deps<Q>,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    if deps.config.graph.client_state.is_none() {
        return Vec::new();
    }
    let Some(svc) = service(deps) else {
        return Vec::new();
    };
    let mut tasks = Vec::new();
    let (inbox, s) = (svc.clone(), shutdown.clone());
    tasks.push(tokio::spawn(async move { inbox_loop(inbox, s).await }));
    // After downtime, then every `delta_interval`: what changed since the stored deltaLinks
    // goes to the inbox.
    let (rounds, s) = (svc.clone(), shutdown.clone());
    let every = svc.config().delta_interval;
    tasks.push(tokio::spawn(async move {
        delta_loop(rounds, move || tokio::time::sleep(every), s).await
    }));
    if svc.config().notification_url.is_some() {
        let s = shutdown.clone();
        tasks.push(tokio::spawn(async move { subscription_loop(svc, s).await }));
    }
    tasks
}

/// Delta rounds from the stored deltaLinks: one at once (what changed while Gatehouse was down),
/// then one each time `tick` completes (`graph.delta_interval`: what Graph changed without
/// notifying, or whose notification was lost). A failed round is logged and the next tick tries
/// again from the same deltaLinks. Tests drive `tick` themselves.
pub async fn delta_loop<Q, F, T>(svc: GraphService<Q>, mut tick: F, shutdown: Shutdown)
where
    Q: QueueProducer,
    F: FnMut() -> T,
    T: std::future::Future<Output = ()>,
{
    let mut when = "start";
    while !shutdown.is_triggered() {
        match svc.delta_catch_up(Utc::now(), false).await {
            Ok(r) => {
                tracing::info!(when, resumed = ?r.resumed, baselined = ?r.baselined, "graph delta round done")
            }
            Err(e) => {
                gatehouse_platform::events::catchup_failed(gatehouse_domain::envelope::Source::Graph);
                tracing::warn!(when, error = %e, "graph delta round failed; trying again at the next interval");
            }
        }
        when = "interval";
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick() => {}
        }
    }
}

async fn inbox_loop<Q: QueueProducer>(svc: GraphService<Q>, shutdown: Shutdown) {
    let poll = svc.config().inbox_poll_interval;
    let mut next_prune = tokio::time::Instant::now();
    while !shutdown.is_triggered() {
        let handled = match svc.process_inbox(Utc::now()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "graph inbox pass failed");
                0
            }
        };
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + Duration::from_secs(3600);
            let before = Utc::now() - chrono::Duration::from_std(KEEP_DONE).unwrap_or_default();
            if let Err(e) = svc.store().graph_inbox_prune(before).await {
                tracing::warn!(error = %e, "graph inbox prune failed");
            }
        }
        if handled > 0 {
            continue;
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

async fn subscription_loop<Q: QueueProducer>(svc: GraphService<Q>, shutdown: Shutdown) {
    let every = svc.config().renew_interval;
    while !shutdown.is_triggered() {
        let wait = match svc.renew_due(Utc::now()).await {
            Ok(r) => {
                if !r.created.is_empty() || !r.renewed.is_empty() {
                    tracing::info!(created = ?r.created, renewed = ?r.renewed, "graph subscriptions kept");
                }
                every
            }
            Err(e) => {
                tracing::warn!(error = %e, "graph subscription upkeep failed; will retry");
                every.min(Duration::from_secs(60))
            }
        };
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
