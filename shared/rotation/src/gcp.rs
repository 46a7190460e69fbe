//! A small GCP REST client shared by the Secret Manager store and the service-account key kind:
//! bearer authentication (a fixed token, or Application Default Credentials), JSON bodies, and
//! Google's error shape `{"error":{"code","message","status"}}` classified once.

use crate::error::{ErrorKind, RotationError, classify_status};
use gatehouse_platform::config::GcpApiConfig;
use gatehouse_platform::http::parse_retry_after;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// How requests are authenticated.
#[derive(Clone)]
pub enum GcpAuth {
    /// A fixed access token (tests; short jobs).
    Token(SecretString),
    /// Application Default Credentials (`google-cloud-auth`).
    Adc(google_cloud_auth::credentials::AccessTokenCredentials),
}

/// GCP REST client. Cheap to clone.
#[derive(Clone)]
pub struct GcpClient {
    http: reqwest::Client,
    auth: GcpAuth,
}

impl fmt::Debug for GcpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpClient").finish_non_exhaustive()
    }
}

impl GcpClient {
    /// From `[rotator.gcp]`: the fixed token if set, else ADC.
    pub fn from_config(cfg: &GcpApiConfig) -> Result<Self, RotationError> {
        let auth = match &cfg.access_token {
            Some(t) => GcpAuth::Token(t.clone()),
            None => GcpAuth::Adc(
                google_cloud_auth::credentials::Builder::default()
                    .build_access_token_credentials()
                    .map_err(|e| RotationError::permanent("no gcp credentials").caused_by(e))?,
            ),
        };
        Self::new(auth)
    }

    pub fn new(auth: GcpAuth) -> Result<Self, RotationError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| RotationError::permanent("cannot build http client").caused_by(e))?;
        Ok(GcpClient { http, auth })
    }

    async fn token(&self) -> Result<SecretString, RotationError> {
        match &self.auth {
            GcpAuth::Token(t) => Ok(t.clone()),
            GcpAuth::Adc(c) => c
                .access_token()
                .await
                .map(|t| SecretString::from(t.token))
                .map_err(|e| {
                    let kind = if e.is_transient() {
                        ErrorKind::Transient
                    } else {
                        ErrorKind::Unauthorized
                    };
                    RotationError::new(kind, "cannot get a gcp access token").caused_by(e)
                }),
        }
    }

    /// One call; `body` is sent as JSON. Answers the response JSON (`{}` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, RotationError> {
        let token = self.token().await?;
        let mut rb = self
            .http
            .request(method.clone(), url)
            .bearer_auth(token.expose_secret());
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let what = format!("gcp {method} {}", path_of(url));
        // reqwest errors never hold request headers (the token); the URL is dropped too.
        let resp = rb.send().await.map_err(|e| {
            RotationError::new(ErrorKind::Transient, format!("{what}: cannot reach gcp"))
                .caused_by(e.without_url())
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, gatehouse_domain::clock::now()));
        let bytes = resp.bytes().await.map_err(|e| {
            RotationError::new(ErrorKind::Transient, format!("{what}: cannot read the answer"))
                .caused_by(e.without_url())
        })?;
        let json: Value = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                RotationError::permanent(format!("{what}: unexpected response body")).caused_by(e)
            })?
        };
        if (200..300).contains(&status) {
            return Ok(json);
        }
        let err = &json["error"];
        let message = err["message"].as_str().unwrap_or("");
        let code = err["status"].as_str().unwrap_or("");
        let kind = match code {
            "UNAUTHENTICATED" | "PERMISSION_DENIED" => ErrorKind::Unauthorized,
            _ => classify_status(status, retry_after),
        };
        Err(RotationError::new(
            kind,
            format!("{what}: http {status} {code}: {message}")
                .trim_end_matches([':', ' '])
                .to_string(),
        ))
    }
}

/// The path of a URL (for messages: never the query).
fn path_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
    path.split('?').next().unwrap_or(path)
}

/// `base` + `path` without doubled slashes.
pub(crate) fn join(base: &str, path: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `response` (raw HTTP/1.1).
    async fn answering(response: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 2048];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = sock.write_all(response.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        url
    }

    fn client() -> GcpClient {
        GcpClient::new(GcpAuth::Token(SecretString::from("ya29.rotation-test-token"))).unwrap()
    }

    #[tokio::test]
    async fn no_answer_keeps_the_http_error_as_the_source_and_never_the_token() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let e = client()
            .call(
                reqwest::Method::GET,
                &format!("{closed}/v1/projects/p/secrets/s"),
                None,
            )
            .await
            .expect_err("nothing listens");
        assert!(e.is_retryable(), "{e}");
        assert_eq!(
            e.to_string(),
            "gcp GET /v1/projects/p/secrets/s: cannot reach gcp"
        );
        assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        let text = crate::error::chain(&e);
        assert!(text.len() > e.to_string().len(), "{text}");
        assert!(!format!("{text} {e:?}").contains("rotation-test-token"), "{text}");
    }

    #[tokio::test]
    async fn a_429_retry_after_as_an_http_date_is_honoured() {
        let date = (gatehouse_domain::clock::now() + chrono::Duration::seconds(60))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let body = r#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#;
        let url = answering(format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: {date}\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ))
        .await;
        let e = client()
            .call(reqwest::Method::GET, &format!("{url}/v1/x"), None)
            .await
            .expect_err("429");
        let wait = e.retry_after().expect("the date form is read");
        assert!(
            wait > Duration::from_secs(30) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
    }

    #[tokio::test]
    async fn an_unreadable_body_keeps_the_parse_error_as_the_source() {
        let url = answering(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 3\r\nconnection: close\r\n\r\n{x}"
                .into(),
        )
        .await;
        let e = client()
            .call(reqwest::Method::GET, &format!("{url}/v1/x"), None)
            .await
            .expect_err("not json");
        assert_eq!(e.to_string(), "gcp GET /v1/x: unexpected response body");
        let cause = std::error::Error::source(&e).expect("the parse error is kept");
        assert!(cause.is::<serde_json::Error>(), "{cause}");
    }
}
