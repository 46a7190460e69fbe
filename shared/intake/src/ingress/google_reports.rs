//! A small Admin SDK Reports API client for the Google Workspace intake's upkeep: `activities.watch`
//! on the `admin` application, `channels/stop`, and `activities.list` (`startTime`/`endTime`,
//! `pageToken` paging). One attempt per call; the caller owns retries. Errors never carry a token.
//!
//! Credentials (`[google]`): a bearer token minted outside (`access_token`), an OAuth client's
//! `authorized_user` JSON (refresh token of an admin, via `google-cloud-auth`), or a
//! `service_account` key with domain-wide delegation (`delegated_admin`): a JWT naming the admin
//! as `sub`, signed with the key by `google-cloud-auth`'s signer and exchanged at the token
//! endpoint (RFC 7523), because `google-cloud-auth` has no subject for service accounts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_platform::config::GoogleConfig;
use gatehouse_platform::http::parse_retry_after;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The read-only scope `activities.list` and `activities.watch` need.
pub const REPORTS_SCOPE: &str = "https://www.googleapis.com/auth/admin.reports.audit.readonly";
/// Path of the admin application's activities (list; `/watch` appended to watch).
const ADMIN_ACTIVITIES: &str = "/admin/reports/v1/activity/users/all/applications/admin";
/// Path of `channels.stop` (documented on `www.googleapis.com`; the Admin SDK host serves it too).
const CHANNELS_STOP: &str = "/admin/reports_v1/channels/stop";
/// Largest page `activities.list` returns.
const MAX_RESULTS: u32 = 1000;
/// Pages followed at most in one listing (a loop guard).
pub const MAX_PAGES: usize = 100_000;

/// What went wrong talking to the Reports API. Never holds a token.
#[derive(Debug, thiserror::Error)]
pub enum ReportsError {
    #[error("google reports {op}: throttled (retry after {retry_after:?})")]
    Throttled {
        op: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("google reports {op}: unauthorized ({status}): {detail}")]
    Unauthorized {
        op: &'static str,
        status: u16,
        detail: String,
    },
    #[error("google reports {op}: not found")]
    NotFound { op: &'static str },
    #[error("google reports {op}: transient failure: {detail}")]
    Transient { op: &'static str, detail: String },
    #[error("google reports {op}: refused ({status}): {detail}")]
    Permanent {
        op: &'static str,
        status: u16,
        detail: String,
    },
    #[error("google credentials: {0}")]
    Credentials(String),
}

impl ReportsError {
    /// How long Google asked to wait, when it said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ReportsError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A channel as `activities.watch` returns it (`api#channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchChannel {
    pub id: String,
    pub resource_id: String,
    /// Google's `expiration` (ms since the epoch, sent as a string).
    pub expires_at: DateTime<Utc>,
}

/// One page of `activities.list`.
#[derive(Debug, Clone, Default)]
pub struct ActivityPage {
    pub items: Vec<Value>,
    pub next_page_token: Option<String>,
}

enum Auth {
    Static(SecretString),
    Adc(google_cloud_auth::credentials::Credentials),
    Delegated {
        signer: google_cloud_auth::signer::Signer,
        subject: String,
        token_url: String,
        cached: Mutex<Option<(SecretString, Instant)>>,
    },
}

pub struct ReportsClient {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl std::fmt::Debug for ReportsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportsClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn cred(e: impl std::fmt::Display) -> ReportsError {
    ReportsError::Credentials(e.to_string())
}

impl ReportsClient {
    /// `None` when `[google]` has no credentials.
    pub fn from_config(cfg: &GoogleConfig) -> Result<Option<Self>, ReportsError> {
        let auth = if let Some(t) = &cfg.access_token {
            Auth::Static(t.clone())
        } else if let Some(path) = &cfg.credentials_file {
            let text = std::fs::read(path).map_err(|e| {
                cred(format!(
                    "cannot read google.credentials_file {}: {e}",
                    path.display()
                ))
            })?;
            let json: Value = serde_json::from_slice(&text)
                .map_err(|e| cred(format!("google.credentials_file is not JSON: {e}")))?;
            match json.get("type").and_then(Value::as_str) {
                Some("authorized_user") => Auth::Adc(
                    google_cloud_auth::credentials::user_account::Builder::new(json)
                        .with_scopes([REPORTS_SCOPE])
                        .build()
                        .map_err(cred)?,
                ),
                Some("service_account") => {
                    let Some(subject) = cfg.delegated_admin.clone() else {
                        return Err(cred(
                            "a service account needs google.delegated_admin (domain-wide delegation)",
                        ));
                    };
                    Auth::Delegated {
                        signer: google_cloud_auth::credentials::service_account::Builder::new(json)
                            .build_signer()
                            .map_err(cred)?,
                        subject,
                        token_url: cfg.token_url.clone(),
                        cached: Mutex::new(None),
                    }
                }
                other => {
                    return Err(cred(format!(
                        "google.credentials_file type {other:?} is not authorized_user or service_account"
                    )));
                }
            }
        } else {
            return Ok(None);
        };
        Ok(Some(Self::new(&cfg.admin_url, auth, cfg.timeout)?))
    }

    /// A client with a fixed bearer token (tests, or a token minted outside).
    pub fn with_token(base: &str, token: SecretString, timeout: Duration) -> Result<Self, ReportsError> {
        Self::new(base, Auth::Static(token), timeout)
    }

    fn new(base: &str, auth: Auth, timeout: Duration) -> Result<Self, ReportsError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| cred(format!("cannot build http client: {e}")))?;
        Ok(ReportsClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
        })
    }

    async fn bearer(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, ReportsError> {
        match &self.auth {
            Auth::Static(t) => Ok(req.bearer_auth(t.expose_secret())),
            Auth::Adc(creds) => {
                use google_cloud_auth::credentials::CacheableResource;
                match creds.headers(Default::default()).await {
                    Ok(CacheableResource::New { data, .. }) => Ok(req.headers(data)),
                    Ok(CacheableResource::NotModified) => Err(cred("credentials returned no headers")),
                    Err(e) if e.is_transient() => Err(ReportsError::Transient {
                        op: "token",
                        detail: e.to_string(),
                    }),
                    Err(e) => Err(cred(e)),
                }
            }
            Auth::Delegated {
                signer,
                subject,
                token_url,
                cached,
            } => {
                let mut slot = cached.lock().await;
                if let Some((t, until)) = slot.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(req.bearer_auth(t.expose_secret()));
                }
                let (token, ttl) = self.delegated_token(signer, subject, token_url).await?;
                let out = req.bearer_auth(token.expose_secret());
                *slot = Some((
                    token,
                    Instant::now() + ttl.saturating_sub(Duration::from_secs(60)),
                ));
                Ok(out)
            }
        }
    }

    /// Domain-wide delegation: a JWT asserting `sub` = the admin, signed with the key (RS256).
    async fn delegated_token(
        &self,
        signer: &google_cloud_auth::signer::Signer,
        subject: &str,
        token_url: &str,
    ) -> Result<(SecretString, Duration), ReportsError> {
        let iss = signer.client_email().await.map_err(cred)?;
        let now = gatehouse_domain::clock::now().timestamp();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = json!({
            "iss": iss, "sub": subject, "scope": REPORTS_SCOPE, "aud": token_url,
            "iat": now, "exp": now + 3600,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let unsigned = format!("{header}.{claims}");
        let sig = signer.sign(unsigned.as_bytes()).await.map_err(cred)?;
        let assertion = format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(sig));
        let resp = self
            .http
            .post(token_url)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| ReportsError::Transient {
                op: "token",
                detail: e.without_url().to_string(),
            })?;
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            return Err(classify(
                "token",
                status,
                &headers,
                resp.text().await.unwrap_or_default(),
            ));
        }
        let t: TokenResponse = resp.json().await.map_err(|e| ReportsError::Transient {
            op: "token",
            detail: format!("unreadable token response: {}", e.without_url()),
        })?;
        Ok((
            SecretString::from(t.access_token),
            Duration::from_secs(t.expires_in.unwrap_or(3600)),
        ))
    }

    async fn send(
        &self,
        op: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), ReportsError> {
        let resp = self
            .bearer(req)
            .await?
            .send()
            .await
            .map_err(|e| ReportsError::Transient {
                op,
                detail: e.without_url().to_string(),
            })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        if status.is_success() {
            Ok((status, text))
        } else {
            Err(classify(op, status, &headers, text))
        }
    }

    /// `activities.watch` on the admin application.
    pub async fn watch(
        &self,
        channel_id: &str,
        token: &SecretString,
        address: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<WatchChannel, ReportsError> {
        let body = json!({
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": token.expose_secret(),
            "payload": true,
            "expiration": expires_at.timestamp_millis().to_string(),
        });
        let url = format!("{}{ADMIN_ACTIVITIES}/watch", self.base);
        let (_, text) = self.send("watch", self.http.post(url).json(&body)).await?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ReportsError::Transient {
            op: "watch",
            detail: format!("unreadable channel: {e}"),
        })?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let expiration = match v.get("expiration") {
            Some(Value::String(s)) => s.parse::<i64>().ok(),
            Some(Value::Number(n)) => n.as_i64(),
            _ => None,
        };
        match (
            field("id"),
            field("resourceId"),
            expiration.and_then(DateTime::from_timestamp_millis),
        ) {
            (Some(id), Some(resource_id), Some(expires_at)) => Ok(WatchChannel {
                id,
                resource_id,
                expires_at,
            }),
            _ => Err(ReportsError::Permanent {
                op: "watch",
                status: 200,
                detail: "channel lacks id, resourceId or expiration".into(),
            }),
        }
    }

    /// `channels.stop`. A channel Google no longer knows (404) counts as stopped.
    pub async fn stop(&self, channel_id: &str, resource_id: &str) -> Result<(), ReportsError> {
        let url = format!("{}{CHANNELS_STOP}", self.base);
        let body = json!({ "id": channel_id, "resourceId": resource_id });
        match self.send("channels.stop", self.http.post(url).json(&body)).await {
            Ok(_) | Err(ReportsError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One page of the admin application's activities in `[start, end)`.
    pub async fn list_page(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        page_token: Option<&str>,
    ) -> Result<ActivityPage, ReportsError> {
        let url = format!("{}{ADMIN_ACTIVITIES}", self.base);
        let mut query = vec![
            ("startTime", start.to_rfc3339_opts(SecondsFormat::Millis, true)),
            ("endTime", end.to_rfc3339_opts(SecondsFormat::Millis, true)),
            ("maxResults", MAX_RESULTS.to_string()),
        ];
        if let Some(t) = page_token {
            query.push(("pageToken", t.to_string()));
        }
        let (_, text) = self
            .send("activities.list", self.http.get(url).query(&query))
            .await?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ReportsError::Transient {
            op: "activities.list",
            detail: format!("unreadable page: {e}"),
        })?;
        let items = match v.get("items") {
            Some(Value::Array(a)) => a.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(_) => {
                return Err(ReportsError::Permanent {
                    op: "activities.list",
                    status: 200,
                    detail: "items is not an array".into(),
                });
            }
        };
        Ok(ActivityPage {
            items,
            next_page_token: v
                .get("nextPageToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
        })
    }
}

/// One place decides what a status means.
fn classify(
    op: &'static str,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: String,
) -> ReportsError {
    let detail: String = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("error_description"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("http {}", status.as_u16()))
        .chars()
        .take(300)
        .collect();
    match status.as_u16() {
        429 => ReportsError::Throttled {
            op,
            retry_after: headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, gatehouse_domain::clock::now())),
        },
        401 | 403 => ReportsError::Unauthorized {
            op,
            status: status.as_u16(),
            detail,
        },
        404 => ReportsError::NotFound { op },
        s if s >= 500 || s == 408 => ReportsError::Transient { op, detail },
        s => ReportsError::Permanent {
            op,
            status: s,
            detail,
        },
    }
}
