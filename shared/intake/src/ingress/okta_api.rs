//! A small client of the Okta management API (`/api/v1/...`) for the System Log catch-up:
//! `Authorization: SSWS <token>`, `Link: <…>; rel="next"` paging, and Okta's rate-limit headers
//! honoured (when `X-Rate-Limit-Remaining` reaches 0, or on 429, no request is sent before
//! `X-Rate-Limit-Reset`). The token never reaches a log, a `Debug` print or an error.

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use gatehouse_platform::config::{OktaApiConfig, OktaApiConnection, OktaServiceApp};
use gatehouse_platform::events::{self, TokenResult};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, LINK};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

/// Attempts at one page (429s and 5xx/transport failures together) before the poll gives up
/// until its next interval.
const MAX_ATTEMPTS: usize = 6;
/// A 429 without a usable `X-Rate-Limit-Reset` waits at least this long.
const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);
/// Never wait longer than this for a reset (Okta's windows are one minute).
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum OktaApiError {
    #[error(
        "okta refused the credentials ({status}): check okta.api.api_token (or the service app's granted scopes) and the admin role"
    )]
    Unauthorized { status: u16 },
    #[error("okta.api private key is not a usable RSA private key in PEM (PKCS#8 or PKCS#1): {0}")]
    Key(&'static str),
    #[error("okta refused the service app's token request ({status} {error}): {description}")]
    Token {
        status: u16,
        error: String,
        description: String,
    },
    #[error("okta.api: {0}")]
    Config(String),
    #[error("okta answered {status} to GET {path}: {summary}")]
    Status {
        status: u16,
        path: String,
        summary: String,
    },
    #[error("cannot reach okta at GET {path}: {reason}")]
    Transport { path: String, reason: String },
    #[error("okta's rate-limit window for GET {path} is spent; not called before its reset")]
    RateLimited { path: String },
    #[error("okta's answer to GET {path} is not the json expected: {reason}")]
    Body { path: String, reason: String },
    #[error("okta's next link does not point at the configured org url; not followed")]
    ForeignLink,
    #[error("okta kept answering 429 or failing after {attempts} attempts at GET {path}")]
    GaveUp { path: String, attempts: usize },
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// The absolute `rel="next"` link, if Okta sent one.
    pub next: Option<String>,
}

/// Scopes asked for by a service app: the System Log, users and groups, read only.
pub const SERVICE_APP_SCOPES: &str = "okta.logs.read okta.users.read okta.groups.read";
/// A cached access token is renewed this long before Okta says it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// How Gatehouse proves itself to Okta.
enum Auth {
    /// `Authorization: SSWS <api token>`.
    Ssws(SecretString),
    /// OAuth 2.0 client credentials with `private_key_jwt`; `Authorization: Bearer <token>`.
    ServiceApp(ServiceApp),
}

struct ServiceApp {
    client_id: String,
    key: jsonwebtoken::EncodingKey,
    key_id: Option<String>,
    /// `{org}/oauth2/v1/token`: the token endpoint and the assertion's `aud`.
    token_url: String,
    /// The access token and when to stop using it.
    token: tokio::sync::Mutex<Option<(SecretString, tokio::time::Instant)>>,
}

/// The Okta API of one org.
pub struct OktaApi {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    /// No request before this instant (Okta said the window is spent).
    paused_until: Mutex<Option<DateTime<Utc>>>,
}

impl std::fmt::Debug for OktaApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OktaApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl OktaApi {
    pub fn new(conn: &OktaApiConnection, timeout: Duration) -> Result<Self, OktaApiError> {
        Self::build(&conn.url, Auth::Ssws(conn.api_token.clone()), timeout)
    }

    /// The API through a service app (OAuth 2.0 client credentials, `private_key_jwt`). The key
    /// is checked here (a test signature); an error never contains it.
    pub fn with_service_app(app: &OktaServiceApp, timeout: Duration) -> Result<Self, OktaApiError> {
        let key = rsa_key(app.private_key.expose_secret())?;
        let auth = Auth::ServiceApp(ServiceApp {
            client_id: app.client_id.clone(),
            key,
            key_id: app.key_id.clone(),
            token_url: format!("{}/oauth2/v1/token", app.url),
            token: tokio::sync::Mutex::new(None),
        });
        Self::build(&app.url, auth, timeout)
    }

    /// From `[okta.api]`: the API token, else the service app; `None` when neither is set.
    pub fn from_config(cfg: &OktaApiConfig) -> Result<Option<Self>, OktaApiError> {
        let cfg_err = |e: gatehouse_platform::config::ConfigError| OktaApiError::Config(e.to_string());
        if let Some(conn) = cfg.connection().map_err(cfg_err)? {
            return Self::new(&conn, cfg.timeout).map(Some);
        }
        match cfg.service_app().map_err(cfg_err)? {
            Some(app) => Self::with_service_app(&app, cfg.timeout).map(Some),
            None => Ok(None),
        }
    }

    fn build(base: &str, auth: Auth, timeout: Duration) -> Result<Self, OktaApiError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OktaApiError::Transport {
                path: String::new(),
                reason: e.to_string(),
            })?;
        Ok(OktaApi {
            http,
            base: base.to_string(),
            auth,
            paused_until: Mutex::new(None),
        })
    }

    /// The org URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `{base}{path}` with `query` encoded.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = match reqwest::Url::parse(&format!("{}{path}", self.base)) {
            Ok(u) => u,
            Err(_) => return format!("{}{path}", self.base),
        };
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url.to_string()
    }

    /// Whether `url` is on this org (the token is only ever sent there).
    pub fn owns(&self, url: &str) -> bool {
        url.strip_prefix(&self.base)
            .is_some_and(|rest| rest.starts_with("/api/v1/"))
    }

    /// GET one page at `url` (absolute, on this org): waits out a spent rate-limit window
    /// first, retries 429 after `X-Rate-Limit-Reset` and 5xx/transport failures with backoff.
    pub async fn get_page(&self, url: &str) -> Result<Page, OktaApiError> {
        let (body, next, path) = self.get(url, MAX_ATTEMPTS, true).await?;
        let items: Vec<Value> = serde_json::from_slice(&body).map_err(|e| OktaApiError::Body {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Page { items, next })
    }

    /// GET one object at `url` without waiting: one attempt, and none at all while Okta's
    /// rate-limit window is spent (`Err(RateLimited)`), for a caller that cannot wait (the
    /// hook's enrichment answers Okta within its 3 s).
    pub async fn get_object_now(&self, url: &str) -> Result<Value, OktaApiError> {
        let (body, _, path) = self.get(url, 1, false).await?;
        serde_json::from_slice(&body).map_err(|e| OktaApiError::Body {
            path,
            reason: e.to_string(),
        })
    }

    /// Whether Okta said the rate-limit window is spent and its reset has not come yet.
    pub fn rate_limited(&self) -> bool {
        self.paused_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|p| p > gatehouse_domain::clock::now())
    }

    /// GET `url`: the 2xx body, the `next` link and the path (for errors). `wait`: wait out a
    /// spent window; else refuse to call during one.
    async fn get(
        &self,
        url: &str,
        attempts: usize,
        wait: bool,
    ) -> Result<(axum::body::Bytes, Option<String>, String), OktaApiError> {
        if !self.owns(url) {
            return Err(OktaApiError::ForeignLink);
        }
        let path = path_of(url);
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build();
        for attempt in 1..=attempts {
            if wait {
                self.wait_for_window().await;
            } else if self.rate_limited() {
                return Err(OktaApiError::RateLimited { path });
            }
            let sent = self
                .http
                .get(url)
                .header(ACCEPT, "application/json")
                .header(AUTHORIZATION, self.auth_header().await?)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(path, attempt, error = %without_url(&e), delay_ms = delay.as_millis() as u64, "okta api call failed; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let reset = header_i64(resp.headers(), "x-rate-limit-reset")
                .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
            let remaining = header_i64(resp.headers(), "x-rate-limit-remaining");
            if status == 429 {
                let until = reset.unwrap_or_else(|| gatehouse_domain::clock::now() + MIN_RATE_LIMIT_WAIT);
                events::okta_api_rate_limited(&path, attempt, &until);
                self.pause_until(until);
                continue;
            }
            if remaining == Some(0)
                && let Some(reset) = reset
            {
                tracing::info!(path, reset = %reset, "okta rate-limit window spent; the next call waits for its reset");
                self.pause_until(reset);
            }
            if status == 401 || status == 403 {
                if let Auth::ServiceApp(app) = &self.auth {
                    // Revoked or scoped out: the next call asks for a new token.
                    *app.token.lock().await = None;
                }
                return Err(OktaApiError::Unauthorized { status });
            }
            if status >= 500 {
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(
                    path,
                    attempt,
                    status,
                    delay_ms = delay.as_millis() as u64,
                    "okta answered a server error; retrying"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
            let next = next_link(resp.headers());
            let body = resp.bytes().await.map_err(|e| OktaApiError::Transport {
                path: path.clone(),
                reason: without_url(&e),
            })?;
            if !(200..300).contains(&status) {
                return Err(OktaApiError::Status {
                    status,
                    path,
                    summary: error_summary(&body),
                });
            }
            return Ok((body, next, path));
        }
        Err(OktaApiError::GaveUp { path, attempts })
    }

    async fn auth_header(&self) -> Result<HeaderValue, OktaApiError> {
        let value = match &self.auth {
            Auth::Ssws(token) => format!("SSWS {}", token.expose_secret()),
            Auth::ServiceApp(app) => format!("Bearer {}", self.access_token(app).await?.expose_secret()),
        };
        let mut v =
            HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("SSWS invalid"));
        v.set_sensitive(true);
        Ok(v)
    }

    /// The cached access token, or a new one from the token endpoint (client assertion signed
    /// RS256 with the app's key, `aud` = the token endpoint, valid 5 minutes).
    async fn access_token(&self, app: &ServiceApp) -> Result<SecretString, OktaApiError> {
        let mut slot = app.token.lock().await;
        if let Some((token, until)) = &*slot
            && tokio::time::Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let now = gatehouse_domain::clock::now().timestamp();
        let claims = serde_json::json!({
            "aud": app.token_url, "iss": app.client_id, "sub": app.client_id,
            "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string(),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = app.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &app.key)
            .map_err(|_| OktaApiError::Key("signing the client assertion failed"))?;
        let path = "/oauth2/v1/token".to_string();
        let resp = self
            .http
            .post(&app.token_url)
            .header(ACCEPT, "application/json")
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", SERVICE_APP_SCOPES),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| OktaApiError::Transport {
                path: path.clone(),
                reason: without_url(&e),
            })?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let field = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect::<String>()
        };
        if !(200..300).contains(&status) {
            events::okta_token_request(TokenResult::Refused);
            let (error, mut description) = (field("error"), field("error_description"));
            if error.contains("dpop") || description.to_ascii_lowercase().contains("dpop") {
                description.push_str(
                    " (the service app requires DPoP, which Gatehouse does not send: clear \"Require Demonstrating Proof of Possession (DPoP) header in token requests\" in its settings)",
                );
            }
            tracing::error!(status, error = %error, "okta refused the service app's token request");
            return Err(OktaApiError::Token {
                status,
                error,
                description,
            });
        }
        let token = field("access_token");
        let kind = field("token_type");
        if token.is_empty() || !kind.eq_ignore_ascii_case("bearer") {
            return Err(OktaApiError::Token {
                status,
                error: "unexpected_answer".into(),
                description: format!("no bearer access_token in the answer (token_type {kind:?})"),
            });
        }
        let lifetime = Duration::from_secs(body.get("expires_in").and_then(Value::as_u64).unwrap_or(3600));
        let until = tokio::time::Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        events::okta_token_request(TokenResult::Issued);
        tracing::info!(
            expires_in_s = lifetime.as_secs(),
            "okta service app access token obtained"
        );
        let token = SecretString::from(token);
        *slot = Some((token.clone(), until));
        Ok(token)
    }

    fn pause_until(&self, until: DateTime<Utc>) {
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        *p = Some(p.map_or(until, |old| old.max(until)));
    }

    /// Sleep until the paused window (if any) has reset.
    async fn wait_for_window(&self) {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        let Some(until) = until else { return };
        let now = gatehouse_domain::clock::now();
        if until > now {
            let wait = (until - now)
                .to_std()
                .unwrap_or_default()
                .min(MAX_RATE_LIMIT_WAIT);
            // The reset is whole seconds: wait for the second to have passed.
            tokio::time::sleep(wait + Duration::from_millis(50)).await;
        }
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_some_and(|p| p <= gatehouse_domain::clock::now()) {
            *p = None;
        }
    }
}

/// The PKCS#1 DER of an RSA private key in PEM (PKCS#8 `PRIVATE KEY` unwrapped, or PKCS#1 `RSA
/// PRIVATE KEY`), checked by a test signature. Errors say what is wrong, never the key.
fn rsa_key(pem: &str) -> Result<jsonwebtoken::EncodingKey, OktaApiError> {
    use base64::Engine;
    let pem = pem.trim();
    let (label, rest) = pem
        .strip_prefix("-----BEGIN ")
        .and_then(|r| r.split_once("-----"))
        .ok_or(OktaApiError::Key("no -----BEGIN line"))?;
    let end = format!("-----END {label}-----");
    let body = rest
        .trim()
        .strip_suffix(end.as_str())
        .ok_or(OktaApiError::Key("no matching -----END line"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| OktaApiError::Key("the PEM body is not base64"))?;
    let pkcs1 = match label {
        "RSA PRIVATE KEY" => der,
        "PRIVATE KEY" => pkcs8_rsa(&der)
            .ok_or(OktaApiError::Key("not a PKCS#8 RSA key"))?
            .to_vec(),
        "ENCRYPTED PRIVATE KEY" => {
            return Err(OktaApiError::Key("the key is encrypted; give it unencrypted"));
        }
        _ => return Err(OktaApiError::Key("not a private key PEM")),
    };
    let key = jsonwebtoken::EncodingKey::from_rsa_der(&pkcs1);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &serde_json::json!({"check": true}),
        &key,
    )
    .map_err(|_| OktaApiError::Key("the key does not sign (not RSA, or damaged)"))?;
    Ok(key)
}

/// One DER TLV: (tag, content, rest). Definite lengths up to 4 bytes.
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |a, x| (a << 8) | usize::from(*x));
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The `privateKey` of a PKCS#8 `PrivateKeyInfo` whose algorithm is rsaEncryption.
fn pkcs8_rsa(der: &[u8]) -> Option<&[u8]> {
    const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (0x30, info, _) = der_tlv(der)? else {
        return None;
    };
    let (0x02, _version, rest) = der_tlv(info)? else {
        return None;
    };
    let (0x30, alg, rest) = der_tlv(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der_tlv(alg)? else {
        return None;
    };
    if oid != RSA_OID {
        return None;
    }
    let (0x04, key, _) = der_tlv(rest)? else {
        return None;
    };
    Some(key)
}

fn header_i64(h: &HeaderMap, name: &str) -> Option<i64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The path of `url` (for logs and errors: never the query, which may be long).
fn path_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    format!("{kind}: {}", e.without_url_ref())
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(u) = self.url() {
            s = s.replace(u.as_str(), "<url>");
        }
        s
    }
}

/// Okta's `errorSummary`, or the status text.
fn error_summary(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("errorSummary")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "no error summary".into())
        .chars()
        .take(300)
        .collect()
}

/// The `rel="next"` target of the `Link` headers (Okta sends one header per relation, or one
/// comma-separated header).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            });
            is_next.then(|| target.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(links: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in links {
            h.append(LINK, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn the_next_link_is_found_whichever_way_okta_sends_it() {
        let self_ = "<https://a.okta.com/api/v1/logs?since=x>; rel=\"self\"";
        let next = "<https://a.okta.com/api/v1/logs?after=123&limit=2>; rel=\"next\"";
        let want = Some("https://a.okta.com/api/v1/logs?after=123&limit=2".to_string());
        assert_eq!(next_link(&headers(&[self_, next])), want);
        assert_eq!(next_link(&headers(&[&format!("{self_}, {next}")])), want);
        assert_eq!(next_link(&headers(&[self_])), None);
        assert_eq!(next_link(&headers(&[])), None);
        assert_eq!(next_link(&headers(&["garbage", "<x>; rel=\"nextish\""])), None);
    }

    #[tokio::test]
    async fn the_auth_header_is_sensitive() {
        let api = OktaApi::new(
            &OktaApiConnection {
                url: "https://acme.okta.com".into(),
                api_token: SecretString::from("00Ab-okta-api-token-123".to_string()),
            },
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(api.auth_header().await.unwrap().is_sensitive());
    }

    #[test]
    fn the_token_is_only_sent_to_the_configured_org() {
        let api = OktaApi::new(
            &OktaApiConnection {
                url: "https://acme.okta.com".into(),
                api_token: SecretString::from("00Ab-okta-api-token-123".to_string()),
            },
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(api.owns("https://acme.okta.com/api/v1/logs?after=1"));
        assert!(!api.owns("https://acme.okta.com.evil.test/api/v1/logs"));
        assert!(!api.owns("https://evil.test/api/v1/logs"));
        assert!(!api.owns("https://acme.okta.com@evil.test/api/v1/logs"));
        assert!(!format!("{api:?}").contains("00Ab"), "debug hides the token");
    }
}
