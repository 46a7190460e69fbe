//! A fake OpenTelemetry collector: the OTLP/HTTP traces receiver, on `127.0.0.1:0`. Point an
//! exporter's endpoint at [`FakeCollector::base_url`] (it adds `/v1/traces`).
//!
//! # What it models (OTLP specification, "OTLP/HTTP")
//! * `POST /v1/traces` with `Content-Type: application/x-protobuf` and a binary
//!   `ExportTraceServiceRequest` → 200, `Content-Type: application/x-protobuf`, a binary
//!   `ExportTraceServiceResponse` (no partial success). Every span is kept
//!   ([`FakeCollector::spans`]), flattened with its resource's attributes.
//! * A body that does not decode, or a span whose trace id is not 16 bytes or whose span id is
//!   not 8 bytes → 400 with a binary `google.rpc.Status` (code 3, `INVALID_ARGUMENT`), as the
//!   specification requires of every 4xx/5xx.
//! * Another content type (OTLP/JSON, which the fake does not decode) or a `Content-Encoding`
//!   → 415 with a `Status`; another method on `/v1/traces` → 405; any other path → 404.
//! * Faults: [`FakeCollector::fail_next`] answers the next export requests with a status (429
//!   and 503 carry `Retry-After: 0`, the retryable codes of the specification) and keeps nothing.
//! * Every request's status is recorded ([`FakeCollector::statuses`]).
//!
//! # What it does not model
//! OTLP/JSON, gzip, the logs and metrics signals, gRPC, and partial success.

use axum::body::{Bytes, to_bytes};
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const PROTOBUF: &str = "application/x-protobuf";

/// One span as received, with ids in lowercase hex and attribute values as text.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    pub attributes: BTreeMap<String, String>,
    /// Each event's name and attributes.
    pub events: Vec<(String, BTreeMap<String, String>)>,
    /// `unset`, `ok` or `error`.
    pub status: String,
    /// The attributes of the resource that sent it (`service.name`, ...).
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Every key and value this span carries (attributes, events, resource), for leak checks.
    pub fn all_text(&self) -> String {
        let mut out = format!("{} ", self.name);
        let maps = std::iter::once(&self.attributes)
            .chain(self.events.iter().map(|(_, a)| a))
            .chain(std::iter::once(&self.resource));
        for m in maps {
            for (k, v) in m {
                out.push_str(&format!("{k}={v} "));
            }
        }
        for (name, _) in &self.events {
            out.push_str(name);
            out.push(' ');
        }
        out
    }
}

#[derive(Default)]
struct State {
    spans: Vec<ReceivedSpan>,
    statuses: Vec<u16>,
    faults: VecDeque<u16>,
}

/// Handle to a running fake collector. Cheap to clone; the server stops when the last clone
/// drops.
#[derive(Clone)]
pub struct FakeCollector {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCollector")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeCollector {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> FakeCollector {
        let (listener, addr) = crate::server::bind("fake otlp collector").await;
        let state = Arc::new(Mutex::new(State::default()));
        let app = axum::Router::new().fallback(serve_one).with_state(state.clone());
        let server = crate::server::spawn("fake otlp collector", listener, app);
        FakeCollector {
            state,
            addr,
            _server: server,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT`: the OTLP/HTTP base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.st().spans.clone()
    }

    /// The status of every request answered so far.
    pub fn statuses(&self) -> Vec<u16> {
        self.st().statuses.clone()
    }

    /// Answer the next `statuses.len()` export requests with these statuses, keeping nothing.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.st().faults.extend(statuses);
    }
}

async fn serve_one(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let resp = answer(&state, req).await;
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .statuses
        .push(resp.status().as_u16());
    resp
}

async fn answer(state: &Mutex<State>, req: Request) -> Response {
    if req.uri().path() != "/v1/traces" {
        return status(StatusCode::NOT_FOUND, 5, "not found");
    }
    if req.method() != Method::POST {
        return status(StatusCode::METHOD_NOT_ALLOWED, 12, "only POST");
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type.split(';').next().map(str::trim) != Some(PROTOBUF) {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            &format!("content type {content_type:?}: this fake decodes {PROTOBUF} only"),
        );
    }
    if req.headers().contains_key(header::CONTENT_ENCODING) {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            "compressed bodies are not decoded",
        );
    }
    let fault = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .faults
        .pop_front();
    if let Some(code) = fault {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = status(code, 14, "injected fault");
        if matches!(code.as_u16(), 429 | 503) {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
        }
        return r;
    }
    let body: Bytes = match to_bytes(req.into_body(), 16 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => return status(StatusCode::PAYLOAD_TOO_LARGE, 8, "body too large"),
    };
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => {
            return status(
                StatusCode::BAD_REQUEST,
                3,
                &format!("not an ExportTraceServiceRequest: {e}"),
            );
        }
    };
    let mut received = Vec::new();
    for rs in request.resource_spans {
        let resource = rs.resource.map(|r| text_map(&r.attributes)).unwrap_or_default();
        for ss in rs.scope_spans {
            let scope = ss.scope.map(|s| s.name).unwrap_or_default();
            for s in ss.spans {
                if s.trace_id.len() != 16 || s.span_id.len() != 8 {
                    return status(StatusCode::BAD_REQUEST, 3, "trace id must be 16 bytes, span id 8");
                }
                received.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name,
                    kind: match s.kind {
                        1 => "internal",
                        2 => "server",
                        3 => "client",
                        4 => "producer",
                        5 => "consumer",
                        _ => "unspecified",
                    }
                    .into(),
                    attributes: text_map(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .map(|e| (e.name.clone(), text_map(&e.attributes)))
                        .collect(),
                    status: match s.status.map(|st| st.code) {
                        Some(1) => "ok",
                        Some(2) => "error",
                        _ => "unset",
                    }
                    .into(),
                    resource: resource.clone(),
                    scope: scope.clone(),
                });
            }
        }
    }
    state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .spans
        .extend(received);
    protobuf(
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

/// `google.rpc.Status`, the body of every OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn status(http: StatusCode, code: i32, message: &str) -> Response {
    let body = RpcStatus {
        code,
        message: message.to_string(),
    };
    protobuf(http, body.encode_to_vec())
}

fn protobuf(http: StatusCode, body: Vec<u8>) -> Response {
    (http, [(header::CONTENT_TYPE, PROTOBUF)], body).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default()))
        .collect()
}

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(text).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(l)) => format!("{:?}", text_map(&l.values)),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn request(trace_id: Vec<u8>) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id,
                        span_id: vec![2; 8],
                        name: "ingress".into(),
                        kind: 2,
                        attributes: vec![KeyValue {
                            key: "accepted".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::IntValue(3)),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    async fn post(c: &FakeCollector, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/traces", c.base_url()))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        assert_eq!(r.headers()["content-type"], PROTOBUF);
        (s, r.bytes().await.unwrap().to_vec())
    }

    #[tokio::test]
    async fn keeps_decoded_spans_and_answers_like_the_spec() {
        let c = FakeCollector::start().await;
        let (s, body) = post(&c, PROTOBUF, request(vec![1; 16])).await;
        assert_eq!(s, 200);
        assert_eq!(
            ExportTraceServiceResponse::decode(body.as_slice()).unwrap(),
            ExportTraceServiceResponse::default()
        );
        let spans = c.spans();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].trace_id, "01".repeat(16));
        assert_eq!(
            (spans[0].kind.as_str(), spans[0].attr("accepted")),
            ("server", Some("3"))
        );
        assert_eq!(spans[0].parent_span_id, "");

        let (s, body) = post(&c, PROTOBUF, b"\xff\xffgarbage".to_vec()).await;
        assert_eq!(s, 400);
        assert_eq!(RpcStatus::decode(body.as_slice()).unwrap().code, 3);
        assert_eq!(post(&c, PROTOBUF, request(vec![1; 3])).await.0, 400);
        assert_eq!(post(&c, "application/json", b"{}".to_vec()).await.0, 415);
        assert_eq!(c.spans().len(), 1, "refused requests keep nothing");

        c.fail_next(&[503]);
        let r = reqwest::Client::new()
            .post(format!("{}/v1/traces", c.base_url()))
            .header("content-type", PROTOBUF)
            .body(request(vec![1; 16]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(r.headers()["retry-after"], "0");
        let r = reqwest::Client::new()
            .get(format!("{}/v1/traces", c.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405);
        assert_eq!(c.spans().len(), 1);
        assert_eq!(c.statuses(), vec![200, 400, 400, 415, 503, 405]);
    }
}
