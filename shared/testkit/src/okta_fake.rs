//! A stateful fake of the Okta management API on `127.0.0.1:0`: the System Log
//! (`GET /api/v1/logs`) and the Users/Groups listings (`GET /api/v1/users`,
//! `GET /api/v1/groups/{id}/users`), following the developer docs
//! (`shared/testkit/fixtures/okta/README.md` lists what, and the samples it starts from).
//!
//! # What it models
//! * `Authorization: SSWS <token>` ([`FakeOkta::api_token`]) on every call, else 401 `E0000011`.
//! * `/api/v1/logs`: polling requests (no `until`, ascending) select by persistence order and
//!   always carry a `rel="next"` link (also on an empty page); bounded requests (`since` and
//!   `until`) select by `published` and their last page has no `next`. `since` (default 7 days
//!   before `until`/now) and `after` (opaque, from `next` links only) are mutually exclusive
//!   (400); `limit` 0..=1000 (default 100, else 400); `filter`: `eventType eq "…"` terms joined
//!   by `or` (anything else 400 `E0000053`); events older than 90 days are never returned.
//! * `/api/v1/users`, `/api/v1/groups` and `/api/v1/groups/{id}/users`: `limit` (default 200)
//!   and `after` paging with `rel="next"` only while more remain; unknown group → 404
//!   `E0000007`. `/api/v1/users/{id}`: the user object, unknown → 404 `E0000007`.
//! * Rate limits: every answer has `X-Rate-Limit-Limit/-Remaining/-Reset` (UTC epoch seconds)
//!   for a window of [`FakeOkta::set_rate_limit`] calls (default 600 a minute); past it, 429
//!   with the `E0000047` body until the reset. [`FakeOkta::throttle_next`] answers the next
//!   call 429 with a reset that far ahead.
//! * `POST /oauth2/v1/token`: client credentials with a `private_key_jwt` assertion of a
//!   registered service app ([`FakeOkta::add_service_app`]): RS256 signature, `iss`/`sub`/`aud`,
//!   `exp`, single-use `jti`, granted scopes; the `Bearer` token it issues is accepted like the
//!   SSWS token (401 `invalid_client`, 400 `invalid_scope` otherwise). No DPoP.
//! * Every call is recorded ([`FakeOkta::calls`]) with its arrival time.
//!
//! # What it does not model
//! `q` keyword search, other filter operators, `sortOrder=DESCENDING` paging, concurrent-request
//! limits, DPoP, access-token expiry, and writes.

// Handlers return an early `Response` as their error, as the SCIM intake does; its size does not
// matter in a test server.
#![allow(clippy::result_large_err)]
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

const DEACTIVATE_TEMPLATE: &str =
    include_str!("../fixtures/okta/logevent.user.lifecycle.deactivate.docs.json");
const RATE_LIMIT_BODY: &str = include_str!("../fixtures/okta/error.rate-limit.E0000047.docs.json");
const RETENTION_DAYS: i64 = 90;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct OktaCall {
    pub path: String,
    pub query: Vec<(String, String)>,
    pub at: DateTime<Utc>,
    pub status: u16,
}

impl OktaCall {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Stored {
    event: Value,
    published: DateTime<Utc>,
}

struct State {
    base: String,
    token: String,
    /// In persistence order.
    log: Vec<Stored>,
    users: BTreeMap<String, Value>,
    groups: BTreeMap<String, Vec<String>>,
    /// Group id → name (`profile.name`); a group without one is named by its id.
    group_names: BTreeMap<String, String>,
    /// Service apps: client id → (public key, granted scopes).
    service_apps: BTreeMap<String, (jsonwebtoken::DecodingKey, Vec<String>)>,
    /// Access tokens issued by `/oauth2/v1/token` (accepted as `Bearer`).
    access_tokens: Vec<String>,
    /// Client assertion `jti`s seen (Okta refuses a replayed one).
    jtis: Vec<String>,
    window_limit: u32,
    window: Duration,
    window_start: Option<DateTime<Utc>>,
    used: u32,
    throttle: Option<Duration>,
    calls: Vec<OktaCall>,
}

/// Handle to a running fake Okta org. Cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct FakeOkta {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<crate::server::ServerTask>,
}

impl std::fmt::Debug for FakeOkta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOkta")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeOkta {
    /// Binds `127.0.0.1:0` and serves on the current tokio runtime.
    ///
    /// # Panics
    /// If the loopback port cannot be bound (a test-only helper).
    pub async fn start() -> FakeOkta {
        let (listener, addr) = crate::server::bind("fake okta").await;
        let state = Arc::new(Mutex::new(State {
            base: format!("http://{addr}"),
            token: "00Fake-okta-ssws-token-0123456789".into(),
            log: Vec::new(),
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            group_names: BTreeMap::new(),
            service_apps: BTreeMap::new(),
            access_tokens: Vec::new(),
            jtis: Vec::new(),
            window_limit: 600,
            window: Duration::from_secs(60),
            window_start: None,
            used: 0,
            throttle: None,
            calls: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/api/v1/logs", get(logs))
            .route("/api/v1/users", get(users))
            .route("/api/v1/users/{id}", get(user))
            .route("/api/v1/groups", get(groups))
            .route("/api/v1/groups/{id}/users", get(group_users))
            .route("/oauth2/v1/token", axum::routing::post(token))
            .with_state(state.clone());
        let server = crate::server::spawn("fake okta", listener, app);
        FakeOkta {
            state,
            addr,
            _server: server,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The org URL (`okta.api.url`).
    pub fn base_url(&self) -> String {
        self.lock().base.clone()
    }

    /// The API token the fake accepts (`okta.api.api_token`).
    pub fn api_token(&self) -> String {
        self.lock().token.clone()
    }

    /// Append a LogEvent as Okta persists it now.
    pub fn push_event(&self, event: Value) {
        let published = event
            .get("published")
            .and_then(Value::as_str)
            .and_then(|p| DateTime::parse_from_rfc3339(p).ok())
            .map(|p| p.with_timezone(&Utc))
            .unwrap_or_else(gatehouse_domain::clock::now);
        self.lock().log.push(Stored { event, published });
    }

    /// Okta deactivates `user_id` (`login`) now: a `user.lifecycle.deactivate` LogEvent made from
    /// the docs sample with a fresh uuid. Returns the event (also what a hook would deliver).
    pub fn deactivate(&self, user_id: &str, login: &str) -> Value {
        let mut e: Value = serde_json::from_str(DEACTIVATE_TEMPLATE).expect("fixture is json");
        e["uuid"] = json!(uuid::Uuid::new_v4().to_string());
        e["published"] = json!(gatehouse_domain::clock::now().to_rfc3339_opts(SecondsFormat::Millis, true));
        e["target"][0]["id"] = json!(user_id);
        e["target"][0]["alternateId"] = json!(login);
        e["target"][0]["displayName"] = json!(login.split('@').next().unwrap_or(login));
        self.push_event(e.clone());
        e
    }

    /// Add a user (the Users API's object: `id`, `status`, `profile`).
    pub fn add_user(&self, id: &str, profile: Value) {
        let user =
            json!({"id": id, "status": "ACTIVE", "created": "2024-01-01T00:00:00.000Z", "profile": profile});
        self.lock().users.insert(id.to_string(), user);
    }

    /// Put `user_id` in group `group_id` (created if new).
    pub fn add_to_group(&self, group_id: &str, user_id: &str) {
        self.lock()
            .groups
            .entry(group_id.to_string())
            .or_default()
            .push(user_id.to_string());
    }

    /// Register an API Services app: `client_id` with its public key (a JWK's base64url `n`
    /// and `e`) and the Okta API scopes granted to it.
    pub fn add_service_app(&self, client_id: &str, n: &str, e: &str, scopes: &[&str]) {
        let key = jsonwebtoken::DecodingKey::from_rsa_components(n, e).expect("rsa public key components");
        self.lock().service_apps.insert(
            client_id.to_string(),
            (key, scopes.iter().map(|s| s.to_string()).collect()),
        );
    }

    /// Create (or rename) group `group_id` with `profile.name` = `name`.
    pub fn add_group(&self, group_id: &str, name: &str) {
        let mut s = self.lock();
        s.groups.entry(group_id.to_string()).or_default();
        s.group_names.insert(group_id.to_string(), name.to_string());
    }

    /// Take `user_id` out of group `group_id`.
    pub fn remove_from_group(&self, group_id: &str, user_id: &str) {
        if let Some(m) = self.lock().groups.get_mut(group_id) {
            m.retain(|u| u != user_id);
        }
    }

    /// Change one attribute of `user_id`'s profile.
    pub fn set_profile(&self, user_id: &str, attribute: &str, value: Value) {
        if let Some(u) = self.lock().users.get_mut(user_id) {
            u["profile"][attribute] = value;
        }
    }

    /// `limit` calls per `window` before 429 (the window starts at its first call).
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        let mut s = self.lock();
        s.window_limit = limit;
        s.window = window;
        s.window_start = None;
        s.used = 0;
    }

    /// Answer the next call 429 with `X-Rate-Limit-Reset` `reset_in` ahead (rounded up to
    /// the next whole second, as the header is in seconds); calls before it get 429 too.
    pub fn throttle_next(&self, reset_in: Duration) {
        self.lock().throttle = Some(reset_in);
    }

    pub fn calls(&self) -> Vec<OktaCall> {
        self.lock().calls.clone()
    }
}

fn okta_error(status: StatusCode, code: &str, summary: &str) -> Response {
    let body = json!({
        "errorCode": code, "errorSummary": summary, "errorLink": code,
        "errorId": format!("oae{}", uuid::Uuid::new_v4().simple()), "errorCauses": []
    });
    (status, axum::Json(body)).into_response()
}

fn parse_query(raw: Option<String>) -> Vec<(String, String)> {
    raw.map(|q| form_pairs(&q)).unwrap_or_default()
}

/// `application/x-www-form-urlencoded` pairs.
fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Authentication and the rate-limit window; `Err` is the answer to send. Records the call.
fn admit(
    s: &mut State,
    headers: &HeaderMap,
    path: &str,
    query: &[(String, String)],
) -> Result<HeaderMap, Response> {
    let now = gatehouse_domain::clock::now();
    let record = |status: u16, s: &mut State| {
        s.calls.push(OktaCall {
            path: path.to_string(),
            query: query.to_vec(),
            at: now,
            status,
        })
    };
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v == format!("SSWS {}", s.token)
                || v.strip_prefix("Bearer ")
                    .is_some_and(|t| s.access_tokens.iter().any(|a| a == t))
        });
    if !authorized {
        record(401, s);
        return Err(okta_error(
            StatusCode::UNAUTHORIZED,
            "E0000011",
            "Invalid token provided",
        ));
    }
    if let Some(d) = s.throttle.take() {
        // A window that resets `d` from now, already spent.
        let reset = now + chrono::Duration::from_std(d).unwrap_or_default();
        let reset_secs = reset.timestamp() + i64::from(reset.timestamp_subsec_millis() > 0);
        s.window_start = DateTime::from_timestamp(reset_secs, 0)
            .map(|r| r - chrono::Duration::from_std(s.window).unwrap_or_default());
        s.used = s.window_limit;
    }
    let window = chrono::Duration::from_std(s.window).unwrap_or_default();
    if s.window_start.is_none_or(|w| now >= w + window) {
        s.window_start = Some(now);
        s.used = 0;
    }
    let start = s.window_start.unwrap_or(now);
    let reset = start + window;
    let reset_secs = reset.timestamp() + i64::from(reset.timestamp_subsec_millis() > 0);
    let mut h = HeaderMap::new();
    h.insert("x-rate-limit-limit", HeaderValue::from(s.window_limit));
    h.insert("x-rate-limit-reset", HeaderValue::from(reset_secs));
    if s.used >= s.window_limit {
        h.insert("x-rate-limit-remaining", HeaderValue::from(0));
        record(429, s);
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "application/json")],
            RATE_LIMIT_BODY,
        )
            .into_response();
        r.headers_mut().extend(h);
        return Err(r);
    }
    s.used += 1;
    h.insert(
        "x-rate-limit-remaining",
        HeaderValue::from(s.window_limit - s.used),
    );
    record(200, s);
    Ok(h)
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn time_param(q: &[(String, String)], name: &str) -> Result<Option<DateTime<Utc>>, Response> {
    match param(q, name) {
        None => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                okta_error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    &format!("Api validation failed: '{name}': The date format in your query is not recognized. Please enter dates using ISO8601 string format."),
                )
            }),
    }
}

fn limit_param(q: &[(String, String)], default: usize) -> Result<usize, Response> {
    match param(q, "limit") {
        None => Ok(default),
        Some(v) => v.parse::<usize>().ok().filter(|l| *l <= 1000).ok_or_else(|| {
            okta_error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: 'limit': must be between 0 and 1000",
            )
        }),
    }
}

/// `eventType eq "a" or eventType eq "b"` → the set; `None` = no filter.
fn event_types(filter: Option<&str>) -> Result<Option<Vec<String>>, Response> {
    let Some(f) = filter else { return Ok(None) };
    let mut types = Vec::new();
    for term in f.split(" or ") {
        let t = term.trim();
        let value = t
            .strip_prefix("eventType eq \"")
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.contains('"'));
        match value {
            Some(v) => types.push(v.to_string()),
            None => {
                return Err(okta_error(
                    StatusCode::BAD_REQUEST,
                    "E0000053",
                    &format!("Invalid filter '{f}': this fake supports eventType eq \"…\" joined by or"),
                ));
            }
        }
    }
    Ok(Some(types))
}

fn link(url: &str, rel: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("<{url}>; rel=\"{rel}\"")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn encode(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

async fn logs(
    AxState(state): AxState<Arc<Mutex<State>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = parse_query(raw.clone());
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut h = match admit(&mut s, &headers, "/api/v1/logs", &q) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let result = (|| -> Result<(Vec<Value>, Option<String>), Response> {
        let since = time_param(&q, "since")?;
        let until = time_param(&q, "until")?;
        let after = param(&q, "after");
        if since.is_some() && after.is_some() {
            return Err(okta_error(
                StatusCode::BAD_REQUEST,
                "E0000001",
                "Api validation failed: 'since' and 'after' can't both be specified",
            ));
        }
        let limit = limit_param(&q, 100)?;
        let types = event_types(param(&q, "filter"))?;
        let ascending = param(&q, "sortOrder").is_none_or(|o| o == "ASCENDING");
        let now = gatehouse_domain::clock::now();
        let oldest = now - chrono::Duration::days(RETENTION_DAYS);
        let polling = until.is_none() && ascending;
        let position = match after {
            Some(a) => a.parse::<usize>().map_err(|_| {
                okta_error(
                    StatusCode::BAD_REQUEST,
                    "E0000001",
                    "Api validation failed: 'after': invalid cursor",
                )
            })?,
            None => {
                let since = since.unwrap_or(until.unwrap_or(now) - chrono::Duration::days(7));
                // Polling: persistence order (the fake persists at `published`); bounded: by `published`.
                s.log.iter().take_while(|e| e.published < since).count()
            }
        };
        let mut out = Vec::new();
        let mut end = s.log.len();
        let mut more = false;
        for (i, e) in s.log.iter().enumerate().skip(position) {
            if until.is_some_and(|u| e.published > u) {
                break;
            }
            let type_ok = types.as_ref().is_none_or(|t| {
                e.event
                    .get("eventType")
                    .and_then(Value::as_str)
                    .is_some_and(|et| t.iter().any(|x| x == et))
            });
            if type_ok && e.published >= oldest {
                if out.len() == limit {
                    end = i;
                    more = true;
                    break;
                }
                out.push(e.event.clone());
            }
        }
        let mut pairs: Vec<(&str, String)> = vec![
            ("limit", limit.to_string()),
            (
                "sortOrder",
                if ascending {
                    "ASCENDING".into()
                } else {
                    "DESCENDING".into()
                },
            ),
        ];
        if let Some(f) = param(&q, "filter") {
            pairs.push(("filter", f.to_string()));
        }
        if let Some(u) = until {
            pairs.push(("until", u.to_rfc3339_opts(SecondsFormat::Millis, true)));
        }
        pairs.push(("after", end.to_string()));
        let next = (polling || more).then(|| format!("{}/api/v1/logs?{}", s.base, encode(&pairs)));
        Ok((out, next))
    })();
    let (events, next) = match result {
        Ok(r) => r,
        Err(r) => return r,
    };
    h.append(
        "link",
        link(
            &format!("{}/api/v1/logs?{}", s.base, raw.unwrap_or_default()),
            "self",
        ),
    );
    if let Some(n) = next {
        h.append("link", link(&n, "next"));
    }
    (StatusCode::OK, h, axum::Json(Value::Array(events))).into_response()
}

fn page_of(s: &State, path: &str, ids: &[String], q: &[(String, String)], mut h: HeaderMap) -> Response {
    let limit = match limit_param(q, 200) {
        Ok(l) => l.max(1),
        Err(r) => return r,
    };
    let start = param(q, "after")
        .and_then(|a| ids.iter().position(|id| id == a).map(|p| p + 1))
        .unwrap_or(0);
    let page: Vec<&String> = ids.iter().skip(start).take(limit).collect();
    let items: Vec<Value> = page.iter().filter_map(|id| s.users.get(*id).cloned()).collect();
    h.append("link", link(&format!("{}{path}?limit={limit}", s.base), "self"));
    if start + page.len() < ids.len()
        && let Some(last) = page.last()
    {
        h.append(
            "link",
            link(&format!("{}{path}?limit={limit}&after={last}", s.base), "next"),
        );
    }
    (StatusCode::OK, h, axum::Json(Value::Array(items))).into_response()
}

async fn users(
    AxState(state): AxState<Arc<Mutex<State>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = parse_query(raw);
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let h = match admit(&mut s, &headers, "/api/v1/users", &q) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let ids: Vec<String> = s.users.keys().cloned().collect();
    page_of(&s, "/api/v1/users", &ids, &q, h)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /oauth2/v1/token` (org authorization server): client credentials with a
/// `private_key_jwt` client assertion, checked as Okta documents it (RS256 signature with the
/// app's registered key, `iss` = `sub` = client id, `aud` = this endpoint, `exp` in the future,
/// `jti` not seen before); scopes must be granted to the app. 401 `invalid_client` otherwise.
async fn token(AxState(state): AxState<Arc<Mutex<State>>>, body: String) -> Response {
    let form: BTreeMap<String, String> = form_pairs(&body).into_iter().collect();
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let answer = (|| -> Result<Value, Response> {
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if field("grant_type") != "client_credentials" {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "The grant_type is not supported.",
            ));
        }
        if field("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
            return Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed.",
            ));
        }
        let assertion = field("client_assertion");
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(assertion).map_err(|_| {
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "The client_assertion is not a JWT.",
            )
        })?;
        let client_id = unverified
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some((key, granted)) = s.service_apps.get(&client_id).cloned() else {
            return Err(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid value for 'client_id' parameter.",
            ));
        };
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_audience(&[format!("{}/oauth2/v1/token", s.base)]);
        v.set_issuer(&[client_id.as_str()]);
        v.sub = Some(client_id.clone());
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<Value>(assertion, &key, &v)
            .map_err(|_| {
                oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "The client_assertion signature is invalid.",
                )
            })?
            .claims;
        if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
            if s.jtis.iter().any(|j| j == jti) {
                return Err(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "The client_assertion token has already been used.",
                ));
            }
            s.jtis.push(jti.to_string());
        }
        let scopes: Vec<&str> = field("scope").split(' ').filter(|x| !x.is_empty()).collect();
        if scopes.is_empty() || scopes.iter().any(|x| !granted.iter().any(|g| g == x)) {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "The following scopes are not allowed or not granted to the client.",
            ));
        }
        let access = format!("fake-okta-access-{}", uuid::Uuid::new_v4().simple());
        s.access_tokens.push(access.clone());
        Ok(
            json!({"token_type": "Bearer", "expires_in": 3600, "access_token": access, "scope": scopes.join(" ")}),
        )
    })();
    let status = match &answer {
        Ok(_) => 200,
        Err(r) => r.status().as_u16(),
    };
    s.calls.push(OktaCall {
        path: "/oauth2/v1/token".into(),
        query: Vec::new(),
        at: gatehouse_domain::clock::now(),
        status,
    });
    match answer {
        Ok(v) => (StatusCode::OK, axum::Json(v)).into_response(),
        Err(r) => r,
    }
}

/// `GET /api/v1/users/{id}`: the user object, or 404 `E0000007`.
async fn user(
    AxState(state): AxState<Arc<Mutex<State>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/api/v1/users/{id}");
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let h = match admit(&mut s, &headers, &path, &[]) {
        Ok(h) => h,
        Err(r) => return r,
    };
    match s.users.get(&id) {
        Some(u) => (StatusCode::OK, h, axum::Json(u.clone())).into_response(),
        None => okta_error(
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {id} (User)"),
        ),
    }
}

/// `GET /api/v1/groups`: Group objects (`id`, `type`, `profile.name`), paged like the users.
async fn groups(
    AxState(state): AxState<Arc<Mutex<State>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = parse_query(raw);
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut h = match admit(&mut s, &headers, "/api/v1/groups", &q) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let limit = match limit_param(&q, 200) {
        Ok(l) => l.max(1),
        Err(r) => return r,
    };
    let ids: Vec<String> = s.groups.keys().cloned().collect();
    let start = param(&q, "after")
        .and_then(|a| ids.iter().position(|id| id == a).map(|p| p + 1))
        .unwrap_or(0);
    let page: Vec<&String> = ids.iter().skip(start).take(limit).collect();
    let items: Vec<Value> = page
        .iter()
        .map(|id| {
            let name = s.group_names.get(*id).cloned().unwrap_or_else(|| (*id).clone());
            json!({"id": id, "created": "2024-01-01T00:00:00.000Z", "type": "OKTA_GROUP",
                   "objectClass": ["okta:user_group"], "profile": {"name": name, "description": null}})
        })
        .collect();
    h.append(
        "link",
        link(&format!("{}/api/v1/groups?limit={limit}", s.base), "self"),
    );
    if start + page.len() < ids.len()
        && let Some(last) = page.last()
    {
        h.append(
            "link",
            link(
                &format!("{}/api/v1/groups?limit={limit}&after={last}", s.base),
                "next",
            ),
        );
    }
    (StatusCode::OK, h, axum::Json(Value::Array(items))).into_response()
}

async fn group_users(
    AxState(state): AxState<Arc<Mutex<State>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = parse_query(raw);
    let path = format!("/api/v1/groups/{id}/users");
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let h = match admit(&mut s, &headers, &path, &q) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let Some(ids) = s.groups.get(&id).cloned() else {
        return okta_error(
            StatusCode::NOT_FOUND,
            "E0000007",
            &format!("Not found: Resource not found: {id} (UserGroup)"),
        );
    };
    page_of(&s, &path, &ids, &q, h)
}
