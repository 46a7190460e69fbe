//! A stateful fake of Microsoft Graph v1.0 and of the Entra ID token endpoint, served over HTTP
//! on `127.0.0.1:0`. Both live on the same server: point `authority_url` at [`FakeGraph::base_url`]
//! and `graph_url` at [`FakeGraph::graph_url`].
//!
//! # What it models
//! * `POST /{tenant}/oauth2/v2.0/token` (form body, `grant_type=client_credentials`, the app's
//!   `client_id`/`client_secret`, `scope=https://graph.microsoft.com/.default`) →
//!   `{"token_type":"Bearer","expires_in":3599,"access_token":…}`; unknown tenant → 400
//!   `invalid_request`, wrong credentials → 401 `invalid_client`, wrong scope → 400
//!   `invalid_scope`, other grant → 400 `unsupported_grant_type` (the v2.0 endpoint's shapes).
//! * Everything under `/v1.0` needs `Authorization: Bearer <live token>`, else 401
//!   `{"error":{"code":"InvalidAuthenticationToken",…}}`.
//! * `GET /v1.0/users` and `GET /v1.0/groups/{id}/members`: paged (`$top`, page size
//!   [`FakeGraph::set_page_size`]) with an absolute `@odata.nextLink` carrying `$skiptoken`;
//!   members carry `@odata.type: #microsoft.graph.user`. `GET /v1.0/users/{id}`,
//!   `GET /v1.0/groups/{id}`: `$select` honoured; unknown id → 404
//!   `{"error":{"code":"Request_ResourceNotFound",…}}`.
//! * `POST /v1.0/subscriptions` (201), `PATCH|GET|DELETE /v1.0/subscriptions/{id}`,
//!   `GET /v1.0/subscriptions`. `expirationDateTime` must be in the future and at most 41 760
//!   minutes ahead (else 400); required fields are checked (400). An expired subscription is gone
//!   (404), as Graph deletes them.
//! * Faults: [`FakeGraph::fail_next`] answers the next `/v1.0` calls with a status (429 and 503
//!   carry `Retry-After`, [`FakeGraph::set_retry_after_secs`], default 0) before any state is read.
//! * `GET /v1.0/users/delta` and `GET /v1.0/groups/delta` (`graph_delta_fake.rs`): changes made
//!   through the helpers since a `$deltatoken`, `@odata.nextLink`/`@odata.deltaLink` paging,
//!   `$deltatoken=latest`, 410 for expired tokens ([`FakeGraph::expire_delta_tokens`]).
//! * Every request is recorded ([`FakeGraph::calls`]).
//!
//! # What it does not model
//! The validation request Graph sends to `notificationUrl` when a subscription is created (the
//! e2e tests exercise the handshake directly), delivering notifications (tests post them),
//! `$filter`, `$expand`, `$count`, batching, and permissions/roles of the app.

use axum::body::to_bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Graph's ceiling for users/groups subscriptions.
const MAX_LIFETIME_MINUTES: i64 = 41_760;
const SCOPE: &str = "https://graph.microsoft.com/.default";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct GraphCall {
    pub method: String,
    /// Path as received, e.g. `/v1.0/users/72b0…` or `/tenant/oauth2/v2.0/token`.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
}

impl GraphCall {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json_body(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

struct Group {
    name: String,
    members: Vec<String>,
}

struct State {
    base: String,
    tenant_id: String,
    client_id: String,
    client_secret: String,
    tokens: HashMap<String, Instant>,
    token_ttl: Duration,
    users: BTreeMap<String, Map<String, Value>>,
    groups: BTreeMap<String, Group>,
    subscriptions: BTreeMap<String, Map<String, Value>>,
    page_size: usize,
    faults: VecDeque<u16>,
    retry_after_secs: u64,
    calls: Vec<GraphCall>,
    delta: delta::DeltaLog,
}

#[path = "graph_delta_fake.rs"]
mod delta;

/// Handle to a running fake Graph. Cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct FakeGraph {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGraph")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeGraph {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> FakeGraph {
        let (listener, addr) = crate::server::bind("fake graph").await;
        let state = Arc::new(Mutex::new(State {
            base: format!("http://{addr}"),
            tenant_id: "84bd8158-6d4d-4958-8b9f-9d6445542f95".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            client_secret: format!("fake-graph-secret-{}", uuid::Uuid::new_v4()),
            tokens: HashMap::new(),
            token_ttl: Duration::from_secs(3599),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            page_size: 100,
            faults: VecDeque::new(),
            retry_after_secs: 0,
            calls: Vec::new(),
            delta: delta::DeltaLog::default(),
        }));
        let app = axum::Router::new().fallback(serve_one).with_state(state.clone());
        let server = crate::server::spawn("fake graph", listener, app);
        FakeGraph {
            state,
            addr,
            _server: server,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT`: the token authority (`{base}/{tenant}/oauth2/v2.0/token`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("http://{}/v1.0", self.addr)
    }

    pub fn tenant_id(&self) -> String {
        self.st().tenant_id.clone()
    }

    pub fn client_id(&self) -> String {
        self.st().client_id.clone()
    }

    pub fn client_secret(&self) -> String {
        self.st().client_secret.clone()
    }

    /// A `[graph]` config section pointing at this fake (add `client_state` and the rest).
    pub fn toml(&self) -> String {
        format!(
            "tenant_id = {:?}\nclient_id = {:?}\nclient_secret = {:?}\ngraph_url = {:?}\nauthority_url = {:?}\n",
            self.tenant_id(),
            self.client_id(),
            self.client_secret(),
            self.graph_url(),
            self.base_url()
        )
    }

    /// Add (or replace) an enabled user. `display_name` is split into given name and surname.
    pub fn add_user(&self, id: &str, mail: &str, display_name: &str) {
        let (given, surname) = display_name.split_once(' ').unwrap_or((display_name, ""));
        let upn = format!("{}@contoso.onmicrosoft.com", mail.split('@').next().unwrap_or(id));
        let user = json!({
            "id": id,
            "userPrincipalName": upn,
            "mail": mail,
            "givenName": given,
            "surname": surname,
            "displayName": display_name,
            "accountEnabled": true,
            "department": null,
        });
        if let Value::Object(m) = user {
            let mut st = self.st();
            st.users.insert(id.to_string(), m);
            st.delta.record("users", id);
        }
    }

    /// Set one property of a user (e.g. `department`, `mail`).
    pub fn set_user_field(&self, id: &str, field: &str, value: Value) {
        let mut guard = self.st();
        let st = &mut *guard;
        if let Some(u) = st.users.get_mut(id) {
            u.insert(field.to_string(), value);
            st.delta.record("users", id);
        }
    }

    pub fn set_account_enabled(&self, id: &str, enabled: bool) {
        self.set_user_field(id, "accountEnabled", Value::Bool(enabled));
    }

    /// Delete a user (it then answers 404 and leaves every group).
    pub fn delete_user(&self, id: &str) {
        let mut guard = self.st();
        let st = &mut *guard;
        st.users.remove(id);
        st.delta.record("users", id);
        let mut left = Vec::new();
        for (gid, g) in st.groups.iter_mut() {
            if g.members.iter().any(|m| m == id) {
                left.push(gid.clone());
            }
            g.members.retain(|m| m != id);
        }
        for gid in left {
            st.delta.record("groups", &gid);
        }
    }

    pub fn add_group(&self, id: &str, name: &str) {
        let mut st = self.st();
        st.groups.insert(
            id.to_string(),
            Group {
                name: name.to_string(),
                members: Vec::new(),
            },
        );
        st.delta.record("groups", id);
    }

    pub fn set_members(&self, group_id: &str, user_ids: &[&str]) {
        let mut guard = self.st();
        let st = &mut *guard;
        if let Some(g) = st.groups.get_mut(group_id) {
            g.members = user_ids.iter().map(|s| s.to_string()).collect();
            st.delta.record("groups", group_id);
        }
    }

    /// Items per page of a listing (default 100; `$top` may ask for fewer).
    pub fn set_page_size(&self, n: usize) {
        self.st().page_size = n.max(1);
    }

    /// Answer the next `count` `/v1.0` calls with `status`.
    pub fn fail_next(&self, status: u16, count: usize) {
        let mut st = self.st();
        st.faults.extend(std::iter::repeat_n(status, count));
    }

    pub fn set_retry_after_secs(&self, secs: u64) {
        self.st().retry_after_secs = secs;
    }

    /// Invalidate every access token issued so far.
    pub fn expire_tokens(&self) {
        self.st().tokens.clear();
    }

    /// Subscriptions Graph holds now (as Graph returns them).
    pub fn subscriptions(&self) -> Vec<Value> {
        let mut st = self.st();
        prune_expired(&mut st);
        st.subscriptions.values().cloned().map(Value::Object).collect()
    }

    pub fn subscription(&self, id: &str) -> Option<Value> {
        self.subscriptions()
            .into_iter()
            .find(|s| s["id"].as_str() == Some(id))
    }

    /// Move a subscription's expiry (in the past: Graph has deleted it).
    pub fn set_subscription_expiry(&self, id: &str, at: DateTime<Utc>) {
        if let Some(s) = self.st().subscriptions.get_mut(id) {
            s.insert("expirationDateTime".into(), Value::String(graph_time(at)));
        }
    }

    /// Graph dropped the subscription (as before a `subscriptionRemoved` lifecycle event).
    pub fn remove_subscription(&self, id: &str) {
        self.st().subscriptions.remove(id);
    }

    pub fn calls(&self) -> Vec<GraphCall> {
        self.st().calls.clone()
    }

    /// Calls with this method whose path starts with `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.st()
            .calls
            .iter()
            .filter(|c| c.method == method && c.path.starts_with(path_prefix))
            .count()
    }

    /// Calls to the token endpoint.
    pub fn token_requests(&self) -> usize {
        self.st()
            .calls
            .iter()
            .filter(|c| c.path.ends_with("/oauth2/v2.0/token"))
            .count()
    }

    pub fn reset_calls(&self) {
        self.st().calls.clear();
    }
}

fn graph_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn prune_expired(st: &mut State) {
    let now = gatehouse_domain::clock::now();
    st.subscriptions.retain(|_, s| {
        s.get("expirationDateTime")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t > now)
    });
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        json!({ "error": { "code": code, "message": message,
            "innerError": { "request-id": uuid::Uuid::new_v4().to_string() } } }),
    )
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({ "error": error, "error_description": description, "error_codes": [7000215] }),
    )
}

fn not_found(what: &str) -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{what}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Keep only `$select`ed properties (plus `id` and `@odata.*`).
fn select(obj: &Map<String, Value>, q: &[(String, String)]) -> Map<String, Value> {
    let Some(sel) = param(q, "$select") else {
        return obj.clone();
    };
    let keep: Vec<&str> = sel.split(',').map(str::trim).collect();
    obj.iter()
        .filter(|(k, _)| *k == "id" || k.starts_with("@odata") || keep.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn serve_one(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = parse_pairs(req.uri().query().unwrap_or(""));
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
    let resp = handle(&mut st, &method, &path, &query, auth.as_deref(), &body);
    st.calls.push(GraphCall {
        method,
        path,
        query,
        body,
        status: resp.status().as_u16(),
    });
    resp
}

fn handle(
    st: &mut State,
    method: &str,
    path: &str,
    query: &[(String, String)],
    auth: Option<&str>,
    body: &str,
) -> Response {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let [tenant, "oauth2", "v2.0", "token"] = segs.as_slice() {
        if method != "POST" {
            return token_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "use POST");
        }
        return token(st, tenant, body);
    }
    if segs.first() != Some(&"v1.0") {
        return graph_error(StatusCode::NOT_FOUND, "UnknownPath", "no such path");
    }
    let live = auth
        .and_then(|a| a.strip_prefix("Bearer "))
        .and_then(|t| st.tokens.get(t))
        .is_some_and(|until| Instant::now() < *until);
    if !live {
        let msg = if auth.is_none() {
            "Access token is empty."
        } else {
            "Lifetime validation failed, the token is expired."
        };
        return graph_error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", msg);
    }
    if let Some(status) = st.faults.pop_front() {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = graph_error(code, "TooManyRequests", "injected fault");
        if (status == 429 || status == 503)
            && let Ok(v) = HeaderValue::from_str(&st.retry_after_secs.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    prune_expired(st);
    match (method, &segs[1..]) {
        ("GET", ["users", "delta"]) => delta::delta(st, "users", query),
        ("GET", ["groups", "delta"]) => delta::delta(st, "groups", query),
        ("GET", ["users"]) => {
            let all: Vec<Value> = st
                .users
                .values()
                .map(|u| Value::Object(select(u, query)))
                .collect();
            page(st, "users", all, query)
        }
        ("GET", ["users", id]) => match st.users.get(*id) {
            Some(u) => {
                let mut m = select(u, query);
                m.insert(
                    "@odata.context".into(),
                    json!("https://graph.microsoft.com/v1.0/$metadata#users/$entity"),
                );
                json_response(StatusCode::OK, Value::Object(m))
            }
            None => not_found(id),
        },
        ("GET", ["groups", id]) => match st.groups.get(*id) {
            Some(g) => {
                let obj = json!({"id": id, "displayName": g.name, "description": null});
                let m = select(obj.as_object().cloned().as_ref().unwrap_or(&Map::new()), query);
                json_response(StatusCode::OK, Value::Object(m))
            }
            None => not_found(id),
        },
        ("GET", ["groups", id, "members"]) => {
            let Some(g) = st.groups.get(*id) else {
                return not_found(id);
            };
            let members: Vec<Value> = g
                .members
                .iter()
                .filter_map(|m| st.users.get(m))
                .map(|u| {
                    let mut m = select(u, query);
                    m.insert("@odata.type".into(), json!("#microsoft.graph.user"));
                    Value::Object(m)
                })
                .collect();
            let what = format!("groups/{id}/members");
            page(st, &what, members, query)
        }
        ("POST", ["subscriptions"]) => create_subscription(st, body),
        ("GET", ["subscriptions"]) => json_response(
            StatusCode::OK,
            json!({ "value": st.subscriptions.values().cloned().map(Value::Object).collect::<Vec<_>>() }),
        ),
        ("GET", ["subscriptions", id]) => match st.subscriptions.get(*id) {
            Some(s) => json_response(StatusCode::OK, Value::Object(s.clone())),
            None => not_found(id),
        },
        ("PATCH", ["subscriptions", id]) => renew_subscription(st, id, body),
        ("DELETE", ["subscriptions", id]) => match st.subscriptions.remove(*id) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => not_found(id),
        },
        _ => graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("Unsupported request: {method} {path}"),
        ),
    }
}

fn token(st: &mut State, tenant: &str, body: &str) -> Response {
    if *tenant != st.tenant_id {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    let form = parse_pairs(body);
    if param(&form, "grant_type") != Some("client_credentials") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if param(&form, "client_id") != Some(st.client_id.as_str())
        || param(&form, "client_secret") != Some(st.client_secret.as_str())
    {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    if param(&form, "scope") != Some(SCOPE) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    }
    let token = format!("eyJ0eXAiOiJKV1Qi.{}", uuid::Uuid::new_v4().simple());
    st.tokens.insert(token.clone(), Instant::now() + st.token_ttl);
    json_response(
        StatusCode::OK,
        json!({ "token_type": "Bearer", "expires_in": st.token_ttl.as_secs(),
                "ext_expires_in": st.token_ttl.as_secs(), "access_token": token }),
    )
}

fn page(st: &State, what: &str, all: Vec<Value>, query: &[(String, String)]) -> Response {
    let top = param(query, "$top")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(st.page_size)
        .clamp(1, st.page_size);
    let skip = param(query, "$skiptoken")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let items: Vec<Value> = all.iter().skip(skip).take(top).cloned().collect();
    let mut body = json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{what}"),
        "value": items,
    });
    if skip + top < all.len() {
        let mut link = format!("{}/v1.0/{what}?$skiptoken={}&$top={top}", st.base, skip + top);
        if let Some(sel) = param(query, "$select") {
            link.push_str(&format!("&$select={sel}"));
        }
        body["@odata.nextLink"] = Value::String(link);
    }
    json_response(StatusCode::OK, body)
}

/// The expiry asked for, or the message of Graph's 400.
fn check_expiry(v: Option<&Value>) -> Result<DateTime<Utc>, String> {
    let bad = |m: &str| m.to_string();
    let s = v
        .and_then(Value::as_str)
        .ok_or_else(|| bad("expirationDateTime is required."))?;
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|_| bad("expirationDateTime is not a valid date."))?
        .with_timezone(&Utc);
    let now = gatehouse_domain::clock::now();
    if t <= now {
        return Err(bad("Subscription expiration must be in the future."));
    }
    if t > now + chrono::Duration::minutes(MAX_LIFETIME_MINUTES) {
        return Err(bad(&format!(
            "Subscription expiration can only be {MAX_LIFETIME_MINUTES} minutes in the future."
        )));
    }
    Ok(t)
}

fn create_subscription(st: &mut State, body: &str) -> Response {
    let Ok(Value::Object(req)) = serde_json::from_str::<Value>(body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Body is not a JSON object.",
        );
    };
    for field in ["changeType", "notificationUrl", "resource"] {
        if req.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                &format!("{field} is required."),
            );
        }
    }
    let resource = req["resource"].as_str().unwrap_or("");
    let r = resource.trim_start_matches('/').to_ascii_lowercase();
    if r != "users" && r != "groups" {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            &format!("Resource '{resource}' is not supported by this fake."),
        );
    }
    if req
        .get("clientState")
        .and_then(Value::as_str)
        .is_some_and(|c| c.chars().count() > 128)
    {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "clientState exceeds 128 characters.",
        );
    }
    let expires = match check_expiry(req.get("expirationDateTime")) {
        Ok(t) => t,
        Err(m) => return graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", &m),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let sub = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
        "id": id,
        "resource": resource,
        "applicationId": st.client_id,
        "changeType": req["changeType"],
        "clientState": req.get("clientState").cloned().unwrap_or(Value::Null),
        "notificationUrl": req["notificationUrl"],
        "lifecycleNotificationUrl": req.get("lifecycleNotificationUrl").cloned().unwrap_or(Value::Null),
        "expirationDateTime": graph_time(expires),
        "creatorId": st.client_id,
        "latestSupportedTlsVersion": "v1_2",
        "notificationContentType": null,
        "includeResourceData": false,
    });
    if let Value::Object(m) = &sub {
        st.subscriptions.insert(id, m.clone());
    }
    json_response(StatusCode::CREATED, sub)
}

fn renew_subscription(st: &mut State, id: &str, body: &str) -> Response {
    let Ok(Value::Object(req)) = serde_json::from_str::<Value>(body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Body is not a JSON object.",
        );
    };
    if !st.subscriptions.contains_key(id) {
        return not_found(id);
    }
    let expires = match check_expiry(req.get("expirationDateTime")) {
        Ok(t) => t,
        Err(m) => return graph_error(StatusCode::BAD_REQUEST, "InvalidRequest", &m),
    };
    match st.subscriptions.get_mut(id) {
        Some(s) => {
            s.insert("expirationDateTime".into(), Value::String(graph_time(expires)));
            json_response(StatusCode::OK, Value::Object(s.clone()))
        }
        None => not_found(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding() {
        assert_eq!(
            parse_pairs("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&a=b+c&x=%zz"),
            vec![
                ("scope".into(), SCOPE.into()),
                ("a".into(), "b c".into()),
                ("x".into(), "%zz".into())
            ]
        );
    }

    #[tokio::test]
    async fn token_then_paged_users() {
        let g = FakeGraph::start().await;
        g.set_page_size(2);
        for i in 0..5 {
            g.add_user(&format!("u{i}"), &format!("u{i}@example.com"), "A B");
        }
        let http = reqwest::Client::new();
        let unauth = http.get(format!("{}/users", g.graph_url())).send().await.unwrap();
        assert_eq!(unauth.status(), 401);
        let bad = http
            .post(format!("{}/{}/oauth2/v2.0/token", g.base_url(), g.tenant_id()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &g.client_id()),
                ("client_secret", "nope"),
                ("scope", SCOPE),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 401);
        let tok: Value = http
            .post(format!("{}/{}/oauth2/v2.0/token", g.base_url(), g.tenant_id()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &g.client_id()),
                ("client_secret", &g.client_secret()),
                ("scope", SCOPE),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bearer = format!("Bearer {}", tok["access_token"].as_str().unwrap());
        let mut url = format!("{}/users", g.graph_url());
        let mut seen = 0;
        loop {
            let page: Value = http
                .get(&url)
                .header("authorization", &bearer)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            seen += page["value"].as_array().unwrap().len();
            match page["@odata.nextLink"].as_str() {
                Some(n) => url = n.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, 5);
        let missing = http
            .get(format!("{}/users/nope", g.graph_url()))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);
        g.fail_next(429, 1);
        g.set_retry_after_secs(2);
        let throttled = http
            .get(format!("{}/users/u1", g.graph_url()))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(throttled.status(), 429);
        assert_eq!(throttled.headers()["retry-after"], "2");
    }
}
