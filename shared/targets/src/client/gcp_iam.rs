//! GCP IAM policies over REST: `getIamPolicy` and `setIamPolicy` of Resource Manager v3
//! (projects), BigQuery v2 (datasets) and IAM v1 (service accounts). One attempt per method;
//! the caller (runtime) owns retries and the read-modify-write loop. Failures are classified
//! here, once, into [`CloudError`].

use gatehouse_domain::cloud::{CloudError, GcpApi, GcpResource, IamPolicy, Target};
use gatehouse_domain::looker::ErrorKind;
use gatehouse_platform::http::parse_retry_after;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// Where the bearer token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// A fixed access token (tests, or a token minted outside).
    Static(SecretString),
    /// Application Default Credentials (`google-cloud-auth`: metadata server, workload identity,
    /// `GOOGLE_APPLICATION_CREDENTIALS`).
    Adc(google_cloud_auth::credentials::Credentials),
}

/// Base URLs (no trailing slash) and limits.
#[derive(Clone)]
pub struct GcpIamConfig {
    pub resource_manager_url: String,
    pub bigquery_url: String,
    pub iam_url: String,
    pub token: TokenSource,
    pub timeout: Duration,
}

/// The GCP IAM client. Cheap to clone. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct GcpIam {
    http: reqwest::Client,
    cfg: GcpIamConfig,
}

impl std::fmt::Debug for GcpIam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpIam")
            .field("resource_manager_url", &self.cfg.resource_manager_url)
            .field("bigquery_url", &self.cfg.bigquery_url)
            .field("iam_url", &self.cfg.iam_url)
            .finish_non_exhaustive()
    }
}

fn err(kind: ErrorKind, status: Option<u16>, message: impl Into<String>) -> CloudError {
    CloudError {
        target: Target::Gcp,
        kind,
        status,
        message: message.into(),
        retry_after: None,
        source: None,
    }
}

impl GcpIam {
    pub fn new(cfg: GcpIamConfig) -> Result<Self, CloudError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| {
                err(
                    ErrorKind::Permanent,
                    None,
                    format!("cannot build http client: {e}"),
                )
            })?;
        Ok(GcpIam { http, cfg })
    }

    /// Application Default Credentials for the cloud-platform scope.
    pub fn adc() -> Result<TokenSource, CloudError> {
        google_cloud_auth::credentials::Builder::default()
            .build()
            .map(TokenSource::Adc)
            .map_err(|e| {
                err(
                    ErrorKind::Unauthorized,
                    None,
                    format!("no application default credentials: {e}"),
                )
            })
    }

    fn url(&self, resource: &GcpResource, verb: &str) -> String {
        let base = match resource.api() {
            GcpApi::ResourceManager => &self.cfg.resource_manager_url,
            GcpApi::BigQuery => &self.cfg.bigquery_url,
            GcpApi::Iam => &self.cfg.iam_url,
        };
        format!("{}{}:{verb}", base.trim_end_matches('/'), resource.path())
    }

    async fn authorize(&self, req: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, CloudError> {
        authorize(&self.cfg.token, req).await
    }

    async fn post(
        &self,
        resource: &str,
        verb: &str,
        body: serde_json::Value,
    ) -> Result<IamPolicy, CloudError> {
        let parsed = GcpResource::parse(resource).ok_or_else(|| {
            err(
                ErrorKind::Permanent,
                None,
                format!("not a supported resource: {resource}"),
            )
        })?;
        let req = self
            .authorize(self.http.post(self.url(&parsed, verb)).json(&body))
            .await?;
        let resp = req.send().await.map_err(|e| {
            // reqwest errors name the URL, never the Authorization header; the cause is kept.
            CloudError {
                source: Some(std::sync::Arc::new(e.without_url())),
                ..err(ErrorKind::Transient, None, format!("{verb} {resource}"))
            }
        })?;
        let status = resp.status().as_u16();
        tracing::Span::current().record("http.response.status_code", status);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, gatehouse_domain::clock::now()));
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| {
                err(
                    ErrorKind::Permanent,
                    Some(status),
                    format!("{verb} {resource}: not a policy: {e}"),
                )
            });
        }
        let (message, code_name) = google_error(&text);
        let mut e = err(
            classify(status, code_name.as_deref()),
            Some(status),
            format!("{verb} {resource}: {message}"),
        );
        e.retry_after = retry_after;
        Err(e)
    }

    /// `getIamPolicy` with `options.requestedPolicyVersion: 3` (so conditions come back intact).
    #[tracing::instrument(name = "gcp.iam", skip_all, fields(
        otel.name = "getIamPolicy", otel.kind = "client", rpc.method = "getIamPolicy", resource = %resource,
        http.response.status_code = tracing::field::Empty,
    ))]
    pub async fn get_policy(&self, resource: &str) -> Result<IamPolicy, CloudError> {
        self.post(
            resource,
            "getIamPolicy",
            serde_json::json!({ "options": { "requestedPolicyVersion": 3 } }),
        )
        .await
    }

    /// `setIamPolicy` with the policy's etag (a concurrent change → `Conflict`). The version is
    /// written as 3, which every policy (with or without conditions) accepts.
    #[tracing::instrument(name = "gcp.iam", skip_all, fields(
        otel.name = "setIamPolicy", otel.kind = "client", rpc.method = "setIamPolicy", resource = %resource,
        http.response.status_code = tracing::field::Empty,
    ))]
    pub async fn set_policy(&self, resource: &str, policy: &IamPolicy) -> Result<IamPolicy, CloudError> {
        let mut p = policy.clone();
        p.version = 3;
        self.post(resource, "setIamPolicy", serde_json::json!({ "policy": p }))
            .await
    }
}

/// The bearer token (or ADC headers) on a request to a Google API.
pub(crate) async fn authorize(
    token: &TokenSource,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::RequestBuilder, CloudError> {
    match token {
        TokenSource::Static(t) => Ok(req.bearer_auth(t.expose_secret())),
        TokenSource::Adc(creds) => {
            use google_cloud_auth::credentials::CacheableResource;
            match creds.headers(Default::default()).await {
                Ok(CacheableResource::New { data, .. }) => Ok(req.headers(data)),
                Ok(CacheableResource::NotModified) => {
                    Err(err(ErrorKind::Transient, None, "credentials returned no headers"))
                }
                Err(e) if e.is_transient() => Err(err(ErrorKind::Transient, None, format!("token: {e}"))),
                Err(e) => Err(err(ErrorKind::Unauthorized, None, format!("token: {e}"))),
            }
        }
    }
}

/// Google's `{"error": {"message", "status"}}`.
pub(crate) fn google_error(text: &str) -> (String, Option<String>) {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let message = v["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(200).collect());
    (message, v["error"]["status"].as_str().map(str::to_string))
}

/// The one place GCP failures are classified.
pub fn classify(status: u16, code_name: Option<&str>) -> ErrorKind {
    // google.rpc.Code names first (they may come with a 400), then the one status table.
    match code_name {
        Some("ABORTED") => ErrorKind::Conflict,
        Some("RESOURCE_EXHAUSTED") => ErrorKind::Throttled,
        _ => gatehouse_domain::error::classify_status(status),
    }
}
