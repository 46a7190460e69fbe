//! A small client of the Okta management API (`/api/v1/...`) for the System Log catch-up:
//! `Authorization: SSWS <token>`, `Link: <…>; rel="next"` paging, and Okta's rate-limit headers
//! honoured (when `X-Rate-Limit-Remaining` reaches 0, or on 429, no request is sent before
//! `X-Rate-Limit-Reset`). The token never reaches a log, a `Debug` print or an error.

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use gatehouse_platform::config::OktaApiConnection;
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
    #[error("okta refused the api token ({status}): check okta.api.api_token and its admin role")]
    Unauthorized { status: u16 },
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

/// The Okta API of one org.
pub struct OktaApi {
    http: reqwest::Client,
    base: String,
    token: SecretString,
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
            base: conn.url.clone(),
            token: conn.api_token.clone(),
            paused_until: Mutex::new(None),
        })
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
            .is_some_and(|p| p > Utc::now())
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
                .header(AUTHORIZATION, self.auth_header())
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
                metrics::counter!("gatehouse_okta_api_rate_limited_total").increment(1);
                let until = reset.unwrap_or_else(|| Utc::now() + MIN_RATE_LIMIT_WAIT);
                tracing::warn!(path, attempt, reset = %until, "okta rate limit hit (429); waiting for the reset");
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

    fn auth_header(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("SSWS {}", self.token.expose_secret()))
            .unwrap_or_else(|_| HeaderValue::from_static("SSWS invalid"));
        v.set_sensitive(true);
        v
    }

    fn pause_until(&self, until: DateTime<Utc>) {
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        *p = Some(p.map_or(until, |old| old.max(until)));
    }

    /// Sleep until the paused window (if any) has reset.
    async fn wait_for_window(&self) {
        let until = *self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        let Some(until) = until else { return };
        let now = Utc::now();
        if until > now {
            let wait = (until - now)
                .to_std()
                .unwrap_or_default()
                .min(MAX_RATE_LIMIT_WAIT);
            // The reset is whole seconds: wait for the second to have passed.
            tokio::time::sleep(wait + Duration::from_millis(50)).await;
        }
        let mut p = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_some_and(|p| p <= Utc::now()) {
            *p = None;
        }
    }
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
        assert!(api.auth_header().is_sensitive());
    }
}
