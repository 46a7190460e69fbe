//! A stateful fake of GCP Secret Manager v1 REST on `127.0.0.1:0`.
//!
//! # What it models
//! * Auth: every call needs `Authorization: Bearer <FakeSecretManager::token>`, else 401
//!   `UNAUTHENTICATED`.
//! * `POST /v1/projects/{p}/secrets?secretId=S` (409 `ALREADY_EXISTS`), `GET /v1/{secret}`.
//! * `POST /v1/{secret}:addVersion` `{"payload":{"data": base64}}` → version `n` (1, 2, …),
//!   `ENABLED`, the new `latest`.
//! * `GET /v1/{secret}/versions` (newest first), `GET /v1/{version}` (`latest` alias = the most
//!   recently created version), `GET /v1/{version}:access` (disabled or destroyed → 400
//!   `FAILED_PRECONDITION`).
//! * `POST /v1/{version}:enable|:disable|:destroy` with an optional `etag`; a stale etag → 409
//!   `ABORTED`; destroy clears the payload for good.
//! * Faults: [`FakeSecretManager::fail_next`] (429 `RESOURCE_EXHAUSTED` with `Retry-After`, 5xx
//!   `UNAVAILABLE`), before any state is read. Unknown secret/version → 404 `NOT_FOUND`.
//!
//! # What it does not model
//! Locations, IAM policies, replication status, CMEK, version aliases, TTL/expiry, rotation
//! schedules and the Pub/Sub notifications they send (tests post those), checksums.

use axum::body::to_bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One version as the fake holds it.
#[derive(Debug, Clone)]
pub struct FakeVersion {
    pub id: u64,
    /// `ENABLED`, `DISABLED`, `DESTROYED`.
    pub state: String,
    pub data: Option<Vec<u8>>,
    pub etag: String,
}

struct Secret {
    versions: Vec<FakeVersion>,
    etag: u64,
}

struct State {
    token: String,
    secrets: BTreeMap<String, Secret>,
    faults: VecDeque<u16>,
    calls: Vec<(String, String, u16)>,
}

/// Handle to a running fake Secret Manager. Cheap to clone.
#[derive(Clone)]
pub struct FakeSecretManager {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeSecretManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSecretManager")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeSecretManager {
    /// Binds `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> Self {
        let (listener, addr) = crate::server::bind("fake secret manager").await;
        let state = Arc::new(Mutex::new(State {
            token: format!("ya29.fake-{}", uuid::Uuid::new_v4()),
            secrets: BTreeMap::new(),
            faults: VecDeque::new(),
            calls: Vec::new(),
        }));
        let app = axum::Router::new().fallback(serve).with_state(state.clone());
        let server = crate::server::spawn("fake secret manager", listener, app);
        FakeSecretManager {
            state,
            addr,
            _server: server,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The bearer token the fake accepts.
    pub fn token(&self) -> String {
        self.st().token.clone()
    }

    /// Create a secret (no versions).
    pub fn create_secret(&self, name: &str) {
        self.st().secrets.entry(name.to_string()).or_insert(Secret {
            versions: Vec::new(),
            etag: 1,
        });
    }

    /// Add an enabled version directly (seeding).
    pub fn add_version(&self, name: &str, data: &str) -> u64 {
        let mut st = self.st();
        let s = st.secrets.entry(name.to_string()).or_insert(Secret {
            versions: Vec::new(),
            etag: 1,
        });
        add(s, data.as_bytes().to_vec())
    }

    /// Every version of a secret, oldest first.
    pub fn versions(&self, name: &str) -> Vec<FakeVersion> {
        self.st()
            .secrets
            .get(name)
            .map(|s| s.versions.clone())
            .unwrap_or_default()
    }

    /// What `versions/latest:access` answers now: `Some(data)` only if latest is enabled.
    pub fn latest(&self, name: &str) -> Option<String> {
        let st = self.st();
        let v = st.secrets.get(name)?.versions.last()?;
        (v.state == "ENABLED")
            .then(|| String::from_utf8_lossy(v.data.as_deref().unwrap_or_default()).into_owned())
    }

    /// Answer the next `count` calls with `status`.
    pub fn fail_next(&self, status: u16, count: usize) {
        self.st().faults.extend(std::iter::repeat_n(status, count));
    }

    /// `(method, path, status)` of every call.
    pub fn calls(&self) -> Vec<(String, String, u16)> {
        self.st().calls.clone()
    }

    /// Calls that change state.
    pub fn write_calls(&self) -> usize {
        self.st().calls.iter().filter(|(m, _, _)| m != "GET").count()
    }
}

fn add(s: &mut Secret, data: Vec<u8>) -> u64 {
    let id = s.versions.len() as u64 + 1;
    s.etag += 1;
    s.versions.push(FakeVersion {
        id,
        state: "ENABLED".into(),
        data: Some(data),
        etag: format!("\"{}\"", s.etag),
    });
    id
}

fn error(status: u16, code: &str, message: &str) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({ "error": { "code": status, "message": message, "status": code } })),
    )
        .into_response();
    if status == 429 || status == 503 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("0"));
    }
    r
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn version_json(secret: &str, v: &FakeVersion) -> Value {
    json!({
        "name": format!("{secret}/versions/{}", v.id),
        "createTime": "2026-01-01T00:00:00Z",
        "state": v.state,
        "etag": v.etag,
        "replicationStatus": { "automatic": {} },
    })
}

async fn serve(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    let resp = handle(&mut st, &method, &path, &query, auth.as_deref(), &body);
    st.calls.push((method, path, resp.status().as_u16()));
    resp
}

fn handle(
    st: &mut State,
    method: &str,
    path: &str,
    query: &str,
    auth: Option<&str>,
    body: &[u8],
) -> Response {
    if auth != Some(&format!("Bearer {}", st.token)) {
        return error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    if let Some(status) = st.faults.pop_front() {
        return match status {
            429 => error(429, "RESOURCE_EXHAUSTED", "Quota exceeded."),
            s => error(s, "UNAVAILABLE", "The service is currently unavailable."),
        };
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return error(404, "NOT_FOUND", "unknown path");
    };
    let (resource, action) = match rest.rsplit_once(':') {
        Some((r, a)) if !a.contains('/') => (r, Some(a)),
        _ => (rest, None),
    };
    let json_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let segs: Vec<&str> = resource.split('/').collect();
    match (method, segs.as_slice(), action) {
        ("POST", ["projects", _, "secrets"], None) => {
            let id = query
                .split('&')
                .find_map(|p| p.strip_prefix("secretId="))
                .unwrap_or("");
            if id.is_empty() {
                return error(400, "INVALID_ARGUMENT", "secretId is required");
            }
            let name = format!("{resource}/{id}");
            if st.secrets.contains_key(&name) {
                return error(409, "ALREADY_EXISTS", &format!("Secret [{name}] already exists."));
            }
            st.secrets.insert(
                name.clone(),
                Secret {
                    versions: Vec::new(),
                    etag: 1,
                },
            );
            ok(json!({ "name": name, "replication": { "automatic": {} }, "etag": "\"1\"" }))
        }
        ("GET", ["projects", _, "secrets", _], None) => match st.secrets.get(resource) {
            Some(s) => ok(json!({ "name": resource, "etag": format!("\"{}\"", s.etag) })),
            None => error(404, "NOT_FOUND", &format!("Secret [{resource}] not found.")),
        },
        ("POST", ["projects", _, "secrets", _], Some("addVersion")) => {
            let Some(s) = st.secrets.get_mut(resource) else {
                return error(404, "NOT_FOUND", &format!("Secret [{resource}] not found."));
            };
            let data = json_body["payload"]["data"]
                .as_str()
                .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
            let Some(data) = data else {
                return error(400, "INVALID_ARGUMENT", "payload.data must be base64");
            };
            let id = add(s, data);
            let v = s.versions[id as usize - 1].clone();
            ok(version_json(resource, &v))
        }
        ("GET", ["projects", _, "secrets", _, "versions"], None) => {
            let secret = segs[..4].join("/");
            match st.secrets.get(&secret) {
                Some(s) => ok(json!({
                    "versions": s.versions.iter().rev().map(|v| version_json(&secret, v)).collect::<Vec<_>>(),
                    "totalSize": s.versions.len(),
                })),
                None => error(404, "NOT_FOUND", &format!("Secret [{secret}] not found.")),
            }
        }
        (m, ["projects", _, "secrets", _, "versions", vid], act) => {
            let secret = segs[..4].join("/");
            let Some(s) = st.secrets.get_mut(&secret) else {
                return error(404, "NOT_FOUND", &format!("Secret [{secret}] not found."));
            };
            let idx = match *vid {
                "latest" => s.versions.len().checked_sub(1),
                n => n
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .filter(|i| *i < s.versions.len()),
            };
            let Some(i) = idx else {
                return error(
                    404,
                    "NOT_FOUND",
                    &format!("Secret Version [{resource}] not found."),
                );
            };
            match (m, act) {
                ("GET", None) => ok(version_json(&secret, &s.versions[i])),
                ("GET", Some("access")) => {
                    let v = &s.versions[i];
                    if v.state != "ENABLED" {
                        return error(
                            400,
                            "FAILED_PRECONDITION",
                            &format!(
                                "Secret Version [{secret}/versions/{}] is in {} state.",
                                v.id, v.state
                            ),
                        );
                    }
                    let data = base64::engine::general_purpose::STANDARD
                        .encode(v.data.as_deref().unwrap_or_default());
                    ok(json!({ "name": format!("{secret}/versions/{}", v.id), "payload": { "data": data } }))
                }
                ("POST", Some(a @ ("enable" | "disable" | "destroy"))) => {
                    if let Some(etag) = json_body["etag"].as_str()
                        && etag != s.versions[i].etag
                    {
                        return error(409, "ABORTED", "etag mismatch");
                    }
                    if s.versions[i].state == "DESTROYED" {
                        return error(400, "FAILED_PRECONDITION", "the version is destroyed");
                    }
                    s.etag += 1;
                    let etag = format!("\"{}\"", s.etag);
                    let v = &mut s.versions[i];
                    v.etag = etag;
                    match a {
                        "enable" => v.state = "ENABLED".into(),
                        "disable" => v.state = "DISABLED".into(),
                        _ => {
                            v.state = "DESTROYED".into();
                            v.data = None;
                        }
                    }
                    ok(version_json(&secret, v))
                }
                _ => error(405, "METHOD_NOT_ALLOWED", "method not allowed"),
            }
        }
        _ => error(404, "NOT_FOUND", &format!("{method} {path} is not modelled")),
    }
}
