//! The fake's state and its request handling, as a synchronous core: `State::decide_fault` and
//! `State::dispatch` take a parsed request and return a response, so the server in `mod.rs` is a
//! thin adapter and the unit tests below need no I/O.

use super::wire::{FieldSel, apply_fields, like, parse_fields, parse_pairs, pct_decode};
use super::{RecordedCall, UserView};
use serde_json::{Map, Value, json};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

mod content;
pub use content::{DeliveryView, ItemView};

pub(crate) const API_PREFIX: &str = "/api/4.0";
const DOC_URL: &str = "https://cloud.google.com/looker/docs/r/api/4.0";
/// Email of the admin user whose API3 key `FakeLooker::client_id` is.
pub const ADMIN_EMAIL: &str = "admin@fake-looker.test";
/// Name of the seeded role that grants API access to everything the fake serves.
pub const ADMIN_ROLE: &str = "Admin";

/// One HTTP request as the server received it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    pub method: String,
    /// Raw (percent-encoded) path, including the `/api/4.0` prefix.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Option<Value>,
    /// `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

/// `Err` carries an error response so handlers can use `?`.
type Handled = Result<Response, Response>;

fn ok(v: Value) -> Response {
    Response {
        status: 200,
        body: Some(v),
        retry_after: None,
    }
}

fn no_content() -> Response {
    Response {
        status: 204,
        body: None,
        retry_after: None,
    }
}

/// The spec's `Error` shape.
pub(crate) fn error(status: u16, message: impl Into<String>) -> Response {
    Response {
        status,
        body: Some(json!({ "message": message.into(), "documentation_url": DOC_URL })),
        retry_after: None,
    }
}

fn not_found() -> Response {
    error(404, "Not found")
}

fn not_allowed(method: &str) -> Response {
    error(
        405,
        format!("method {method} is not allowed on this path (or not modelled by the fake)"),
    )
}

/// The spec's `ValidationError` shape (422).
fn invalid(field: &str, code: &str, message: impl Into<String>) -> Response {
    Response {
        status: 422,
        body: Some(json!({
            "message": "Validation Failed",
            "errors": [{
                "field": field,
                "code": code,
                "message": message.into(),
                "documentation_url": DOC_URL,
            }],
            "documentation_url": DOC_URL,
        })),
        retry_after: None,
    }
}

fn now_rfc3339() -> String {
    gatehouse_domain::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn random_token(len: usize) -> String {
    let mut s = String::new();
    while s.len() < len {
        s.push_str(&uuid::Uuid::new_v4().simple().to_string());
    }
    s.truncate(len);
    s
}

#[derive(Debug, Clone)]
pub(crate) struct User {
    id: u64,
    first_name: Option<String>,
    last_name: Option<String>,
    locale: Option<String>,
    is_disabled: bool,
    /// Other writable `User` fields the fake stores but does not interpret.
    extra: Map<String, Value>,
    email: Option<EmailCred>,
    group_ids: BTreeSet<u64>,
    role_ids: BTreeSet<u64>,
    /// User attribute id → value set on the user itself.
    attributes: BTreeMap<u64, String>,
    sessions: Vec<Session>,
    api3: Vec<Api3>,
    /// SSO credentials by type (`saml`, `oidc`, `google`, `ldap`): at most one of each, as the
    /// spec's `User.credentials_saml` (...) objects.
    sso: BTreeMap<&'static str, SsoCred>,
}

/// The SSO credential types the fake models, with the field `user_for_credential` matches on.
pub(crate) const SSO_KINDS: [(&str, &str); 4] = [
    ("saml", "saml_user_id"),
    ("oidc", "oidc_user_id"),
    ("google", "google_user_id"),
    ("ldap", "ldap_id"),
];

/// One SSO credential (`CredentialsSaml`, `CredentialsOIDC`, `CredentialsGoogle`,
/// `CredentialsLDAP`): the IdP's id for the user and the email the IdP sent.
#[derive(Debug, Clone)]
struct SsoCred {
    id: String,
    email: Option<String>,
    created_at: String,
    /// `logged_in_at`: the last login with this credential (null: never).
    logged_in_at: Option<String>,
}

impl User {
    fn new(id: u64) -> User {
        User {
            id,
            first_name: None,
            last_name: None,
            locale: None,
            is_disabled: false,
            extra: Map::new(),
            email: None,
            group_ids: BTreeSet::new(),
            role_ids: BTreeSet::new(),
            attributes: BTreeMap::new(),
            sessions: Vec::new(),
            api3: Vec::new(),
            sso: BTreeMap::new(),
        }
    }

    fn email(&self) -> Option<&str> {
        self.email.as_ref().map(|e| e.email.as_str())
    }

    fn full_name(&self) -> Option<String> {
        match (&self.first_name, &self.last_name) {
            (None, None) => None,
            (f, l) => Some(
                format!("{} {}", f.as_deref().unwrap_or(""), l.as_deref().unwrap_or(""))
                    .trim()
                    .to_owned(),
            ),
        }
    }
}

#[derive(Debug, Clone)]
struct EmailCred {
    email: String,
    created_at: String,
    forced_password_reset_at_next_login: bool,
    /// `logged_in_at`: the last login with this credential (null: never).
    logged_in_at: Option<String>,
}

#[derive(Debug, Clone)]
struct Session {
    id: u64,
    created_at: String,
    expires_at: String,
}

#[derive(Debug, Clone)]
struct Api3 {
    id: u64,
    client_id: String,
    client_secret: String,
    created_at: String,
    purpose: Option<String>,
}

#[derive(Debug, Clone)]
struct Group {
    id: u64,
    name: String,
    role_ids: BTreeSet<u64>,
}

#[derive(Debug, Clone)]
struct Role {
    id: u64,
    name: String,
}

#[derive(Debug, Clone)]
struct Attribute {
    id: u64,
    name: String,
    label: String,
    default_value: Option<String>,
    /// `UserAttribute.user_can_view` / `user_can_edit` (Looker's "user access": none, view, edit).
    user_can_view: bool,
    user_can_edit: bool,
}

#[derive(Debug, Clone)]
struct Token {
    user_id: u64,
    /// The API3 key it was issued for: deleting the key ends the token (401), as in Looker.
    key_id: u64,
    expires_at: Instant,
}

/// Fault injection: forced faults first, then a seeded random draw per call.
#[derive(Debug, Clone)]
pub(crate) struct Faults {
    rate: f64,
    rng: u64,
    statuses: Vec<u16>,
    forced: VecDeque<u16>,
    retry_after_secs: u64,
}

impl Faults {
    fn next_u64(&mut self) -> u64 {
        // splitmix64: small, seeded, good enough for a test fake.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn decide(&mut self) -> Option<u16> {
        if let Some(s) = self.forced.pop_front() {
            return Some(s);
        }
        if self.rate <= 0.0 || self.statuses.is_empty() {
            return None;
        }
        if self.next_f64() < self.rate {
            let i = (self.next_u64() % self.statuses.len() as u64) as usize;
            Some(self.statuses[i])
        } else {
            None
        }
    }
}

/// Writable field types used to validate request bodies.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    NullableStr,
    Bool,
    NullableBool,
    NullableObject,
}

impl Kind {
    fn accepts(self, v: &Value) -> bool {
        match self {
            Kind::Str => v.is_string(),
            Kind::NullableStr => v.is_string() || v.is_null(),
            Kind::Bool => v.is_boolean(),
            Kind::NullableBool => v.is_boolean() || v.is_null(),
            Kind::NullableObject => v.is_object() || v.is_null(),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Str => "must be a string",
            Kind::NullableStr => "must be a string or null",
            Kind::Bool => "must be a boolean",
            Kind::NullableBool => "must be a boolean or null",
            Kind::NullableObject => "must be an object or null",
        }
    }
}

const USER_WRITABLE: &[(&str, Kind)] = &[
    ("first_name", Kind::NullableStr),
    ("last_name", Kind::NullableStr),
    ("locale", Kind::NullableStr),
    ("is_disabled", Kind::Bool),
    ("home_folder_id", Kind::NullableStr),
    ("models_dir_validated", Kind::NullableBool),
    ("ui_state", Kind::NullableObject),
    ("can_manage_api3_creds", Kind::Bool),
];
const USER_READ_ONLY: &[&str] = &[
    "can",
    "avatar_url",
    "avatar_url_without_sizing",
    "credentials_api3",
    "credentials_embed",
    "display_name",
    "email",
    "embed_group_space_id",
    "group_ids",
    "id",
    "looker_versions",
    "personal_folder_id",
    "presumed_looker_employee",
    "role_ids",
    "sessions",
    "verified_looker_employee",
    "roles_externally_managed",
    "allow_direct_roles",
    "allow_normal_group_membership",
    "allow_roles_from_normal_groups",
    "embed_group_folder_id",
    "is_iam_admin",
    "is_service_account",
    "service_account_name",
    "url",
];
const EMAIL_WRITABLE: &[(&str, Kind)] = &[
    ("email", Kind::NullableStr),
    ("forced_password_reset_at_next_login", Kind::Bool),
];
const EMAIL_READ_ONLY: &[&str] = &[
    "can",
    "created_at",
    "user_id",
    "is_disabled",
    "logged_in_at",
    "password_reset_url",
    "account_setup_url",
    "password_reset_url_expired",
    "account_setup_url_expired",
    "type",
    "url",
    "user_url",
];
const API3_WRITABLE: &[(&str, Kind)] = &[("purpose", Kind::NullableStr)];
const API3_READ_ONLY: &[&str] = &[
    "can",
    "id",
    "client_id",
    "created_at",
    "is_disabled",
    "type",
    "url",
];
const ATTR_VALUE_WRITABLE: &[(&str, Kind)] = &[("value", Kind::NullableStr)];
const ATTR_VALUE_READ_ONLY: &[&str] = &[
    "can",
    "name",
    "label",
    "rank",
    "user_id",
    "user_can_edit",
    "value_is_hidden",
    "user_attribute_id",
    "source",
    "hidden_value_domain_whitelist",
];
/// `GroupIdForGroupUserInclusion`: the spec marks `user_id` read-only, yet it is the payload.
const GROUP_USER_WRITABLE: &[(&str, Kind)] = &[("user_id", Kind::Str)];

/// Checks every key of a JSON object body: writable keys must have the right type; read-only
/// and unknown keys are rejected with 422 (stricter than Looker, which ignores read-only keys, so
/// that a client sending a field that would be silently dropped is caught).
fn check_object(
    body: &Map<String, Value>,
    writable: &[(&str, Kind)],
    read_only: &[&str],
) -> Result<(), Response> {
    for (k, v) in body {
        if let Some((_, kind)) = writable.iter().find(|(n, _)| n == k) {
            if !kind.accepts(v) {
                return Err(invalid(k, "invalid", format!("{k} {}", kind.describe())));
            }
        } else if read_only.contains(&k.as_str()) {
            return Err(invalid(k, "read_only", format!("{k} is read-only")));
        } else {
            return Err(invalid(
                k,
                "unknown_field",
                format!("{k} is not a known writable field (for the fake)"),
            ));
        }
    }
    Ok(())
}

fn json_body(req: &Request, required: bool) -> Result<Option<Value>, Response> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return if required {
            Err(error(400, "a request body is required"))
        } else {
            Ok(None)
        };
    }
    if let Some(ct) = &req.content_type
        && !ct.to_ascii_lowercase().contains("json")
    {
        return Err(error(400, format!("expected an application/json body, got {ct}")));
    }
    serde_json::from_slice(&req.body)
        .map(Some)
        .map_err(|e| error(400, format!("malformed JSON body: {e}")))
}

fn object_body(req: &Request, required: bool) -> Result<Map<String, Value>, Response> {
    match json_body(req, required)? {
        None => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(error(400, "expected a JSON object body")),
    }
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !e.chars().any(char::is_whitespace)
}

/// Decoded query parameters.
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(crate) fn new(raw: &str) -> Query {
        Query {
            pairs: parse_pairs(raw),
        }
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, Response> {
        match self.get(k) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(_) => Err(error(400, format!("{k} must be true or false"))),
        }
    }

    fn uint(&self, k: &str) -> Result<Option<usize>, Response> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| error(400, format!("{k} must be a non-negative integer"))),
        }
    }

    /// Array parameters: comma-separated (`style: simple`), repeated occurrences are merged.
    fn list(&self, k: &str) -> Option<Vec<String>> {
        let mut out = None::<Vec<String>>;
        for (_, v) in self.pairs.iter().filter(|(n, _)| n == k) {
            let items = out.get_or_insert_with(Vec::new);
            items.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        out
    }

    fn ids(&self, k: &str) -> Option<BTreeSet<u64>> {
        self.list(k)
            .map(|l| l.iter().filter_map(|s| s.parse().ok()).collect())
    }

    fn fields(&self) -> Option<Vec<FieldSel>> {
        self.get("fields")
            .filter(|f| !f.trim().is_empty())
            .map(parse_fields)
    }

    fn shape(&self, v: Value) -> Value {
        match self.fields() {
            Some(sel) => apply_fields(v, &sel),
            None => v,
        }
    }

    /// `limit`/`offset` win over `page`/`per_page` (1-based page).
    fn paginate(&self, items: Vec<Value>) -> Result<Vec<Value>, Response> {
        let (limit, offset) = (self.uint("limit")?, self.uint("offset")?);
        let (page, per_page) = (self.uint("page")?, self.uint("per_page")?);
        let (skip, take) = if limit.is_some() || offset.is_some() {
            (offset.unwrap_or(0), limit.unwrap_or(usize::MAX))
        } else if let Some(pp) = per_page {
            (page.unwrap_or(1).saturating_sub(1).saturating_mul(pp), pp)
        } else {
            (0, usize::MAX)
        };
        Ok(items.into_iter().skip(skip).take(take).collect())
    }

    /// A list answer: `sorts`, then paging, then `fields`.
    fn list_response(&self, mut items: Vec<Value>) -> Handled {
        if let Some(sorts) = self.get("sorts") {
            sort_json(&mut items, sorts);
        }
        let items = self.paginate(items)?;
        Ok(ok(self.shape(Value::Array(items))))
    }
}

fn cmp_json(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(_) => 4,
        }
    }
    match (a, b) {
        (Some(Value::String(x)), Some(Value::String(y))) => match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.to_lowercase().cmp(&y.to_lowercase()),
        },
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal)
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// `sorts=email desc,id`: stable sort of rendered objects by top-level keys.
fn sort_json(items: &mut [Value], sorts: &str) {
    let keys: Vec<(String, bool)> = sorts
        .split(',')
        .filter_map(|s| {
            let mut parts = s.split_whitespace();
            let key = parts.next()?.to_owned();
            let desc = parts.next().is_some_and(|d| d.eq_ignore_ascii_case("desc"));
            Some((key, desc))
        })
        .collect();
    items.sort_by(|a, b| {
        for (k, desc) in &keys {
            let o = cmp_json(a.get(k), b.get(k));
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
}

/// `IS NULL` / `NOT NULL` or a LIKE pattern, against a nullable column.
fn str_match(pattern: &str, value: Option<&str>) -> bool {
    if pattern.eq_ignore_ascii_case("IS NULL") {
        value.is_none()
    } else if pattern.eq_ignore_ascii_case("NOT NULL") {
        value.is_some()
    } else {
        value.is_some_and(|v| like(pattern, v))
    }
}

fn parse_id(s: &str) -> Option<u64> {
    s.parse().ok()
}

pub(crate) struct State {
    base_url: String,
    next_id: u64,
    users: BTreeMap<u64, User>,
    groups: BTreeMap<u64, Group>,
    roles: BTreeMap<u64, Role>,
    attributes: BTreeMap<u64, Attribute>,
    tokens: HashMap<String, Token>,
    pub(crate) token_ttl: Duration,
    pub(crate) faults: Faults,
    pub(crate) latency: Duration,
    /// Calls (method, path under `/api/4.0`) held unanswered until released.
    pub(crate) hold: tokio::sync::watch::Sender<Option<(String, String)>>,
    /// How many calls are being held right now.
    pub(crate) holding: usize,
    pub(crate) calls: Vec<RecordedCall>,
    admin_role: u64,
    pub(crate) admin_user: u64,
    pub(crate) admin_client_id: String,
    pub(crate) admin_client_secret: String,
    /// Folders, Looks, dashboards, scheduled plans and alerts (`content.rs`).
    content: content::Content,
}

impl State {
    /// A fresh instance with one admin user (role `Admin`) holding one API3 key.
    pub(crate) fn new(base_url: String) -> State {
        let mut st = State {
            base_url,
            next_id: 1,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            roles: BTreeMap::new(),
            attributes: BTreeMap::new(),
            tokens: HashMap::new(),
            token_ttl: Duration::from_secs(3600),
            faults: Faults {
                rate: 0.0,
                rng: 0,
                statuses: vec![429, 500, 503],
                forced: VecDeque::new(),
                retry_after_secs: 0,
            },
            latency: Duration::ZERO,
            hold: tokio::sync::watch::Sender::new(None),
            holding: 0,
            calls: Vec::new(),
            admin_role: 0,
            admin_user: 0,
            admin_client_id: String::new(),
            admin_client_secret: String::new(),
            content: content::Content::default(),
        };
        st.admin_role = parse_id(&st.add_role(ADMIN_ROLE)).unwrap_or_default();
        let admin = st.add_user(Some(ADMIN_EMAIL), "Gatehouse", "Admin");
        st.set_direct_roles(&admin, &[&st.admin_role.to_string()]);
        let key = st.add_api3_key(&admin);
        let (id, secret) = st.api3_credentials(&key).unwrap_or_default();
        st.admin_user = parse_id(&admin).unwrap_or_default();
        st.admin_client_id = id;
        st.admin_client_secret = secret;
        st
    }

    fn next(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn api_url(&self, rest: &str) -> String {
        format!("{}{API_PREFIX}{rest}", self.base_url)
    }

    // ---- fault and latency configuration ----

    pub(crate) fn set_fault_rate(&mut self, rate: f64, seed: u64) {
        self.faults.rate = rate.clamp(0.0, 1.0);
        self.faults.rng = seed;
    }

    pub(crate) fn set_fault_statuses(&mut self, statuses: &[u16]) {
        self.faults.statuses = statuses.to_vec();
    }

    pub(crate) fn set_retry_after_secs(&mut self, secs: u64) {
        self.faults.retry_after_secs = secs;
    }

    pub(crate) fn fail_next(&mut self, status: u16, count: usize) {
        self.faults.forced.extend(std::iter::repeat_n(status, count));
    }

    pub(crate) fn expire_tokens(&mut self) {
        self.tokens.clear();
    }

    // ---- seeding (panics on unknown ids: these are test helpers) ----

    pub(crate) fn add_group(&mut self, name: &str) -> String {
        let id = self.next();
        self.groups.insert(
            id,
            Group {
                id,
                name: name.to_owned(),
                role_ids: BTreeSet::new(),
            },
        );
        id.to_string()
    }

    /// `DELETE /groups/{id}` as Looker does it: the group and every membership in it go.
    pub(crate) fn remove_group(&mut self, group_id: &str) {
        let id: u64 = group_id.parse().expect("a group id");
        assert!(self.groups.remove(&id).is_some(), "no group {group_id}");
        for u in self.users.values_mut() {
            u.group_ids.remove(&id);
        }
    }

    pub(crate) fn add_role(&mut self, name: &str) -> String {
        let id = self.next();
        self.roles.insert(
            id,
            Role {
                id,
                name: name.to_owned(),
            },
        );
        id.to_string()
    }

    pub(crate) fn add_user_attribute(&mut self, name: &str) -> String {
        let id = self.next();
        let label = name.replace('_', " ");
        self.attributes.insert(
            id,
            Attribute {
                id,
                name: name.to_owned(),
                label,
                default_value: None,
                user_can_view: true,
                user_can_edit: false,
            },
        );
        id.to_string()
    }

    pub(crate) fn set_user_attribute_access(
        &mut self,
        attr_id: &str,
        user_can_view: bool,
        user_can_edit: bool,
    ) {
        let a = self.seed_id(attr_id, |s, id| s.attributes.contains_key(&id), "user attribute");
        if let Some(a) = self.attributes.get_mut(&a) {
            // Looker: users who can edit a value can see it.
            a.user_can_view = user_can_view || user_can_edit;
            a.user_can_edit = user_can_edit;
        }
    }

    pub(crate) fn set_user_attribute_default(&mut self, attr_id: &str, value: Option<&str>) {
        let a = self.seed_id(attr_id, |s, id| s.attributes.contains_key(&id), "user attribute");
        if let Some(a) = self.attributes.get_mut(&a) {
            a.default_value = value.map(str::to_owned);
        }
    }

    pub(crate) fn set_group_roles(&mut self, group_id: &str, role_ids: &[&str]) {
        let g = self.seed_id(group_id, |s, id| s.groups.contains_key(&id), "group");
        let roles: BTreeSet<u64> = role_ids
            .iter()
            .map(|r| self.seed_id(r, |s, id| s.roles.contains_key(&id), "role"))
            .collect();
        if let Some(g) = self.groups.get_mut(&g) {
            g.role_ids = roles;
        }
    }

    pub(crate) fn add_user(&mut self, email: Option<&str>, first: &str, last: &str) -> String {
        if let Some(e) = email {
            assert!(
                self.user_id_by_email(e).is_none(),
                "fake looker: email {e} is already taken"
            );
        }
        let id = self.next();
        let mut u = User::new(id);
        u.first_name = Some(first.to_owned());
        u.last_name = Some(last.to_owned());
        u.email = email.map(|e| EmailCred {
            email: e.to_owned(),
            created_at: now_rfc3339(),
            forced_password_reset_at_next_login: false,
            logged_in_at: None,
        });
        self.users.insert(id, u);
        id.to_string()
    }

    pub(crate) fn add_session(&mut self, user_id: &str) -> String {
        let id = self.next();
        let created = gatehouse_domain::clock::now();
        let expires = created + chrono::Duration::days(30);
        let s = Session {
            id,
            created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        self.seed_user(user_id).sessions.push(s);
        id.to_string()
    }

    pub(crate) fn add_api3_key(&mut self, user_id: &str) -> String {
        let key = self.new_api3(None);
        let id = key.id.to_string();
        self.seed_user(user_id).api3.push(key);
        id
    }

    fn new_api3(&mut self, purpose: Option<String>) -> Api3 {
        Api3 {
            id: self.next(),
            client_id: random_token(20),
            client_secret: random_token(24),
            created_at: now_rfc3339(),
            purpose,
        }
    }

    pub(crate) fn api3_credentials(&self, key_id: &str) -> Option<(String, String)> {
        let key_id = parse_id(key_id)?;
        self.users
            .values()
            .flat_map(|u| &u.api3)
            .find(|k| k.id == key_id)
            .map(|k| (k.client_id.clone(), k.client_secret.clone()))
    }

    pub(crate) fn add_user_to_group(&mut self, user_id: &str, group_id: &str) {
        let g = self.seed_id(group_id, |s, id| s.groups.contains_key(&id), "group");
        self.seed_user(user_id).group_ids.insert(g);
    }

    pub(crate) fn remove_user_from_group(&mut self, user_id: &str, group_id: &str) {
        let g = self.seed_id(group_id, |s, id| s.groups.contains_key(&id), "group");
        self.seed_user(user_id).group_ids.remove(&g);
    }

    pub(crate) fn set_direct_roles(&mut self, user_id: &str, role_ids: &[&str]) {
        let roles: BTreeSet<u64> = role_ids
            .iter()
            .map(|r| self.seed_id(r, |s, id| s.roles.contains_key(&id), "role"))
            .collect();
        self.seed_user(user_id).role_ids = roles;
    }

    pub(crate) fn set_user_attribute(&mut self, user_id: &str, attr_id: &str, value: Option<&str>) {
        let a = self.seed_id(attr_id, |s, id| s.attributes.contains_key(&id), "user attribute");
        let u = self.seed_user(user_id);
        match value {
            Some(v) => u.attributes.insert(a, v.to_owned()),
            None => u.attributes.remove(&a),
        };
    }

    pub(crate) fn set_disabled(&mut self, user_id: &str, disabled: bool) {
        self.seed_user(user_id).is_disabled = disabled;
    }

    pub(crate) fn set_logins(
        &mut self,
        user_id: &str,
        email: Option<chrono::DateTime<chrono::Utc>>,
        saml: Option<chrono::DateTime<chrono::Utc>>,
        created_at: chrono::DateTime<chrono::Utc>,
    ) {
        let at = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let u = self.seed_user(user_id);
        if let Some(c) = u.email.as_mut() {
            c.logged_in_at = email.map(at);
            c.created_at = at(created_at);
        }
        match saml {
            Some(t) => {
                let cred = SsoCred {
                    id: format!("saml-{}", u.id),
                    email: u.email().map(str::to_owned),
                    created_at: at(created_at),
                    logged_in_at: Some(at(t)),
                };
                u.sso.insert("saml", cred);
            }
            None => {
                u.sso.remove("saml");
            }
        }
    }

    fn seed_id(&self, id: &str, exists: impl Fn(&State, u64) -> bool, what: &str) -> u64 {
        match parse_id(id) {
            Some(n) if exists(self, n) => n,
            _ => panic!("fake looker: unknown {what} id {id:?}"),
        }
    }

    /// Give user `user_id` an SSO credential of type `kind` (`saml`, `oidc`, `google`, `ldap`)
    /// whose IdP id is `id`, replacing one of that type.
    pub(crate) fn add_sso_credential(&mut self, user_id: &str, kind: &str, id: &str, email: Option<&str>) {
        let Some(&(kind, _)) = SSO_KINDS.iter().find(|(k, _)| *k == kind) else {
            panic!("fake looker: {kind:?} is not an sso credential type the fake models");
        };
        let cred = SsoCred {
            id: id.to_owned(),
            email: email.map(str::to_owned),
            created_at: now_rfc3339(),
            logged_in_at: None,
        };
        self.seed_user(user_id).sso.insert(kind, cred);
    }

    fn seed_user(&mut self, user_id: &str) -> &mut User {
        match parse_id(user_id).and_then(|id| self.users.get_mut(&id)) {
            Some(u) => u,
            None => panic!("fake looker: unknown user id {user_id:?}"),
        }
    }

    // ---- inspection ----

    fn user_id_by_email(&self, email: &str) -> Option<u64> {
        self.users
            .values()
            .find(|u| u.email().is_some_and(|e| super::wire::eq_caseless(e, email)))
            .map(|u| u.id)
    }

    pub(crate) fn group_names(&self) -> std::collections::HashMap<String, String> {
        self.groups
            .values()
            .map(|g| (g.id.to_string(), g.name.clone()))
            .collect()
    }

    pub(crate) fn role_names(&self) -> std::collections::HashMap<String, String> {
        self.roles
            .values()
            .map(|r| (r.id.to_string(), r.name.clone()))
            .collect()
    }

    pub(crate) fn view_by_email(&self, email: &str) -> Option<UserView> {
        self.user_id_by_email(email)
            .and_then(|id| self.users.get(&id))
            .map(view)
    }

    pub(crate) fn view_by_id(&self, user_id: &str) -> Option<UserView> {
        parse_id(user_id).and_then(|id| self.users.get(&id)).map(view)
    }

    pub(crate) fn views(&self) -> Vec<UserView> {
        self.users.values().map(view).collect()
    }

    // ---- request handling ----

    /// Whether this call is answered by an injected fault. Decided on arrival, before anything
    /// is looked at or changed.
    pub(crate) fn decide_fault(&mut self) -> Option<Response> {
        let status = self.faults.decide()?;
        let mut r = error(
            status,
            match status {
                429 => "Too Many Requests",
                500 => "Internal Server Error",
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                _ => "Injected fault",
            },
        );
        if status == 429 || status == 503 {
            r.retry_after = Some(self.faults.retry_after_secs);
        }
        Some(r)
    }

    /// `decide_fault`, then `dispatch` (no latency): what the server does, minus the sleep.
    #[cfg(test)]
    pub(crate) fn handle_now(&mut self, req: &Request) -> Response {
        self.decide_fault().unwrap_or_else(|| self.dispatch(req))
    }

    pub(crate) fn dispatch(&mut self, req: &Request) -> Response {
        let Some(rel) = strip_api(&req.path) else {
            return not_found();
        };
        let q = Query::new(&req.query);
        let segs: Vec<String> = rel.split('/').skip(1).map(|s| pct_decode(s, false)).collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = req.method.as_str();
        if segs == ["login"] {
            return if m == "POST" {
                self.login(req, &q)
            } else {
                not_allowed(m)
            };
        }
        let (caller, token) = match self.authenticate(req) {
            Ok(t) => t,
            Err(r) => return r,
        };
        if segs == ["logout"] {
            return if m == "DELETE" {
                self.tokens.remove(&token);
                no_content()
            } else {
                not_allowed(m)
            };
        }
        if segs == ["user"] {
            return match (m, self.users.get(&caller)) {
                ("GET", Some(u)) => ok(q.shape(self.user_json(u))),
                ("GET", None) => not_found(),
                _ => not_allowed(m),
            };
        }
        let is_admin = self
            .users
            .get(&caller)
            .is_some_and(|u| u.role_ids.contains(&self.admin_role));
        if !is_admin {
            return error(403, "Forbidden: the fake grants API access to admins only");
        }
        self.route(m, &segs, &q, req, caller).unwrap_or_else(|e| e)
    }

    fn authenticate(&mut self, req: &Request) -> Result<(u64, String), Response> {
        let unauthorized = || error(401, "Requires authentication.");
        let header = req.authorization.as_deref().ok_or_else(unauthorized)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or_else(unauthorized)?;
        if !scheme.eq_ignore_ascii_case("token") && !scheme.eq_ignore_ascii_case("bearer") {
            return Err(unauthorized());
        }
        let token = token.trim();
        let t = self.tokens.get(token).ok_or_else(unauthorized)?;
        if Instant::now() >= t.expires_at {
            self.tokens.remove(token);
            return Err(unauthorized());
        }
        let (user, key) = (t.user_id, t.key_id);
        match self.users.get(&user) {
            Some(u) if !u.is_disabled && u.api3.iter().any(|k| k.id == key) => Ok((user, token.to_owned())),
            _ => {
                self.tokens.remove(token);
                Err(unauthorized())
            }
        }
    }

    fn login(&mut self, req: &Request, q: &Query) -> Response {
        let form = match &req.content_type {
            Some(ct)
                if ct
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded") =>
            {
                parse_pairs(&String::from_utf8_lossy(&req.body))
            }
            _ => Vec::new(),
        };
        let get = |k: &str| {
            form.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| q.get(k).map(str::to_owned))
                .filter(|v| !v.is_empty())
        };
        let (Some(client_id), Some(secret)) = (get("client_id"), get("client_secret")) else {
            return error(400, "client_id and client_secret are required");
        };
        let found = self
            .users
            .values()
            .find_map(|u| u.api3.iter().find(|k| k.client_id == client_id).map(|k| (u, k)));
        match found {
            Some((u, k)) if k.client_secret == secret && !u.is_disabled => {
                let token = random_token(40);
                let (user_id, key_id) = (u.id, k.id);
                self.tokens.insert(
                    token.clone(),
                    Token {
                        user_id,
                        key_id,
                        expires_at: Instant::now() + self.token_ttl,
                    },
                );
                ok(json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": self.token_ttl.as_secs(),
                    "refresh_token": null,
                }))
            }
            _ => not_found(),
        }
    }

    fn route(&mut self, m: &str, segs: &[&str], q: &Query, req: &Request, caller: u64) -> Handled {
        match segs {
            ["users", "search"] => match m {
                "GET" => self.search_users(q),
                _ => Err(not_allowed(m)),
            },
            ["users", "credential", kind, cid] => match m {
                "GET" => self.user_for_credential(kind, cid, q),
                _ => Err(not_allowed(m)),
            },
            ["users"] => match m {
                "GET" => self.list_users(q),
                "POST" => self.create_user(req, q),
                _ => Err(not_allowed(m)),
            },
            ["users", uid] => match m {
                "GET" => Ok(ok(q.shape(self.user_json(self.user(uid)?)))),
                "PATCH" => self.patch_user(uid, req, q),
                "DELETE" => self.delete_user(uid, caller),
                _ => Err(not_allowed(m)),
            },
            ["users", uid, "credentials_email"] => match m {
                "GET" => {
                    let u = self.user(uid)?;
                    let c = u.email.as_ref().ok_or_else(not_found)?;
                    Ok(ok(q.shape(self.email_json(u, c))))
                }
                "POST" => self.create_email(uid, req, q),
                "PATCH" => self.patch_email(uid, req, q),
                "DELETE" => {
                    self.user_mut(uid)?.email.take().ok_or_else(not_found)?;
                    Ok(no_content())
                }
                _ => Err(not_allowed(m)),
            },
            ["users", uid, "sessions"] => match m {
                "GET" => {
                    let u = self.user(uid)?;
                    Ok(ok(q.shape(Value::Array(
                        u.sessions.iter().map(|s| self.session_json(u, s)).collect(),
                    ))))
                }
                _ => Err(not_allowed(m)),
            },
            ["users", uid, "sessions", sid] => match m {
                "GET" => {
                    let u = self.user(uid)?;
                    let s = u
                        .sessions
                        .iter()
                        .find(|s| Some(s.id) == parse_id(sid))
                        .ok_or_else(not_found)?;
                    Ok(ok(q.shape(self.session_json(u, s))))
                }
                "DELETE" => {
                    let sid = parse_id(sid);
                    let u = self.user_mut(uid)?;
                    let i = u
                        .sessions
                        .iter()
                        .position(|s| Some(s.id) == sid)
                        .ok_or_else(not_found)?;
                    u.sessions.remove(i);
                    Ok(no_content())
                }
                _ => Err(not_allowed(m)),
            },
            ["users", uid, "credentials_api3"] => match m {
                "GET" => {
                    let u = self.user(uid)?;
                    Ok(ok(q.shape(Value::Array(
                        u.api3.iter().map(|k| self.api3_json(u, k, false)).collect(),
                    ))))
                }
                "POST" => {
                    let body = object_body(req, false)?;
                    check_object(&body, API3_WRITABLE, API3_READ_ONLY)?;
                    self.user(uid)?;
                    let purpose = body.get("purpose").and_then(Value::as_str).map(str::to_owned);
                    let key = self.new_api3(purpose);
                    let u = self.user_mut(uid)?;
                    u.api3.push(key.clone());
                    let u = self.user(uid)?;
                    Ok(ok(q.shape(self.api3_json(u, &key, true))))
                }
                _ => Err(not_allowed(m)),
            },
            ["users", uid, "credentials_api3", kid] => match m {
                "GET" => {
                    let u = self.user(uid)?;
                    let k = u
                        .api3
                        .iter()
                        .find(|k| Some(k.id) == parse_id(kid))
                        .ok_or_else(not_found)?;
                    Ok(ok(q.shape(self.api3_json(u, k, false))))
                }
                "DELETE" => {
                    let kid = parse_id(kid);
                    let u = self.user_mut(uid)?;
                    let i = u
                        .api3
                        .iter()
                        .position(|k| Some(k.id) == kid)
                        .ok_or_else(not_found)?;
                    u.api3.remove(i);
                    Ok(no_content())
                }
                _ => Err(not_allowed(m)),
            },
            ["users", uid, "roles"] => match m {
                "GET" => self.user_roles(uid, q),
                "PUT" => self.set_user_roles(uid, req, q),
                _ => Err(not_allowed(m)),
            },
            ["users", uid, "attribute_values"] => match m {
                "GET" => self.attribute_values(uid, q),
                _ => Err(not_allowed(m)),
            },
            ["users", uid, "attribute_values", aid] => match m {
                "PATCH" => self.set_attribute_value(uid, aid, req),
                "DELETE" => {
                    let a = self.attribute(aid)?.id;
                    self.user_mut(uid)?.attributes.remove(&a);
                    Ok(no_content())
                }
                _ => Err(not_allowed(m)),
            },
            ["groups"] => match m {
                "GET" => {
                    let ids = q.ids("ids");
                    let items = self
                        .groups
                        .values()
                        .filter(|g| ids.as_ref().is_none_or(|ids| ids.contains(&g.id)))
                        .map(|g| self.group_json(g, caller))
                        .collect();
                    q.list_response(items)
                }
                _ => Err(not_allowed(m)),
            },
            ["groups", gid] => match m {
                "GET" => Ok(ok(q.shape(self.group_json(self.group(gid)?, caller)))),
                _ => Err(not_allowed(m)),
            },
            ["groups", gid, "users"] => match m {
                "GET" => {
                    let g = self.group(gid)?.id;
                    let items = self
                        .users
                        .values()
                        .filter(|u| u.group_ids.contains(&g))
                        .map(|u| self.user_json(u))
                        .collect();
                    q.list_response(items)
                }
                "POST" => {
                    let body = object_body(req, true)?;
                    check_object(&body, GROUP_USER_WRITABLE, &[])?;
                    let uid = body
                        .get("user_id")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("user_id", "missing", "user_id is required"))?;
                    let g = self.group(gid)?.id;
                    self.user_mut(uid)?.group_ids.insert(g);
                    Ok(ok(self.user_json(self.user(uid)?)))
                }
                _ => Err(not_allowed(m)),
            },
            ["groups", gid, "users", uid] => match m {
                "DELETE" => {
                    let g = self.group(gid)?.id;
                    // Idempotent: removing a user who is not a member answers 204 too.
                    self.user_mut(uid)?.group_ids.remove(&g);
                    Ok(no_content())
                }
                _ => Err(not_allowed(m)),
            },
            // role_users: holders of the role, directly or (unless direct_association_only)
            // through a group that has it.
            ["roles", rid, "users"] => match m {
                "GET" => {
                    let r = parse_id(rid)
                        .filter(|id| self.roles.contains_key(id))
                        .ok_or_else(not_found)?;
                    let direct_only = q.bool("direct_association_only")?.unwrap_or(false);
                    let via_groups: BTreeSet<u64> = self
                        .groups
                        .values()
                        .filter(|g| g.role_ids.contains(&r))
                        .map(|g| g.id)
                        .collect();
                    let items = self
                        .users
                        .values()
                        .filter(|u| {
                            u.role_ids.contains(&r)
                                || (!direct_only && u.group_ids.iter().any(|g| via_groups.contains(g)))
                        })
                        .map(|u| self.user_json(u))
                        .collect();
                    q.list_response(items)
                }
                _ => Err(not_allowed(m)),
            },
            ["roles"] => match m {
                "GET" => {
                    let ids = q.ids("ids");
                    let items = self
                        .roles
                        .values()
                        .filter(|r| ids.as_ref().is_none_or(|ids| ids.contains(&r.id)))
                        .map(|r| self.role_json(r))
                        .collect();
                    q.list_response(items)
                }
                _ => Err(not_allowed(m)),
            },
            ["user_attributes"] => match m {
                "GET" => {
                    let items = self.attributes.values().map(|a| self.attribute_json(a)).collect();
                    q.list_response(items)
                }
                _ => Err(not_allowed(m)),
            },
            _ => match self.route_content(m, segs, q, req, caller) {
                Some(handled) => handled,
                None => Err(not_found()),
            },
        }
    }

    fn user(&self, uid: &str) -> Result<&User, Response> {
        parse_id(uid)
            .and_then(|id| self.users.get(&id))
            .ok_or_else(not_found)
    }

    fn user_mut(&mut self, uid: &str) -> Result<&mut User, Response> {
        parse_id(uid)
            .and_then(|id| self.users.get_mut(&id))
            .ok_or_else(not_found)
    }

    fn group(&self, gid: &str) -> Result<&Group, Response> {
        parse_id(gid)
            .and_then(|id| self.groups.get(&id))
            .ok_or_else(not_found)
    }

    fn attribute(&self, aid: &str) -> Result<&Attribute, Response> {
        parse_id(aid)
            .and_then(|id| self.attributes.get(&id))
            .ok_or_else(not_found)
    }

    fn search_users(&self, q: &Query) -> Handled {
        type Pred<'a> = Box<dyn Fn(&User) -> bool + 'a>;
        let filter_or = q.bool("filter_or")?.unwrap_or(false);
        let mut preds: Vec<Pred<'_>> = Vec::new();
        if let Some(ids) = q.ids("id") {
            preds.push(Box::new(move |u| ids.contains(&u.id)));
        }
        if let Some(p) = q.get("first_name") {
            preds.push(Box::new(move |u| str_match(p, u.first_name.as_deref())));
        }
        if let Some(p) = q.get("last_name") {
            preds.push(Box::new(move |u| str_match(p, u.last_name.as_deref())));
        }
        if let Some(p) = q.get("full_name") {
            preds.push(Box::new(move |u| str_match(p, u.full_name().as_deref())));
        }
        if let Some(p) = q.get("email") {
            preds.push(Box::new(move |u| str_match(p, u.email())));
        }
        if let Some(b) = q.bool("is_disabled")? {
            preds.push(Box::new(move |u| u.is_disabled == b));
        }
        if let Some(groups) = q.ids("group_id") {
            preds.push(Box::new(move |u| u.group_ids.iter().any(|g| groups.contains(g))));
        }
        // No embed users, Looker employees or service accounts exist in the fake.
        for flag in ["embed_user", "verified_looker_employee", "is_service_account"] {
            if let Some(b) = q.bool(flag)? {
                preds.push(Box::new(move |_| !b));
            }
        }
        if let Some(b) = q.bool("can_manage_api3_creds")? {
            preds.push(Box::new(move |u| can_manage_api3(u) == b));
        }
        let items = self
            .users
            .values()
            .filter(|u| {
                if preds.is_empty() {
                    true
                } else if filter_or {
                    preds.iter().any(|p| p(u))
                } else {
                    preds.iter().all(|p| p(u))
                }
            })
            .map(|u| self.user_json(u))
            .collect();
        q.list_response(items)
    }

    fn list_users(&self, q: &Query) -> Handled {
        let ids = q.ids("ids");
        let items = self
            .users
            .values()
            .filter(|u| ids.as_ref().is_none_or(|ids| ids.contains(&u.id)))
            .map(|u| self.user_json(u))
            .collect();
        q.list_response(items)
    }

    fn user_for_credential(&self, kind: &str, cid: &str, q: &Query) -> Handled {
        let found = match kind {
            "email" => self.user_id_by_email(cid).and_then(|id| self.users.get(&id)),
            "api3" => self
                .users
                .values()
                .find(|u| u.api3.iter().any(|k| k.client_id == cid)),
            // The id field each type matches on (`saml_user_id`, ...), exactly.
            _ if SSO_KINDS.iter().any(|(k, _)| *k == kind) => self
                .users
                .values()
                .find(|u| u.sso.get(kind).is_some_and(|c| c.id == cid)),
            // Other credential types (embed, looker_openid, ...) are not modelled.
            _ => None,
        };
        found
            .map(|u| ok(q.shape(self.user_json(u))))
            .ok_or_else(not_found)
    }

    /// `User.credentials_email` is writable in the spec: a create may carry the email
    /// credentials, applied atomically with the user (a taken email → 409, nothing created).
    fn create_user(&mut self, req: &Request, q: &Query) -> Handled {
        let mut body = object_body(req, false)?;
        let email = match body.remove("credentials_email") {
            None | Some(Value::Null) => None,
            Some(Value::Object(cred)) => {
                check_object(&cred, EMAIL_WRITABLE, EMAIL_READ_ONLY)?;
                let email = cred
                    .get("email")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("credentials_email.email", "missing", "email is required"))?;
                self.check_email_available(email, 0)?;
                Some(EmailCred {
                    email: email.to_owned(),
                    created_at: now_rfc3339(),
                    forced_password_reset_at_next_login: cred
                        .get("forced_password_reset_at_next_login")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    logged_in_at: None,
                })
            }
            Some(_) => {
                return Err(invalid(
                    "credentials_email",
                    "invalid",
                    "credentials_email must be an object",
                ));
            }
        };
        check_object(&body, USER_WRITABLE, USER_READ_ONLY)?;
        let id = self.next();
        let mut u = User::new(id);
        u.email = email;
        apply_user_patch(&mut u, body);
        let v = self.user_json(&u);
        self.users.insert(id, u);
        Ok(ok(q.shape(v)))
    }

    fn patch_user(&mut self, uid: &str, req: &Request, q: &Query) -> Handled {
        let body = object_body(req, true)?;
        check_object(&body, USER_WRITABLE, USER_READ_ONLY)?;
        apply_user_patch(self.user_mut(uid)?, body);
        Ok(ok(q.shape(self.user_json(self.user(uid)?))))
    }

    fn delete_user(&mut self, uid: &str, caller: u64) -> Handled {
        let id = self.user(uid)?.id;
        if id == caller {
            return Err(error(403, "you cannot delete yourself"));
        }
        self.content_of_deleted_user(id);
        self.users.remove(&id);
        self.tokens.retain(|_, t| t.user_id != id);
        Ok(no_content())
    }

    fn check_email_available(&self, email: &str, owner: u64) -> Result<(), Response> {
        if !valid_email(email) {
            return Err(invalid("email", "invalid", "email is not a valid email address"));
        }
        match self.user_id_by_email(email) {
            Some(other) if other != owner => Err(error(409, "email is already in use by another user")),
            _ => Ok(()),
        }
    }

    fn create_email(&mut self, uid: &str, req: &Request, q: &Query) -> Handled {
        let body = object_body(req, true)?;
        check_object(&body, EMAIL_WRITABLE, EMAIL_READ_ONLY)?;
        let email = body
            .get("email")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("email", "missing", "email is required"))?;
        let u = self.user(uid)?;
        if u.email.is_some() {
            return Err(error(409, "this user already has email credentials"));
        }
        let id = u.id;
        self.check_email_available(email, id)?;
        let forced = body
            .get("forced_password_reset_at_next_login")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let u = self.user_mut(uid)?;
        let logged_in_at = u.email.as_ref().and_then(|c| c.logged_in_at.clone());
        u.email = Some(EmailCred {
            email: email.to_owned(),
            created_at: now_rfc3339(),
            forced_password_reset_at_next_login: forced,
            logged_in_at,
        });
        let u = self.user(uid)?;
        let c = u.email.as_ref().ok_or_else(not_found)?;
        Ok(ok(q.shape(self.email_json(u, c))))
    }

    fn patch_email(&mut self, uid: &str, req: &Request, q: &Query) -> Handled {
        let body = object_body(req, true)?;
        check_object(&body, EMAIL_WRITABLE, EMAIL_READ_ONLY)?;
        let u = self.user(uid)?;
        let id = u.id;
        u.email.as_ref().ok_or_else(not_found)?;
        let email = match body.get("email") {
            Some(Value::String(e)) => {
                // The spec lists no 409 for PATCH: a taken email is a validation error.
                self.check_email_available(e, id).map_err(|r| {
                    if r.status == 409 {
                        invalid("email", "already_exists", "email is already in use")
                    } else {
                        r
                    }
                })?;
                Some(e.clone())
            }
            Some(_) => {
                return Err(invalid(
                    "email",
                    "missing",
                    "email cannot be removed, delete the credentials",
                ));
            }
            None => None,
        };
        let forced = body
            .get("forced_password_reset_at_next_login")
            .and_then(Value::as_bool);
        let c = self.user_mut(uid)?.email.as_mut().ok_or_else(not_found)?;
        if let Some(e) = email {
            c.email = e;
        }
        if let Some(f) = forced {
            c.forced_password_reset_at_next_login = f;
        }
        let u = self.user(uid)?;
        let c = u.email.as_ref().ok_or_else(not_found)?;
        Ok(ok(q.shape(self.email_json(u, c))))
    }

    fn user_roles(&self, uid: &str, q: &Query) -> Handled {
        let u = self.user(uid)?;
        let direct_only = q.bool("direct_association_only")?.unwrap_or(false);
        let mut ids = u.role_ids.clone();
        if !direct_only {
            for g in u.group_ids.iter().filter_map(|g| self.groups.get(g)) {
                ids.extend(g.role_ids.iter().copied());
            }
        }
        let roles = ids
            .iter()
            .filter_map(|r| self.roles.get(r))
            .map(|r| self.role_json(r))
            .collect();
        Ok(ok(q.shape(Value::Array(roles))))
    }

    fn set_user_roles(&mut self, uid: &str, req: &Request, q: &Query) -> Handled {
        let Some(Value::Array(items)) = json_body(req, true)? else {
            return Err(error(400, "expected a JSON array of role ids"));
        };
        self.user(uid)?;
        let mut ids = BTreeSet::new();
        for item in &items {
            let Value::String(s) = item else {
                return Err(invalid("role_ids", "invalid", "role ids must be strings"));
            };
            match parse_id(s).filter(|id| self.roles.contains_key(id)) {
                Some(id) => ids.insert(id),
                None => return Err(invalid("role_ids", "not_found", format!("role {s} not found"))),
            };
        }
        self.user_mut(uid)?.role_ids = ids.clone();
        let roles = ids
            .iter()
            .filter_map(|r| self.roles.get(r))
            .map(|r| self.role_json(r))
            .collect();
        Ok(ok(q.shape(Value::Array(roles))))
    }

    fn attribute_values(&self, uid: &str, q: &Query) -> Handled {
        let u = self.user(uid)?;
        let wanted = q.ids("user_attribute_ids").filter(|w| !w.is_empty());
        let include_unset = q.bool("include_unset")?.unwrap_or(false);
        q.bool("all_values")?;
        let mut out = Vec::new();
        for a in self.attributes.values() {
            if wanted.as_ref().is_some_and(|w| !w.contains(&a.id)) {
                continue;
            }
            // Group values are not modelled: the user's own value, else the default.
            let (value, source) = match (u.attributes.get(&a.id), &a.default_value) {
                (Some(v), _) => (Some(v.as_str()), Some("user")),
                (None, Some(d)) => (Some(d.as_str()), Some("default")),
                (None, None) if include_unset => (None, None),
                (None, None) => continue,
            };
            out.push(self.attribute_value_json(u, a, value, source));
        }
        Ok(ok(q.shape(Value::Array(out))))
    }

    fn set_attribute_value(&mut self, uid: &str, aid: &str, req: &Request) -> Handled {
        let body = object_body(req, true)?;
        check_object(&body, ATTR_VALUE_WRITABLE, ATTR_VALUE_READ_ONLY)?;
        let value = body
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("value", "missing", "value is required"))?
            .to_owned();
        let a = self.attribute(aid)?.id;
        self.user_mut(uid)?.attributes.insert(a, value.clone());
        let (u, a) = (self.user(uid)?, self.attribute(aid)?);
        Ok(ok(self.attribute_value_json(u, a, Some(&value), Some("user"))))
    }

    // ---- JSON shapes from the spec ----

    fn user_json(&self, u: &User) -> Value {
        let extra = |k: &str, default: Value| u.extra.get(k).cloned().unwrap_or(default);
        let display = u.full_name();
        json!({
            "can": {"show": true, "index": true, "show_details": true, "index_details": true, "sudo": true},
            "avatar_url": null,
            "avatar_url_without_sizing": null,
            "credentials_api3": u.api3.iter().map(|k| self.api3_json(u, k, false)).collect::<Vec<_>>(),
            "credentials_email": u.email.as_ref().map(|c| self.email_json(u, c)),
            "credentials_embed": [],
            "credentials_google": self.sso_json(u, "google"),
            "credentials_ldap": self.sso_json(u, "ldap"),
            "credentials_looker_openid": null,
            "credentials_oidc": self.sso_json(u, "oidc"),
            "credentials_saml": self.sso_json(u, "saml"),
            "credentials_totp": null,
            "credentials_workforce": null,
            "display_name": display,
            "email": u.email(),
            "embed_group_space_id": null,
            "first_name": u.first_name,
            "group_ids": u.group_ids.iter().map(u64::to_string).collect::<Vec<_>>(),
            "home_folder_id": extra("home_folder_id", Value::Null),
            "id": u.id.to_string(),
            "is_disabled": u.is_disabled,
            "last_name": u.last_name,
            "locale": u.locale.as_deref().unwrap_or("en"),
            "looker_versions": [],
            "models_dir_validated": extra("models_dir_validated", Value::Null),
            "personal_folder_id": self.personal_folder_of(u.id).map(|f| f.to_string()),
            "presumed_looker_employee": false,
            "role_ids": u.role_ids.iter().map(u64::to_string).collect::<Vec<_>>(),
            "sessions": u.sessions.iter().map(|s| self.session_json(u, s)).collect::<Vec<_>>(),
            "ui_state": extra("ui_state", Value::Null),
            "verified_looker_employee": false,
            "roles_externally_managed": false,
            "allow_direct_roles": true,
            "allow_normal_group_membership": true,
            "allow_roles_from_normal_groups": true,
            "embed_group_folder_id": null,
            "is_iam_admin": false,
            "can_manage_api3_creds": can_manage_api3(u),
            "is_service_account": false,
            "service_account_name": null,
            "url": self.api_url(&format!("/users/{}", u.id)),
        })
    }

    /// `CredentialsSaml` / `CredentialsOIDC` / `CredentialsGoogle` / `CredentialsLDAP` as the
    /// spec shapes them (`null` when the user has none of that type).
    fn sso_json(&self, u: &User, kind: &str) -> Value {
        let (Some(c), Some((_, id_field))) = (u.sso.get(kind), SSO_KINDS.iter().find(|(k, _)| *k == kind))
        else {
            return Value::Null;
        };
        let mut v = json!({
            "can": {},
            "created_at": c.created_at,
            "email": c.email,
            "is_disabled": false,
            "logged_in_at": c.logged_in_at,
            "type": kind,
            "url": self.api_url(&format!("/users/{}/credentials_{kind}", u.id)),
        });
        v[*id_field] = json!(c.id);
        match kind {
            "google" => {
                let domain = c
                    .email
                    .as_deref()
                    .and_then(|e| e.rsplit_once('@'))
                    .map(|(_, d)| d);
                v["domain"] = json!(domain);
            }
            "ldap" => v["ldap_dn"] = Value::Null,
            _ => {}
        }
        v
    }

    fn email_json(&self, u: &User, c: &EmailCred) -> Value {
        json!({
            "can": {},
            "created_at": c.created_at,
            "email": c.email,
            "forced_password_reset_at_next_login": c.forced_password_reset_at_next_login,
            "user_id": u.id.to_string(),
            "is_disabled": false,
            "logged_in_at": c.logged_in_at,
            "password_reset_url": null,
            "account_setup_url": null,
            "password_reset_url_expired": false,
            "account_setup_url_expired": false,
            "type": "email",
            "url": self.api_url(&format!("/users/{}/credentials_email", u.id)),
            "user_url": self.api_url(&format!("/users/{}", u.id)),
        })
    }

    fn session_json(&self, u: &User, s: &Session) -> Value {
        json!({
            "can": {},
            "id": s.id.to_string(),
            "ip_address": "127.0.0.1",
            "browser": "Firefox",
            "operating_system": "Linux",
            "city": null,
            "state": null,
            "country": null,
            "credentials_type": "email",
            "extended_at": null,
            "extended_count": 0,
            "sudo_user_id": null,
            "created_at": s.created_at,
            "expires_at": s.expires_at,
            "url": self.api_url(&format!("/users/{}/sessions/{}", u.id, s.id)),
        })
    }

    fn api3_json(&self, u: &User, k: &Api3, with_secret: bool) -> Value {
        let mut v = json!({
            "can": {},
            "id": k.id.to_string(),
            "client_id": k.client_id,
            "created_at": k.created_at,
            "is_disabled": false,
            "type": "api3",
            "purpose": k.purpose,
            "url": self.api_url(&format!("/users/{}/credentials_api3/{}", u.id, k.id)),
        });
        if with_secret && let Some(o) = v.as_object_mut() {
            o.insert("client_secret".into(), k.client_secret.clone().into());
        }
        v
    }

    fn group_json(&self, g: &Group, caller: u64) -> Value {
        let members = self.users.values().filter(|u| u.group_ids.contains(&g.id));
        let contains_caller = self
            .users
            .get(&caller)
            .is_some_and(|u| u.group_ids.contains(&g.id));
        json!({
            "can": {},
            "can_add_to_content_metadata": true,
            "contains_current_user": contains_caller,
            "external_group_id": null,
            "externally_managed": false,
            "id": g.id.to_string(),
            "include_by_default": false,
            "name": g.name,
            "user_count": members.count(),
        })
    }

    fn role_json(&self, r: &Role) -> Value {
        json!({
            "can": {},
            "id": r.id.to_string(),
            "name": r.name,
            "permission_set": null,
            "permission_set_id": null,
            "model_set": null,
            "model_set_id": null,
            "internal": false,
            "url": self.api_url(&format!("/roles/{}", r.id)),
            "users_url": self.api_url(&format!("/roles/{}/users", r.id)),
        })
    }

    fn attribute_json(&self, a: &Attribute) -> Value {
        json!({
            "can": {},
            "id": a.id.to_string(),
            "name": a.name,
            "label": a.label,
            "type": "string",
            "default_value": a.default_value,
            "is_system": false,
            "is_permanent": false,
            "value_is_hidden": false,
            "user_can_view": a.user_can_view,
            "user_can_edit": a.user_can_edit,
            "hidden_value_domain_whitelist": null,
            "needed_for_ci_run": false,
            "value_for_ci_run": null,
        })
    }

    fn attribute_value_json(
        &self,
        u: &User,
        a: &Attribute,
        value: Option<&str>,
        source: Option<&str>,
    ) -> Value {
        json!({
            "can": {},
            "name": a.name,
            "label": a.label,
            "rank": null,
            "value": value,
            "user_id": u.id.to_string(),
            "user_can_edit": a.user_can_edit,
            "value_is_hidden": false,
            "user_attribute_id": a.id.to_string(),
            "source": source,
            "hidden_value_domain_whitelist": null,
        })
    }
}

fn can_manage_api3(u: &User) -> bool {
    u.extra
        .get("can_manage_api3_creds")
        .and_then(Value::as_bool)
        .unwrap_or(true)
}

fn apply_user_patch(u: &mut User, body: Map<String, Value>) {
    for (k, v) in body {
        match k.as_str() {
            "first_name" => u.first_name = v.as_str().map(str::to_owned),
            "last_name" => u.last_name = v.as_str().map(str::to_owned),
            "locale" => u.locale = v.as_str().map(str::to_owned),
            "is_disabled" => u.is_disabled = v.as_bool().unwrap_or(u.is_disabled),
            _ => {
                u.extra.insert(k, v);
            }
        }
    }
}

fn view(u: &User) -> UserView {
    UserView {
        id: u.id.to_string(),
        email: u.email().map(str::to_owned),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        is_disabled: u.is_disabled,
        group_ids: u.group_ids.iter().map(u64::to_string).collect(),
        direct_role_ids: u.role_ids.iter().map(u64::to_string).collect(),
        attribute_values: u
            .attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        session_ids: u.sessions.iter().map(|s| s.id.to_string()).collect(),
        api3_key_ids: u.api3.iter().map(|k| k.id.to_string()).collect(),
    }
}

/// The path relative to `/api/4.0` (starting with `/`), or `None` outside the API.
pub(crate) fn strip_api(path: &str) -> Option<&str> {
    match path.strip_prefix(API_PREFIX) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// POST/PUT/PATCH/DELETE, except `/login` and `/logout`.
pub(crate) fn is_write(method: &str, rel_path: &str) -> bool {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE") && !matches!(rel_path, "/login" | "/logout")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new("http://127.0.0.1:1".into())
    }

    fn token(st: &mut State) -> String {
        let r = st.dispatch(&Request {
            method: "POST".into(),
            path: "/api/4.0/login".into(),
            content_type: Some("application/x-www-form-urlencoded".into()),
            body: format!(
                "client_id={}&client_secret={}",
                st.admin_client_id, st.admin_client_secret
            )
            .into_bytes(),
            ..Request::default()
        });
        assert_eq!(r.status, 200, "{r:?}");
        let body = r.body.unwrap_or_default();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], st.token_ttl.as_secs());
        body["access_token"].as_str().unwrap_or_default().to_owned()
    }

    fn call(st: &mut State, tok: &str, method: &str, path_and_query: &str, body: Option<Value>) -> Response {
        let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
        st.handle_now(&Request {
            method: method.into(),
            path: format!("/api/4.0{path}"),
            query: query.into(),
            authorization: Some(format!("token {tok}")),
            content_type: body.as_ref().map(|_| "application/json".into()),
            body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        })
    }

    #[test]
    fn login_accepts_body_and_deprecated_query_and_rejects_bad_credentials() {
        let mut st = state();
        token(&mut st);
        let q = format!(
            "client_id={}&client_secret={}",
            st.admin_client_id, st.admin_client_secret
        );
        let r = st.dispatch(&Request {
            method: "POST".into(),
            path: "/api/4.0/login".into(),
            query: q,
            ..Request::default()
        });
        assert_eq!(r.status, 200);
        let bad = format!("client_id={}&client_secret=nope", st.admin_client_id);
        let r = st.dispatch(&Request {
            method: "POST".into(),
            path: "/api/4.0/login".into(),
            content_type: Some("application/x-www-form-urlencoded".into()),
            body: bad.into_bytes(),
            ..Request::default()
        });
        assert_eq!(r.status, 404);
        let r = st.dispatch(&Request {
            method: "POST".into(),
            path: "/api/4.0/login".into(),
            ..Request::default()
        });
        assert_eq!(r.status, 400);
    }

    #[test]
    fn auth_requires_a_live_token_in_token_or_bearer_form() {
        let mut st = state();
        let tok = token(&mut st);
        let get = |st: &mut State, auth: Option<String>| {
            st.dispatch(&Request {
                method: "GET".into(),
                path: "/api/4.0/roles".into(),
                authorization: auth,
                ..Request::default()
            })
        };
        let r = get(&mut st, None);
        assert_eq!(r.status, 401);
        assert_eq!(
            r.body.as_ref().map(|b| b["message"].clone()),
            Some(json!("Requires authentication."))
        );
        assert!(
            r.body
                .as_ref()
                .is_some_and(|b| b.get("documentation_url").is_some())
        );
        assert_eq!(get(&mut st, Some(format!("token {tok}"))).status, 200);
        assert_eq!(get(&mut st, Some(format!("Bearer {tok}"))).status, 200);
        assert_eq!(get(&mut st, Some(format!("Basic {tok}"))).status, 401);
        assert_eq!(get(&mut st, Some("token wrong".into())).status, 401);
        st.expire_tokens();
        assert_eq!(get(&mut st, Some(format!("token {tok}"))).status, 401);
        let tok = token(&mut st);
        st.token_ttl = Duration::ZERO;
        let short = token(&mut st);
        assert_eq!(
            get(&mut st, Some(format!("token {short}"))).status,
            401,
            "expired token"
        );
        assert_eq!(get(&mut st, Some(format!("token {tok}"))).status, 200);
    }

    /// As in Looker: a token lives only as long as the API3 key it was issued for.
    #[test]
    fn deleting_the_key_ends_its_tokens_and_its_logins() {
        let mut st = state();
        let tok = token(&mut st);
        let admin = st.admin_user;
        assert_eq!(call(&mut st, &tok, "GET", "/user", None).status, 200);
        let key = st.users[&admin].api3[0].id;
        let other = st.add_api3_key(&admin.to_string());
        let r = call(
            &mut st,
            &tok,
            "DELETE",
            &format!("/users/{admin}/credentials_api3/{key}"),
            None,
        );
        assert_eq!(r.status, 204, "{r:?}");
        assert_eq!(call(&mut st, &tok, "GET", "/user", None).status, 401);
        let r = st.dispatch(&Request {
            method: "POST".into(),
            path: "/api/4.0/login".into(),
            query: format!(
                "client_id={}&client_secret={}",
                st.admin_client_id, st.admin_client_secret
            ),
            ..Request::default()
        });
        assert_eq!(r.status, 404, "the deleted key cannot log in");
        let (id, secret) = st.api3_credentials(&other).unwrap();
        let r = st.dispatch(&Request {
            method: "POST".into(),
            path: "/api/4.0/login".into(),
            query: format!("client_id={id}&client_secret={secret}"),
            ..Request::default()
        });
        assert_eq!(r.status, 200, "another key of the same user still works");
    }

    #[test]
    fn non_admin_keys_log_in_but_get_403() {
        let mut st = state();
        let u = st.add_user(Some("u@x.com"), "U", "Ser");
        let key = st.add_api3_key(&u);
        let (id, secret) = st.api3_credentials(&key).unwrap_or_default();
        let r = st.dispatch(&Request {
            method: "POST".into(),
            path: "/api/4.0/login".into(),
            query: format!("client_id={id}&client_secret={secret}"),
            ..Request::default()
        });
        let tok = r.body.unwrap_or_default()["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(call(&mut st, &tok, "GET", "/user", None).status, 200);
        assert_eq!(call(&mut st, &tok, "GET", "/roles", None).status, 403);
        // A disabled user's key still exists but cannot log in.
        st.set_disabled(&u, true);
        assert_eq!(call(&mut st, &tok, "GET", "/user", None).status, 401);
        assert!(st.api3_credentials(&key).is_some());
    }

    #[test]
    fn fault_is_decided_before_any_state_change() {
        let mut st = state();
        let tok = token(&mut st);
        let before = st.users.len();
        st.set_retry_after_secs(3);
        st.set_fault_rate(1.0, 42);
        let mut seen = BTreeSet::new();
        for _ in 0..50 {
            let r = call(&mut st, &tok, "POST", "/users", Some(json!({"first_name": "X"})));
            assert!([429, 500, 503].contains(&r.status), "{r:?}");
            if r.status == 429 {
                assert_eq!(r.retry_after, Some(3));
            }
            seen.insert(r.status);
        }
        assert_eq!(seen.len(), 3, "all fault kinds drawn");
        assert_eq!(st.users.len(), before, "no user was created by a faulted call");
        st.set_fault_rate(0.0, 0);
        st.fail_next(500, 1);
        let u = st.add_user(Some("d@x.com"), "D", "U");
        let r = call(
            &mut st,
            &tok,
            "PATCH",
            &format!("/users/{u}"),
            Some(json!({"is_disabled": true})),
        );
        assert_eq!(r.status, 500);
        assert!(!st.view_by_id(&u).is_some_and(|v| v.is_disabled));
        let r = call(
            &mut st,
            &tok,
            "PATCH",
            &format!("/users/{u}"),
            Some(json!({"is_disabled": true})),
        );
        assert_eq!(r.status, 200);
        assert!(st.view_by_id(&u).is_some_and(|v| v.is_disabled));
    }

    #[test]
    fn fault_rate_is_seeded_and_roughly_proportional() {
        let draw = |seed| {
            let mut f = state().faults;
            f.rate = 0.2;
            f.rng = seed;
            (0..1000).map(|_| f.decide()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let faults = draw(7).iter().filter(|f| f.is_some()).count();
        assert!((120..280).contains(&faults), "{faults}");
    }

    #[test]
    fn search_escapes_and_fields() {
        let mut st = state();
        let tok = token(&mut st);
        st.add_user(Some("axb@x.com"), "A", "X");
        let ab = st.add_user(Some("a_b@x.com"), "A", "B");
        let r = call(
            &mut st,
            &tok,
            "GET",
            "/users/search?email=a_b%40x.com&fields=id",
            None,
        );
        assert_eq!(
            r.body.as_ref().and_then(Value::as_array).map(Vec::len),
            Some(2),
            "unescaped _ is a wildcard"
        );
        let r = call(
            &mut st,
            &tok,
            "GET",
            "/users/search?email=A%5C_B%40X.COM&fields=id,email",
            None,
        );
        assert_eq!(r.body, Some(json!([{"id": ab, "email": "a_b@x.com"}])));
        let r = call(
            &mut st,
            &tok,
            "GET",
            "/users/search?email=%25%40x.com&sorts=email+desc&limit=1",
            None,
        );
        assert_eq!(r.body.unwrap_or_default()[0]["email"], "axb@x.com");
        let r = call(&mut st, &tok, "GET", "/users/search?is_disabled=maybe", None);
        assert_eq!(r.status, 400);
    }

    #[test]
    fn disabling_keeps_sessions_and_keys() {
        let mut st = state();
        let tok = token(&mut st);
        let u = st.add_user(Some("s@x.com"), "S", "K");
        let s = st.add_session(&u);
        let k = st.add_api3_key(&u);
        let r = call(
            &mut st,
            &tok,
            "PATCH",
            &format!("/users/{u}"),
            Some(json!({"is_disabled": true})),
        );
        assert_eq!(r.status, 200);
        let v = st.view_by_email("S@X.com").unwrap_or_else(|| panic!("user"));
        assert!(v.is_disabled);
        assert_eq!(v.session_ids, vec![s.clone()]);
        assert_eq!(v.api3_key_ids, vec![k]);
        assert_eq!(
            call(&mut st, &tok, "DELETE", &format!("/users/{u}/sessions/{s}"), None).status,
            204
        );
        assert_eq!(
            call(&mut st, &tok, "DELETE", &format!("/users/{u}/sessions/{s}"), None).status,
            404
        );
    }

    #[test]
    fn a_create_may_carry_email_credentials_atomically() {
        let mut st = state();
        let tok = token(&mut st);
        st.add_user(Some("taken@x.com"), "T", "K");
        let before = st.users.len();
        let body = json!({"first_name": "N", "credentials_email": {"email": "taken@x.com"}});
        assert_eq!(call(&mut st, &tok, "POST", "/users", Some(body)).status, 409);
        let body = json!({"credentials_email": {"email": "new@x.com", "bogus": 1}});
        assert_eq!(call(&mut st, &tok, "POST", "/users", Some(body)).status, 422);
        let body = json!({"credentials_email": "new@x.com"});
        assert_eq!(call(&mut st, &tok, "POST", "/users", Some(body)).status, 422);
        assert_eq!(st.users.len(), before, "a rejected create creates nothing");
        let body = json!({"first_name": "N", "credentials_email": {"email": "new@x.com"}});
        let r = call(&mut st, &tok, "POST", "/users", Some(body));
        assert_eq!(r.status, 200);
        let v = st
            .view_by_email("new@x.com")
            .unwrap_or_else(|| panic!("created with its email"));
        assert_eq!(v.first_name.as_deref(), Some("N"));
        let cred = format!("/users/{}/credentials_email", v.id);
        assert_eq!(
            call(
                &mut st,
                &tok,
                "POST",
                &cred,
                Some(json!({"email": "again@x.com"}))
            )
            .status,
            409,
            "the user already has email credentials"
        );
    }

    #[test]
    fn bodies_are_validated() {
        let mut st = state();
        let tok = token(&mut st);
        let u = st.add_user(Some("v@x.com"), "V", "A");
        let p = format!("/users/{u}");
        assert_eq!(
            call(&mut st, &tok, "PATCH", &p, Some(json!({"is_disabled": "yes"}))).status,
            422
        );
        assert_eq!(
            call(&mut st, &tok, "PATCH", &p, Some(json!({"disabled": true}))).status,
            422
        );
        assert_eq!(
            call(&mut st, &tok, "PATCH", &p, Some(json!({"email": "n@x.com"}))).status,
            422
        );
        assert_eq!(call(&mut st, &tok, "PATCH", &p, Some(json!([true]))).status, 400);
        assert_eq!(
            call(&mut st, &tok, "POST", "/users", Some(json!({"first_name": 5}))).status,
            422
        );
        let r = st.handle_now(&Request {
            method: "PATCH".into(),
            path: format!("/api/4.0{p}"),
            authorization: Some(format!("token {tok}")),
            content_type: Some("application/json".into()),
            body: b"{not json".to_vec(),
            ..Request::default()
        });
        assert_eq!(r.status, 400);
        let roles = format!("/users/{u}/roles");
        assert_eq!(
            call(&mut st, &tok, "PUT", &roles, Some(json!(["999"]))).status,
            422
        );
        assert_eq!(call(&mut st, &tok, "PUT", &roles, Some(json!([1]))).status, 422);
        assert_eq!(
            call(&mut st, &tok, "PUT", &roles, Some(json!({"ids": []}))).status,
            400
        );
        let cred = format!("/users/{u}/credentials_email");
        assert_eq!(
            call(&mut st, &tok, "POST", &cred, Some(json!({"email": "x@x.com"}))).status,
            409
        );
        let other = st.add_user(None, "O", "T");
        let cred = format!("/users/{other}/credentials_email");
        assert_eq!(
            call(&mut st, &tok, "POST", &cred, Some(json!({"email": "V@x.com"}))).status,
            409
        );
        assert_eq!(
            call(&mut st, &tok, "POST", &cred, Some(json!({"email": "nope"}))).status,
            422
        );
        assert_eq!(
            call(&mut st, &tok, "POST", &cred, Some(json!({"email": "o@x.com"}))).status,
            200
        );
        assert_eq!(call(&mut st, &tok, "GET", "/nope", None).status, 404);
        assert_eq!(call(&mut st, &tok, "PUT", "/users", None).status, 405);
    }

    #[test]
    fn roles_and_attribute_values() {
        let mut st = state();
        let tok = token(&mut st);
        let u = st.add_user(Some("r@x.com"), "R", "A");
        let (r1, r2) = (st.add_role("viewer"), st.add_role("developer"));
        let g = st.add_group("eng");
        st.set_group_roles(&g, &[&r2]);
        st.add_user_to_group(&u, &g);
        st.set_direct_roles(&u, &[&r1]);
        let direct = call(
            &mut st,
            &tok,
            "GET",
            &format!("/users/{u}/roles?direct_association_only=true&fields=id"),
            None,
        );
        assert_eq!(direct.body, Some(json!([{"id": r1}])));
        let all = call(&mut st, &tok, "GET", &format!("/users/{u}/roles?fields=id"), None);
        assert_eq!(all.body, Some(json!([{"id": r1}, {"id": r2}])));
        let (a1, a2) = (st.add_user_attribute("region"), st.add_user_attribute("team"));
        st.set_user_attribute_default(&a2, Some("none"));
        st.set_user_attribute(&u, &a1, Some("eu"));
        let path = format!(
            "/users/{u}/attribute_values?user_attribute_ids={a1}%2C{a2}&fields=user_attribute_id,value,source"
        );
        let r = call(&mut st, &tok, "GET", &path, None);
        assert_eq!(
            r.body,
            Some(json!([
                {"user_attribute_id": a1, "value": "eu", "source": "user"},
                {"user_attribute_id": a2, "value": "none", "source": "default"}
            ]))
        );
    }

    /// Issue 14: the one search Gatehouse makes carries what a plan needs, `role_ids` being the
    /// direct roles (a group's roles are the group's), and `fields` keeps only what is asked.
    #[test]
    fn search_fields_carry_direct_role_ids_groups_sessions_and_keys() {
        let mut st = state();
        let tok = token(&mut st);
        let u = st.add_user(Some("f@x.com"), "F", "S");
        let (r1, r2) = (st.add_role("viewer"), st.add_role("developer"));
        let g = st.add_group("eng");
        st.set_group_roles(&g, &[&r2]);
        st.add_user_to_group(&u, &g);
        st.set_direct_roles(&u, &[&r1]);
        let r = call(
            &mut st,
            &tok,
            "GET",
            "/users/search?email=f%40x.com&fields=id,group_ids,role_ids,sessions(id),credentials_api3",
            None,
        );
        let users = r.body.unwrap_or_default();
        let found = &users[0];
        let mut keys: Vec<&String> = found.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        keys.sort();
        assert_eq!(
            keys,
            ["credentials_api3", "group_ids", "id", "role_ids", "sessions"]
        );
        assert_eq!(found["role_ids"], json!([r1]), "direct roles only");
        assert_eq!(found["group_ids"], json!([g]));
    }

    /// Issue 16: SSO credentials as the spec shapes them, found by `user_for_credential` on
    /// their id field exactly (a percent-encoded id too), 404 otherwise.
    #[test]
    fn sso_credentials_are_found_by_their_idp_id() {
        let mut st = state();
        let tok = token(&mut st);
        let u = st.add_user(None, "Sso", "Only");
        st.add_sso_credential(&u, "saml", "auth0|J.Doe@idp", Some("jd@other.example.org"));
        st.add_sso_credential(&u, "google", "1077", Some("jd@example.com"));
        let get = |st: &mut State, p: &str| call(st, &tok, "GET", p, None);
        let r = get(
            &mut st,
            "/users/credential/saml/auth0%7CJ.Doe%40idp?fields=id,credentials_saml",
        );
        assert_eq!(r.status, 200);
        let body = r.body.unwrap();
        assert_eq!(body["id"], json!(u));
        let saml = &body["credentials_saml"];
        assert_eq!(saml["saml_user_id"], "auth0|J.Doe@idp");
        assert_eq!(saml["email"], "jd@other.example.org");
        assert_eq!(saml["type"], "saml");
        assert_eq!(saml["is_disabled"], false);
        for p in [
            "/users/credential/saml/auth0%7Cj.doe%40idp",
            "/users/credential/oidc/auth0%7CJ.Doe%40idp",
            "/users/credential/saml/1077",
        ] {
            assert_eq!(get(&mut st, p).status, 404, "{p}");
        }
        let r = get(&mut st, &format!("/users/{u}"));
        let body = r.body.unwrap();
        assert_eq!(body["credentials_google"]["google_user_id"], "1077");
        assert_eq!(body["credentials_google"]["domain"], "example.com");
        assert_eq!(body["credentials_oidc"], Value::Null);
        assert_eq!(body["credentials_email"], Value::Null);
        let r = get(&mut st, "/users/credential/google/1077?fields=id");
        assert_eq!(r.body, Some(json!({"id": u})));
    }

    #[test]
    fn tour_of_the_remaining_routes() {
        let mut st = state();
        let tok = token(&mut st);
        let u = st.add_user(Some("tour@x.com"), "Tour", "Guide");
        let nomail = st.add_user(None, "No", "Mail");
        let g = st.add_group("eng");
        let a = st.add_user_attribute("region");
        let get = |st: &mut State, p: &str| call(st, &tok, "GET", p, None);

        let r = get(&mut st, &format!("/users?ids={u},{nomail}&fields=id,email"));
        assert_eq!(
            r.body,
            Some(json!([{"id": u, "email": "tour@x.com"}, {"id": nomail, "email": null}]))
        );
        let r = get(
            &mut st,
            &format!("/users/{u}?fields=id,display_name,credentials_email(email)"),
        );
        assert_eq!(
            r.body,
            Some(
                json!({"id": u, "display_name": "Tour Guide", "credentials_email": {"email": "tour@x.com"}})
            )
        );
        assert_eq!(get(&mut st, "/users/424242").status, 404);
        assert_eq!(get(&mut st, "/users/abc").status, 404);
        let r = get(&mut st, "/users/search?email=IS+NULL&fields=id");
        assert_eq!(r.body, Some(json!([{"id": nomail}])));
        let r = get(
            &mut st,
            "/users/search?first_name=tour&last_name=mail&filter_or=true&fields=id",
        );
        assert_eq!(r.body, Some(json!([{"id": u}, {"id": nomail}])));
        let r = get(&mut st, "/users/search?fields=id&sorts=id&per_page=1&page=2");
        assert_eq!(
            r.body,
            Some(json!([{"id": u}])),
            "page 2 of 1 is the second user (after the admin)"
        );
        let r = get(&mut st, "/users/search?full_name=tour%25&fields=id");
        assert_eq!(r.body, Some(json!([{"id": u}])));

        let r = get(&mut st, "/users/credential/email/TOUR@x.com?fields=id");
        assert_eq!(r.body, Some(json!({"id": u})));
        assert_eq!(get(&mut st, "/users/credential/email/nobody@x.com").status, 404);
        assert_eq!(get(&mut st, "/users/credential/saml/x").status, 404);

        let s = st.add_session(&u);
        let r = get(&mut st, &format!("/users/{u}/sessions?fields=id"));
        assert_eq!(r.body, Some(json!([{"id": s}])));
        assert_eq!(get(&mut st, &format!("/users/{u}/sessions/{s}")).status, 200);

        let r = call(
            &mut st,
            &tok,
            "POST",
            &format!("/users/{u}/credentials_api3"),
            None,
        );
        let body = r.body.unwrap_or_default();
        let kid = body["id"].as_str().unwrap_or_default().to_owned();
        assert!(body["client_secret"].as_str().is_some_and(|s| !s.is_empty()));
        let r = get(&mut st, &format!("/users/{u}/credentials_api3/{kid}"));
        assert!(
            r.body.is_some_and(|b| b.get("client_secret").is_none()),
            "secret shown only at creation"
        );
        let r = get(&mut st, &format!("/users/{u}/credentials_api3?fields=id"));
        assert_eq!(r.body, Some(json!([{"id": kid}])));
        assert_eq!(
            call(
                &mut st,
                &tok,
                "DELETE",
                &format!("/users/{u}/credentials_api3/{kid}"),
                None
            )
            .status,
            204
        );
        assert_eq!(
            call(
                &mut st,
                &tok,
                "DELETE",
                &format!("/users/{u}/credentials_api3/{kid}"),
                None
            )
            .status,
            404
        );

        let r = call(
            &mut st,
            &tok,
            "POST",
            &format!("/groups/{g}/users"),
            Some(json!({"user_id": u})),
        );
        assert_eq!(
            (r.status, r.body.map(|b| b["group_ids"].clone())),
            (200, Some(json!([g])))
        );
        let r = call(
            &mut st,
            &tok,
            "POST",
            &format!("/groups/{g}/users"),
            Some(json!({"user_id": 5})),
        );
        assert_eq!(r.status, 422);
        let r = get(&mut st, &format!("/groups/{g}/users?fields=id"));
        assert_eq!(r.body, Some(json!([{"id": u}])));
        let r = get(&mut st, &format!("/groups?ids={g}&fields=id,name,user_count"));
        assert_eq!(r.body, Some(json!([{"id": g, "name": "eng", "user_count": 1}])));
        assert_eq!(
            call(&mut st, &tok, "DELETE", &format!("/groups/{g}/users/{u}"), None).status,
            204
        );
        assert_eq!(
            call(&mut st, &tok, "DELETE", &format!("/groups/{g}/users/{u}"), None).status,
            204
        );
        assert_eq!(
            call(
                &mut st,
                &tok,
                "DELETE",
                &format!("/groups/424242/users/{u}"),
                None
            )
            .status,
            404
        );

        let r = get(&mut st, "/user_attributes?fields=id,name");
        assert_eq!(r.body, Some(json!([{"id": a, "name": "region"}])));
        // The 4.0 `UserAttribute`'s access and default, per attribute.
        let shown = |st: &mut State| {
            get(
                st,
                "/user_attributes?fields=name,default_value,user_can_view,user_can_edit",
            )
            .body
        };
        assert_eq!(
            shown(&mut st),
            Some(
                json!([{"name": "region", "default_value": null, "user_can_view": true, "user_can_edit": false}])
            )
        );
        st.set_user_attribute_access(&a, false, true);
        st.set_user_attribute_default(&a, Some("ALL"));
        assert_eq!(
            shown(&mut st),
            Some(
                json!([{"name": "region", "default_value": "ALL", "user_can_view": true, "user_can_edit": true}])
            )
        );
        st.set_user_attribute_access(&a, true, false);
        st.set_user_attribute_default(&a, None);
        let p = format!("/users/{u}/attribute_values/{a}");
        let r = call(&mut st, &tok, "PATCH", &p, Some(json!({"value": "eu"})));
        assert_eq!(
            (r.status, r.body.map(|b| b["source"].clone())),
            (200, Some(json!("user")))
        );
        assert_eq!(
            call(&mut st, &tok, "PATCH", &p, Some(json!({"value": 1}))).status,
            422
        );
        assert_eq!(
            call(&mut st, &tok, "PATCH", &p, Some(json!({"source": "user"}))).status,
            422
        );
        assert_eq!(call(&mut st, &tok, "DELETE", &p, None).status, 204);
        assert!(st.view_by_id(&u).is_some_and(|v| v.attribute_values.is_empty()));
        let r = get(
            &mut st,
            &format!("/users/{u}/attribute_values?include_unset=true&fields=user_attribute_id,value"),
        );
        assert_eq!(r.body, Some(json!([{"user_attribute_id": a, "value": null}])));

        let cred = format!("/users/{u}/credentials_email");
        let r = call(
            &mut st,
            &tok,
            "PATCH",
            &cred,
            Some(json!({"email": "moved@x.com"})),
        );
        assert_eq!(r.status, 200);
        assert!(st.view_by_email("moved@x.com").is_some());
        assert_eq!(call(&mut st, &tok, "DELETE", &cred, None).status, 204);
        assert_eq!(get(&mut st, &cred).status, 404);

        let admin = st.admin_user.to_string();
        assert_eq!(
            call(&mut st, &tok, "DELETE", &format!("/users/{admin}"), None).status,
            403
        );
        assert_eq!(
            call(&mut st, &tok, "DELETE", &format!("/users/{u}"), None).status,
            204
        );
        assert!(st.view_by_id(&u).is_none());
        assert_eq!(call(&mut st, &tok, "DELETE", "/logout", None).status, 204);
        assert_eq!(get(&mut st, "/roles").status, 401);
    }
    /// What Looker (Google Cloud core)'s first-login run asks (issue 14): the people's users
    /// newest first, ids compared as numbers (`9` before `10`), paged with `limit`/`offset`,
    /// `is_service_account=false` keeping every user (the fake has no service accounts).
    #[test]
    fn users_newest_first_by_numeric_id() {
        let mut st = state();
        let tok = token(&mut st);
        let ids: Vec<String> = (0..12)
            .map(|i| st.add_user(Some(&format!("u{i}@x.com")), "U", "N"))
            .collect();
        let newest: Vec<u64> = ids.iter().map(|i| i.parse().unwrap()).collect();
        assert!(
            newest.iter().any(|i| *i < 10) && newest.iter().any(|i| *i >= 10),
            "{ids:?}"
        );
        let r = call(
            &mut st,
            &tok,
            "GET",
            "/users/search?is_service_account=false&sorts=id+desc&fields=id,email&limit=2&offset=1",
            None,
        );
        assert_eq!(
            r.body,
            Some(json!([
                {"id": ids[10], "email": "u10@x.com"},
                {"id": ids[9], "email": "u9@x.com"},
            ]))
        );
        let r = call(
            &mut st,
            &tok,
            "GET",
            "/users/search?sorts=id+desc&fields=id",
            None,
        );
        let all: Vec<u64> = r
            .body
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(all.len(), 13, "the admin and the 12: {all:?}");
        assert!(
            all.windows(2).all(|w| w[0] > w[1]),
            "numeric, descending: {all:?}"
        );
        let r = call(
            &mut st,
            &tok,
            "GET",
            "/users/search?is_service_account=true&fields=id",
            None,
        );
        assert_eq!(r.body, Some(json!([])));
    }
}
