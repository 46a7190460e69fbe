//! A stateful fake of the Looker API 4.0, served over HTTP on `127.0.0.1:0`.
//!
//! Paths, methods, query parameters, bodies, status codes and JSON shapes follow the official
//! OpenAPI spec (`Looker.4.0.oas.json`) under the `/api/4.0` prefix.
//!
//! # What it models
//! * `POST /login` (`client_id`/`client_secret` in an `application/x-www-form-urlencoded` body, or
//!   the deprecated query parameters) → `AccessToken`; missing credentials → 400, wrong ones, or a
//!   key of a disabled user → 404 (both listed by the spec). `DELETE /logout` → 204.
//! * Every other call needs `Authorization: token <t>` (or `Bearer <t>`) of a live token, else
//!   401 with the spec's `Error` shape. Tokens expire after the token TTL (default 3600 s) and all at
//!   once with [`FakeLooker::expire_tokens`]; a disabled or deleted user's tokens stop working.
//! * Permissions: the seeded admin (direct role `Admin`) may call everything; any other user's
//!   API3 key can log in, call `GET /user`, and gets 403 elsewhere.
//! * Users (`GET /users/search`, `GET|POST /users`, `GET|PATCH|DELETE /users/{id}`, `GET /user`,
//!   `GET /users/credential/{email|api3|saml|oidc|google|ldap}/{id}`), email credentials, SSO
//!   credentials (`credentials_saml`, `_oidc`, `_google`, `_ldap`, seeded with
//!   [`FakeLooker::add_sso_credential`]; their own `/users/{id}/credentials_saml` endpoints are
//!   not modelled), sessions, API3 keys, groups and
//!   memberships, roles (direct, and via groups with [`FakeLooker::set_group_roles`]), user
//!   attributes and per-user values (`source: "user"`, or `"default"` from the attribute's
//!   default). `fields` (with nested `name(sub)`), `sorts`, `limit`/`offset`, `page`/`per_page`,
//!   `ids` are honoured on lists. Search string params are case-insensitive SQL `LIKE` (`%`, `_`,
//!   backslash escapes), also `IS NULL` / `NOT NULL`; `filter_or` is supported.
//! * As in real Looker, disabling a user deletes neither its sessions nor its API3 keys; the keys
//!   just cannot log in while the user is disabled (and work again once it is re-enabled).
//! * Bodies are validated: malformed JSON or a wrong top-level type → 400; a wrongly typed,
//!   read-only or unknown field → 422 `ValidationError`. This is stricter than Looker (which
//!   ignores read-only fields) so that a client sending a field that would be dropped is caught.
//! * Unknown paths → 404 JSON; known paths with a method that is not modelled → 405 JSON.
//! * Latency ([`FakeLooker::set_latency`]) and faults ([`FakeLooker::set_fault_rate`],
//!   [`FakeLooker::fail_next`]): a fault is decided when the call arrives, before any state is read
//!   or changed; 429 (and 503) carry `Retry-After` (seconds, [`FakeLooker::set_retry_after_secs`],
//!   default 0). [`FakeLooker::hold`] keeps the calls of one method and path unanswered until
//!   [`FakeLooker::release`] (a process can be killed in the middle of a call).
//! * Content (issue 19): personal folders, Looks, dashboards, scheduled plans and alerts, and what
//!   `DELETE /users/{id}` does to them (Trash, schedules deleted) — see `model/content.rs`.
//!
//! # What it does not model
//! Group-level user attribute values, the `All Users` default group, embed and Looker OpenID
//! credentials, `sudo`, folder trees, content other than Looks and dashboards, queries, rate limiting other than injected faults, `Link`/
//! `X-Total-Count` paging headers, and `PATCH /users/{id}/credentials_api3/{id}` (405).
//! Removing a user from a group it is not in answers 204 (idempotent). Ids are numeric strings
//! drawn from one counter shared by every object type, so an id of the wrong kind never matches.

mod content;
mod model;
mod wire;

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::State;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

pub use model::{ADMIN_EMAIL, ADMIN_ROLE, DeliveryView, ItemView};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path relative to `/api/4.0`, as received (percent-encoded), e.g. `/users/7/sessions/9`.
    /// A request outside `/api/4.0` keeps its full path (and was answered 404).
    pub path: String,
    /// Raw query string without `?` (percent-encoded); empty if none. See [`Self::query_pairs`].
    pub query: String,
    /// The raw request body (lossy UTF-8). For `/login` this holds the form-encoded credentials.
    pub body: String,
    pub content_type: Option<String>,
    /// The `Authorization` header as received (it carries the access token).
    pub authorization: Option<String>,
    /// Status the fake answered.
    pub status: u16,
    /// POST/PUT/PATCH/DELETE, except `/login` and `/logout`.
    pub is_write: bool,
    /// Whether the answer was an injected fault.
    pub fault_injected: bool,
    /// When the request reached the fake, before the configured latency (tokio clock).
    pub started_at: Instant,
    /// When the answer was ready, after the latency (tokio clock).
    pub finished_at: Instant,
}

impl RecordedCall {
    /// Decoded query parameters, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        wire::parse_pairs(&self.query)
    }

    /// The decoded value of the last occurrence of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json_body(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }

    pub fn latency(&self) -> Duration {
        self.finished_at.saturating_duration_since(self.started_at)
    }
}

/// A user as the fake stores it (for assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub id: String,
    /// Email of the user's email credentials, if any.
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_disabled: bool,
    pub group_ids: BTreeSet<String>,
    pub direct_role_ids: BTreeSet<String>,
    /// User attribute id → value set on the user itself.
    pub attribute_values: BTreeMap<String, String>,
    pub session_ids: Vec<String>,
    pub api3_key_ids: Vec<String>,
}

/// Handle to a running fake Looker. Cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct FakeLooker {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    client_id: String,
    client_secret: String,
    admin_user_id: String,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeLooker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLooker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeLooker {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime. Seeds one admin user
    /// ([`ADMIN_EMAIL`], role [`ADMIN_ROLE`]) whose API3 key is [`Self::client_id`] /
    /// [`Self::client_secret`].
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> FakeLooker {
        let (listener, addr) = crate::server::bind("fake looker").await;
        let st = State::new(format!("http://{addr}"));
        let (client_id, client_secret) = (st.admin_client_id.clone(), st.admin_client_secret.clone());
        let admin_user_id = st.admin_user.to_string();
        let state = Arc::new(Mutex::new(st));
        let app = axum::Router::new().fallback(serve_one).with_state(state.clone());
        let server = crate::server::spawn("fake looker", listener, app);
        FakeLooker {
            state,
            addr,
            client_id,
            client_secret,
            admin_user_id,
            _server: server,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `http://127.0.0.1:PORT` (clients append `/api/4.0`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// API3 client id of the seeded admin.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// API3 client secret of the seeded admin.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// Id of the seeded admin user.
    pub fn admin_user_id(&self) -> &str {
        &self.admin_user_id
    }

    // ---- behaviour ----

    /// Added to every call (including `/login` and faulted calls).
    pub fn set_latency(&self, d: Duration) {
        self.st().latency = d;
    }

    /// Hold every call of `method` on `path` (relative to `/api/4.0`, without the query, e.g.
    /// `GET` `/users`) unanswered until [`Self::release`]; [`Self::held_calls`] counts them.
    /// A held call is recorded once it is answered (a client that gives up is never answered).
    pub fn hold(&self, method: &str, path: &str) {
        self.st()
            .hold
            .send_replace(Some((method.to_owned(), path.to_owned())));
    }

    /// Answer the held calls and hold no more.
    pub fn release(&self) {
        self.st().hold.send_replace(None);
    }

    /// How many calls are being held right now.
    pub fn held_calls(&self) -> usize {
        self.st().holding
    }

    /// Answer this fraction of calls (0.0..=1.0) with a fault drawn from
    /// [`Self::set_fault_statuses`] (default 429, 500, 503), deterministically from `seed`.
    pub fn set_fault_rate(&self, rate: f64, seed: u64) {
        self.st().set_fault_rate(rate, seed);
    }

    /// The statuses random faults are drawn from (uniformly).
    pub fn set_fault_statuses(&self, statuses: &[u16]) {
        self.st().set_fault_statuses(statuses);
    }

    /// `Retry-After` seconds sent with 429 and 503 faults (default 0).
    pub fn set_retry_after_secs(&self, secs: u64) {
        self.st().set_retry_after_secs(secs);
    }

    /// Answer the next `count` calls (whatever they are) with `status`, before random faults.
    pub fn fail_next(&self, status: u16, count: usize) {
        self.st().fail_next(status, count);
    }

    /// `expires_in` of tokens issued from now on (default 3600 s).
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.st().token_ttl = ttl;
    }

    /// Every issued access token becomes invalid (calls with them answer 401).
    pub fn expire_tokens(&self) {
        self.st().expire_tokens();
    }

    // ---- seeding (these panic on unknown ids) ----

    pub fn add_group(&self, name: &str) -> String {
        self.st().add_group(name)
    }

    /// Delete a group (an admin deleting it in Looker): its id answers 404 from then on.
    pub fn remove_group(&self, group_id: &str) {
        self.st().remove_group(group_id)
    }

    pub fn add_role(&self, name: &str) -> String {
        self.st().add_role(name)
    }

    pub fn add_user_attribute(&self, name: &str) -> String {
        self.st().add_user_attribute(name)
    }

    /// Looker's "user access" of an attribute: whether users can see / edit their own value
    /// (`user_can_view`, `user_can_edit` of `GET /user_attributes`). New attributes: view only.
    pub fn set_user_attribute_access(&self, attr_id: &str, user_can_view: bool, user_can_edit: bool) {
        self.st()
            .set_user_attribute_access(attr_id, user_can_view, user_can_edit);
    }

    /// The attribute's default value (reported with `source: "default"`).
    pub fn set_user_attribute_default(&self, attr_id: &str, value: Option<&str>) {
        self.st().set_user_attribute_default(attr_id, value);
    }

    /// Roles a group grants its members (reported by `GET /users/{id}/roles` unless
    /// `direct_association_only=true`).
    pub fn set_group_roles(&self, group_id: &str, role_ids: &[&str]) {
        self.st().set_group_roles(group_id, role_ids);
    }

    /// A user with email credentials.
    ///
    /// # Panics
    /// If another user already has that email (case-insensitive).
    pub fn add_user(&self, email: &str, first: &str, last: &str) -> String {
        self.st().add_user(Some(email), first, last)
    }

    /// A user without email credentials.
    pub fn add_user_without_email(&self, first: &str, last: &str) -> String {
        self.st().add_user(None, first, last)
    }

    /// Give a user an SSO credential (issue 16): `kind` is `saml`, `oidc`, `google` or `ldap`,
    /// `id` the IdP's id for the user (`saml_user_id`, `oidc_user_id`, `google_user_id`,
    /// `ldap_id`), `email` the email the IdP sent. `GET /users/credential/{kind}/{id}` finds it.
    ///
    /// # Panics
    /// On an unknown user or a credential type the fake does not model.
    pub fn add_sso_credential(&self, user_id: &str, kind: &str, id: &str, email: Option<&str>) {
        self.st().add_sso_credential(user_id, kind, id, email);
    }

    /// Looker (Google Cloud core): what a person's first login through Google OAuth does — a
    /// user is created with the identity's email and a `credentials_google` (id
    /// `google-{email}`), in no group, with no role, attribute value, session or API3 key.
    /// Returns its id. (Looker answers the user's `email` from it; the fake keeps it as the
    /// user's email credentials, the field its searches match on.)
    ///
    /// # Panics
    /// If another user already has that email (case-insensitive).
    pub fn first_login(&self, email: &str, first: &str, last: &str) -> String {
        let id = self.add_user(email, first, last);
        self.add_sso_credential(&id, "google", &format!("google-{email}"), Some(email));
        id
    }

    pub fn add_session(&self, user_id: &str) -> String {
        self.st().add_session(user_id)
    }

    pub fn add_api3_key(&self, user_id: &str) -> String {
        self.st().add_api3_key(user_id)
    }

    /// `(client_id, client_secret)` of an API3 key, to log in with it.
    pub fn api3_credentials(&self, key_id: &str) -> Option<(String, String)> {
        self.st().api3_credentials(key_id)
    }

    pub fn add_user_to_group(&self, user_id: &str, group_id: &str) {
        self.st().add_user_to_group(user_id, group_id);
    }

    /// A change made by hand in Looker (drift): the user leaves the group.
    pub fn remove_user_from_group(&self, user_id: &str, group_id: &str) {
        self.st().remove_user_from_group(user_id, group_id);
    }

    pub fn set_direct_roles(&self, user_id: &str, role_ids: &[&str]) {
        self.st().set_direct_roles(user_id, role_ids);
    }

    pub fn set_user_attribute(&self, user_id: &str, attr_id: &str, value: &str) {
        self.st().set_user_attribute(user_id, attr_id, Some(value));
    }

    pub fn clear_user_attribute(&self, user_id: &str, attr_id: &str) {
        self.st().set_user_attribute(user_id, attr_id, None);
    }

    pub fn set_disabled(&self, user_id: &str, disabled: bool) {
        self.st().set_disabled(user_id, disabled);
    }

    /// The user's login times as the spec's credentials carry them: `credentials_email.logged_in_at`
    /// (`None`: never), a `credentials_saml` with `logged_in_at` (`None`: no SAML credential), and
    /// both credentials' `created_at`.
    pub fn set_logins(
        &self,
        user_id: &str,
        email: Option<chrono::DateTime<chrono::Utc>>,
        saml: Option<chrono::DateTime<chrono::Utc>>,
        created_at: chrono::DateTime<chrono::Utc>,
    ) {
        self.st().set_logins(user_id, email, saml, created_at);
    }

    // ---- inspection ----

    /// Case-insensitive exact match on the email credentials.
    pub fn user_by_email(&self, email: &str) -> Option<UserView> {
        self.st().view_by_email(email)
    }

    pub fn user(&self, user_id: &str) -> Option<UserView> {
        self.st().view_by_id(user_id)
    }

    /// Every user, the seeded admin included, by id.
    pub fn users(&self) -> Vec<UserView> {
        self.st().views()
    }

    /// Group id → name, every group.
    pub fn group_names(&self) -> HashMap<String, String> {
        self.st().group_names()
    }

    /// Role id → name, every role.
    pub fn role_names(&self) -> HashMap<String, String> {
        self.st().role_names()
    }

    /// Every request received since the start or the last [`Self::reset_calls`], in the order
    /// their answers were ready.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.st().calls.clone()
    }

    /// How many write calls (see [`RecordedCall::is_write`]) were received, whatever their answer.
    pub fn write_calls(&self) -> usize {
        self.st().calls.iter().filter(|c| c.is_write).count()
    }

    /// How many `POST /login` calls were received.
    pub fn login_calls(&self) -> usize {
        self.st()
            .calls
            .iter()
            .filter(|c| c.method == "POST" && c.path == "/login")
            .count()
    }

    pub fn reset_calls(&self) {
        self.st().calls.clear();
    }
}

async fn serve_one(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let started_at = Instant::now();
    let (parts, body) = req.into_parts();
    let header = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let req = model::Request {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        authorization: header(header::AUTHORIZATION),
        content_type: header(header::CONTENT_TYPE),
        body: body.to_vec(),
    };
    let (fault, latency) = {
        let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
        (st.decide_fault(), st.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    wait_while_held(&state, &req).await;
    let fault_injected = fault.is_some();
    let mut st = state.lock().unwrap_or_else(PoisonError::into_inner);
    let resp = match fault {
        Some(r) => r,
        None => st.dispatch(&req),
    };
    let path = model::strip_api(&req.path).unwrap_or(&req.path).to_owned();
    st.calls.push(RecordedCall {
        is_write: model::is_write(&req.method, &path),
        method: req.method,
        path,
        query: req.query,
        body: String::from_utf8_lossy(&req.body).into_owned(),
        content_type: req.content_type,
        authorization: req.authorization,
        status: resp.status,
        fault_injected,
        started_at,
        finished_at: Instant::now(),
    });
    drop(st);
    into_http(resp)
}

/// Holds the call while [`FakeLooker::hold`] matches it (counted in `holding`, also when the
/// client hangs up and the call is dropped).
async fn wait_while_held(state: &Arc<Mutex<State>>, req: &model::Request) {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let path = model::strip_api(&req.path).unwrap_or(&req.path).to_owned();
    let matches =
        |h: &Option<(String, String)>| h.as_ref().is_some_and(|(m, p)| *m == req.method && *p == path);
    let mut rx = lock().hold.subscribe();
    if !matches(&rx.borrow_and_update()) {
        return;
    }
    struct Holding<'a>(&'a Arc<Mutex<State>>);
    impl Drop for Holding<'_> {
        fn drop(&mut self) {
            self.0.lock().unwrap_or_else(PoisonError::into_inner).holding -= 1;
        }
    }
    lock().holding += 1;
    let _holding = Holding(state);
    // The sender lives in the state as long as the server: no error to handle.
    let _ = rx.wait_for(|h| !matches(h)).await;
}

fn into_http(r: model::Response) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match r.body {
        Some(v) => (status, axum::Json(v)).into_response(),
        None => (status, Body::empty()).into_response(),
    };
    if let Some(secs) = r.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod server_tests {
    use super::*;

    async fn login(http: &reqwest::Client, fake: &FakeLooker) -> String {
        let r = http
            .post(format!("{}/api/4.0/login", fake.base_url()))
            .form(&[
                ("client_id", fake.client_id()),
                ("client_secret", fake.client_secret()),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        body["access_token"].as_str().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn serves_records_and_injects_faults_over_http() {
        let fake = FakeLooker::start().await;
        let http = reqwest::Client::new();
        let tok = login(&http, &fake).await;
        fake.set_latency(Duration::from_millis(30));
        let api = format!("{}/api/4.0", fake.base_url());
        let r = http
            .get(format!("{api}/users/search?email=admin%25&fields=id"))
            .header("Authorization", format!("token {tok}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(body, serde_json::json!([{"id": fake.admin_user_id()}]));

        let r = http
            .get(format!("{}/nope", fake.base_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 404);
        let body: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(body.get("message").is_some() && body.get("documentation_url").is_some());

        fake.set_latency(Duration::ZERO);
        fake.set_retry_after_secs(2);
        fake.fail_next(429, 1);
        let u = fake.add_user("w@x.com", "W", "X");
        let r = http
            .patch(format!("{api}/users/{u}"))
            .header("Authorization", format!("token {tok}"))
            .json(&serde_json::json!({"is_disabled": true}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 429);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("2")
        );
        let r = http
            .delete(format!("{api}/users/{u}"))
            .header("Authorization", format!("Bearer {tok}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 204);

        let calls = fake.calls();
        let seen: Vec<(&str, &str, u16, bool, bool)> = calls
            .iter()
            .map(|c| {
                (
                    c.method.as_str(),
                    c.path.as_str(),
                    c.status,
                    c.is_write,
                    c.fault_injected,
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("POST", "/login", 200, false, false),
                ("GET", "/users/search", 200, false, false),
                ("GET", "/nope", 404, false, false),
                ("PATCH", &*format!("/users/{u}"), 429, true, true),
                ("DELETE", &*format!("/users/{u}"), 204, true, false),
            ]
        );
        assert!(calls[1].latency() >= Duration::from_millis(30));
        assert_eq!(calls[1].query_param("email").as_deref(), Some("admin%"));
        assert_eq!(
            calls[3].json_body(),
            Some(serde_json::json!({"is_disabled": true}))
        );
        assert_eq!(fake.write_calls(), 2);
        assert!(fake.user(&u).is_none());
        fake.reset_calls();
        assert!(fake.calls().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_call_is_answered_only_after_release_and_others_pass() {
        let fake = FakeLooker::start().await;
        let http = reqwest::Client::new();
        let tok = login(&http, &fake).await;
        let api = format!("{}/api/4.0", fake.base_url());
        fake.hold("GET", "/users");
        let held = tokio::spawn({
            let (http, url, tok) = (
                http.clone(),
                format!("{api}/users?limit=10&fields=id"),
                tok.clone(),
            );
            async move {
                let r = http
                    .get(url)
                    .header("Authorization", format!("token {tok}"))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                r.status().as_u16()
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while fake.held_calls() != 1 {
            assert!(Instant::now() < deadline, "the call is never held");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Another path is answered meanwhile; the held call is not answered (nor recorded).
        let r = http
            .get(format!("{api}/user"))
            .header("Authorization", format!("token {tok}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        assert!(!held.is_finished());
        assert!(!fake.calls().iter().any(|c| c.path == "/users"));
        fake.release();
        assert_eq!(held.await.unwrap_or_else(|e| panic!("{e}")), 200);
        assert_eq!(fake.held_calls(), 0);
        assert!(fake.calls().iter().any(|c| c.path == "/users" && c.status == 200));
    }
}
