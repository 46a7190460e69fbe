//! A stateful fake of the Google Workspace Admin SDK Reports API (the parts channel upkeep and
//! catch-up use), served over HTTP on `127.0.0.1:0`. Point `google.admin_url` at
//! [`FakeGoogleReports::url`]. Samples: `shared/testkit/fixtures/google-reports/README.md`.
//!
//! # What it models
//! * Every call needs `Authorization: Bearer <the token given to start>`, else 401
//!   `UNAUTHENTICATED` in Google's JSON error format.
//! * `POST /admin/reports/v1/activity/users/{userKey}/applications/{app}/watch` with
//!   `{id, type: "web_hook", address, token?, payload?, expiration?}` → 200 `api#channel`
//!   `{kind, id, resourceId, resourceUri, token, expiration}` (`expiration` = ms since the epoch as
//!   a string). Google grants at most 6 hours: a longer or missing `expiration` is cut to now + 6 h.
//!   Missing `id`/`address`, `type` other than `web_hook`, a token over 256 characters, an
//!   `expiration` in the past or an id already used → 400 `INVALID_ARGUMENT`.
//! * `POST /admin/reports_v1/channels/stop` `{id, resourceId}` → 204, no body; an unknown channel
//!   or a wrong `resourceId` → 404 `NOT_FOUND`.
//! * `GET /admin/reports/v1/activity/users/all/applications/{app}` with `startTime`, `endTime`
//!   (RFC 3339), `maxResults` (1..=1000, default 1000) and `pageToken` → `admin#reports#activities`:
//!   the app's activities whose `id.time` is in `[startTime, endTime]`, newest first, `items` left out
//!   when empty, `nextPageToken` while more remain. A page token only works with the same query.
//! * Channels expire at their `expiration` by the fake's clock ([`FakeGoogleReports::set_now`]);
//!   [`FakeGoogleReports::notifications`] is what Google would push for an activity *now*: one
//!   request (headers + body) per channel that is neither stopped nor expired.
//! * Faults: [`FakeGoogleReports::fail_next`] answers the next calls with a status (429 carries
//!   `Retry-After`) before any state is read.
//! * Every request is recorded ([`FakeGoogleReports::calls`]).
//!
//! # What it does not model
//! Delivering the push itself (tests post what [`FakeGoogleReports::notifications`] returns), the
//! `sync` message, other applications' parameters, `filters`/`eventName`/`actorIpAddress`,
//! data lag (an activity is listable the moment it is added) and retention (nothing ages out).

use crate::server;
use axum::body::to_bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Admin SDK channels last at most this long.
pub const MAX_CHANNEL_SECS: i64 = 6 * 3600;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct ReportsCall {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
}

impl ReportsCall {
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A channel the fake granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChannel {
    pub id: String,
    pub resource_id: String,
    pub address: String,
    pub token: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub stopped: bool,
    /// `X-Goog-Message-Number` of the next push.
    next_message: u64,
}

/// A push Google would send: headers and body.
#[derive(Debug, Clone)]
pub struct Push {
    pub channel_id: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

struct State {
    token: String,
    now: Option<DateTime<Utc>>,
    channels: BTreeMap<String, FakeChannel>,
    /// (application, activity)
    activities: Vec<(String, Value)>,
    faults: VecDeque<u16>,
    retry_after_secs: u64,
    calls: Vec<ReportsCall>,
    next_resource: u64,
}

#[derive(Clone)]
pub struct FakeGoogleReports {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    _server: Arc<server::ServerTask>,
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

fn ms(t: DateTime<Utc>) -> String {
    t.timestamp_millis().to_string()
}

/// Google's JSON error format.
fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": reason,
        }})),
    )
        .into_response()
}

/// An admin-application activity shaped like the push guide's documented one.
pub fn admin_activity(event: &str, user_email: &str, time: DateTime<Utc>, qualifier: &str) -> Value {
    json!({
        "kind": "admin#reports#activity",
        "id": {
            "time": time.to_rfc3339_opts(SecondsFormat::Millis, true),
            "uniqueQualifier": qualifier,
            "applicationName": "admin",
            "customerId": "C0fake0001"
        },
        "actor": {"callerType": "USER", "email": "admin@example.com", "profileId": "0123456789987654321"},
        "ownerDomain": "example.com",
        "ipAddress": "192.0.2.0",
        "events": [{
            "type": "USER_SETTINGS",
            "name": event,
            "parameters": [{"name": "USER_EMAIL", "value": user_email}]
        }]
    })
}

impl FakeGoogleReports {
    /// Start the fake; calls must carry `Bearer {token}`.
    pub async fn start(token: &str) -> Self {
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            now: None,
            channels: BTreeMap::new(),
            activities: Vec::new(),
            faults: VecDeque::new(),
            retry_after_secs: 1,
            calls: Vec::new(),
            next_resource: 1,
        }));
        let (listener, addr) = server::bind("fake google reports").await;
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let task = server::spawn("fake google reports", listener, app);
        FakeGoogleReports {
            state,
            addr,
            _server: task,
        }
    }

    /// The base URL (`google.admin_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fix the fake's clock (channel expiry, expiration caps). Default: the real clock.
    pub fn set_now(&self, now: DateTime<Utc>) {
        lock(&self.state).now = Some(now);
    }

    fn now(&self) -> DateTime<Utc> {
        lock(&self.state).now.unwrap_or_else(gatehouse_domain::clock::now)
    }

    /// Record an activity of the `admin` application (listable at once).
    pub fn add_activity(&self, activity: Value) {
        lock(&self.state).activities.push(("admin".to_string(), activity));
    }

    /// Answer the next calls with these statuses (429 with `Retry-After`).
    pub fn fail_next(&self, statuses: &[u16]) {
        lock(&self.state).faults.extend(statuses);
    }

    pub fn set_retry_after_secs(&self, secs: u64) {
        lock(&self.state).retry_after_secs = secs;
    }

    pub fn calls(&self) -> Vec<ReportsCall> {
        lock(&self.state).calls.clone()
    }

    pub fn channels(&self) -> Vec<FakeChannel> {
        lock(&self.state).channels.values().cloned().collect()
    }

    /// Channels that would receive a push now (not stopped, not expired).
    pub fn live_channels(&self) -> Vec<FakeChannel> {
        let now = self.now();
        self.channels()
            .into_iter()
            .filter(|c| !c.stopped && c.expires_at > now)
            .collect()
    }

    /// What Google would push for `activity` now: one request per live channel, with the
    /// documented headers (`X-Goog-Channel-ID`, `-Token`, `-Expiration`, `X-Goog-Resource-*`,
    /// `X-Goog-Message-Number`) and the activity as body.
    pub fn notifications(&self, activity: &Value) -> Vec<Push> {
        let now = self.now();
        let mut st = lock(&self.state);
        let body = serde_json::to_vec(activity).unwrap_or_default();
        let event = activity
            .pointer("/events/0/name")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN")
            .to_string();
        let mut out = Vec::new();
        for c in st.channels.values_mut() {
            if c.stopped || c.expires_at <= now {
                continue;
            }
            c.next_message += 1;
            let mut headers = vec![
                ("Content-Type".to_string(), "application/json; utf-8".to_string()),
                ("X-Goog-Channel-ID".to_string(), c.id.clone()),
                (
                    "X-Goog-Channel-Expiration".to_string(),
                    c.expires_at.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                ),
                ("X-Goog-Resource-ID".to_string(), c.resource_id.clone()),
                (
                    "X-Goog-Resource-URI".to_string(),
                    "https://admin.googleapis.com/admin/reports/v1/activity/users/all/applications/admin?alt=json"
                        .to_string(),
                ),
                ("X-Goog-Resource-State".to_string(), event.clone()),
                ("X-Goog-Message-Number".to_string(), c.next_message.to_string()),
            ];
            if let Some(t) = &c.token {
                headers.push(("X-Goog-Channel-Token".to_string(), t.clone()));
            }
            out.push(Push {
                channel_id: c.id.clone(),
                headers,
                body: body.clone(),
            });
        }
        out
    }
}

async fn handle(AxState(state): AxState<Arc<Mutex<State>>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query: Vec<(String, String)> = req.uri().query().map(url_pairs).unwrap_or_default();
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = to_bytes(req.into_body(), 1 << 20).await.unwrap_or_default();
    let body_text = String::from_utf8_lossy(&body).to_string();
    let resp = route(&state, &method, &path, &query, &auth, &body);
    lock(&state).calls.push(ReportsCall {
        method,
        path,
        query,
        body: body_text,
        status: resp.status().as_u16(),
    });
    resp
}

/// Decode `a=b&c=d` (percent and `+` decoding).
fn url_pairs(q: &str) -> Vec<(String, String)> {
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
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn route(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    query: &[(String, String)],
    auth: &str,
    body: &[u8],
) -> Response {
    let mut st = lock(state);
    if let Some(status) = st.faults.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = google_error(
            status,
            if status == StatusCode::TOO_MANY_REQUESTS {
                "RESOURCE_EXHAUSTED"
            } else {
                "UNAVAILABLE"
            },
            "injected fault",
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, st.retry_after_secs.into());
        }
        return r;
    }
    if auth != format!("Bearer {}", st.token) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let now = st.now.unwrap_or_else(gatehouse_domain::clock::now);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (
            "POST",
            [
                "admin",
                "reports",
                "v1",
                "activity",
                "users",
                _user,
                "applications",
                app,
                "watch",
            ],
        ) => watch(&mut st, app, body, now),
        ("POST", ["admin", "reports_v1", "channels", "stop"]) => stop(&mut st, body),
        (
            "GET",
            [
                "admin",
                "reports",
                "v1",
                "activity",
                "users",
                "all",
                "applications",
                app,
            ],
        ) => list(&st, app, query),
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found"),
    }
}

fn bad(message: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

fn watch(st: &mut State, app: &str, body: &[u8], now: DateTime<Utc>) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad("Invalid JSON payload received.");
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(id), Some(address)) = (
        s("id").filter(|x| !x.is_empty()),
        s("address").filter(|x| !x.is_empty()),
    ) else {
        return bad("Required parameter: id and address");
    };
    if s("type").as_deref() != Some("web_hook") {
        return bad("type must be web_hook");
    }
    let token = s("token");
    if token.as_deref().is_some_and(|t| t.chars().count() > 256) {
        return bad("token is longer than 256 characters");
    }
    if st.channels.contains_key(&id) {
        return bad("Channel id not unique");
    }
    let asked = match v.get("expiration") {
        Some(Value::String(x)) => x.parse::<i64>().ok(),
        Some(Value::Number(n)) => n.as_i64(),
        _ => None,
    }
    .and_then(DateTime::from_timestamp_millis);
    let cap = now + chrono::Duration::seconds(MAX_CHANNEL_SECS);
    if asked.is_some_and(|t| t <= now) {
        return bad("expiration is in the past");
    }
    let expires_at = asked.map_or(cap, |t| t.min(cap));
    let resource_id = format!("fake-resource-{:06}", st.next_resource);
    st.next_resource += 1;
    st.channels.insert(
        id.clone(),
        FakeChannel {
            id: id.clone(),
            resource_id: resource_id.clone(),
            address,
            token: token.clone(),
            expires_at,
            stopped: false,
            next_message: 0,
        },
    );
    axum::Json(json!({
        "kind": "api#channel",
        "id": id,
        "resourceId": resource_id,
        "resourceUri": format!("https://admin.googleapis.com/admin/reports/v1/activity/users/all/applications/{app}?alt=json"),
        "token": token,
        "expiration": ms(expires_at),
    }))
    .into_response()
}

fn stop(st: &mut State, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad("Invalid JSON payload received.");
    };
    let id = v.get("id").and_then(Value::as_str).unwrap_or("");
    let rid = v.get("resourceId").and_then(Value::as_str).unwrap_or("");
    match st.channels.get_mut(id) {
        Some(c) if c.resource_id == rid && !c.stopped => {
            c.stopped = true;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Channel '{id}' not found for project"),
        ),
    }
}

fn list(st: &State, app: &str, query: &[(String, String)]) -> Response {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // `Err` names the parameter that is not RFC 3339.
    let time = |k: &'static str| -> Result<Option<DateTime<Utc>>, &'static str> {
        match q(k) {
            None => Ok(None),
            Some(v) => DateTime::parse_from_rfc3339(v)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| k),
        }
    };
    let (start, end) = match (time("startTime"), time("endTime")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(k), _) | (_, Err(k)) => return bad(&format!("Invalid value for {k}")),
    };
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return bad("Start time must be less than or equal to end time");
    }
    let max = match q("maxResults").map(str::parse::<usize>) {
        None => 1000,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return bad("Invalid value for maxResults"),
    };
    // A page token names the query it belongs to and an offset.
    let fingerprint = format!(
        "{app}|{}|{}",
        q("startTime").unwrap_or(""),
        q("endTime").unwrap_or("")
    );
    let offset = match q("pageToken") {
        None => 0,
        Some(t) => match t.split_once(':') {
            Some((o, f)) if f == fingerprint => match o.parse::<usize>() {
                Ok(o) => o,
                Err(_) => return bad("Invalid pageToken"),
            },
            _ => return bad("Invalid pageToken"),
        },
    };
    let mut hits: Vec<(DateTime<Utc>, &Value)> = st
        .activities
        .iter()
        .filter(|(a, _)| a == app)
        .filter_map(|(_, v)| {
            let t = v.pointer("/id/time").and_then(Value::as_str)?;
            let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
            let inside = start.is_none_or(|s| t >= s) && end.is_none_or(|e| t <= e);
            inside.then_some((t, v))
        })
        .collect();
    hits.sort_by_key(|h| std::cmp::Reverse(h.0));
    let page: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(max)
        .map(|(_, v)| (*v).clone())
        .collect();
    let mut out = json!({"kind": "admin#reports#activities", "etag": "\"fake-etag\""});
    if !page.is_empty() {
        out["items"] = Value::Array(page);
    }
    if offset + max < hits.len() {
        out["nextPageToken"] = Value::String(format!("{}:{fingerprint}", offset + max));
    }
    axum::Json(out).into_response()
}
