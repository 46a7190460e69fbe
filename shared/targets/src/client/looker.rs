//! Looker API 4.0 client: the [`LookerPort`] the engine reads and writes Looker through.
//!
//! * Authentication: `POST /login` with the API3 `client_id`/`client_secret` in a form body; the
//!   token is reused until shortly before `expires_in`, one login at a time; a 401 on any call
//!   triggers one re-login and one retry of that call.
//! * Reads are batched: `find_user` is one `GET /users/search` whose `fields` carry the groups,
//!   the direct roles (`role_ids`), sessions and API3 keys (plus, only when the plan needs them,
//!   the user-set attribute values); `catalog` is one concurrent list call per kind of object
//!   the policy names ([`CatalogKinds`]), cached for `catalog_ttl`.
//! * `execute` performs exactly the call `LookerOp::http` renders, so a printed plan and the
//!   client cannot disagree. No retries here: the engine owns the retry policy.
//! * Every failure is classified once into an [`ErrorKind`]; messages come from Looker's
//!   `Error.message` and never contain the client secret or the access token.
//! * Every HTTP call increments `gatehouse_looker_calls_total{method, endpoint, status}` where
//!   `endpoint` is the templated path (`/users/{id}/sessions/{id}`), and the client's
//!   [`CallMeter`] (what the monthly admin-API budget counts; login included).

use crate::client::looker_pages::{EmailCredential, OtherCredentials};
use gatehouse_domain::looker::{
    Catalog, ErrorKind, LookerError, LookerOp, LookerUser, Method, ReadNeeds, UserAttributeSettings, UserRef,
};
use gatehouse_domain::ports::LookerPort;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The `fields` of the one search call `find_user` makes.
/// `role_ids` are the user's direct roles (`User.role_ids`; roles held through a group are the
/// group's), so no `GET /users/{id}/roles` is needed (issue 14).
pub const SEARCH_FIELDS: &str =
    "id,email,is_disabled,group_ids,role_ids,credentials_api3,sessions,credentials_email";
/// [`SEARCH_FIELDS`] plus every credential's `logged_in_at` and `created_at` (the ones
/// `PAGE_FIELDS` reads for reconcile), when the plan needs the login times (`[inactivity]`,
/// issue 15): the same one search call, a few more fields.
pub const SEARCH_FIELDS_WITH_LOGINS: &str = "id,email,is_disabled,group_ids,role_ids,credentials_api3,sessions,credentials_email,\
credentials_saml(logged_in_at,created_at),credentials_google(logged_in_at,created_at),\
credentials_oidc(logged_in_at,created_at),credentials_ldap(logged_in_at,created_at),\
credentials_looker_openid(logged_in_at,created_at)";

/// The `fields` of a user read for `needs`.
fn search_fields(needs: &ReadNeeds) -> &'static str {
    match needs.logins {
        true => SEARCH_FIELDS_WITH_LOGINS,
        false => SEARCH_FIELDS,
    }
}
const API_PREFIX: &str = "/api/4.0";
/// Longest SSO credential id looked up (issue 16); a longer one is refused before the wire.
const MAX_CREDENTIAL_ID: usize = 512;
/// What is percent-encoded in a path segment: everything but RFC 3986 unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Longest Looker error message kept in a [`LookerError`].
const MAX_MESSAGE: usize = 500;

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_catalog_ttl() -> Duration {
    Duration::from_secs(300)
}

/// How to reach one Looker instance.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookerConfig {
    /// Instance base URL, e.g. `https://example.cloud.looker.com` (the client calls
    /// `{base_url}/api/4.0/...`; a trailing `/api/4.0` is tolerated).
    pub base_url: String,
    /// API3 client id (not secret: it names the key).
    pub client_id: String,
    pub client_secret: SecretString,
    /// Per-request timeout (connect + response); zero disables it.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// How long `catalog()` answers from its cache; zero disables the cache.
    #[serde(with = "humantime_serde", default = "default_catalog_ttl")]
    pub catalog_ttl: Duration,
    /// Calls in flight at once on this client and its clones (at least 1); the others wait
    /// their turn before they are sent (and counted).
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
}

/// The default of [`LookerConfig::max_concurrent_calls`]: the processor's old worker count,
/// which bounded Looker calls before the two were separate.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 8;

fn default_max_concurrent_calls() -> usize {
    DEFAULT_MAX_CONCURRENT_CALLS
}

impl fmt::Debug for LookerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookerConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("catalog_ttl", &self.catalog_ttl)
            .field("max_concurrent_calls", &self.max_concurrent_calls)
            .finish()
    }
}

/// Counts the HTTP requests a [`LookerClient`] sends (every one Looker meters, login included),
/// in memory: the budget task takes the count now and then and adds it to the state store.
/// Cheap to clone; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct CallMeter(Arc<AtomicU64>);

impl CallMeter {
    /// A meter at zero.
    pub fn new() -> Self {
        CallMeter::default()
    }

    /// Count one call.
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The calls counted since the last `take`, resetting the count to zero.
    pub fn take(&self) -> u64 {
        self.0.swap(0, Ordering::AcqRel)
    }

    /// Put back calls a failed flush could not store, so the next flush adds them.
    pub fn give_back(&self, calls: u64) {
        self.0.fetch_add(calls, Ordering::AcqRel);
    }

    /// The calls counted and not yet taken.
    pub fn pending(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// The access token and how long to use it.
struct Token {
    value: SecretString,
    fresh_until: Instant,
}

#[derive(Default)]
struct TokenSlot {
    token: Option<Token>,
    /// Bumped on every login, so concurrent 401s invalidate a token only once.
    generation: u64,
}

struct Inner {
    http: reqwest::Client,
    /// `{base_url}/api/4.0`
    api: String,
    base_url: String,
    client_id: String,
    client_secret: SecretString,
    catalog_ttl: Duration,
    token: Mutex<TokenSlot>,
    catalog: Mutex<Option<(Instant, Catalog)>>,
    catalog_kinds: CatalogKinds,
    meter: CallMeter,
    /// One permit per call in flight ([`LookerConfig::max_concurrent_calls`]).
    in_flight: tokio::sync::Semaphore,
}

/// Which lists `catalog()` reads: only the kinds of Looker object something names (the
/// policy, the `[safety]` protected groups and roles). All three by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogKinds {
    pub groups: bool,
    pub roles: bool,
    pub user_attributes: bool,
}

impl Default for CatalogKinds {
    fn default() -> Self {
        CatalogKinds {
            groups: true,
            roles: true,
            user_attributes: true,
        }
    }
}

/// Looker API 4.0 client. Cheap to clone (shared token and catalog cache).
#[derive(Clone)]
pub struct LookerClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for LookerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookerClient")
            .field("base_url", &self.inner.base_url)
            .field("client_id", &self.inner.client_id)
            .field("client_secret", &"[redacted]")
            .field("catalog_ttl", &self.inner.catalog_ttl)
            .finish_non_exhaustive()
    }
}

fn err(kind: ErrorKind, status: Option<u16>, message: impl Into<String>) -> LookerError {
    LookerError {
        kind,
        status,
        message: message.into(),
        retry_after: None,
        source: None,
    }
}

pub(crate) fn permanent(message: impl Into<String>) -> LookerError {
    err(ErrorKind::Permanent, None, message)
}

/// A 2xx answer whose body does not match the spec.
pub(crate) fn bad_body(endpoint: &str, e: impl fmt::Display) -> LookerError {
    permanent(format!("unexpected response body from {endpoint}: {e}"))
}

impl LookerClient {
    /// Validates the config and builds the HTTP client. Does no I/O (login happens on first use).
    /// Its calls are counted on a meter of its own ([`LookerClient::meter`]).
    pub fn new(cfg: LookerConfig) -> Result<Self, LookerError> {
        Self::with_meter(cfg, CallMeter::new())
    }

    /// Same as [`LookerClient::new`], counting every call on `meter` (shared with the budget).
    pub fn with_meter(cfg: LookerConfig, meter: CallMeter) -> Result<Self, LookerError> {
        let mut base = cfg.base_url.trim().trim_end_matches('/').to_owned();
        if let Some(stripped) = base.strip_suffix(API_PREFIX) {
            base = stripped.to_owned();
        }
        let url = reqwest::Url::parse(&base)
            .map_err(|e| permanent(format!("invalid looker base_url {base:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
            return Err(permanent(format!(
                "invalid looker base_url {base:?}: expected http(s)://host[/path]"
            )));
        }
        if cfg.client_id.trim().is_empty() || cfg.client_secret.expose_secret().is_empty() {
            return Err(permanent("looker client_id and client_secret must not be empty"));
        }
        let mut builder =
            reqwest::Client::builder().user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")));
        if !cfg.timeout.is_zero() {
            builder = builder
                .timeout(cfg.timeout)
                .connect_timeout(cfg.timeout.min(Duration::from_secs(10)));
        }
        let http = builder
            .build()
            .map_err(|e| permanent(format!("cannot build http client: {}", chain(&e))))?;
        Ok(LookerClient {
            inner: Arc::new(Inner {
                http,
                api: format!("{base}{API_PREFIX}"),
                base_url: base,
                client_id: cfg.client_id,
                client_secret: cfg.client_secret,
                catalog_ttl: cfg.catalog_ttl,
                token: Mutex::new(TokenSlot::default()),
                catalog: Mutex::new(None),
                catalog_kinds: CatalogKinds::default(),
                meter,
                in_flight: tokio::sync::Semaphore::new(cfg.max_concurrent_calls.max(1)),
            }),
        })
    }

    /// Read only these kinds in `catalog()` (the others stay empty). Call before any clone
    /// (clones share the catalog cache).
    pub fn with_catalog_kinds(mut self, kinds: CatalogKinds) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.catalog_kinds = kinds,
            None => tracing::warn!("looker client already shared; catalog kinds not narrowed"),
        }
        self
    }

    /// The meter this client counts its calls on.
    pub fn meter(&self) -> &CallMeter {
        &self.inner.meter
    }

    /// A live token and the login generation it came from. Holding the slot's lock across the
    /// login makes concurrent callers wait for one login instead of each logging in.
    async fn token(&self) -> Result<(SecretString, u64), LookerError> {
        let mut slot = self.inner.token.lock().await;
        if let Some(t) = &slot.token
            && Instant::now() < t.fresh_until
        {
            return Ok((t.value.clone(), slot.generation));
        }
        let token = self.login().await?;
        let value = token.value.clone();
        slot.token = Some(token);
        slot.generation += 1;
        Ok((value, slot.generation))
    }

    /// Forgets the token of `generation` (a 401 said it is dead), unless a newer one replaced it.
    async fn invalidate(&self, generation: u64) {
        let mut slot = self.inner.token.lock().await;
        if slot.generation == generation {
            slot.token = None;
        }
    }

    async fn login(&self) -> Result<Token, LookerError> {
        #[derive(Deserialize)]
        struct AccessToken {
            access_token: String,
            #[serde(default)]
            token_type: Option<String>,
            expires_in: i64,
        }
        let form = [
            ("client_id", self.inner.client_id.as_str()),
            ("client_secret", self.inner.client_secret.expose_secret()),
        ];
        let rb = self
            .inner
            .http
            .post(format!("{}/login", self.inner.api))
            .form(&form);
        let bytes = self
            .send(Method::Post, "/login", rb, None)
            .await
            .map_err(|mut e| {
                // Looker answers bad credentials with 404 (or 400): for a login that means the
                // credentials are wrong, not that something is missing.
                if matches!(e.status, Some(400 | 401 | 403 | 404)) {
                    e.kind = ErrorKind::Unauthorized;
                }
                e.message = format!("login failed: {}", e.message);
                e
            })?;
        let t: AccessToken = serde_json::from_slice(&bytes).map_err(|e| bad_body("/login", e))?;
        if t.access_token.is_empty() {
            return Err(bad_body("/login", "empty access_token"));
        }
        if let Some(tt) = &t.token_type
            && !tt.eq_ignore_ascii_case("bearer")
        {
            return Err(bad_body("/login", format!("token_type {tt:?}")));
        }
        tracing::debug!(expires_in = t.expires_in, "looker login");
        Ok(Token {
            value: SecretString::from(t.access_token),
            fresh_until: Instant::now() + use_for(t.expires_in),
        })
    }

    /// One authenticated call; on 401, one re-login and one retry.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, LookerError> {
        let (token, generation) = self.token().await?;
        let r = match self.call_with(&token, method, path, query, body).await {
            Err(e) if e.status == Some(401) => {
                tracing::debug!(endpoint = %endpoint_template(path), "looker answered 401, logging in again");
                self.invalidate(generation).await;
                let (token, _) = self.token().await?;
                self.call_with(&token, method, path, query, body).await
            }
            other => other,
        };
        // A write answered 404 may have used a catalog id that no longer exists (a group
        // deleted, or deleted and made again under the same name): the cached catalog is
        // dropped, so the retry resolves names afresh instead of waiting out `catalog_ttl`.
        if let Err(e) = &r
            && e.status == Some(404)
            && method != Method::Get
        {
            tracing::debug!(endpoint = %endpoint_template(path), "looker answered 404 to a write; the catalog is read again");
            *self.inner.catalog.lock().await = None;
        }
        r
    }

    async fn call_with(
        &self,
        token: &SecretString,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, LookerError> {
        let mut auth = reqwest::header::HeaderValue::try_from(format!("token {}", token.expose_secret()))
            .map_err(|_| permanent("access token is not a valid header value"))?;
        auth.set_sensitive(true);
        let mut rb = self
            .inner
            .http
            .request(reqwest_method(method), format!("{}{path}", self.inner.api))
            .header(reqwest::header::AUTHORIZATION, auth);
        if !query.is_empty() {
            rb = rb.query(query);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.send(method, path, rb, Some(token)).await
    }

    /// [`Self::send_counted`] in a client span: method, endpoint template and status only (never
    /// the query, body, token or secret).
    async fn send(
        &self,
        method: Method,
        path: &str,
        rb: reqwest::RequestBuilder,
        token: Option<&SecretString>,
    ) -> Result<Vec<u8>, LookerError> {
        use tracing::Instrument;
        let endpoint = endpoint_template(path);
        let span = tracing::info_span!(
            "looker",
            otel.name = %format!("{method} {endpoint}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            url.template = %endpoint,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let r = self
            .send_counted(method, path, rb, token)
            .instrument(span.clone())
            .await;
        if let Err(e) = &r {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", tracing::field::debug(e.kind));
        }
        r
    }

    /// Sends, counts and classifies. `token` is redacted from error messages.
    async fn send_counted(
        &self,
        method: Method,
        path: &str,
        rb: reqwest::RequestBuilder,
        token: Option<&SecretString>,
    ) -> Result<Vec<u8>, LookerError> {
        let endpoint = endpoint_template(path);
        // Held until the answer is read; the semaphore is never closed.
        let _permit = self.inner.in_flight.acquire().await;
        // Counted before the outcome is known: a request that timed out may still have been
        // metered by Looker, so the budget errs on the side of too many.
        self.inner.meter.record();
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                let label = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect_error"
                } else {
                    "error"
                };
                count(method, &endpoint, label.to_owned());
                tracing::debug!(%method, %endpoint, status = label, "looker call failed");
                return Err(self.redact(transport_error(e), token));
            }
        };
        let status = resp.status().as_u16();
        tracing::Span::current().record("http.response.status_code", status);
        count(method, &endpoint, status.to_string());
        tracing::debug!(%method, %endpoint, status, "looker call");
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, gatehouse_domain::clock::now()));
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.redact(transport_error(e), token))?;
        if (200..300).contains(&status) {
            Ok(bytes.to_vec())
        } else {
            Err(self.redact(classify(status, &bytes, retry_after), token))
        }
    }

    fn redact(&self, mut e: LookerError, token: Option<&SecretString>) -> LookerError {
        let secret = self.inner.client_secret.expose_secret();
        if !secret.is_empty() {
            e.message = e.message.replace(secret, "[redacted]");
        }
        if let Some(t) = token.map(ExposeSecret::expose_secret).filter(|t| !t.is_empty()) {
            e.message = e.message.replace(t, "[redacted]");
        }
        e
    }

    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, LookerError> {
        let bytes = self.call(Method::Get, path, query, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| bad_body(&endpoint_template(path), e))
    }

    /// How every user attribute is set up (`GET /user_attributes`): name, default value and
    /// whether users can edit their own value. Checked at start for the managed ones.
    pub async fn user_attribute_settings(&self) -> Result<Vec<UserAttributeSettings>, LookerError> {
        self.get_json(
            "/user_attributes",
            &[("fields", "name,default_value,user_can_edit")],
        )
        .await
    }

    async fn named(&self, path: &str) -> Result<BTreeMap<String, String>, LookerError> {
        #[derive(Deserialize)]
        struct NamedItem {
            id: String,
            #[serde(default)]
            name: Option<String>,
        }
        let items: Vec<NamedItem> = self.get_json(path, &[("fields", "id,name")]).await?;
        Ok(items.into_iter().filter_map(|i| Some((i.name?, i.id))).collect())
    }

    pub(crate) async fn user_set_attributes(
        &self,
        user_id: &str,
        attribute_ids: &[String],
    ) -> Result<BTreeMap<String, String>, LookerError> {
        #[derive(Deserialize)]
        struct AttrValue {
            #[serde(default)]
            user_attribute_id: Option<String>,
            #[serde(default)]
            value: Option<String>,
            #[serde(default)]
            source: Option<String>,
        }
        let path = format!("/users/{user_id}/attribute_values");
        let ids = attribute_ids.join(",");
        let values: Vec<AttrValue> = self
            .get_json(
                &path,
                &[
                    ("user_attribute_ids", &ids),
                    ("fields", "user_attribute_id,value,source"),
                ],
            )
            .await?;
        Ok(values
            .into_iter()
            .filter(|v| v.source.as_deref() == Some("user"))
            .filter_map(|v| {
                let id = v.user_attribute_id?;
                attribute_ids
                    .contains(&id)
                    .then(|| (id, v.value.unwrap_or_default()))
            })
            .collect())
    }
}

impl LookerClient {
    /// A user as read (`SEARCH_FIELDS`) plus the reads the plan needs, fetched concurrently.
    async fn snapshot(
        &self,
        u: SearchUser,
        needs: &ReadNeeds,
        endpoint: &str,
    ) -> Result<LookerUser, LookerError> {
        check_segment(&u.id).map_err(|m| bad_body(endpoint, m))?;
        let direct_role_ids = needs
            .direct_roles
            .then(|| u.role_ids.clone().unwrap_or_default().into_iter().collect());
        let user_attribute_values = match needs.attribute_ids.is_empty() {
            true => None,
            false => Some(self.user_set_attributes(&u.id, &needs.attribute_ids).await?),
        };
        let email = u
            .email
            .clone()
            .or_else(|| u.credentials_email.as_ref().and_then(|c| c.email.clone()));
        let logins = match needs.logins {
            true => u.logins.logins(u.credentials_email.as_ref()),
            false => None,
        };
        Ok(LookerUser {
            id: u.id,
            is_disabled: u.is_disabled,
            email,
            group_ids: u.group_ids.unwrap_or_default().into_iter().collect(),
            session_ids: u.sessions.unwrap_or_default().into_iter().map(|s| s.id).collect(),
            api3_key_ids: u
                .credentials_api3
                .unwrap_or_default()
                .into_iter()
                .map(|k| k.id)
                .collect(),
            direct_role_ids,
            user_attribute_values,
            logins: logins.map(Box::new),
        })
    }
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// A `User` as `SEARCH_FIELDS` returns it.
#[derive(Deserialize)]
struct SearchUser {
    id: String,
    #[serde(default)]
    email: Option<String>,
    is_disabled: bool,
    #[serde(default)]
    group_ids: Option<Vec<String>>,
    #[serde(default)]
    role_ids: Option<Vec<String>>,
    #[serde(default)]
    credentials_api3: Option<Vec<IdOnly>>,
    #[serde(default)]
    sessions: Option<Vec<IdOnly>>,
    /// `email`, and the login times when read ([`SEARCH_FIELDS_WITH_LOGINS`]).
    #[serde(default)]
    credentials_email: Option<EmailCredential>,
    /// The other credentials' login times ([`SEARCH_FIELDS_WITH_LOGINS`] only).
    #[serde(flatten)]
    logins: OtherCredentials,
}

impl SearchUser {
    fn has_email(&self, wanted: &str) -> bool {
        let same = |e: &str| e.to_lowercase() == wanted;
        self.email.as_deref().is_some_and(same)
            || self
                .credentials_email
                .as_ref()
                .and_then(|c| c.email.as_deref())
                .is_some_and(same)
    }
}

impl LookerPort for LookerClient {
    async fn catalog(&self) -> Result<Catalog, LookerError> {
        let ttl = self.inner.catalog_ttl;
        // Held across the fetch: concurrent callers share one fetch.
        let mut cache = self.inner.catalog.lock().await;
        if let Some((at, c)) = &*cache
            && at.elapsed() < ttl
        {
            return Ok(c.clone());
        }
        let kinds = self.inner.catalog_kinds;
        let list = |wanted: bool, path: &'static str| async move {
            match wanted {
                true => self.named(path).await,
                false => Ok(BTreeMap::new()),
            }
        };
        let (groups, roles, user_attributes) = tokio::try_join!(
            list(kinds.groups, "/groups"),
            list(kinds.roles, "/roles"),
            list(kinds.user_attributes, "/user_attributes")
        )?;
        let catalog = Catalog {
            groups,
            roles,
            user_attributes,
        };
        *cache = (!ttl.is_zero()).then(|| (Instant::now(), catalog.clone()));
        Ok(catalog)
    }

    async fn find_user(&self, email: &str, needs: &ReadNeeds) -> Result<Option<LookerUser>, LookerError> {
        let mut all = self.find_users(email, needs).await?.into_iter();
        let first = all.next();
        if let Some(u) = &first
            && all.next().is_some()
        {
            tracing::warn!(user_id = %u.id, "several looker users share one email; using the first");
        }
        Ok(first)
    }

    async fn find_users(&self, email: &str, needs: &ReadNeeds) -> Result<Vec<LookerUser>, LookerError> {
        let escaped = escape_like(email);
        let found: Vec<SearchUser> = self
            .get_json(
                "/users/search",
                &[("email", &escaped), ("fields", search_fields(needs))],
            )
            .await?;
        let wanted = email.to_lowercase();
        let matching: Vec<SearchUser> = found.into_iter().filter(|u| u.has_email(&wanted)).collect();
        let reads = matching
            .into_iter()
            .map(|u| self.snapshot(u, needs, "/users/search"));
        futures::future::try_join_all(reads).await
    }

    async fn user(&self, id: &str, needs: &ReadNeeds) -> Result<Option<LookerUser>, LookerError> {
        // An id that is not one path segment cannot name a Looker user: refused before the wire.
        check_segment(id).map_err(|m| bad_body("/users/{id}", m))?;
        let path = format!("/users/{id}");
        match self
            .get_json::<SearchUser>(&path, &[("fields", search_fields(needs))])
            .await
        {
            Ok(u) => self.snapshot(u, needs, "/users/{id}").await.map(Some),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn user_for_credential(
        &self,
        credential: gatehouse_domain::sso::SsoCredential,
        id: &str,
        needs: &ReadNeeds,
    ) -> Result<Option<LookerUser>, LookerError> {
        const ENDPOINT: &str = "/users/credential/{type}/{id}";
        if id.is_empty() || id.len() > MAX_CREDENTIAL_ID {
            return Err(permanent(format!(
                "an sso credential id must be 1 to {MAX_CREDENTIAL_ID} bytes"
            )));
        }
        // The id is the IdP's (an email, `auth0|42`, a DN): one percent-encoded path segment.
        let encoded = percent_encoding::utf8_percent_encode(id, SEGMENT);
        let path = format!("/users/credential/{}/{encoded}", credential.as_str());
        match self
            .get_json::<SearchUser>(&path, &[("fields", search_fields(needs))])
            .await
        {
            Ok(u) => self.snapshot(u, needs, ENDPOINT).await.map(Some),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn users_page(&self, offset: usize, limit: usize) -> Result<Vec<LookerUser>, LookerError> {
        self.read_users_page(offset, limit).await
    }

    async fn newest_users(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<gatehouse_domain::looker_core::SeenUser>, LookerError> {
        #[derive(Deserialize)]
        struct Seen {
            id: String,
            #[serde(default)]
            email: Option<String>,
        }
        let limit = limit.clamp(1, 1000).to_string();
        let offset = offset.to_string();
        let page: Vec<Seen> = self
            .get_json(
                "/users/search",
                &[
                    ("is_service_account", "false"),
                    ("sorts", "id desc"),
                    ("fields", "id,email"),
                    ("limit", &limit),
                    ("offset", &offset),
                ],
            )
            .await?;
        page.into_iter()
            .map(|u| {
                check_segment(&u.id).map_err(|m| bad_body("/users/search", m))?;
                Ok(gatehouse_domain::looker_core::SeenUser {
                    id: u.id,
                    email: u.email,
                })
            })
            .collect()
    }

    async fn attribute_values(
        &self,
        user_id: &str,
        attribute_ids: &[String],
    ) -> Result<BTreeMap<String, String>, LookerError> {
        self.read_attribute_values(user_id, attribute_ids).await
    }

    async fn content(
        &self,
        user_id: &str,
        needs: gatehouse_domain::handover::ContentNeeds,
    ) -> Result<gatehouse_domain::handover::LookerContent, LookerError> {
        self.read_content(user_id, needs).await
    }

    async fn execute(&self, user: &UserRef, op: &LookerOp) -> Result<Option<String>, LookerError> {
        if matches!(op, LookerOp::DeleteEverySession | LookerOp::DeleteEveryApiKey) {
            return Err(permanent("delete-every operations exist only in offline plans"));
        }
        let creates = matches!(op, LookerOp::CreateUser { .. });
        if !creates && !matches!(user, UserRef::Id(_)) {
            return Err(permanent(
                "the user of this operation is not resolved to a looker id",
            ));
        }
        let call = op.http(user);
        check_path(&call.path)?;
        let endpoint = endpoint_template(&call.path);
        let bytes = self
            .call(call.method, &call.path, &[], call.body.as_ref())
            .await?;
        // What the spec says a 2xx answers; a body that does not match is a Permanent error.
        let expect_array = match op {
            LookerOp::CreateUser { .. } => {
                let created: IdOnly = serde_json::from_slice(&bytes).map_err(|e| bad_body(&endpoint, e))?;
                check_segment(&created.id).map_err(|m| bad_body(&endpoint, m))?;
                return Ok(Some(created.id));
            }
            // `Role[]`
            LookerOp::SetRoles { .. } => true,
            // `CredentialsEmail`, `User`, `User`, `UserAttributeWithValue`
            LookerOp::CreateEmailCredentials { .. }
            | LookerOp::UpdateEmail { .. }
            | LookerOp::SetDisabled { .. }
            | LookerOp::AddToGroup { .. }
            | LookerOp::SetAttribute { .. } => false,
            // `LookWithQuery`, `Dashboard`, `ScheduledPlan`, `Alert`
            LookerOp::MoveLook { .. }
            | LookerOp::MoveDashboard { .. }
            | LookerOp::SetScheduledPlanOwner { .. }
            | LookerOp::DisableScheduledPlan { .. }
            | LookerOp::SetAlertOwner { .. }
            | LookerOp::DisableAlert { .. } => false,
            // 204 No Content (any body is ignored).
            _ => return Ok(None),
        };
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad_body(&endpoint, e))?;
        match (expect_array, body.is_array(), body.is_object()) {
            (true, true, _) | (false, _, true) => Ok(None),
            (true, ..) => Err(bad_body(&endpoint, "expected an array of roles")),
            (false, ..) => Err(bad_body(&endpoint, "expected an object")),
        }
    }
}

/// A new API3 key: the only time Looker shows its secret.
pub struct NewApi3Key {
    /// The credential's id (`/users/{user_id}/credentials_api3/{id}`).
    pub id: String,
    pub client_id: String,
    pub client_secret: SecretString,
}

impl fmt::Debug for NewApi3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewApi3Key")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish()
    }
}

/// An API3 key as listed (no secret).
#[derive(Debug, Clone, Deserialize)]
pub struct Api3KeyInfo {
    pub id: String,
    pub client_id: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub is_disabled: bool,
}

/// API3 keys of a (service-account) user, for the rotator.
impl LookerClient {
    /// `POST /users/{user_id}/credentials_api3`.
    pub async fn create_api3_key(&self, user_id: &str) -> Result<NewApi3Key, LookerError> {
        #[derive(Deserialize)]
        struct Created {
            id: String,
            client_id: String,
            client_secret: String,
        }
        check_segment(user_id).map_err(permanent)?;
        let path = format!("/users/{user_id}/credentials_api3");
        let body = serde_json::json!({ "purpose": "gatehouse rotation" });
        let bytes = self.call(Method::Post, &path, &[], Some(&body)).await?;
        let c: Created =
            serde_json::from_slice(&bytes).map_err(|e| bad_body(&endpoint_template(&path), e))?;
        Ok(NewApi3Key {
            id: c.id,
            client_id: c.client_id,
            client_secret: SecretString::from(c.client_secret),
        })
    }

    /// `GET /users/{user_id}/credentials_api3`.
    pub async fn list_api3_keys(&self, user_id: &str) -> Result<Vec<Api3KeyInfo>, LookerError> {
        check_segment(user_id).map_err(permanent)?;
        self.get_json(&format!("/users/{user_id}/credentials_api3"), &[])
            .await
    }

    /// `DELETE /users/{user_id}/credentials_api3/{key_id}`.
    pub async fn delete_api3_key(&self, user_id: &str, key_id: &str) -> Result<(), LookerError> {
        check_segment(user_id).map_err(permanent)?;
        check_segment(key_id).map_err(permanent)?;
        let path = format!("/users/{user_id}/credentials_api3/{key_id}");
        self.call(Method::Delete, &path, &[], None).await.map(|_| ())
    }

    /// Ids of a group's members (`GET /groups/{group_id}/users`).
    pub async fn group_user_ids(&self, group_id: &str) -> Result<Vec<String>, LookerError> {
        check_segment(group_id).map_err(permanent)?;
        let users: Vec<IdOnly> = self
            .get_json(&format!("/groups/{group_id}/users"), &[("fields", "id")])
            .await?;
        Ok(users.into_iter().map(|u| u.id).collect())
    }

    /// Ids of the users holding a role, directly or through a group (`GET /roles/{role_id}/users`).
    pub async fn role_user_ids(&self, role_id: &str) -> Result<Vec<String>, LookerError> {
        check_segment(role_id).map_err(permanent)?;
        let users: Vec<IdOnly> = self
            .get_json(
                &format!("/roles/{role_id}/users"),
                &[("fields", "id"), ("direct_association_only", "false")],
            )
            .await?;
        Ok(users.into_iter().map(|u| u.id).collect())
    }

    /// Log in with this client's key and return the id of the user it belongs to (`GET /user`).
    pub async fn whoami(&self) -> Result<String, LookerError> {
        let me: IdOnly = self.get_json("/user", &[("fields", "id")]).await?;
        Ok(me.id)
    }
}

/// How long a token with this `expires_in` (seconds) is used: until a tenth of its lifetime (at
/// most a minute) before Looker would reject it.
fn use_for(expires_in: i64) -> Duration {
    let lifetime = Duration::from_secs(u64::try_from(expires_in).unwrap_or(0));
    lifetime - (lifetime / 10).min(Duration::from_secs(60))
}

fn reqwest_method(m: Method) -> reqwest::Method {
    match m {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
    }
}

fn count(method: Method, endpoint: &str, status: String) {
    gatehouse_platform::events::looker_call(method, endpoint, status);
}

/// Path segments that are API words, not ids.
const LITERAL_SEGMENTS: &[&str] = &[
    "login",
    "logout",
    "user",
    "users",
    "search",
    "credential",
    "credentials_email",
    "credentials_api3",
    "sessions",
    "roles",
    "groups",
    "attribute_values",
    "user_attributes",
];

/// `/users/42/sessions/7` → `/users/{id}/sessions/{id}` (bounded metric label cardinality).
pub fn endpoint_template(path: &str) -> String {
    let mut out = String::new();
    for seg in path.split('/').skip(1) {
        out.push('/');
        out.push_str(if LITERAL_SEGMENTS.contains(&seg) {
            seg
        } else {
            "{id}"
        });
    }
    if out.is_empty() { "/".to_owned() } else { out }
}

/// Escapes Looker's search wildcards so the pattern matches only the literal text: `\` → `\\`,
/// `%` → `\%`, `_` → `\_`.
pub fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An id that is safe to put in a path segment as is.
pub(crate) fn check_segment(seg: &str) -> Result<(), String> {
    if !seg.is_empty()
        && seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(format!("{seg:?} is not a valid looker id"))
    }
}

/// Refuses paths with unresolved placeholders (`{id of ...}`) or unsafe ids.
fn check_path(path: &str) -> Result<(), LookerError> {
    if path.contains('{') {
        return Err(permanent(format!(
            "operation references something not resolved to a looker id: {path}"
        )));
    }
    path.split('/')
        .skip(1)
        .try_for_each(check_segment)
        .map_err(permanent)
}

/// `Retry-After` (shared with the Graph intake, which must not link this client).
pub use gatehouse_platform::http::parse_retry_after;

/// Looker's `Error` / `ValidationError` bodies.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<Vec<ErrorDetail>>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn looker_message(status: u16, body: &[u8]) -> String {
    let Ok(e) = serde_json::from_slice::<ErrorBody>(body) else {
        return format!("http {status} without a looker error body");
    };
    let mut msg = e.message.unwrap_or_else(|| format!("http {status}"));
    let details: Vec<String> = e
        .errors
        .unwrap_or_default()
        .into_iter()
        .map(|d| {
            let field = d.field.unwrap_or_default();
            match (d.code, d.message) {
                (_, Some(m)) => format!("{field}: {m}"),
                (Some(c), None) => format!("{field}: {c}"),
                (None, None) => field,
            }
        })
        .collect();
    if !details.is_empty() {
        msg = format!("{msg} ({})", details.join("; "));
    }
    if msg.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push('…');
    }
    msg
}

/// The one place a Looker HTTP status becomes an [`ErrorKind`].
pub fn classify_status(status: u16) -> ErrorKind {
    gatehouse_domain::error::classify_status(status)
}

fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> LookerError {
    let kind = classify_status(status);
    LookerError {
        kind,
        status: Some(status),
        message: looker_message(status, body),
        retry_after: if matches!(kind, ErrorKind::Throttled | ErrorKind::Transient) {
            retry_after
        } else {
            None
        },
        source: None,
    }
}

use gatehouse_domain::error::chain;

/// Timeouts, connection and body errors are transient; a request that cannot be built or a
/// body that cannot be decoded is permanent. The URL (it may carry an email) is left out.
fn transport_error(e: reqwest::Error) -> LookerError {
    let (kind, what) = if e.is_timeout() {
        (ErrorKind::Transient, "timed out")
    } else if e.is_connect() {
        (ErrorKind::Transient, "connection failed")
    } else if e.is_decode() {
        (ErrorKind::Permanent, "cannot decode looker response")
    } else if e.is_builder() {
        (ErrorKind::Permanent, "cannot build looker request")
    } else {
        (ErrorKind::Transient, "request failed")
    };
    // The cause stays a value (`source`); logs render the chain (`gatehouse_domain::error::chain`).
    LookerError {
        source: Some(std::sync::Arc::new(e.without_url())),
        ..err(kind, None, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_domain::looker::Named;

    #[test]
    fn endpoints_are_templated() {
        assert_eq!(
            endpoint_template("/users/42/sessions/7"),
            "/users/{id}/sessions/{id}"
        );
        assert_eq!(endpoint_template("/users/search"), "/users/search");
        assert_eq!(endpoint_template("/groups/3/users/9"), "/groups/{id}/users/{id}");
        assert_eq!(
            endpoint_template("/users/5/attribute_values/8"),
            "/users/{id}/attribute_values/{id}"
        );
        assert_eq!(endpoint_template("/login"), "/login");
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("a_b%c@x.com"), r"a\_b\%c@x.com");
        assert_eq!(escape_like(r"back\slash@x.com"), r"back\\slash@x.com");
        assert_eq!(escape_like("plain@x.com"), "plain@x.com");
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or_default();
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn statuses_are_classified_once() {
        assert_eq!(classify_status(429), ErrorKind::Throttled);
        for s in [500, 502, 503, 504] {
            assert_eq!(classify_status(s), ErrorKind::Transient);
        }
        assert_eq!(classify_status(401), ErrorKind::Unauthorized);
        assert_eq!(classify_status(403), ErrorKind::Unauthorized);
        assert_eq!(classify_status(404), ErrorKind::NotFound);
        assert_eq!(classify_status(409), ErrorKind::Conflict);
        for s in [400, 405, 422, 302] {
            assert_eq!(classify_status(s), ErrorKind::Permanent);
        }
        let e = classify(
            429,
            br#"{"message":"slow down","documentation_url":"x"}"#,
            Some(Duration::from_secs(2)),
        );
        assert_eq!(
            (e.kind, e.status, e.message.as_str()),
            (ErrorKind::Throttled, Some(429), "slow down")
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        let e = classify(404, b"<html>", Some(Duration::from_secs(2)));
        assert_eq!(e.retry_after, None);
        assert_eq!(e.message, "http 404 without a looker error body");
        let v = br#"{"message":"Validation Failed","errors":[{"field":"email","code":"invalid","message":"bad email"}],"documentation_url":"x"}"#;
        assert_eq!(
            classify(422, v, None).message,
            "Validation Failed (email: bad email)"
        );
    }

    #[test]
    fn unresolved_or_unsafe_paths_are_refused() {
        let op = LookerOp::AddToGroup {
            group: Named {
                name: "eng".into(),
                id: None,
            },
        };
        assert!(check_path(&op.http(&UserRef::Id("1".into())).path).is_err());
        assert!(check_path(&LookerOp::DeleteUser.http(&UserRef::New).path).is_err());
        assert!(check_path(&LookerOp::DeleteUser.http(&UserRef::Id("..".into())).path).is_err());
        assert!(check_path(&LookerOp::DeleteUser.http(&UserRef::Id("1?x=1".into())).path).is_err());
        assert!(check_path(&LookerOp::DeleteUser.http(&UserRef::Id("42".into())).path).is_ok());
    }

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        assert_eq!(use_for(3600), Duration::from_secs(3540));
        assert_eq!(use_for(100), Duration::from_secs(90));
        assert_eq!(use_for(0), Duration::ZERO);
        assert_eq!(use_for(-5), Duration::ZERO);
    }

    #[test]
    fn debug_hides_the_secret() {
        let cfg = LookerConfig {
            base_url: "https://looker.example.com/".into(),
            client_id: "id".into(),
            client_secret: SecretString::from("hunter2-secret".to_owned()),
            timeout: Duration::from_secs(5),
            catalog_ttl: Duration::from_secs(60),
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let client = LookerClient::new(cfg).unwrap_or_else(|e| panic!("{e}"));
        let dbg = format!("{client:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert_eq!(client.inner.api, "https://looker.example.com/api/4.0");
    }

    #[test]
    fn config_is_validated() {
        let cfg = |base: &str, secret: &str| LookerConfig {
            base_url: base.into(),
            client_id: "id".into(),
            client_secret: SecretString::from(secret.to_owned()),
            timeout: Duration::from_secs(5),
            catalog_ttl: Duration::ZERO,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
        };
        assert!(LookerClient::new(cfg("ftp://x", "s")).is_err());
        assert!(LookerClient::new(cfg("not a url", "s")).is_err());
        assert!(LookerClient::new(cfg("https://x", "")).is_err());
        let c = LookerClient::new(cfg("https://x/api/4.0", "s")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.inner.api, "https://x/api/4.0");
    }

    #[test]
    fn config_deserializes_with_humantime() {
        let cfg: LookerConfig = serde_json::from_value(serde_json::json!({
            "base_url": "https://x", "client_id": "id", "client_secret": "s", "timeout": "2s"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.timeout, Duration::from_secs(2));
        assert_eq!(cfg.catalog_ttl, Duration::from_secs(300));
        assert!(
            serde_json::from_value::<LookerConfig>(serde_json::json!({
                "base_url": "https://x", "client_id": "id", "client_secret": "s", "typo": 1
            }))
            .is_err()
        );
    }
}
