//! A small GCP REST client shared by the Secret Manager store and the service-account key kind:
//! bearer authentication (a fixed token, or Application Default Credentials), JSON bodies, and
//! Google's error shape `{"error":{"code","message","status"}}` classified once.

use crate::error::{ErrorKind, RotationError, chain, classify_status};
use gatehouse_platform::config::GcpApiConfig;
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
                    .map_err(|e| RotationError::permanent(format!("gcp credentials: {}", chain(&e))))?,
            ),
        };
        Self::new(auth)
    }

    pub fn new(auth: GcpAuth) -> Result<Self, RotationError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| RotationError::permanent(format!("cannot build http client: {}", chain(&e))))?;
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
                    RotationError::new(kind, format!("gcp access token: {}", chain(&e)))
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
        let resp = rb.send().await.map_err(|e| {
            let mut e = RotationError::new(ErrorKind::Transient, format!("{what}: {}", chain(&e)));
            e.message = e.message.replace(token.expose_secret(), "[redacted]");
            e
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RotationError::new(ErrorKind::Transient, format!("{what}: {}", chain(&e))))?;
        let json: Value = if bytes.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| RotationError::permanent(format!("{what}: unexpected response body: {e}")))?
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
