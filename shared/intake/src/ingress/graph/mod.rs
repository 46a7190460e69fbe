//! Microsoft Graph change notifications (Entra ID users and groups) at `/hooks/graph`.
//!
//! The request path only verifies and stores: the validation handshake is echoed as
//! `text/plain`; a notification collection goes through [`pipeline`]
//! ([`GraphIntake`]): it is parsed, every `clientState` is compared in constant time with
//! `graph.client_state`, and the notifications Gatehouse acts on are written to the inbox table
//! ([`GraphInbox`], the pipeline's sink) in one transaction before the 202. The background task ([`spawn_tasks`])
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

use super::pipeline::{self, Intake as _, Pipeline, Refusal, Request, Sink, Verified};
use super::{Deps, error};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gatehouse_domain::graph::{self, Notification};
use gatehouse_domain::ports::{BackendError, QueueProducer};
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

/// Graph change notifications as a [`pipeline::Intake`]. Graph puts its `clientState` inside the
/// body, one per notification, so [`verify`](pipeline::Intake::verify) parses the collection to
/// authenticate it: the proof is the authenticated collection, and a body that is not one is
/// refused 400 there (before authentication could be judged). The items are the notifications
/// Gatehouse acts on, not envelopes: the inbox worker reads each changed object from Graph and
/// publishes its envelopes later.
pub struct GraphIntake {
    client_state: Option<SecretString>,
    tenant_id: Option<String>,
    max_body_bytes: usize,
}

impl GraphIntake {
    pub fn new(
        client_state: Option<SecretString>,
        tenant_id: Option<String>,
        max_body_bytes: usize,
    ) -> GraphIntake {
        GraphIntake {
            client_state,
            tenant_id,
            max_body_bytes,
        }
    }
}

/// The inbox table as the pipeline's [`Sink`] of notifications.
pub struct GraphInbox(pub Sqlite);

impl Sink<Notification> for GraphInbox {
    const FAILED: &'static str = "the notifications could not be stored; retry";
    async fn put(
        &self,
        batch: &Verified<Vec<Notification>>,
        now: DateTime<Utc>,
    ) -> Result<u64, BackendError> {
        let rows: Vec<(String, String)> = batch.iter().map(|n| (n.key(), n.raw.to_string())).collect();
        self.0.graph_inbox_put(&rows, now).await
    }
}

impl pipeline::Item for Notification {
    /// Notifications name no subject email (the worker's envelopes are checked when it reads
    /// the user from Graph).
    fn check(_: &'static str, _: &[Self]) -> Result<(), Box<Response>> {
        Ok(())
    }
    fn stamp(_: &mut [Self]) {}
    /// Counted in [`GraphIntake::respond`], which sees the ignored notifications too.
    fn accepted(_: &'static str, _: &[Self], _: &str) {}
    fn key(&self) -> String {
        Notification::key(self)
    }
}

impl pipeline::Intake for GraphIntake {
    const SOURCE: &'static str = "graph";
    type Proof = Vec<Notification>;
    type Item = Notification;

    fn not_configured(&self) -> Option<&'static str> {
        self.client_state.is_none().then_some(
            "no graph client state is configured (graph.client_state or GATEHOUSE_GRAPH_CLIENT_STATE)",
        )
    }
    fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }
    async fn verify(
        &self,
        _: &HeaderMap,
        body: &Bytes,
        now: DateTime<Utc>,
    ) -> Result<Vec<Notification>, Refusal> {
        let notifications = graph::parse_collection(body).map_err(|e| Refusal::malformed(e.to_string()))?;
        check(self, &notifications, now)?;
        Ok(notifications)
    }
    /// The notifications Gatehouse acts on; the others are answered as `ignored`.
    fn normalize(
        &self,
        request: &Verified<Request<Vec<Notification>>>,
        _: DateTime<Utc>,
    ) -> Result<Vec<Notification>, Refusal> {
        Ok(request
            .proof()
            .iter()
            .filter(|n| service::is_stored(n))
            .cloned()
            .collect())
    }
    fn respond(
        &self,
        request: &Verified<Request<Vec<Notification>>>,
        batch: &Verified<Vec<Notification>>,
        added: u64,
    ) -> Response {
        let all = request.proof();
        for n in all {
            let actionable = service::is_stored(n);
            gatehouse_platform::events::graph_notification_received(
                gatehouse_domain::metric_labels::GraphKind::of(n.kind()),
                actionable,
            );
            tracing::info!(key = %n.key(), subscription_id = %n.subscription_id, kind = n.kind(),
                resource = n.resource.as_deref().unwrap_or(""), actionable, "graph notification accepted");
        }
        let stored = batch.len() as u64;
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({
                "accepted": stored,
                "duplicates": stored - added.min(stored),
                "ignored": all.len() - batch.len(),
            })),
        )
            .into_response()
    }
}

type GraphPipeline = Pipeline<GraphIntake, GraphInbox>;

pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    let g = &deps.config.graph;
    let intake = GraphIntake::new(g.client_state.clone(), g.tenant_id.clone(), g.max_body_bytes);
    Router::new()
        .route("/hooks/graph", post(graph_hook))
        .with_state(Pipeline::new(intake, GraphInbox(deps.store.clone())))
}

/// The validation handshake (`?validationToken=`) beside the pipeline; everything else through it.
async fn graph_hook(
    State(p): State<Arc<GraphPipeline>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(detail) = p.intake().not_configured() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not_configured", detail);
    }
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return Refusal::malformed(e.body_text()).answer(GraphIntake::SOURCE),
    };
    if let Some(token) = query.get("validationToken") {
        return validation(token);
    }
    pipeline::handle(State(p), headers, body).await
}

/// The subscription validation handshake: 200, `text/plain`, the decoded token.
fn validation(token: &str) -> Response {
    if token.is_empty() || token.len() > MAX_VALIDATION_TOKEN {
        return Refusal::malformed(format!(
            "validationToken must be 1 to {MAX_VALIDATION_TOKEN} bytes"
        ))
        .answer(GraphIntake::SOURCE);
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
/// not belong to a subscription that expired longer ago than Graph retries.
fn check(ing: &GraphIntake, ns: &[Notification], now: DateTime<Utc>) -> Result<(), Refusal> {
    let expected = ing
        .client_state
        .as_ref()
        .map(|s| s.expose_secret().as_bytes())
        .unwrap_or_default();
    for (i, n) in ns.iter().enumerate() {
        let given = n.client_state.as_deref().unwrap_or("").as_bytes();
        // Evaluate both so a missing value costs the same as a wrong one.
        // An empty value never matches, even an empty configured one.
        let ok = bool::from(given.ct_eq(expected)) & !given.is_empty();
        if !ok {
            return Err(Refusal::unauthorized(format!(
                "value[{i}]: clientState is missing or does not match"
            )));
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
            return Err(Refusal::new(
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
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "expired",
                "expired",
                format!("value[{i}]: subscription expired at {exp}, longer ago than graph retries"),
            ));
        }
    }
    Ok(())
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
        match svc.delta_catch_up(gatehouse_domain::clock::now(), false).await {
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
        let handled = match svc.process_inbox(gatehouse_domain::clock::now()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "graph inbox pass failed");
                0
            }
        };
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + Duration::from_secs(3600);
            let before =
                gatehouse_domain::clock::now() - chrono::Duration::from_std(KEEP_DONE).unwrap_or_default();
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
        let wait = match svc.renew_due(gatehouse_domain::clock::now()).await {
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
