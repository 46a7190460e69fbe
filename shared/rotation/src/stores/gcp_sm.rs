//! GCP Secret Manager (REST v1). Readers take `versions/latest` (the most recently created
//! version), so a version is added only after the test step; finish has nothing left to move;
//! after the grace period the old version is disabled (`:disable`), later destroyed
//! (`:destroy`). Etags guard the state changes.

use super::SecretStore;
use crate::credential::{Credential, StoredVersion};
use crate::error::{ErrorKind, RotationError};
use crate::gcp::{GcpClient, join};
use crate::kinds::Res;
use base64::Engine as _;
use futures::future::BoxFuture;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// One GCP secret, `projects/P/secrets/S`.
pub struct GcpSecretManager {
    client: GcpClient,
    base: String,
    name: String,
}

type Parse<'a> = &'a (dyn Fn(SecretString) -> Res<Credential> + Send + Sync);

impl GcpSecretManager {
    /// The secret `name` through the API at `base` (`https://secretmanager.googleapis.com/v1`).
    pub fn new(client: GcpClient, base: &str, name: &str) -> Self {
        GcpSecretManager {
            client,
            base: base.to_string(),
            name: name.to_string(),
        }
    }

    fn url(&self, rest: &str) -> String {
        join(&self.base, &format!("{}{rest}", self.name))
    }

    async fn access(&self, version: &str, parse: Parse<'_>) -> Res<Option<StoredVersion>> {
        let url = self.url(&format!("/versions/{version}:access"));
        let v = match self.client.call(Method::GET, &url, None).await {
            Ok(v) => v,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let data = v["payload"]["data"]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| RotationError::permanent("gcp access answered no readable payload"))?;
        let version = v["name"]
            .as_str()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        Ok(Some(StoredVersion {
            version,
            credential: parse(SecretString::from(data))?,
        }))
    }

    /// `:disable` / `:destroy` with the version's current etag; already done counts as done.
    async fn transition(&self, version: &str, action: &str, done_state: &str) -> Res<()> {
        let meta = match self
            .client
            .call(Method::GET, &self.url(&format!("/versions/{version}")), None)
            .await
        {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let state = meta["state"].as_str().unwrap_or("");
        if state == done_state || state == "DESTROYED" {
            return Ok(());
        }
        let url = self.url(&format!("/versions/{version}:{action}"));
        self.client
            .call(Method::POST, &url, Some(&json!({ "etag": meta["etag"] })))
            .await
            .map(|_| ())
    }
}

impl SecretStore for GcpSecretManager {
    fn name(&self) -> &'static str {
        "gcp_secret_manager"
    }

    fn stages(&self) -> bool {
        false
    }

    fn current<'a>(&'a self, parse: Parse<'a>) -> BoxFuture<'a, Res<Option<StoredVersion>>> {
        Box::pin(async move {
            match self.access("latest", parse).await {
                // The latest version exists but cannot be read (disabled): no current value.
                Err(e) if e.kind == ErrorKind::Permanent => Ok(None),
                other => other,
            }
        })
    }

    fn put<'a>(&'a self, _token: &'a str, credential: &'a Credential) -> BoxFuture<'a, Res<String>> {
        Box::pin(async move {
            let data = base64::engine::general_purpose::STANDARD.encode(credential.value.expose_secret());
            let body = json!({ "payload": { "data": data } });
            let url = self.url(":addVersion");
            let v = match self.client.call(Method::POST, &url, Some(&body)).await {
                Err(e) if e.is_not_found() => {
                    let (parent, id) = self.name.rsplit_once("/secrets/").unwrap_or((&self.name, ""));
                    let create = join(&self.base, &format!("{parent}/secrets?secretId={id}"));
                    let spec = json!({ "replication": { "automatic": {} } });
                    match self.client.call(Method::POST, &create, Some(&spec)).await {
                        Ok(_) => {}
                        Err(e) if e.message.contains("ALREADY_EXISTS") => {}
                        Err(e) => return Err(e),
                    }
                    self.client.call(Method::POST, &url, Some(&body)).await?
                }
                other => other?,
            };
            Ok(v["name"]
                .as_str()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_string())
        })
    }

    fn find<'a>(
        &'a self,
        _token: &'a str,
        key_id: &'a str,
        parse: Parse<'a>,
    ) -> BoxFuture<'a, Res<Option<StoredVersion>>> {
        Box::pin(async move {
            // A crashed `put` leaves its version as the latest.
            Ok(self
                .current(parse)
                .await?
                .filter(|v| v.credential.key_id == key_id))
        })
    }

    fn promote<'a>(&'a self, _new: &'a str, _old: Option<&'a str>) -> BoxFuture<'a, Res<()>> {
        // The new version became `latest` when it was added.
        Box::pin(async { Ok(()) })
    }

    fn discard<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move { self.transition(version, "destroy", "DESTROYED").await })
    }

    fn retire<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move { self.transition(version, "disable", "DISABLED").await })
    }

    fn destroy<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move { self.transition(version, "destroy", "DESTROYED").await })
    }
}
