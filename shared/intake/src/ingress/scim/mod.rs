//! SCIM 2.0 server (RFC 7643 / RFC 7644) at `/scim/v2`: the directory Okta or Entra ID pushes.
//!
//! Every write stores the directory change and the envelopes it causes in one SQLite transaction
//! (transactional outbox, see `gatehouse_store::scim_store`); the relay publishes the outbox to
//! the queue and deletes what it published, so Looker follows the directory even across crashes,
//! and a request that fails leaves neither a change nor an event. Filters are evaluated in memory
//! on the resources' JSON (`gatehouse_domain::scim_filter`), never turned into SQL.

// Handlers and their helpers return `Result<_, Response>`: the error is the finished HTTP answer
// (axum's idiom), built once per failed request, so its size does not matter.
#![allow(clippy::result_large_err)]

mod events;
#[cfg(test)]
mod fuzz;
mod patch;
mod relay;
mod schema;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::envelope::Source;
use gatehouse_domain::ports::QueueProducer;
use gatehouse_domain::scim_filter::{AttrPath, Filter, matches, parse_filter, parse_path};
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_store::scim_store::{ScimChange, ScimKind, ScimRecord, ScimStoreError, ScimWrite};
use gatehouse_store::sqlite::Sqlite;
use relay::Relay;
use schema::{ENTERPRISE_SCHEMA, SchemaCase};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::task::JoinHandle;

use super::Deps;

const BASE: &str = "/scim/v2";
const SCIM_JSON: &str = "application/scim+json";
/// Optimistic-concurrency retries of one write before answering 503.
const WRITE_ATTEMPTS: usize = 8;
/// Writes to one resource are serialized in-process by one of these locks (by id hash), so
/// concurrent PATCHes of a group queue up instead of racing; the version check still guards
/// against other processes sharing the database.
const WRITE_LOCKS: usize = 64;

struct Token {
    name: String,
    /// SHA-256 of the token: compared in constant time, independent of the presented length.
    digest: [u8; 32],
    expires_at: Option<DateTime<Utc>>,
}

struct Scim<Q> {
    store: Sqlite,
    tokens: Vec<Token>,
    max_body: usize,
    max_results: usize,
    relay: Arc<Relay<Q>>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Background work: the outbox relay (publishes what a crash or a failed publish left behind;
/// writes also wake a flush right away).
pub fn spawn_tasks<Q: QueueProducer + Clone + 'static>(
    deps: &Deps<Q>,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    let relay = Arc::new(Relay::new(deps.queue.clone(), deps.store.clone()));
    vec![tokio::spawn(
        relay.run(deps.config.scim.relay_interval, shutdown.clone()),
    )]
}

pub fn router<Q: QueueProducer + Clone + 'static>(deps: &Deps<Q>) -> Router {
    let cfg = &deps.config.scim;
    let tokens = cfg
        .active_tokens()
        // An empty token never authenticates, whatever the configuration let through.
        .filter(|t| !t.token.expose_secret().is_empty())
        .map(|t| Token {
            name: t.name.clone(),
            digest: digest(t.token.expose_secret().as_bytes()),
            // `Config::load` refuses an expiry that is no instant; if one got here anyway the
            // token counts as expired (fail closed), never as one that never expires.
            expires_at: t.expires_at_utc().unwrap_or(Some(DateTime::<Utc>::MIN_UTC)),
        })
        .collect();
    let state = Arc::new(Scim {
        store: deps.store.clone(),
        tokens,
        max_body: cfg.max_body_bytes,
        max_results: cfg.max_results,
        relay: Arc::new(Relay::new(deps.queue.clone(), deps.store.clone())),
        locks: (0..WRITE_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
    });
    Router::new()
        .route("/scim/v2/Users", get(list_users::<Q>).post(create_user::<Q>))
        .route("/scim/v2/Users/.search", post(search_users::<Q>))
        .route(
            "/scim/v2/Users/{id}",
            get(get_user::<Q>)
                .put(put_user::<Q>)
                .patch(patch_user::<Q>)
                .delete(delete_user::<Q>),
        )
        .route("/scim/v2/Groups", get(list_groups::<Q>).post(create_group::<Q>))
        .route("/scim/v2/Groups/.search", post(search_groups::<Q>))
        .route("/scim/v2/.search", post(search_all::<Q>))
        .route(
            "/scim/v2/Groups/{id}",
            get(get_group::<Q>)
                .put(put_group::<Q>)
                .patch(patch_group::<Q>)
                .delete(delete_group::<Q>),
        )
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(service_provider_config::<Q>),
        )
        .route("/scim/v2/ResourceTypes", get(resource_types))
        .route("/scim/v2/ResourceTypes/{id}", get(resource_type))
        .route("/scim/v2/Schemas", get(schemas))
        .route("/scim/v2/Schemas/{id}", get(schema_by_id))
        .route("/scim/v2", any(not_found))
        .route("/scim/v2/{*rest}", any(not_found))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate::<Q>))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Responses

fn scim_response(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, SCIM_JSON)], body.to_string()).into_response()
}

/// An RFC 7644 §3.12 error (`status` is a string, as the RFC's examples have it).
fn scim_error(status: StatusCode, scim_type: Option<&str>, detail: impl Into<String>) -> Response {
    let mut body = json!({
        "schemas": [schema::ERROR],
        "status": status.as_u16().to_string(),
        "detail": detail.into(),
    });
    if let Some(t) = scim_type {
        body["scimType"] = Value::String(t.to_string());
    }
    scim_response(status, &body)
}

/// Count a rejection and build its answer.
fn reject(
    reason: &'static str,
    status: StatusCode,
    scim_type: Option<&str>,
    detail: impl Into<String>,
) -> Response {
    gatehouse_platform::events::ingress_rejected("scim", reason);
    scim_error(status, scim_type, detail)
}

fn bad_request(scim_type: &str, detail: impl Into<String>) -> Response {
    reject("malformed", StatusCode::BAD_REQUEST, Some(scim_type), detail)
}

fn not_found_error(kind: ScimKind, id: &str) -> Response {
    scim_error(
        StatusCode::NOT_FOUND,
        None,
        format!("{} {id} not found", kind.as_str()),
    )
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "scim store failed");
    scim_error(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "the directory is unavailable; retry",
    )
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn with_etag(mut r: Response, version: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

async fn not_found(uri: Uri) -> Response {
    scim_error(
        StatusCode::NOT_FOUND,
        None,
        format!("no SCIM endpoint at {}", uri.path()),
    )
}

// ---------------------------------------------------------------------------------------------
// Authentication

async fn authenticate<Q: Send + Sync + 'static>(
    State(s): State<Arc<Scim<Q>>>,
    req: Request,
    next: Next,
) -> Response {
    if s.tokens.is_empty() {
        return scim_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "no SCIM bearer token is configured ([scim] tokens or GATEHOUSE_SCIM_TOKEN)",
        );
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty())
        .map(|(_, token)| SecretString::from(token.trim().to_string()));
    let unauthorized = |reason: &'static str, detail: &str| {
        let mut r = reject(reason, StatusCode::UNAUTHORIZED, None, detail);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"gatehouse-scim\""),
        );
        r
    };
    let Some(presented) = presented else {
        return unauthorized("unauthorized", "missing Authorization: Bearer <token> header");
    };
    let given = digest(presented.expose_secret().as_bytes());
    // Compare against every token (no early exit), so timing says nothing about which matched.
    let mut found: Option<&Token> = None;
    for t in &s.tokens {
        if bool::from(t.digest.ct_eq(&given)) {
            found = Some(t);
        }
    }
    let Some(token) = found else {
        return unauthorized("unauthorized", "unknown or revoked bearer token");
    };
    if token
        .expires_at
        .is_some_and(|at| at <= gatehouse_domain::clock::now())
    {
        tracing::warn!(token = %token.name, "expired scim token presented");
        return unauthorized("expired", "the bearer token has expired");
    }
    tracing::debug!(token = %token.name, method = %req.method(), path = %req.uri().path(), "scim request");
    next.run(req).await
}

// ---------------------------------------------------------------------------------------------
// Request parsing

/// Query parameters, names lower-cased (SCIM parameter names are case-insensitive).
fn query(uri: &Uri) -> Result<HashMap<String, String>, Response> {
    let Query(q) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| bad_request("invalidSyntax", format!("malformed query string: {e}")))?;
    Ok(q.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect())
}

impl<Q> Scim<Q> {
    async fn read_json(&self, headers: &HeaderMap, body: Body) -> Result<Value, Response> {
        let limit = self.max_body;
        let too_large = || {
            reject(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                format!("body exceeds {limit} bytes"),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        if let Some(ct) = headers.get(header::CONTENT_TYPE)
            && !ct
                .to_str()
                .is_ok_and(|ct| ct.to_ascii_lowercase().contains("json"))
        {
            return Err(reject(
                "malformed",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("invalidSyntax"),
                "Content-Type must be application/scim+json or application/json",
            ));
        }
        let bytes = to_bytes(body, limit).await.map_err(|_| too_large())?;
        serde_json::from_slice(&bytes)
            .map_err(|e| bad_request("invalidSyntax", format!("body is not valid JSON: {e}")))
    }
}

/// Whether `If-Match` (if sent) names the current version.
fn precondition_holds(headers: &HeaderMap, version: i64) -> bool {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return true;
    };
    let Ok(v) = v.to_str() else { return false };
    v.split(',').any(|tag| {
        let tag = tag.trim();
        tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == version.to_string()
    })
}

fn precondition_failed(version: i64) -> Response {
    reject(
        "precondition_failed",
        StatusCode::PRECONDITION_FAILED,
        None,
        format!(
            "If-Match does not name the current version {}; read the resource again",
            etag(version)
        ),
    )
}

/// `attributes` / `excludedAttributes` (comma-separated attribute paths).
struct Projection {
    include: Vec<Selector>,
    exclude: Vec<Selector>,
}

enum Selector {
    /// The whole enterprise extension object.
    Extension,
    Path(AttrPath),
}

fn selectors(list: Option<&String>) -> Result<Vec<Selector>, Response> {
    let Some(list) = list else { return Ok(Vec::new()) };
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) {
                return Ok(Selector::Extension);
            }
            let pp =
                parse_path(p).map_err(|e| bad_request("invalidPath", format!("attribute {p:?}: {e}")))?;
            if pp.value_filter.is_some() {
                return Err(bad_request(
                    "invalidPath",
                    format!("attribute {p:?}: filters are not allowed here"),
                ));
            }
            Ok(Selector::Path(pp.path))
        })
        .collect()
}

impl Projection {
    fn from_query(q: &HashMap<String, String>) -> Result<Self, Response> {
        Ok(Projection {
            include: selectors(q.get("attributes"))?,
            exclude: selectors(q.get("excludedattributes"))?,
        })
    }

    fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    fn apply(&self, resource: Value) -> Value {
        let Value::Object(mut map) = resource else {
            return resource;
        };
        if !self.include.is_empty() {
            let mut out = Map::new();
            for k in ["schemas", "id"] {
                if let Some(v) = map.get(k) {
                    out.insert(k.to_string(), v.clone());
                }
            }
            for sel in &self.include {
                copy_selected(&map, &mut out, sel);
            }
            map = out;
        }
        for sel in &self.exclude {
            remove_selected(&mut map, sel);
        }
        Value::Object(map)
    }
}

/// The object a path's attribute lives in (top level, or the extension) and its key there.
/// The parameters of a query (RFC 7644 §3.4.2), from the URL of a GET or from the SearchRequest
/// body of a `POST /.search` (§3.4.3): both mean the same and are answered the same way.
struct Search {
    projection: Projection,
    filter: Option<Filter>,
    start: i64,
    count: i64,
}

impl Search {
    fn new(
        projection: Projection,
        filter: Option<&str>,
        start: Option<i64>,
        count: Option<i64>,
        max_results: usize,
    ) -> Result<Self, Response> {
        let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            None => None,
            Some(f) => Some(parse_filter(f).map_err(|e| bad_request("invalidFilter", e.to_string()))?),
        };
        Ok(Search {
            projection,
            filter,
            start: start.unwrap_or(1).max(1),
            count: count.unwrap_or(max_results as i64).clamp(0, max_results as i64),
        })
    }

    fn from_query(q: &HashMap<String, String>, max_results: usize) -> Result<Self, Response> {
        let number = |name: &str| -> Result<Option<i64>, Response> {
            q.get(name)
                .map(|v| {
                    v.trim().parse::<i64>().map_err(|_| {
                        bad_request("invalidValue", format!("{name} must be an integer, not {v:?}"))
                    })
                })
                .transpose()
        };
        Search::new(
            Projection::from_query(q)?,
            q.get("filter").map(String::as_str),
            number("startindex")?,
            number("count")?,
            max_results,
        )
    }

    /// A SearchRequest body: member names case-insensitive like the query parameters;
    /// `attributes` and `excludedAttributes` are arrays of paths (a comma-separated string is
    /// taken too). `sortBy`/`sortOrder` are ignored: sorting is not offered (see
    /// /ServiceProviderConfig), as on GET.
    fn from_body(body: &Value, max_results: usize) -> Result<Self, Response> {
        let Value::Object(map) = body else {
            return Err(bad_request(
                "invalidSyntax",
                "a SearchRequest body must be a JSON object",
            ));
        };
        let get = |name: &str| {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        };
        if let Some(schemas) = get("schemas")
            && !schemas
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s.as_str() == Some(schema::SEARCH_REQUEST)))
        {
            return Err(bad_request(
                "invalidSyntax",
                format!("schemas must contain {}", schema::SEARCH_REQUEST),
            ));
        }
        let paths = |name: &str| -> Result<Option<String>, Response> {
            match get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_string).ok_or_else(|| {
                            bad_request("invalidValue", format!("{name} must be an array of strings"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| Some(v.join(","))),
                Some(_) => Err(bad_request(
                    "invalidValue",
                    format!("{name} must be an array of strings"),
                )),
            }
        };
        let number = |name: &str| -> Result<Option<i64>, Response> {
            match get(name) {
                None => Ok(None),
                Some(v) => v.as_i64().map(Some).ok_or_else(|| {
                    bad_request("invalidValue", format!("{name} must be an integer, not {v}"))
                }),
            }
        };
        let filter = match get("filter") {
            None => None,
            Some(Value::String(f)) => Some(f.as_str()),
            Some(_) => return Err(bad_request("invalidFilter", "filter must be a string")),
        };
        let projection = Projection {
            include: selectors(paths("attributes")?.as_ref())?,
            exclude: selectors(paths("excludedAttributes")?.as_ref())?,
        };
        Search::new(
            projection,
            filter,
            number("startIndex")?,
            number("count")?,
            max_results,
        )
    }
}

fn locate<'a>(map: &'a Map<String, Value>, path: &AttrPath) -> Option<(Option<&'static str>, &'a String)> {
    let container = match &path.schema {
        Some(s) if s.eq_ignore_ascii_case(ENTERPRISE_SCHEMA) => Some(ENTERPRISE_SCHEMA),
        _ => None,
    };
    let inner = match container {
        Some(c) => map.get(c)?.as_object()?,
        None => map,
    };
    let key = inner.keys().find(|k| k.eq_ignore_ascii_case(&path.attr))?;
    Some((container, key))
}

fn only_sub(v: &Value, sub: &str) -> Option<Value> {
    let pick = |o: &Value| {
        o.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(sub))
                .map(|(k, v)| json!({ k.clone(): v.clone() }))
        })
    };
    match v {
        Value::Array(items) => {
            let items: Vec<Value> = items.iter().filter_map(pick).collect();
            (!items.is_empty()).then_some(Value::Array(items))
        }
        o => pick(o),
    }
}

fn copy_selected(from: &Map<String, Value>, to: &mut Map<String, Value>, sel: &Selector) {
    let path = match sel {
        Selector::Extension => {
            if let Some(v) = from.get(ENTERPRISE_SCHEMA) {
                to.insert(ENTERPRISE_SCHEMA.to_string(), v.clone());
            }
            return;
        }
        Selector::Path(p) => p,
    };
    let Some((container, key)) = locate(from, path) else {
        return;
    };
    let inner = match container {
        Some(c) => &from[c],
        None => &Value::Object(from.clone()),
    };
    let Some(v) = inner.get(key) else { return };
    let v = match &path.sub_attr {
        Some(sub) => match only_sub(v, sub) {
            Some(v) => v,
            None => return,
        },
        None => v.clone(),
    };
    let dest = match container {
        Some(c) => to
            .entry(c.to_string())
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("extension is an object"),
        None => to,
    };
    match (dest.get_mut(key.as_str()), v) {
        (Some(Value::Object(cur)), Value::Object(add)) => cur.extend(add),
        (_, v) => {
            dest.insert(key.clone(), v);
        }
    }
}

fn remove_selected(map: &mut Map<String, Value>, sel: &Selector) {
    let path = match sel {
        Selector::Extension => {
            map.remove(ENTERPRISE_SCHEMA);
            return;
        }
        Selector::Path(p) => p,
    };
    if path.schema.is_none()
        && ["id", "schemas"]
            .iter()
            .any(|k| path.attr.eq_ignore_ascii_case(k))
    {
        return; // returned always
    }
    let Some((container, key)) = locate(map, path).map(|(c, k)| (c, k.clone())) else {
        return;
    };
    let inner = match container {
        Some(c) => match map.get_mut(c).and_then(Value::as_object_mut) {
            Some(o) => o,
            None => return,
        },
        None => map,
    };
    match &path.sub_attr {
        None => {
            inner.remove(&key);
        }
        Some(sub) => {
            let strip = |o: &mut Value| {
                if let Some(o) = o.as_object_mut() {
                    o.retain(|k, _| !k.eq_ignore_ascii_case(sub));
                }
            };
            match inner.get_mut(&key) {
                Some(Value::Array(items)) => items.iter_mut().for_each(strip),
                Some(o) => strip(o),
                None => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn location(kind: ScimKind, id: &str) -> String {
    match kind {
        ScimKind::User => format!("{BASE}/Users/{id}"),
        ScimKind::Group => format!("{BASE}/Groups/{id}"),
    }
}

/// user id → the `groups` attribute (read-only, derived from the groups' members).
type GroupsOf = HashMap<String, Vec<Value>>;

fn groups_of(groups: &[ScimRecord]) -> GroupsOf {
    let mut out: GroupsOf = HashMap::new();
    for g in groups {
        for m in events::member_ids(&g.body) {
            out.entry(m).or_default().push(json!({
                "value": g.id,
                "$ref": location(ScimKind::Group, &g.id),
                "display": events::display_name(&g.body),
                "type": "direct",
            }));
        }
    }
    out
}

fn render(rec: &ScimRecord, groups: Option<&GroupsOf>) -> Value {
    let mut map = rec.body.as_object().cloned().unwrap_or_default();
    let mut schemas = vec![schema::core_schema(rec.kind)];
    if map.contains_key(ENTERPRISE_SCHEMA) {
        schemas.push(ENTERPRISE_SCHEMA);
    }
    map.insert("schemas".into(), json!(schemas));
    map.insert("id".into(), Value::String(rec.id.clone()));
    if rec.kind == ScimKind::User {
        let gs = groups.and_then(|g| g.get(&rec.id)).cloned().unwrap_or_default();
        map.insert("groups".into(), Value::Array(gs));
    }
    map.insert(
        "meta".into(),
        json!({
            "resourceType": rec.kind.as_str(),
            "created": ts(rec.created),
            "lastModified": ts(rec.last_modified),
            "location": location(rec.kind, &rec.id),
            "version": etag(rec.version),
        }),
    );
    Value::Object(map)
}

/// Longest `userName` accepted (Okta's login limit is 100, Entra's UPN 113; room to spare).
const MAX_USER_NAME: usize = 256;

/// Refuse a User whose `userName` or an `emails[].value` could forge a log line or a look-alike:
/// control or invisible format characters, an address outside the email rule. 400 invalidValue.
fn check_user(body: &Map<String, Value>) -> Result<(), Response> {
    if let Some(name) = body.get("userName").and_then(Value::as_str) {
        if name.trim().is_empty() || name.chars().count() > MAX_USER_NAME {
            return Err(bad_request(
                "invalidValue",
                format!("userName must have 1 to {MAX_USER_NAME} characters"),
            ));
        }
        if name
            .chars()
            .any(|c| c.is_control() || gatehouse_domain::email::is_format(c))
        {
            return Err(bad_request(
                "invalidValue",
                "userName contains a control or invisible format character",
            ));
        }
    }
    let emails = body.get("emails").and_then(Value::as_array);
    for (i, e) in emails.into_iter().flatten().enumerate() {
        if let Some(v) = e.get("value").and_then(Value::as_str)
            && let Err(err) = gatehouse_domain::email::validate(v)
        {
            return Err(bad_request("invalidValue", format!("emails[{i}].value: {err}")));
        }
    }
    Ok(())
}

fn user_name(kind: ScimKind, body: &Map<String, Value>) -> Option<String> {
    match kind {
        ScimKind::User => body.get("userName").and_then(Value::as_str).map(str::to_string),
        ScimKind::Group => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers

macro_rules! handlers {
    ($kind:expr, $list:ident, $create:ident, $get:ident, $put:ident, $patch:ident, $delete:ident) => {
        async fn $list<Q: QueueProducer + Clone + 'static>(
            State(s): State<Arc<Scim<Q>>>,
            uri: Uri,
        ) -> Response {
            s.list($kind, &uri).await.unwrap_or_else(|r| r)
        }
        async fn $create<Q: QueueProducer + Clone + 'static>(
            State(s): State<Arc<Scim<Q>>>,
            uri: Uri,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            s.create($kind, &uri, &headers, body)
                .await
                .unwrap_or_else(|r| r)
        }
        async fn $get<Q: QueueProducer + Clone + 'static>(
            State(s): State<Arc<Scim<Q>>>,
            Path(id): Path<String>,
            uri: Uri,
        ) -> Response {
            s.get($kind, &id, &uri).await.unwrap_or_else(|r| r)
        }
        async fn $put<Q: QueueProducer + Clone + 'static>(
            State(s): State<Arc<Scim<Q>>>,
            Path(id): Path<String>,
            uri: Uri,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            s.replace($kind, &id, &uri, &headers, body)
                .await
                .unwrap_or_else(|r| r)
        }
        async fn $patch<Q: QueueProducer + Clone + 'static>(
            State(s): State<Arc<Scim<Q>>>,
            Path(id): Path<String>,
            uri: Uri,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            s.patch($kind, &id, &uri, &headers, body)
                .await
                .unwrap_or_else(|r| r)
        }
        async fn $delete<Q: QueueProducer + Clone + 'static>(
            State(s): State<Arc<Scim<Q>>>,
            Path(id): Path<String>,
            headers: HeaderMap,
        ) -> Response {
            s.delete($kind, &id, &headers).await.unwrap_or_else(|r| r)
        }
    };
}

handlers!(
    ScimKind::User,
    list_users,
    create_user,
    get_user,
    put_user,
    patch_user,
    delete_user
);
handlers!(
    ScimKind::Group,
    list_groups,
    create_group,
    get_group,
    put_group,
    patch_group,
    delete_group
);

async fn search_users<Q: QueueProducer + Clone + 'static>(
    State(s): State<Arc<Scim<Q>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    s.post_search(&[ScimKind::User], &headers, body)
        .await
        .unwrap_or_else(|r| r)
}

async fn search_groups<Q: QueueProducer + Clone + 'static>(
    State(s): State<Arc<Scim<Q>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    s.post_search(&[ScimKind::Group], &headers, body)
        .await
        .unwrap_or_else(|r| r)
}

/// `POST /.search` at the root: every resource type at once (RFC 7644 §3.4.3).
async fn search_all<Q: QueueProducer + Clone + 'static>(
    State(s): State<Arc<Scim<Q>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    s.post_search(&[ScimKind::User, ScimKind::Group], &headers, body)
        .await
        .unwrap_or_else(|r| r)
}

async fn service_provider_config<Q: Send + Sync + 'static>(State(s): State<Arc<Scim<Q>>>) -> Response {
    scim_response(
        StatusCode::OK,
        &schema::service_provider_config(BASE, s.max_results),
    )
}

fn list_of(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [schema::LIST_RESPONSE],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

async fn resource_types() -> Response {
    scim_response(StatusCode::OK, &list_of(schema::resource_types(BASE)))
}

async fn resource_type(Path(id): Path<String>) -> Response {
    match schema::resource_types(BASE)
        .into_iter()
        .find(|r| r["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(&id)))
    {
        Some(r) => scim_response(StatusCode::OK, &r),
        None => scim_error(StatusCode::NOT_FOUND, None, format!("no resource type {id}")),
    }
}

async fn schemas() -> Response {
    scim_response(StatusCode::OK, &list_of(schema::schemas(BASE)))
}

async fn schema_by_id(Path(id): Path<String>) -> Response {
    match schema::schemas(BASE)
        .into_iter()
        .find(|r| r["id"].as_str().is_some_and(|i| i.eq_ignore_ascii_case(&id)))
    {
        Some(r) => scim_response(StatusCode::OK, &r),
        None => scim_error(StatusCode::NOT_FOUND, None, format!("no schema {id}")),
    }
}

/// What a write computed: the new body (None = delete) and the extra changes and envelopes.
struct Planned {
    changes: Vec<ScimChange>,
    outbox: Vec<Envelope>,
}

impl<Q: QueueProducer + Clone + 'static> Scim<Q> {
    fn write_lock(&self, id: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.locks[(h.finish() as usize) % self.locks.len()]
    }

    async fn groups_index(&self) -> Result<GroupsOf, Response> {
        let groups = self.store.scim_list(ScimKind::Group).await.map_err(internal)?;
        Ok(groups_of(&groups))
    }

    async fn rendered(&self, rec: &ScimRecord) -> Result<Value, Response> {
        let groups = match rec.kind {
            ScimKind::User => Some(self.groups_index().await?),
            ScimKind::Group => None,
        };
        Ok(render(rec, groups.as_ref()))
    }

    async fn list(&self, kind: ScimKind, uri: &Uri) -> Result<Response, Response> {
        let search = Search::from_query(&query(uri)?, self.max_results)?;
        self.search(&[kind], search).await
    }

    /// `POST [/Users|/Groups]/.search`: the query in a SearchRequest body.
    async fn post_search(
        &self,
        kinds: &[ScimKind],
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, Response> {
        let body = self.read_json(headers, body).await?;
        let search = Search::from_body(&body, self.max_results)?;
        self.search(kinds, search).await
    }

    /// Filter, page and project the resources of `kinds` (all of them for a search at the root:
    /// Users first, then Groups).
    async fn search(&self, kinds: &[ScimKind], search: Search) -> Result<Response, Response> {
        let Search {
            projection,
            filter,
            start,
            count,
        } = search;
        let mut matched: Vec<Value> = Vec::new();
        for &kind in kinds {
            let records = self.store.scim_list(kind).await.map_err(internal)?;
            let groups = match kind {
                ScimKind::User => Some(self.groups_index().await?),
                ScimKind::Group => None,
            };
            let case = SchemaCase(kind);
            matched.extend(
                records
                    .iter()
                    .map(|r| render(r, groups.as_ref()))
                    .filter(|v| filter.as_ref().is_none_or(|f| matches(f, v, &case))),
            );
        }
        let total = matched.len();
        let page: Vec<Value> = matched
            .into_iter()
            .skip((start - 1) as usize)
            .take(count as usize)
            .map(|v| projection.apply(v))
            .collect();
        Ok(scim_response(
            StatusCode::OK,
            &json!({
                "schemas": [schema::LIST_RESPONSE],
                "totalResults": total,
                "startIndex": start,
                "itemsPerPage": page.len(),
                "Resources": page,
            }),
        ))
    }

    async fn get(&self, kind: ScimKind, id: &str, uri: &Uri) -> Result<Response, Response> {
        let q = query(uri)?;
        let projection = Projection::from_query(&q)?;
        let rec = self
            .store
            .scim_get(kind, id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found_error(kind, id))?;
        let body = projection.apply(self.rendered(&rec).await?);
        Ok(with_etag(scim_response(StatusCode::OK, &body), rec.version))
    }

    /// Users named as members must exist (nested groups are not supported).
    async fn member_users(
        &self,
        ids: &BTreeSet<String>,
        must_exist: &BTreeSet<String>,
    ) -> Result<HashMap<String, Value>, Response> {
        let mut users = HashMap::new();
        for id in ids {
            match self.store.scim_get(ScimKind::User, id).await.map_err(internal)? {
                Some(u) => {
                    users.insert(id.clone(), u.body);
                }
                None if must_exist.contains(id) => {
                    return Err(bad_request(
                        "invalidValue",
                        format!(
                            "member {id} is not a User of this directory (nested groups are not supported)"
                        ),
                    ));
                }
                None => {}
            }
        }
        Ok(users)
    }

    /// Directory changes and envelopes for one resource going from `old` to `new`.
    async fn plan(
        &self,
        kind: ScimKind,
        id: &str,
        at: DateTime<Utc>,
        old: Option<&ScimRecord>,
        new: Option<&Map<String, Value>>,
        event_type: &str,
    ) -> Result<Planned, Response> {
        if let (ScimKind::User, Some(body)) = (kind, new) {
            check_user(body)?;
        }
        let new_value = new.map(|m| Value::Object(m.clone()));
        let change = match (old, new) {
            (None, Some(body)) => ScimChange::Insert {
                id: id.to_string(),
                kind,
                user_name: user_name(kind, body),
                body: Value::Object(body.clone()),
            },
            (Some(old), Some(body)) => ScimChange::Update {
                id: id.to_string(),
                expected_version: old.version,
                user_name: user_name(kind, body),
                body: Value::Object(body.clone()),
            },
            (Some(old), None) => ScimChange::Delete {
                id: id.to_string(),
                expected_version: old.version,
            },
            (None, None) => unreachable!("a write has a before or an after"),
        };
        let mut changes = vec![change];
        let outbox = match kind {
            ScimKind::User => {
                if new.is_none() {
                    // A deleted user leaves every group in the same transaction.
                    for g in self.store.scim_list(ScimKind::Group).await.map_err(internal)? {
                        if !events::member_ids(&g.body).contains(id) {
                            continue;
                        }
                        let mut body = g.body.clone();
                        if let Some(Value::Array(ms)) = body.get_mut("members") {
                            ms.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
                        }
                        changes.push(ScimChange::Update {
                            id: g.id.clone(),
                            expected_version: g.version,
                            user_name: None,
                            body,
                        });
                    }
                }
                events::user_change(at, id, old.map(|o| &o.body), new_value.as_ref(), event_type)
                    .into_iter()
                    .collect()
            }
            ScimKind::Group => {
                let before = old.map(|o| events::member_ids(&o.body)).unwrap_or_default();
                let after = new_value.as_ref().map(events::member_ids).unwrap_or_default();
                let added: BTreeSet<String> = after.difference(&before).cloned().collect();
                let all: BTreeSet<String> = before.union(&after).cloned().collect();
                let users = self.member_users(&all, &added).await?;
                events::group_change(
                    at,
                    id,
                    old.map(|o| &o.body),
                    new_value.as_ref(),
                    event_type,
                    &|m| users.get(m).cloned(),
                )
            }
        };
        Ok(Planned { changes, outbox })
    }

    /// Commit, count and wake the relay.
    async fn commit(&self, at: DateTime<Utc>, planned: Planned) -> Result<(), ScimStoreError> {
        let mut write = ScimWrite {
            at,
            changes: planned.changes,
            outbox: planned.outbox,
        };
        super::trace_envelopes(&mut write.outbox);
        self.store.scim_write(&write).await?;
        super::record_accepted(write.outbox.len());
        for env in &write.outbox {
            gatehouse_platform::events::event_received(Source::Scim, &env.event, true);
            tracing::debug!(
                envelope_id = %env.id, subject = %env.subject.key, event = env.event.kind(),
                event_type = %env.source_event_type, "scim change written to the outbox"
            );
        }
        if !write.outbox.is_empty() {
            self.relay.kick();
        }
        Ok(())
    }

    async fn create(
        &self,
        kind: ScimKind,
        uri: &Uri,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, Response> {
        let projection = Projection::from_query(&query(uri)?)?;
        let input = self.read_json(headers, body).await?;
        let body = schema::normalize(kind, &input).map_err(|e| bad_request("invalidValue", e.0))?;
        // Time-ordered (version 7), for the same reason as the envelope ids (`events.rs`): the
        // directory's id index and the queue's subject index (`scim:<id>`) take new rows at
        // their end. It tells a client no more than `meta.created` already does.
        let id = uuid::Uuid::now_v7().simple().to_string();
        let at = gatehouse_domain::clock::now();
        let event_type = match kind {
            ScimKind::User => "scim.user.create",
            ScimKind::Group => "scim.group.create",
        };
        let planned = self.plan(kind, &id, at, None, Some(&body), event_type).await?;
        match self.commit(at, planned).await {
            Ok(()) => {}
            Err(ScimStoreError::Uniqueness) => {
                return Err(reject(
                    "conflict",
                    StatusCode::CONFLICT,
                    Some("uniqueness"),
                    "a User with this userName already exists",
                ));
            }
            Err(e) => return Err(internal(e)),
        }
        let rec = ScimRecord {
            id: id.clone(),
            kind,
            body: Value::Object(body),
            version: 1,
            created: at,
            last_modified: at,
        };
        let out = projection.apply(self.rendered(&rec).await?);
        let mut r = with_etag(scim_response(StatusCode::CREATED, &out), 1);
        if let Ok(v) = HeaderValue::from_str(&location(kind, &id)) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Ok(r)
    }

    /// Read, compute the new body, write with the version read; start over when another writer
    /// got there first.
    async fn update<F>(
        &self,
        kind: ScimKind,
        id: &str,
        headers: &HeaderMap,
        event_type: &str,
        compute: F,
    ) -> Result<ScimRecord, Response>
    where
        F: Fn(&ScimRecord) -> Result<Map<String, Value>, Response>,
    {
        let _serialized = self.write_lock(id).lock().await;
        for _ in 0..WRITE_ATTEMPTS {
            let rec = self
                .store
                .scim_get(kind, id)
                .await
                .map_err(internal)?
                .ok_or_else(|| not_found_error(kind, id))?;
            if !precondition_holds(headers, rec.version) {
                return Err(precondition_failed(rec.version));
            }
            let body = compute(&rec)?;
            if Value::Object(body.clone()) == rec.body {
                return Ok(rec); // nothing changed: no write, no event
            }
            // Strictly after the previous write, so per-resource event times are ordered.
            let at = gatehouse_domain::clock::now().max(rec.last_modified + TimeDelta::microseconds(1));
            let planned = self
                .plan(kind, id, at, Some(&rec), Some(&body), event_type)
                .await?;
            match self.commit(at, planned).await {
                Ok(()) => {
                    return Ok(ScimRecord {
                        body: Value::Object(body),
                        version: rec.version + 1,
                        last_modified: at,
                        ..rec
                    });
                }
                Err(ScimStoreError::Stale) => continue,
                Err(ScimStoreError::Uniqueness) => {
                    return Err(reject(
                        "conflict",
                        StatusCode::CONFLICT,
                        Some("uniqueness"),
                        "a User with this userName already exists",
                    ));
                }
                Err(e) => return Err(internal(e)),
            }
        }
        Err(scim_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "the resource is being changed concurrently; retry",
        ))
    }

    async fn replace(
        &self,
        kind: ScimKind,
        id: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, Response> {
        let projection = Projection::from_query(&query(uri)?)?;
        let input = self.read_json(headers, body).await?;
        let new = schema::normalize(kind, &input).map_err(|e| bad_request("invalidValue", e.0))?;
        let event_type = match kind {
            ScimKind::User => "scim.user.replace",
            ScimKind::Group => "scim.group.replace",
        };
        let rec = self
            .update(kind, id, headers, event_type, |old| {
                // A PUT without `active` keeps the current state rather than reactivating.
                let mut new = new.clone();
                if kind == ScimKind::User
                    && !new.contains_key("active")
                    && let Some(a) = old.body.get("active")
                {
                    new.insert("active".into(), a.clone());
                }
                Ok(new)
            })
            .await?;
        let out = projection.apply(self.rendered(&rec).await?);
        Ok(with_etag(scim_response(StatusCode::OK, &out), rec.version))
    }

    async fn patch(
        &self,
        kind: ScimKind,
        id: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Response, Response> {
        let q = query(uri)?;
        let projection = Projection::from_query(&q)?;
        let input = self.read_json(headers, body).await?;
        let ops = patch::parse(&input).map_err(|e| bad_request(e.scim_type, e.detail))?;
        let event_type = match kind {
            ScimKind::User => "scim.user.patch",
            ScimKind::Group => "scim.group.patch",
        };
        let rec = self
            .update(kind, id, headers, event_type, |old| {
                let mut body = old.body.as_object().cloned().unwrap_or_default();
                patch::apply(kind, &mut body, &ops).map_err(|e| bad_request(e.scim_type, e.detail))?;
                schema::normalize(kind, &Value::Object(body)).map_err(|e| bad_request("invalidValue", e.0))
            })
            .await?;
        // Groups answer 204 (Entra expects it; Okta accepts it; member lists can be large) unless
        // attributes are asked for; Users answer 200 with the resource.
        if kind == ScimKind::Group && projection.is_empty() {
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&etag(rec.version)) {
                r.headers_mut().insert(header::ETAG, v);
            }
            return Ok(r);
        }
        let out = projection.apply(self.rendered(&rec).await?);
        Ok(with_etag(scim_response(StatusCode::OK, &out), rec.version))
    }

    async fn delete(&self, kind: ScimKind, id: &str, headers: &HeaderMap) -> Result<Response, Response> {
        let event_type = match kind {
            ScimKind::User => "scim.user.delete",
            ScimKind::Group => "scim.group.delete",
        };
        let _serialized = self.write_lock(id).lock().await;
        for _ in 0..WRITE_ATTEMPTS {
            let rec = self
                .store
                .scim_get(kind, id)
                .await
                .map_err(internal)?
                .ok_or_else(|| not_found_error(kind, id))?;
            if !precondition_holds(headers, rec.version) {
                return Err(precondition_failed(rec.version));
            }
            let at = gatehouse_domain::clock::now().max(rec.last_modified + TimeDelta::microseconds(1));
            let planned = self.plan(kind, id, at, Some(&rec), None, event_type).await?;
            match self.commit(at, planned).await {
                Ok(()) => return Ok(StatusCode::NO_CONTENT.into_response()),
                Err(ScimStoreError::Stale) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(scim_error(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "the resource is being changed concurrently; retry",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(if_match: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(if_match).unwrap());
        h
    }

    #[test]
    fn if_match_accepts_weak_strong_star_and_lists() {
        assert!(precondition_holds(&HeaderMap::new(), 3));
        assert!(precondition_holds(&headers("W/\"3\""), 3));
        assert!(precondition_holds(&headers("\"3\""), 3));
        assert!(precondition_holds(&headers("*"), 3));
        assert!(precondition_holds(&headers("W/\"1\", W/\"3\""), 3));
        assert!(!precondition_holds(&headers("W/\"2\""), 3));
    }

    fn user() -> Value {
        json!({
            "schemas": [schema::USER_SCHEMA],
            "id": "u1",
            "userName": "a",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "a@x", "type": "work"}],
            "meta": {"resourceType": "User"},
            ENTERPRISE_SCHEMA: {"department": "Eng", "costCenter": "1"},
        })
    }

    fn projection(include: &str, exclude: &str) -> Projection {
        let mut q = HashMap::new();
        if !include.is_empty() {
            q.insert("attributes".to_string(), include.to_string());
        }
        if !exclude.is_empty() {
            q.insert("excludedattributes".to_string(), exclude.to_string());
        }
        Projection::from_query(&q).ok().unwrap()
    }

    #[test]
    fn attributes_keep_only_what_is_asked_plus_id_and_schemas() {
        let out = projection(
            "userName,name.givenName,emails.value,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            "",
        )
        .apply(user());
        assert_eq!(
            out,
            json!({
                "schemas": [schema::USER_SCHEMA],
                "id": "u1",
                "userName": "a",
                "name": {"givenName": "A"},
                "emails": [{"value": "a@x"}],
                ENTERPRISE_SCHEMA: {"department": "Eng"},
            })
        );
    }

    #[test]
    fn excluded_attributes_drop_what_is_named_but_never_id() {
        let out = projection("", "emails,name.familyName,id,meta").apply(user());
        assert!(out.get("emails").is_none());
        assert!(out.get("meta").is_none());
        assert_eq!(out["id"], "u1");
        assert_eq!(out["name"], json!({"givenName": "A"}));
        let out = projection("", ENTERPRISE_SCHEMA).apply(user());
        assert!(out.get(ENTERPRISE_SCHEMA).is_none());
    }
}
