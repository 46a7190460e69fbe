//! A stateful fake of the Cloud Identity Groups API v1 methods Gatehouse calls for Google group
//! memberships, served over HTTP on `127.0.0.1:0` (point `[gcp] cloud_identity_url` at
//! [`FakeCloudIdentity::base_url`]).
//!
//! # What it models (cloud.google.com/identity/docs/reference/rest/v1)
//! * `GET /v1/groups:lookup?groupKey.id=EMAIL` → `{"name": "groups/ID"}`; unknown → 404.
//! * `GET /v1/groups/{g}/memberships?pageSize=N&pageToken=T` → `{"memberships": [...],
//!   "nextPageToken"}` (absent on the last page). `pageSize` defaults to 200 and is capped at
//!   [`FakeCloudIdentity::set_max_page_size`] (small in tests, so they page); a token the fake did
//!   not issue → 400 `INVALID_ARGUMENT`. Each membership: `name`
//!   (`groups/{g}/memberships/{m}`), `preferredMemberKey.id`, `roles` (`MEMBER`), `type` `USER`.
//! * `GET /v1/groups/{g}/memberships:lookup?memberKey.id=EMAIL` → `{"name"}`; not a member → 404.
//! * `POST /v1/groups/{g}/memberships` with a `Membership` (`preferredMemberKey.id`, `roles`
//!   with `MEMBER`) → a done `Operation` whose `response` holds the membership; already a member
//!   → 409 `ALREADY_EXISTS`; no member key or no `MEMBER` role → 400 `INVALID_ARGUMENT`.
//! * `DELETE /v1/groups/{g}/memberships/{m}` → a done `Operation`; unknown → 404 `NOT_FOUND`.
//! * No or wrong `Authorization: Bearer` → 401 `UNAUTHENTICATED`. Errors use Google's
//!   `{"error": {"code", "message", "status"}}`. Emails compare case-blind.
//! * Faults: [`FakeCloudIdentity::fail_next`] (429 `RESOURCE_EXHAUSTED` with `Retry-After`, 5xx).
//!   Every request is recorded ([`FakeCloudIdentity::calls`]).
//!
//! # What it does not model
//! Roles other than `MEMBER` (`OWNER`, `MANAGER`), expiry, nested groups and transitive
//! membership, `view=FULL`, long-running operations that are not done at once, the caller's
//! permissions (Groups Admin / group manager), and propagation delay.

use axum::body::to_bytes;
use axum::extract::{Query, Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct GroupsCall {
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    pub body: String,
    pub status: u16,
}

impl GroupsCall {
    /// `groups.lookup`, `memberships.list`, `memberships.lookup`, `memberships.create`,
    /// `memberships.delete` (or `other`).
    pub fn method_name(&self) -> &'static str {
        let path = self.path.split('?').next().unwrap_or_default();
        match (self.method.as_str(), path) {
            ("GET", "/v1/groups:lookup") => "groups.lookup",
            ("GET", p) if p.ends_with("/memberships:lookup") => "memberships.lookup",
            ("GET", p) if p.ends_with("/memberships") => "memberships.list",
            ("POST", p) if p.ends_with("/memberships") => "memberships.create",
            ("DELETE", p) if p.contains("/memberships/") => "memberships.delete",
            _ => "other",
        }
    }

    /// Whether the call changes anything.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "DELETE")
    }
}

struct Group {
    email: String,
    /// Membership id → member email (lowercased); ordered, so pages are stable.
    members: BTreeMap<String, String>,
}

struct State {
    token: String,
    /// Group id → group.
    groups: BTreeMap<String, Group>,
    next_id: u64,
    max_page_size: usize,
    faults: VecDeque<u16>,
    retry_after_secs: u64,
    calls: Vec<GroupsCall>,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{:012x}", self.next_id.wrapping_mul(0x9e37_79b9))
    }

    fn group_by_email(&self, email: &str) -> Option<String> {
        self.groups
            .iter()
            .find(|(_, g)| g.email.eq_ignore_ascii_case(email))
            .map(|(id, _)| id.clone())
    }
}

/// Handle to a running fake. Cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct FakeCloudIdentity {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeCloudIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCloudIdentity")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeCloudIdentity {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> FakeCloudIdentity {
        let (listener, addr) = crate::server::bind("fake cloud identity").await;
        let state = Arc::new(Mutex::new(State {
            token: format!("ya29.fake-{}", uuid::Uuid::new_v4()),
            groups: BTreeMap::new(),
            next_id: 0,
            max_page_size: 1000,
            faults: VecDeque::new(),
            retry_after_secs: 0,
            calls: Vec::new(),
        }));
        let app = axum::Router::new().fallback(serve_one).with_state(state.clone());
        let server = crate::server::spawn("fake cloud identity", listener, app);
        FakeCloudIdentity {
            state,
            addr,
            _server: server,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The only bearer token the fake accepts.
    pub fn token(&self) -> String {
        self.st().token.clone()
    }

    /// Accept this bearer token instead (one static `[gcp.token]` serves the IAM fake too).
    pub fn set_token(&self, token: &str) {
        self.st().token = token.to_string();
    }

    /// Create a Google group; returns its resource name (`groups/ID`).
    pub fn add_group(&self, email: &str) -> String {
        let mut st = self.st();
        let id = st.id("0");
        st.groups.insert(
            id.clone(),
            Group {
                email: email.to_ascii_lowercase(),
                members: BTreeMap::new(),
            },
        );
        format!("groups/{id}")
    }

    /// A membership made outside Gatehouse (admin console).
    pub fn add_member(&self, group: &str, member: &str) {
        let mut st = self.st();
        let Some(gid) = st.group_by_email(group) else {
            return;
        };
        let mid = st.id("m");
        if let Some(g) = st.groups.get_mut(&gid)
            && !g.members.values().any(|m| m.eq_ignore_ascii_case(member))
        {
            g.members.insert(mid, member.to_ascii_lowercase());
        }
    }

    /// Member emails of a group (sorted).
    pub fn members(&self, group: &str) -> Vec<String> {
        let st = self.st();
        let mut out: Vec<String> = st
            .group_by_email(group)
            .and_then(|id| st.groups.get(&id))
            .map(|g| g.members.values().cloned().collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The largest page `memberships.list` returns.
    pub fn set_max_page_size(&self, n: usize) {
        self.st().max_page_size = n.max(1);
    }

    /// Answer the next `count` authorized calls with `status`.
    pub fn fail_next(&self, status: u16, count: usize) {
        self.st().faults.extend(std::iter::repeat_n(status, count));
    }

    pub fn set_retry_after_secs(&self, secs: u64) {
        self.st().retry_after_secs = secs;
    }

    pub fn calls(&self) -> Vec<GroupsCall> {
        self.st().calls.clone()
    }

    /// Calls of one method (`memberships.create`, ...).
    pub fn count(&self, method: &str) -> usize {
        self.st()
            .calls
            .iter()
            .filter(|c| c.method_name() == method)
            .count()
    }

    pub fn reset_calls(&self) {
        self.st().calls.clear();
    }
}

fn google_error(status: StatusCode, code_name: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": status.as_u16(), "message": message, "status": code_name } })),
    )
        .into_response()
}

fn not_found() -> Response {
    google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found")
}

async fn serve_one(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let method = req.method().as_str().to_string();
    let uri = req.uri().clone();
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let query: HashMap<String, String> = Query::try_from_uri(&uri).map(|Query(q)| q).unwrap_or_default();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = to_bytes(req.into_body(), 1024 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    let resp = handle(&mut st, &method, uri.path(), &query, auth.as_deref(), &body);
    st.calls.push(GroupsCall {
        method,
        path: path_and_query,
        body,
        status: resp.status().as_u16(),
    });
    resp
}

fn membership(gid: &str, mid: &str, email: &str) -> Value {
    json!({
        "name": format!("groups/{gid}/memberships/{mid}"),
        "preferredMemberKey": { "id": email },
        "roles": [{ "name": "MEMBER" }],
        "type": "USER",
    })
}

fn handle(
    st: &mut State,
    method: &str,
    path: &str,
    query: &HashMap<String, String>,
    auth: Option<&str>,
    body: &str,
) -> Response {
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
    let Some(rest) = path.strip_prefix("/v1/") else {
        return not_found();
    };
    if rest == "groups:lookup" {
        if method != "GET" {
            return google_error(StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT", "use GET");
        }
        let Some(key) = query.get("groupKey.id") else {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "groupKey.id is required",
            );
        };
        return match st.group_by_email(key) {
            Some(id) => axum::Json(json!({ "name": format!("groups/{id}") })).into_response(),
            None => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Error(2028): Group not found"),
        };
    }
    let segs: Vec<&str> = rest.split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["groups", gid, "memberships:lookup"]) => {
            let Some(g) = st.groups.get(*gid) else {
                return not_found();
            };
            let Some(key) = query.get("memberKey.id") else {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "memberKey.id is required",
                );
            };
            match g.members.iter().find(|(_, e)| e.eq_ignore_ascii_case(key)) {
                Some((mid, _)) => {
                    axum::Json(json!({ "name": format!("groups/{gid}/memberships/{mid}") })).into_response()
                }
                None => google_error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "Error(2028): Membership not found",
                ),
            }
        }
        ("GET", ["groups", gid, "memberships"]) => {
            let Some(g) = st.groups.get(*gid) else {
                return not_found();
            };
            let size = match query.get("pageSize").map(|s| s.parse::<usize>()) {
                None | Some(Ok(0)) => 200,
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "invalid pageSize");
                }
            }
            .min(st.max_page_size);
            // Tokens are opaque to clients; here: `pt.` + the membership id to start at.
            let start = match query.get("pageToken").filter(|t| !t.is_empty()) {
                None => None,
                Some(t) => match t.strip_prefix("pt.") {
                    Some(mid) => Some(mid.to_string()),
                    None => {
                        return google_error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_ARGUMENT",
                            "invalid page token",
                        );
                    }
                },
            };
            let mut it = g
                .members
                .iter()
                .filter(|(mid, _)| start.as_ref().is_none_or(|s| *mid >= s))
                .peekable();
            let mut page = Vec::new();
            while page.len() < size {
                match it.next() {
                    Some((mid, email)) => page.push(membership(gid, mid, email)),
                    None => break,
                }
            }
            let mut out = json!({ "memberships": page });
            if let Some((mid, _)) = it.peek() {
                out["nextPageToken"] = json!(format!("pt.{mid}"));
            }
            axum::Json(out).into_response()
        }
        ("POST", ["groups", gid, "memberships"]) => {
            let gid = gid.to_string();
            if !st.groups.contains_key(&gid) {
                return not_found();
            }
            let Ok(m): Result<Value, _> = serde_json::from_str(body) else {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Invalid JSON payload received.",
                );
            };
            let Some(email) = m["preferredMemberKey"]["id"].as_str().filter(|e| e.contains('@')) else {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "preferredMemberKey.id is required",
                );
            };
            let member_role = m["roles"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["name"] == "MEMBER"));
            if !member_role {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "a MEMBER role is required",
                );
            }
            let email = email.to_ascii_lowercase();
            let mid = st.id("m");
            let Some(g) = st.groups.get_mut(&gid) else {
                return not_found();
            };
            if g.members.values().any(|e| *e == email) {
                return google_error(
                    StatusCode::CONFLICT,
                    "ALREADY_EXISTS",
                    "Error(4003): Cannot create membership: already exists",
                );
            }
            g.members.insert(mid.clone(), email.clone());
            axum::Json(json!({
                "done": true,
                "response": {
                    "@type": "type.googleapis.com/google.apps.cloudidentity.groups.v1.CreateMembershipResponse",
                    "membership": membership(&gid, &mid, &email),
                },
            }))
            .into_response()
        }
        ("DELETE", ["groups", gid, "memberships", mid]) => {
            let Some(g) = st.groups.get_mut(*gid) else {
                return not_found();
            };
            if g.members.remove(*mid).is_none() {
                return google_error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "Error(2028): Membership not found",
                );
            }
            axum::Json(json!({
                "done": true,
                "response": { "@type": "type.googleapis.com/google.protobuf.Empty" },
            }))
            .into_response()
        }
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn speaks_the_groups_api() {
        let fake = FakeCloudIdentity::start().await;
        let name = fake.add_group("Da@x.io");
        for e in ["a@x.io", "b@x.io", "c@x.io"] {
            fake.add_member("da@x.io", e);
        }
        fake.set_max_page_size(2);
        let http = reqwest::Client::new();
        let base = fake.base_url();
        let get = |p: String| http.get(format!("{base}{p}")).bearer_auth(fake.token()).send();
        assert_eq!(
            get("/v1/groups:lookup?groupKey.id=da@x.io".into())
                .await
                .unwrap()
                .status(),
            200
        );
        let no_token = http
            .get(format!("{base}/v1/groups:lookup?groupKey.id=da@x.io"))
            .send()
            .await
            .unwrap();
        assert_eq!(no_token.status(), 401);
        let p1: Value = get(format!("/v1/{name}/memberships?pageSize=10"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(p1["memberships"].as_array().unwrap().len(), 2);
        let t = p1["nextPageToken"].as_str().unwrap();
        let p2: Value = get(format!("/v1/{name}/memberships?pageToken={t}"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(p2["memberships"].as_array().unwrap().len(), 1);
        assert!(p2.get("nextPageToken").is_none());
        let bad = get(format!("/v1/{name}/memberships?pageToken=forged"))
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let create = |e: &str| {
            http.post(format!("{base}/v1/{name}/memberships"))
                .bearer_auth(fake.token())
                .json(&json!({ "preferredMemberKey": { "id": e }, "roles": [{ "name": "MEMBER" }] }))
                .send()
        };
        assert_eq!(create("d@x.io").await.unwrap().status(), 200);
        let dup = create("D@x.io").await.unwrap();
        assert_eq!(dup.status(), 409);
        let v: Value = dup.json().await.unwrap();
        assert_eq!(v["error"]["status"], "ALREADY_EXISTS");
        let l: Value = get(format!("/v1/{name}/memberships:lookup?memberKey.id=d@x.io"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let m = l["name"].as_str().unwrap().to_string();
        let del = || {
            http.delete(format!("{base}/v1/{m}"))
                .bearer_auth(fake.token())
                .send()
        };
        assert_eq!(del().await.unwrap().status(), 200);
        assert_eq!(del().await.unwrap().status(), 404);
        fake.set_retry_after_secs(3);
        fake.fail_next(429, 1);
        let r = get(format!("/v1/{name}/memberships")).await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(fake.members("da@x.io"), vec!["a@x.io", "b@x.io", "c@x.io"]);
    }
}
