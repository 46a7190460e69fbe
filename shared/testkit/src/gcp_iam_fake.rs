//! A stateful fake of the GCP IAM policy methods Gatehouse calls, served over HTTP on
//! `127.0.0.1:0`. One server answers for all three APIs: point `resource_manager_url`,
//! `bigquery_url` and `iam_url` at [`FakeGcpIam::base_url`].
//!
//! # What it models
//! * `POST /v3/projects/{p}:getIamPolicy` and `:setIamPolicy` (Resource Manager v3),
//!   `POST /bigquery/v2/projects/{p}/datasets/{d}:getIamPolicy|:setIamPolicy` (BigQuery v2),
//!   `POST /v1/projects/{p}/serviceAccounts/{email}:getIamPolicy|:setIamPolicy` (IAM v1).
//! * Policies with `version`, `etag`, `bindings` (`role`, `members`, `condition`) and any other
//!   field (`auditConfigs`) kept as given. `getIamPolicy` honours
//!   `options.requestedPolicyVersion`: asked for less than 3, conditional bindings come back as
//!   GCP returns them then (role suffixed `_withcond_…`, no condition).
//! * `setIamPolicy` (`{"policy": …}`): a stale `etag` → 409 `ABORTED`; a conditional binding in
//!   a policy whose `version` is not 3 → 400 `INVALID_ARGUMENT`; a member without a known prefix
//!   → 400; bindings without members are dropped; every write gets a new etag.
//! * Unknown resource → 404 `NOT_FOUND`; no or wrong `Authorization: Bearer` → 401
//!   `UNAUTHENTICATED`. Errors use Google's `{"error": {"code", "message", "status"}}` shape.
//! * Faults: [`FakeGcpIam::fail_next`] (429 `RESOURCE_EXHAUSTED` with `Retry-After`, 5xx);
//!   [`FakeGcpIam::concurrent_write_after_get`] makes another writer change a policy right
//!   after Gatehouse read it, so Gatehouse's write carries a stale etag.
//! * Every request is recorded ([`FakeGcpIam::calls`]).
//!
//! # What it does not model
//! `updateMask`, `testIamPermissions`, permissions of the caller, policy size limits, and the
//! propagation delay of real IAM.

use axum::body::to_bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct GcpCall {
    pub method: String,
    pub path: String,
    pub body: String,
    pub status: u16,
}

impl GcpCall {
    /// `getIamPolicy` or `setIamPolicy`.
    pub fn verb(&self) -> &str {
        self.path.rsplit_once(':').map(|(_, v)| v).unwrap_or("")
    }

    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

struct State {
    token: String,
    policies: BTreeMap<String, Map<String, Value>>,
    writes: u64,
    faults: VecDeque<u16>,
    retry_after_secs: u64,
    /// resource → bindings another writer adds right after the next read of it.
    concurrent: BTreeMap<String, VecDeque<Value>>,
    calls: Vec<GcpCall>,
}

impl State {
    fn next_etag(&mut self) -> String {
        self.writes += 1;
        // Opaque like GCP's (base64 of a version).
        let v = format!("{:016x}", self.writes.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        format!("Bw{v}=")
    }
}

/// Handle to a running fake. Cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct FakeGcpIam {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeGcpIam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGcpIam")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeGcpIam {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> FakeGcpIam {
        let (listener, addr) = crate::server::bind("fake gcp iam").await;
        let state = Arc::new(Mutex::new(State {
            token: format!("ya29.fake-{}", uuid::Uuid::new_v4()),
            policies: BTreeMap::new(),
            writes: 0,
            faults: VecDeque::new(),
            retry_after_secs: 0,
            concurrent: BTreeMap::new(),
            calls: Vec::new(),
        }));
        let app = axum::Router::new().fallback(serve_one).with_state(state.clone());
        let server = crate::server::spawn("fake gcp iam", listener, app);
        FakeGcpIam {
            state,
            addr,
            _server: server,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT`: the base URL of all three APIs.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The only bearer token the fake accepts.
    pub fn token(&self) -> String {
        self.st().token.clone()
    }

    /// A `[gcp]` config section pointing at this fake.
    pub fn toml(&self) -> String {
        let b = self.base_url();
        format!(
            "[gcp]\nenabled = true\nresource_manager_url = {b:?}\nbigquery_url = {b:?}\niam_url = {b:?}\n\
             [gcp.token]\nsource = \"static\"\ntoken = {:?}\n",
            self.token()
        )
    }

    /// Create a resource (`projects/p`, `projects/p/datasets/d`, `projects/p/serviceAccounts/e`)
    /// with these bindings (`[{"role", "members", "condition"?}]`).
    pub fn add_resource(&self, name: &str, bindings: Value) {
        let mut st = self.st();
        let etag = st.next_etag();
        let mut p = Map::new();
        p.insert("version".into(), json!(3));
        p.insert("etag".into(), json!(etag));
        p.insert("bindings".into(), bindings);
        p.insert(
            "auditConfigs".into(),
            json!([{ "service": "allServices", "auditLogConfigs": [{ "logType": "ADMIN_READ" }] }]),
        );
        st.policies.insert(name.to_string(), p);
    }

    /// The stored policy (as `getIamPolicy` v3 returns it).
    pub fn policy(&self, name: &str) -> Option<Value> {
        self.st().policies.get(name).cloned().map(Value::Object)
    }

    /// Members of the unconditional binding of `role`.
    pub fn members(&self, name: &str, role: &str) -> Vec<String> {
        self.policy(name)
            .and_then(|p| p["bindings"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|b| b["role"] == role && b.get("condition").is_none())
            .flat_map(|b| b["members"].as_array().cloned().unwrap_or_default())
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect()
    }

    /// A change made by hand (console, gcloud): add `member` to the unconditional binding of
    /// `role` (created if missing). The etag changes.
    pub fn grant_by_hand(&self, name: &str, role: &str, member: &str) {
        let mut st = self.st();
        let etag = st.next_etag();
        if let Some(p) = st.policies.get_mut(name) {
            add_member(p, role, member);
            p.insert("etag".into(), json!(etag));
        }
    }

    /// Answer the next `count` calls with `status` (before any state is read).
    pub fn fail_next(&self, status: u16, count: usize) {
        self.st().faults.extend(std::iter::repeat_n(status, count));
    }

    pub fn set_retry_after_secs(&self, secs: u64) {
        self.st().retry_after_secs = secs;
    }

    /// Right after the `nth` (1-based) next `getIamPolicy` of `name`, another writer adds
    /// `member` to `role` (so a write based on that read carries a stale etag: 409 ABORTED).
    pub fn concurrent_write_after_get(&self, name: &str, nth: usize, role: &str, member: &str) {
        self.st()
            .concurrent
            .entry(name.to_string())
            .or_default()
            .push_back(json!({ "after": nth.max(1), "role": role, "member": member }));
    }

    pub fn calls(&self) -> Vec<GcpCall> {
        self.st().calls.clone()
    }

    /// Calls whose path ends with `:verb` (`getIamPolicy` / `setIamPolicy`).
    pub fn count(&self, verb: &str) -> usize {
        self.st().calls.iter().filter(|c| c.verb() == verb).count()
    }

    pub fn reset_calls(&self) {
        self.st().calls.clear();
    }
}

fn add_member(p: &mut Map<String, Value>, role: &str, member: &str) {
    let bindings = p.entry("bindings").or_insert_with(|| json!([]));
    let Some(list) = bindings.as_array_mut() else {
        return;
    };
    if let Some(b) = list
        .iter_mut()
        .find(|b| b["role"] == role && b.get("condition").is_none())
    {
        if let Some(m) = b["members"].as_array_mut()
            && !m.iter().any(|x| x == member)
        {
            m.push(json!(member));
        }
    } else {
        list.push(json!({ "role": role, "members": [member] }));
    }
}

fn google_error(status: StatusCode, code_name: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": status.as_u16(), "message": message, "status": code_name } })),
    )
        .into_response()
}

async fn serve_one(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = to_bytes(req.into_body(), 4 * 1024 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    let resp = handle(&mut st, &method, &path, auth.as_deref(), &body);
    st.calls.push(GcpCall {
        method,
        path,
        body,
        status: resp.status().as_u16(),
    });
    resp
}

/// `/v3/projects/p:getIamPolicy` → (`projects/p`, `getIamPolicy`), checking the API prefix
/// matches the resource kind.
fn resource_of(path: &str) -> Option<(String, &str)> {
    let (rest, verb) = path.rsplit_once(':')?;
    let (api, name) = if let Some(n) = rest.strip_prefix("/v3/") {
        ("rm", n)
    } else if let Some(n) = rest.strip_prefix("/bigquery/v2/") {
        ("bq", n)
    } else if let Some(n) = rest.strip_prefix("/v1/") {
        ("iam", n)
    } else {
        return None;
    };
    let segs: Vec<&str> = name.split('/').collect();
    let ok = matches!(
        (api, segs.as_slice()),
        ("rm", ["projects", _])
            | ("bq", ["projects", _, "datasets", _])
            | ("iam", ["projects", _, "serviceAccounts", _])
    );
    ok.then(|| (name.to_string(), verb))
}

fn handle(st: &mut State, method: &str, path: &str, auth: Option<&str>, body: &str) -> Response {
    let Some((resource, verb)) = resource_of(path) else {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "the requested URL was not found",
        );
    };
    if method != "POST" {
        return google_error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT", "use POST");
    }
    let authorized = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| t == st.token);
    if !authorized {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login \
             cookie or other valid authentication credential.",
        );
    }
    if let Some(status) = st.faults.pop_front() {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let name = match status {
            429 => "RESOURCE_EXHAUSTED",
            503 => "UNAVAILABLE",
            _ => "INTERNAL",
        };
        let mut r = google_error(code, name, "injected fault");
        if status == 429
            && let Ok(v) = HeaderValue::from_str(&st.retry_after_secs.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let Ok(req): Result<Value, _> = serde_json::from_str(if body.is_empty() { "{}" } else { body }) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received.",
        );
    };
    if !st.policies.contains_key(&resource) {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Requested entity was not found: {resource}"),
        );
    }
    match verb {
        "getIamPolicy" => {
            let requested = req["options"]["requestedPolicyVersion"].as_i64().unwrap_or(1);
            let out = view(&st.policies[&resource], requested);
            let due = st.concurrent.get_mut(&resource).and_then(|q| {
                let front = q.front_mut()?;
                let left = front["after"].as_u64().unwrap_or(1).saturating_sub(1);
                front["after"] = json!(left);
                if left == 0 { q.pop_front() } else { None }
            });
            if let Some(w) = due {
                let etag = st.next_etag();
                if let Some(p) = st.policies.get_mut(&resource) {
                    add_member(
                        p,
                        w["role"].as_str().unwrap_or(""),
                        w["member"].as_str().unwrap_or(""),
                    );
                    p.insert("etag".into(), json!(etag));
                }
            }
            (StatusCode::OK, axum::Json(Value::Object(out))).into_response()
        }
        "setIamPolicy" => set_policy(st, &resource, &req),
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "unknown method"),
    }
}

/// The policy as `getIamPolicy` returns it for the requested version.
fn view(p: &Map<String, Value>, requested: i64) -> Map<String, Value> {
    let mut out = p.clone();
    let conditional = p["bindings"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b.get("condition").is_some()));
    if requested < 3 && conditional {
        out.insert("version".into(), json!(1));
        if let Some(list) = out.get_mut("bindings").and_then(Value::as_array_mut) {
            for (i, b) in list.iter_mut().enumerate() {
                if let Some(obj) = b.as_object_mut()
                    && obj.remove("condition").is_some()
                {
                    let role = obj["role"].as_str().unwrap_or("").to_string();
                    obj.insert("role".into(), json!(format!("{role}_withcond_{i:04x}")));
                }
            }
        }
    }
    out
}

const MEMBER_PREFIXES: &[&str] = &[
    "user:",
    "group:",
    "serviceAccount:",
    "domain:",
    "principal:",
    "principalSet:",
    "deleted:",
];

fn set_policy(st: &mut State, resource: &str, req: &Value) -> Response {
    let Some(new) = req.get("policy").and_then(Value::as_object) else {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "policy is required");
    };
    let current = &st.policies[resource];
    if let Some(etag) = new.get("etag").and_then(Value::as_str)
        && current.get("etag").and_then(Value::as_str) != Some(etag)
    {
        return google_error(
            StatusCode::CONFLICT,
            "ABORTED",
            "There were concurrent policy changes. Please retry the whole read-modify-write with \
             exponential backoff.",
        );
    }
    let version = new.get("version").and_then(Value::as_i64).unwrap_or(1);
    let mut bindings = Vec::new();
    for b in new
        .get("bindings")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if b.get("condition").is_some() && version != 3 {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "Conditions are only supported in policy version 3.",
            );
        }
        if b["role"].as_str().is_none_or(|r| r.contains("_withcond_")) {
            return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "invalid role");
        }
        let members = b["members"].as_array().cloned().unwrap_or_default();
        for m in &members {
            let ok = m.as_str().is_some_and(|m| {
                MEMBER_PREFIXES
                    .iter()
                    .any(|p| m.starts_with(p) && m.len() > p.len())
            });
            if !ok {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("Invalid member {m}"),
                );
            }
        }
        if !members.is_empty() {
            bindings.push(b);
        }
    }
    let etag = st.next_etag();
    let mut stored = new.clone();
    stored.insert("bindings".into(), Value::Array(bindings));
    stored.insert("etag".into(), json!(etag));
    stored.insert("version".into(), json!(version));
    st.policies.insert(resource.to_string(), stored.clone());
    (StatusCode::OK, axum::Json(Value::Object(stored))).into_response()
}
