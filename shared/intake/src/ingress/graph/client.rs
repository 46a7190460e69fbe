//! A small Microsoft Graph client: an app-only token by client credentials (cached until shortly
//! before it expires, fetched again once on a 401), user and group reads, paged listings
//! (`@odata.nextLink`, followed only on the configured Graph origin) and subscriptions.

use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_domain::graph::{GraphGroup, GraphUser, USER_SELECT, is_safe_id};
use gatehouse_platform::http::parse_retry_after;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The one scope an app-only Graph token is asked for.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// Pages followed at most in one listing (a loop guard, 999 per page with `$top`).
const MAX_PAGES: usize = 10_000;

/// What went wrong talking to Graph. `op` names the call; details never hold a secret or token.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("graph {op}: throttled (retry after {retry_after:?})")]
    Throttled {
        op: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("graph {op}: unauthorized ({status}): {detail}")]
    Unauthorized {
        op: &'static str,
        status: u16,
        detail: String,
    },
    #[error("graph {op}: transient failure: {detail}")]
    Transient { op: &'static str, detail: String },
    #[error("graph {op}: refused ({status}): {detail}")]
    Permanent {
        op: &'static str,
        status: u16,
        detail: String,
    },
}

impl GraphError {
    /// How long to wait before trying again, when Graph said so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GraphError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, GraphError::Permanent { .. })
    }
}

impl gatehouse_domain::error::Classified for GraphError {
    fn kind(&self) -> gatehouse_domain::error::Kind {
        use gatehouse_domain::error::Kind;
        match self {
            GraphError::Throttled { .. } => Kind::Throttled,
            GraphError::Unauthorized { .. } => Kind::Unauthorized,
            GraphError::Transient { .. } => Kind::Transient,
            GraphError::Permanent { status: 404, .. } => Kind::NotFound,
            GraphError::Permanent { .. } => Kind::Permanent,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        GraphError::retry_after(self)
    }
}

/// Connection settings (from `[graph]`).
pub struct GraphClientConfig {
    pub graph_url: String,
    pub authority_url: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub timeout: Duration,
}

pub struct GraphClient {
    http: reqwest::Client,
    graph_url: String,
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    token: Mutex<Option<(SecretString, Instant)>>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("graph_url", &self.graph_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// A subscription as Graph returns it (the fields Gatehouse reads).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub resource: String,
    pub expiration_date_time: DateTime<Utc>,
}

fn enc(id: &str) -> Result<&str, GraphError> {
    if is_safe_id(id) {
        Ok(id)
    } else {
        Err(GraphError::Permanent {
            op: "build url",
            status: 0,
            detail: format!("{id:?} is not a directory object id"),
        })
    }
}

fn graph_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl GraphClient {
    pub fn new(cfg: GraphClientConfig) -> Result<Self, GraphError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| GraphError::Permanent {
                op: "build client",
                status: 0,
                detail: e.to_string(),
            })?;
        let authority = cfg.authority_url.trim_end_matches('/');
        Ok(GraphClient {
            http,
            graph_url: cfg.graph_url.trim_end_matches('/').to_string(),
            token_url: format!("{authority}/{}/oauth2/v2.0/token", cfg.tenant_id),
            client_id: cfg.client_id,
            client_secret: cfg.client_secret,
            token: Mutex::new(None),
        })
    }

    async fn token(&self, refresh: bool) -> Result<SecretString, GraphError> {
        let mut cached = self.token.lock().await;
        if !refresh
            && let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let op = "token";
        let resp = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose_secret()),
                ("scope", GRAPH_SCOPE),
            ])
            .send()
            .await
            .map_err(|e| GraphError::Transient {
                op,
                detail: e.without_url().to_string(),
            })?;
        let status = resp.status();
        let retry_after = retry_after_of(&resp);
        let bytes = resp.bytes().await.map_err(|e| GraphError::Transient {
            op,
            detail: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(classify(op, status, &bytes, retry_after));
        }
        let t: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| GraphError::Permanent {
            op,
            status: status.as_u16(),
            detail: format!("token response is not json with access_token: {e}"),
        })?;
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600).saturating_sub(120).max(30));
        let token = SecretString::from(t.access_token);
        *cached = Some((token.clone(), Instant::now() + lifetime));
        Ok(token)
    }

    /// One call with the bearer token; a 401 refreshes the token and tries once more.
    /// `Ok(None)` is a 404.
    pub(super) async fn call(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Option<Value>, GraphError> {
        let mut refresh = false;
        loop {
            let token = self.token(refresh).await?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose_secret())
                .query(query);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| GraphError::Transient {
                op,
                detail: e.without_url().to_string(),
            })?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !refresh {
                refresh = true;
                continue;
            }
            let retry_after = retry_after_of(&resp);
            let bytes = resp.bytes().await.map_err(|e| GraphError::Transient {
                op,
                detail: e.to_string(),
            })?;
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(classify(op, status, &bytes, retry_after));
            }
            if bytes.is_empty() {
                return Ok(Some(Value::Null));
            }
            return serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| GraphError::Permanent {
                    op,
                    status: status.as_u16(),
                    detail: format!("answer is not json: {e}"),
                });
        }
    }

    /// The configured Graph base URL (links are followed only on it).
    pub(super) fn graph_url(&self) -> &str {
        &self.graph_url
    }

    fn decode<T: for<'de> Deserialize<'de>>(op: &'static str, v: Value) -> Result<T, GraphError> {
        serde_json::from_value(v).map_err(|e| GraphError::Permanent {
            op,
            status: 200,
            detail: format!("unexpected shape: {e}"),
        })
    }

    /// `GET /users/{id}`; `None` when Graph has no such user (deleted).
    pub async fn get_user(&self, id: &str) -> Result<Option<GraphUser>, GraphError> {
        let url = format!("{}/users/{}", self.graph_url, enc(id)?);
        let op = "get user";
        match self
            .call(op, Method::GET, &url, &[("$select", USER_SELECT)], None)
            .await?
        {
            Some(v) => Self::decode(op, v).map(Some),
            None => Ok(None),
        }
    }

    /// `GET /groups/{id}`; `None` when the group is gone.
    pub async fn get_group(&self, id: &str) -> Result<Option<GraphGroup>, GraphError> {
        let url = format!("{}/groups/{}", self.graph_url, enc(id)?);
        let op = "get group";
        match self
            .call(op, Method::GET, &url, &[("$select", "id,displayName")], None)
            .await?
        {
            Some(v) => Self::decode(op, v).map(Some),
            None => Ok(None),
        }
    }

    /// Every user member of a group (`GET /groups/{id}/members`, all pages); `None` when the
    /// group is gone. Members that are not users (devices, groups) are left out.
    pub async fn group_members(&self, id: &str) -> Result<Option<Vec<GraphUser>>, GraphError> {
        let url = format!("{}/groups/{}/members", self.graph_url, enc(id)?);
        let members = self.list("list group members", url).await?;
        Ok(members.map(|m| m.into_iter().filter(GraphUser::is_user).collect()))
    }

    /// Every user of the tenant (`GET /users`, all pages).
    pub async fn list_users(&self) -> Result<Vec<GraphUser>, GraphError> {
        let url = format!("{}/users", self.graph_url);
        Ok(self.list("list users", url).await?.unwrap_or_default())
    }

    async fn list(&self, op: &'static str, first: String) -> Result<Option<Vec<GraphUser>>, GraphError> {
        let mut out = Vec::new();
        let mut url = first;
        let mut first_page = true;
        for _ in 0..MAX_PAGES {
            // The next link carries the query (skip token) itself.
            let query: &[(&str, &str)] = if first_page {
                &[("$select", USER_SELECT), ("$top", "999")]
            } else {
                &[]
            };
            let Some(v) = self.call(op, Method::GET, &url, query, None).await? else {
                return Ok(None);
            };
            let page: Page<GraphUser> = Self::decode(op, v)?;
            out.extend(page.value);
            match page.next_link {
                None => return Ok(Some(out)),
                Some(next) => {
                    // The token goes only to the configured Graph.
                    if !next.starts_with(&format!("{}/", self.graph_url)) {
                        return Err(GraphError::Permanent {
                            op,
                            status: 200,
                            detail: "@odata.nextLink points outside the configured graph_url".into(),
                        });
                    }
                    url = next;
                    first_page = false;
                }
            }
        }
        Err(GraphError::Permanent {
            op,
            status: 200,
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// `POST /subscriptions`.
    pub async fn create_subscription(
        &self,
        resource: &str,
        change_type: &str,
        notification_url: &str,
        client_state: &SecretString,
        expires_at: DateTime<Utc>,
    ) -> Result<Subscription, GraphError> {
        let op = "create subscription";
        let body = json!({
            "changeType": change_type,
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": notification_url,
            "resource": resource,
            "expirationDateTime": graph_time(expires_at),
            "clientState": client_state.expose_secret(),
        });
        let url = format!("{}/subscriptions", self.graph_url);
        match self.call(op, Method::POST, &url, &[], Some(&body)).await? {
            Some(v) => Self::decode(op, v),
            None => Err(GraphError::Permanent {
                op,
                status: 404,
                detail: "subscriptions endpoint not found".into(),
            }),
        }
    }

    /// `PATCH /subscriptions/{id}` with a new expiry; `None` when the subscription is gone.
    pub async fn renew_subscription(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<Subscription>, GraphError> {
        let op = "renew subscription";
        let url = format!("{}/subscriptions/{}", self.graph_url, enc(id)?);
        let body = json!({ "expirationDateTime": graph_time(expires_at) });
        match self.call(op, Method::PATCH, &url, &[], Some(&body)).await? {
            Some(v) => Self::decode(op, v).map(Some),
            None => Ok(None),
        }
    }
}

fn retry_after_of(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, gatehouse_domain::clock::now()))
}

/// One place that decides what a status means.
fn classify(op: &'static str, status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> GraphError {
    let detail = error_detail(body);
    match status.as_u16() {
        429 => GraphError::Throttled { op, retry_after },
        401 | 403 => GraphError::Unauthorized {
            op,
            status: status.as_u16(),
            detail,
        },
        408 | 500..=599 => GraphError::Transient {
            op,
            detail: format!("{status}: {detail}"),
        },
        s => GraphError::Permanent {
            op,
            status: s,
            detail,
        },
    }
}

/// Graph's `{"error":{"code","message"}}` or the token endpoint's `{"error","error_description"}`.
fn error_detail(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = match (&v["error"], &v["error_description"]) {
        (Value::Object(e), _) => format!(
            "{}: {}",
            e.get("code").and_then(Value::as_str).unwrap_or("error"),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        ),
        (Value::String(code), Value::String(d)) => format!("{code}: {d}"),
        (Value::String(code), _) => code.clone(),
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        let body = br#"{"error":{"code":"Request_ResourceNotFound","message":"gone"}}"#;
        assert!(matches!(
            classify("x", StatusCode::TOO_MANY_REQUESTS, b"", Some(Duration::from_secs(3))),
            GraphError::Throttled { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(classify("x", StatusCode::BAD_GATEWAY, b"", None).is_retryable());
        let e = classify("x", StatusCode::BAD_REQUEST, body, None);
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("Request_ResourceNotFound: gone"), "{e}");
        let e = classify(
            "token",
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client","error_description":"bad secret"}"#,
            None,
        );
        assert!(e.to_string().contains("invalid_client: bad secret"), "{e}");
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let c = GraphClient::new(GraphClientConfig {
            graph_url: "https://graph.example/v1.0/".into(),
            authority_url: "https://login.example".into(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: SecretString::from("graph-s3cret"),
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("https://login.example/t/oauth2/v2.0/token"),
            "{shown}"
        );
    }

    #[test]
    fn unsafe_ids_never_reach_a_url() {
        assert!(enc("../x").is_err());
        assert!(enc("72b08237-30f1-4fbe-be57-1df593448f7a").is_ok());
    }
}
