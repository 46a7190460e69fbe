//! A stateful fake of the IAM v1 service-account keys REST API on `127.0.0.1:0`.
//!
//! # What it models
//! * Auth: `Authorization: Bearer <FakeSaKeys::token>` on every call, else 401 `UNAUTHENTICATED`.
//! * `POST /v1/projects/-/serviceAccounts/{email}/keys` → the key with `privateKeyData` (base64 of
//!   a `service_account` key file: `private_key_id`, `private_key`, `client_email`, …), shown
//!   only here; at most 10 keys per account (400 `FAILED_PRECONDITION`); unknown account → 404.
//! * `GET …/keys` (`?keyTypes=USER_MANAGED`), `GET …/keys/{id}`, `DELETE …/keys/{id}` (404 when
//!   gone), `POST …/keys/{id}:disable|:enable`.
//! * A key-login check, [`FakeSaKeys::can_authenticate`]: a key file works if its key exists, is
//!   enabled and its private key is the one issued (what Google's token endpoint would decide).
//! * Faults: [`FakeSaKeys::fail_next`] (429 with `Retry-After`, 5xx).
//!
//! # What it does not model
//! Real RSA keys and the OAuth JWT-bearer token exchange (the private key is random text),
//! system-managed keys, uploaded public keys, key expiry policies.

use axum::body::to_bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

const MAX_KEYS: usize = 10;

#[derive(Debug, Clone)]
struct Key {
    id: String,
    private_key: String,
    disabled: bool,
    created: String,
}

struct State {
    token: String,
    project: String,
    accounts: BTreeMap<String, Vec<Key>>,
    faults: VecDeque<u16>,
    calls: Vec<(String, String, u16)>,
    seq: u64,
}

/// What the rotator's GCP tests start from: service account `sa` with one key, whose JSON key
/// file is the only version of Secret Manager secret `secret`; the fake IAM accepts the fake
/// Secret Manager's token.
pub struct SaKeyInSecret {
    pub sm: crate::secret_manager_fake::FakeSecretManager,
    pub iam: FakeSaKeys,
    /// The id of the key the secret holds before any rotation.
    pub old_key: String,
}

impl SaKeyInSecret {
    pub async fn start(sa: &str, secret: &str) -> SaKeyInSecret {
        let sm = crate::secret_manager_fake::FakeSecretManager::start().await;
        let iam = FakeSaKeys::start().await;
        iam.set_token(&sm.token());
        iam.add_service_account(sa);
        let file = iam.add_key(sa);
        let old_key = iam.keys(sa)[0].0.clone();
        sm.create_secret(secret);
        sm.add_version(secret, &file);
        SaKeyInSecret { sm, iam, old_key }
    }
}

/// Handle to a running fake IAM keys API. Cheap to clone.
#[derive(Clone)]
pub struct FakeSaKeys {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeSaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSaKeys")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeSaKeys {
    /// Binds `127.0.0.1:0`.
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> Self {
        let (listener, addr) = crate::server::bind("fake iam").await;
        let state = Arc::new(Mutex::new(State {
            token: format!("ya29.fake-{}", uuid::Uuid::new_v4()),
            project: "gatehouse-test".into(),
            accounts: BTreeMap::new(),
            faults: VecDeque::new(),
            calls: Vec::new(),
            seq: 0,
        }));
        let app = axum::Router::new().fallback(serve).with_state(state.clone());
        let server = crate::server::spawn("fake iam", listener, app);
        FakeSaKeys {
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

    /// Set the token the fake accepts (to share one token with another fake).
    pub fn set_token(&self, token: &str) {
        self.st().token = token.to_string();
    }

    pub fn add_service_account(&self, email: &str) {
        self.st().accounts.entry(email.to_string()).or_default();
    }

    /// Issue a key directly (seeding); returns the key file JSON.
    pub fn add_key(&self, email: &str) -> String {
        let mut st = self.st();
        let (_, file) = new_key(&mut st, email);
        file
    }

    /// `(key id, enabled)` of an account's keys, oldest first.
    pub fn keys(&self, email: &str) -> Vec<(String, bool)> {
        self.st()
            .accounts
            .get(email)
            .map(|ks| ks.iter().map(|k| (k.id.clone(), !k.disabled)).collect())
            .unwrap_or_default()
    }

    /// Whether a key file would get a token: its key exists, is enabled and matches.
    pub fn can_authenticate(&self, key_file: &str) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(key_file) else {
            return false;
        };
        let (Some(email), Some(id), Some(pk)) = (
            v["client_email"].as_str(),
            v["private_key_id"].as_str(),
            v["private_key"].as_str(),
        ) else {
            return false;
        };
        self.st()
            .accounts
            .get(email)
            .and_then(|ks| ks.iter().find(|k| k.id == id))
            .is_some_and(|k| !k.disabled && k.private_key == pk)
    }

    pub fn fail_next(&self, status: u16, count: usize) {
        self.st().faults.extend(std::iter::repeat_n(status, count));
    }

    /// `(method, path, status)` of every call.
    pub fn calls(&self) -> Vec<(String, String, u16)> {
        self.st().calls.clone()
    }

    /// Keys created through the API.
    pub fn create_calls(&self) -> usize {
        self.st()
            .calls
            .iter()
            .filter(|(m, p, s)| m == "POST" && p.ends_with("/keys") && *s == 200)
            .count()
    }
}

fn new_key(st: &mut State, email: &str) -> (Key, String) {
    st.seq += 1;
    let id = format!(
        "{:040x}",
        u128::from(st.seq) << 64 | u128::from(uuid::Uuid::new_v4().as_u64_pair().0)
    );
    let key = Key {
        id: id.clone(),
        private_key: format!(
            "-----BEGIN PRIVATE KEY-----\nfake-{}\n-----END PRIVATE KEY-----\n",
            uuid::Uuid::new_v4()
        ),
        disabled: false,
        created: format!("2026-01-01T00:00:{:02}Z", st.seq % 60),
    };
    let file = json!({
        "type": "service_account",
        "project_id": st.project,
        "private_key_id": id,
        "private_key": key.private_key,
        "client_email": email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string();
    st.accounts
        .entry(email.to_string())
        .or_default()
        .push(key.clone());
    (key, file)
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

fn key_json(project: &str, email: &str, k: &Key) -> Value {
    json!({
        "name": format!("projects/{project}/serviceAccounts/{email}/keys/{}", k.id),
        "validAfterTime": k.created,
        "validBeforeTime": "9999-12-31T23:59:59Z",
        "keyAlgorithm": "KEY_ALG_RSA_2048",
        "keyOrigin": "GOOGLE_PROVIDED",
        "keyType": "USER_MANAGED",
        "disabled": k.disabled,
    })
}

async fn serve(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = to_bytes(req.into_body(), 1 << 20).await;
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    let resp = handle(&mut st, &method, &path, auth.as_deref());
    st.calls.push((method, path, resp.status().as_u16()));
    resp
}

fn handle(st: &mut State, method: &str, path: &str, auth: Option<&str>) -> Response {
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
    let Some(rest) = path.strip_prefix("/v1/projects/-/serviceAccounts/") else {
        return error(404, "NOT_FOUND", "unknown path");
    };
    let (resource, action) = match rest.rsplit_once(':') {
        Some((r, a)) if !a.contains('/') && !a.contains('@') => (r, Some(a)),
        _ => (rest, None),
    };
    let segs: Vec<&str> = resource.split('/').collect();
    let email = segs[0].to_string();
    let project = st.project.clone();
    if !st.accounts.contains_key(&email) {
        return error(
            404,
            "NOT_FOUND",
            &format!("Service account projects/-/serviceAccounts/{email} not found."),
        );
    }
    match (method, &segs[1..], action) {
        ("POST", ["keys"], None) => {
            if st.accounts[&email].len() >= MAX_KEYS {
                return error(400, "FAILED_PRECONDITION", "Precondition check failed.");
            }
            let (k, file) = new_key(st, &email);
            let mut v = key_json(&project, &email, &k);
            v["privateKeyType"] = json!("TYPE_GOOGLE_CREDENTIALS_FILE");
            v["privateKeyData"] = json!(base64::engine::general_purpose::STANDARD.encode(file));
            (StatusCode::OK, axum::Json(v)).into_response()
        }
        ("GET", ["keys"], None) => {
            let keys: Vec<Value> = st.accounts[&email]
                .iter()
                .map(|k| key_json(&project, &email, k))
                .collect();
            (StatusCode::OK, axum::Json(json!({ "keys": keys }))).into_response()
        }
        (m, ["keys", id], act) => {
            let keys = st
                .accounts
                .get_mut(&email)
                .map(std::mem::take)
                .unwrap_or_default();
            let mut keys = keys;
            let resp = match keys.iter().position(|k| k.id == *id) {
                None => error(
                    404,
                    "NOT_FOUND",
                    &format!("Service account key {id} does not exist."),
                ),
                Some(i) => match (m, act) {
                    ("GET", None) => {
                        (StatusCode::OK, axum::Json(key_json(&project, &email, &keys[i]))).into_response()
                    }
                    ("DELETE", None) => {
                        keys.remove(i);
                        (StatusCode::OK, axum::Json(json!({}))).into_response()
                    }
                    ("POST", Some("disable")) => {
                        keys[i].disabled = true;
                        (StatusCode::OK, axum::Json(json!({}))).into_response()
                    }
                    ("POST", Some("enable")) => {
                        keys[i].disabled = false;
                        (StatusCode::OK, axum::Json(json!({}))).into_response()
                    }
                    _ => error(405, "METHOD_NOT_ALLOWED", "method not allowed"),
                },
            };
            st.accounts.insert(email, keys);
            resp
        }
        _ => error(404, "NOT_FOUND", &format!("{method} {path} is not modelled")),
    }
}
