//! The one request path every webhook intake runs: **verify → [`Verified`] → normalize →
//! publish**, with the same refusals, metrics and logs for every source.
//!
//! An intake ([`Intake`]) says only what differs per source: how a request is authenticated
//! ([`Intake::verify`]), how a verified body becomes items ([`Intake::normalize`]), what it adds
//! to them ([`Intake::enrich`]) and what it answers ([`Intake::respond`]). [`handle`] does the
//! rest, in this order, for every intake alike:
//!
//! | step | refusal |
//! |---|---|
//! | [`Intake::not_configured`] | 503 `not_configured` (not counted) |
//! | [`read_body`] within [`Intake::max_body_bytes`] | 413 `payload_too_large` |
//! | [`Intake::verify`]: authentication and freshness, nothing else (run *before* `read_body` when the credential is a header alone, [`Intake::BODY_SIGNED`] `false`) | 401 `unauthorized` (or the intake's own code) |
//! | [`Intake::normalize`]: a pure parse of the verified request | 400 `bad_request` |
//! | [`Item::check`] ([`check_emails`] for envelopes) | 400 `invalid_email` |
//! | [`Intake::enrich`] (Okta profile attributes, Google rename aliases) | 503 when it cannot |
//! | [`Sink::put`]: one call with the whole batch ([`publish`] for the queue) | 503 `enqueue_failed` |
//! | [`count_received`], [`record_accepted`], [`Intake::respond`] | — |
//!
//! An empty batch (a Google `sync` message, an Okta hook carrying no events) is answered without
//! calling the sink.
//!
//! **Only a verified value can be enqueued.** [`Verified<T>`]'s field is private and its only
//! constructors are in this module: [`handle`] wraps the request after `verify` returned `Ok`,
//! and every later value is derived from that verified request. [`Sink::put`] — and so
//! [`publish`], the only function of the request path that calls [`QueueProducer::publish`] —
//! takes a `&Verified<Vec<T>>`. Skipping `verify` does not compile (there is no proof to build
//! the request with), and neither does making a `Verified` anywhere else:
//!
//! ```
//! use gatehouse_intake::ingress::pipeline::Verified;
//! // Reading one is allowed anywhere:
//! fn count(batch: &Verified<Vec<gatehouse_domain::envelope::Envelope>>) -> usize {
//!     batch.len()
//! }
//! ```
//!
//! ```compile_fail
//! use gatehouse_intake::ingress::pipeline::Verified;
//! let forged: Verified<Vec<gatehouse_domain::envelope::Envelope>> = Verified(Vec::new());
//! ```
//!
//! ```compile_fail
//! use gatehouse_intake::ingress::pipeline::Verified;
//! fn forge<T>(t: T) -> Verified<T> {
//!     Verified { 0: t }
//! }
//! ```
//!
//! **Which sources are intakes.** Okta Event Hooks, the Standard Webhooks generic intake, Google
//! Reports push notifications and Microsoft Graph change notifications. Requests that are not
//! event deliveries stay beside the pipeline on the same path: Okta's one-time `GET` verification
//! challenge and Graph's `validationToken` handshake (both answered before any event is read).
//! **SCIM** is not an intake in this sense: it is a resource server (a directory that clients
//! create, patch and delete users and groups in, with an outbox relayed to the queue), whose
//! answers are the stored resources, not an acknowledgement of a delivery — it keeps its own
//! routes. The **pollers** (`okta_catchup`, Graph `delta`, `google_reports`) fetch from the IdP
//! with Gatehouse's own credentials: nothing arrives to verify, so they are not intakes; they
//! parse with the same domain functions as their webhook twin ([`Intake::normalize`] calls
//! them too) and publish the envelopes they fetched with `QueueProducer::publish` directly.

use super::{
    check_emails, count_received, count_rejection, error, read_body, record_accepted, trace_envelopes,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::ports::{BackendError, QueueProducer};
use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;

/// A value that exists only because [`Intake::verify`] accepted the request it came from.
/// The field is private and the constructors are private to this module.
#[derive(Debug)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// Wrap the request `verify` just accepted. Private: called by [`handle`] alone.
    fn after_verify(value: T) -> Verified<T> {
        Verified(value)
    }

    /// A value computed from a verified request is verified too. Private, like `after_verify`.
    fn derive<U>(&self, value: U) -> Verified<U> {
        Verified(value)
    }

    /// The value, read-only (there is no `DerefMut`: a verified batch cannot be swapped).
    pub fn get(&self) -> &T {
        &self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A request whose body has been read within the limit. As `Verified<Request<P>>` it also
/// carries what authentication learned (`proof`).
#[derive(Debug)]
pub struct Request<P> {
    headers: HeaderMap,
    body: Bytes,
    proof: P,
}

impl<P> Request<P> {
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    /// A header as text; `""` when absent or not visible ASCII (for logs and optional headers).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
    pub fn body(&self) -> &Bytes {
        &self.body
    }
    pub fn proof(&self) -> &P {
        &self.proof
    }
}

/// Why a request is refused: the status, the `reason` label of
/// `gatehouse_ingress_rejected_total` (`None`: not counted, like today's 503s) and the
/// `{"error": code, "detail": detail}` body.
#[derive(Debug)]
pub struct Refusal {
    status: StatusCode,
    reason: Option<&'static str>,
    code: &'static str,
    detail: String,
}

impl Refusal {
    /// Any refusal, counted under `reason`.
    pub fn new(
        status: StatusCode,
        reason: &'static str,
        code: &'static str,
        detail: impl Into<String>,
    ) -> Refusal {
        Refusal {
            status,
            reason: Some(reason),
            code,
            detail: detail.into(),
        }
    }
    /// 401 `unauthorized`, counted as `unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", "unauthorized", detail)
    }
    /// 400 `bad_request`, counted as `malformed`.
    pub fn malformed(detail: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "malformed", "bad_request", detail)
    }
    /// 503 with `code`, not counted: something Gatehouse depends on failed; the sender retries.
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: None,
            code,
            detail: detail.into(),
        }
    }
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// Count it (when it has a reason) and answer it: for routes beside the pipeline.
    pub fn answer(self, source: &'static str) -> Response {
        if let Some(reason) = self.reason {
            count_rejection(source, reason);
        }
        error(self.status, self.code, self.detail)
    }
}

/// What a verified request yields and a [`Sink`] stores: an [`Envelope`] for every intake but
/// Graph, whose request path stores the notifications themselves (the inbox worker reads the
/// changed objects from Graph later and publishes their envelopes).
pub trait Item: Send + Sync + Sized + 'static {
    /// Refuse a batch before it is enriched or stored. Envelopes: [`check_emails`].
    fn check(source: &'static str, items: &[Self]) -> Result<(), Box<Response>>;
    /// Just before storing (envelopes: the request's `traceparent`, [`trace_envelopes`]).
    fn stamp(items: &mut [Self]);
    /// After storing (envelopes: [`count_received`] and a debug line each).
    fn accepted(source: &'static str, items: &[Self], context: &str);
    /// What names the item in tests and logs (the envelope id, the notification key).
    fn key(&self) -> String;
}

impl Item for Envelope {
    fn check(source: &'static str, items: &[Self]) -> Result<(), Box<Response>> {
        check_emails(source, items)
    }
    fn stamp(items: &mut [Self]) {
        trace_envelopes(items);
    }
    fn accepted(source: &'static str, items: &[Self], context: &str) {
        for env in items {
            count_received(source, env);
            tracing::debug!(
                envelope_id = %env.id, subject = %env.subject.key, event_type = %env.source_event_type,
                actionable = env.event.is_actionable(), context, "event enqueued"
            );
        }
    }
    fn key(&self) -> String {
        self.id.0.clone()
    }
}

/// Where a verified batch goes. Taking `&Verified<Vec<T>>` is the point: nothing unverified
/// can reach it.
pub trait Sink<T: Item>: Send + Sync + 'static {
    /// The `detail` of the 503 when [`Sink::put`] fails.
    const FAILED: &'static str = "the event could not be stored; retry";
    /// Store the whole batch durably (one call); `Ok` is how many were new (a queue: all).
    fn put(
        &self,
        batch: &Verified<Vec<T>>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64, BackendError>> + Send;
}

/// The queue as a [`Sink`] of envelopes.
#[derive(Clone)]
pub struct Queue<Q>(pub Q);

impl<Q: QueueProducer + 'static> Sink<Envelope> for Queue<Q> {
    async fn put(&self, batch: &Verified<Vec<Envelope>>, _: DateTime<Utc>) -> Result<u64, BackendError> {
        publish(&self.0, batch).await?;
        Ok(batch.len() as u64)
    }
}

/// Enqueue a verified batch: the only place the request path calls [`QueueProducer::publish`].
pub async fn publish<Q: QueueProducer>(
    queue: &Q,
    batch: &Verified<Vec<Envelope>>,
) -> Result<(), BackendError> {
    queue.publish(batch.get()).await
}

/// One webhook source. See the module documentation for the order [`handle`] calls these in.
pub trait Intake: Send + Sync + Sized + 'static {
    /// The `source` label of this intake's metrics (`Source::as_str()` of its envelopes).
    const SOURCE: &'static str;
    /// What authentication learned and parsing may use: the generic `webhook-id`, the Graph
    /// notifications whose `clientState` matched, or `()`.
    type Proof: Send + Sync + 'static;
    /// What normalize yields: [`Envelope`], except Graph ([`Item`]).
    type Item: Item;

    /// `Some(detail)`: no credential is configured; every request is 503 `not_configured`.
    fn not_configured(&self) -> Option<&'static str>;
    fn max_body_bytes(&self) -> usize;
    /// Whether [`Intake::verify`] reads the body (a signature over it). `false` for a secret or
    /// token carried in a header (Okta, Google): the pipeline then verifies *before* reading the
    /// body, handing `verify` an empty one, so a sender without credentials is refused 401 and
    /// cannot make Gatehouse read up to [`Intake::max_body_bytes`].
    const BODY_SIGNED: bool = true;
    /// Where `now` comes from (tests inject a clock).
    fn now(&self) -> DateTime<Utc> {
        gatehouse_domain::clock::now()
    }
    /// Authentication and freshness only (constant-time comparisons). Async because a Google
    /// channel's token is looked up in the state store. Graph's `clientState` is inside the
    /// body, so its `verify` parses the notification collection to check it: its proof is the
    /// parsed, authenticated collection.
    fn verify(
        &self,
        headers: &HeaderMap,
        body: &Bytes,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Self::Proof, Refusal>> + Send;
    /// A pure parse of the verified request; the pipeline wraps the result in [`Verified`].
    fn normalize(
        &self,
        request: &Verified<Request<Self::Proof>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Self::Item>, Refusal>;
    /// Add what the source's payload lacks before storing (Okta: profile attributes; Google:
    /// rename aliases). Runs after [`Item::check`]; a refusal here is usually a 503.
    fn enrich(
        &self,
        _request: &Verified<Request<Self::Proof>>,
        _items: &mut Vec<Self::Item>,
    ) -> impl Future<Output = Result<(), Refusal>> + Send {
        async { Ok(()) }
    }
    /// Request context for logs (`webhook_id=…`, `channel_id=…`); never a secret.
    fn context(&self, _request: &Verified<Request<Self::Proof>>) -> String {
        String::new()
    }
    /// The 2xx answer once the batch is stored (`stored`: how many the sink found new).
    fn respond(
        &self,
        request: &Verified<Request<Self::Proof>>,
        batch: &Verified<Vec<Self::Item>>,
        stored: u64,
    ) -> Response;
}

/// An intake and where its batches go: the state of [`handle`].
pub struct Pipeline<I, S> {
    intake: I,
    sink: S,
}

impl<I: Intake, S: Sink<I::Item>> Pipeline<I, S> {
    pub fn new(intake: I, sink: S) -> Arc<Pipeline<I, S>> {
        Arc::new(Pipeline { intake, sink })
    }
    pub fn intake(&self) -> &I {
        &self.intake
    }
    /// `POST path` through [`handle`].
    pub fn route(intake: I, sink: S, path: &str) -> axum::Router {
        axum::Router::new()
            .route(path, axum::routing::post(handle::<I, S>))
            .with_state(Pipeline::new(intake, sink))
    }
}

/// The axum handler for any intake: the sequence of the module documentation.
pub async fn handle<I: Intake, S: Sink<I::Item>>(
    State(p): State<Arc<Pipeline<I, S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match run(&p, headers, body).await {
        Ok(r) | Err(r) => r,
    }
}

async fn run<I: Intake, S: Sink<I::Item>>(
    p: &Pipeline<I, S>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let (intake, source) = (&p.intake, I::SOURCE);
    if let Some(detail) = intake.not_configured() {
        return Err(error(StatusCode::SERVICE_UNAVAILABLE, "not_configured", detail));
    }
    let now = intake.now();
    // Authenticated by a header alone: refused before a byte of the body is read.
    let early = if I::BODY_SIGNED {
        None
    } else {
        let proof = intake
            .verify(&headers, &Bytes::new(), now)
            .await
            .map_err(|r| r.answer(source))?;
        Some(proof)
    };
    let body = read_body(source, &headers, body, intake.max_body_bytes())
        .await
        .map_err(|r| *r)?;
    let proof = match early {
        Some(proof) => proof,
        None => intake
            .verify(&headers, &body, now)
            .await
            .map_err(|r| r.answer(source))?,
    };
    let request = Verified::after_verify(Request { headers, body, proof });
    let mut items = intake.normalize(&request, now).map_err(|r| r.answer(source))?;
    I::Item::check(source, &items).map_err(|r| *r)?;
    intake
        .enrich(&request, &mut items)
        .await
        .map_err(|r| r.answer(source))?;
    I::Item::stamp(&mut items);
    let batch = request.derive(items);
    let context = intake.context(&request);
    let stored = if batch.is_empty() {
        0
    } else {
        match p.sink.put(&batch, now).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(
                    error = %e, source = ?std::error::Error::source(&e), intake = source, context,
                    "enqueue failed; the sender will retry"
                );
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "enqueue_failed",
                    S::FAILED,
                ));
            }
        }
    };
    I::Item::accepted(source, &batch, &context);
    record_accepted(batch.len());
    Ok(intake.respond(&request, &batch, stored))
}

/// Answer the `{"enqueued": n, "ignored": m}` most intakes send (`m`: envelopes that are not
/// actionable).
pub fn enqueued_and_ignored(batch: &[Envelope]) -> Response {
    let ignored = batch.iter().filter(|e| !e.event.is_actionable()).count();
    axum::response::IntoResponse::into_response(axum::Json(
        serde_json::json!({ "enqueued": batch.len(), "ignored": ignored }),
    ))
}
