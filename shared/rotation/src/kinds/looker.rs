//! Looker API3 key of a service-account user. Create: `POST /users/{id}/credentials_api3`;
//! test: log in with the new key and check `GET /user` is that user; revoke: delete the key
//! (Looker cannot disable an API3 key, so revocation after the grace period is the deletion).

use super::{Kind, Res, gone_is_done, parse_json_key};
use crate::credential::{Credential, KeyInfo};
use crate::error::{ErrorKind, RotationError};
use futures::future::BoxFuture;
use gatehouse_domain::looker::{ErrorKind as LookerKind, LookerError};
use gatehouse_targets::client::looker::{CallMeter, LookerClient, LookerConfig};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// The Looker API3 kind: `admin` is Gatehouse's own Looker connection.
pub struct LookerApi3 {
    admin: LookerClient,
    base_url: String,
    user_id: String,
    timeout: Duration,
}

impl LookerApi3 {
    /// Keys of `user_id`, managed through `admin` on the instance at `base_url`.
    pub fn new(admin: LookerClient, base_url: &str, user_id: &str, timeout: Duration) -> Self {
        LookerApi3 {
            admin,
            base_url: base_url.to_string(),
            user_id: user_id.to_string(),
            timeout,
        }
    }
}

/// A Looker error → rotation error (one mapping, kinds kept).
pub fn from_looker(what: &str, e: LookerError) -> RotationError {
    let kind = match e.kind {
        LookerKind::Throttled => ErrorKind::Throttled {
            retry_after: e.retry_after,
        },
        LookerKind::Transient => ErrorKind::Transient,
        LookerKind::Unauthorized => ErrorKind::Unauthorized,
        LookerKind::NotFound => ErrorKind::NotFound,
        LookerKind::Conflict | LookerKind::Permanent => ErrorKind::Permanent,
    };
    RotationError::new(kind, what).caused_by(e)
}

impl Kind for LookerApi3 {
    fn name(&self) -> &'static str {
        "looker_api3"
    }

    fn principal(&self) -> &str {
        &self.user_id
    }

    fn call_meter(&self) -> Option<CallMeter> {
        Some(self.admin.meter().clone())
    }

    fn list(&self) -> BoxFuture<'_, Res<Vec<KeyInfo>>> {
        Box::pin(async move {
            let mut keys: Vec<KeyInfo> = self
                .admin
                .list_api3_keys(&self.user_id)
                .await
                .map_err(|e| from_looker("list api3 keys", e))?
                .into_iter()
                .map(|k| KeyInfo {
                    id: k.id,
                    created: k.created_at.unwrap_or_default(),
                    active: !k.is_disabled,
                })
                .collect();
            keys.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
            Ok(keys)
        })
    }

    fn create(&self) -> BoxFuture<'_, Res<Credential>> {
        Box::pin(async move {
            let k = self
                .admin
                .create_api3_key(&self.user_id)
                .await
                .map_err(|e| from_looker("create api3 key", e))?;
            let doc = serde_json::json!({
                "key_id": k.id,
                "client_id": k.client_id,
                "client_secret": k.client_secret.expose_secret(),
            });
            Ok(Credential::new(k.id, SecretString::from(doc.to_string())))
        })
    }

    fn test<'a>(&'a self, credential: &'a Credential) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            let doc = credential
                .json()
                .ok_or_else(|| RotationError::permanent("the credential is not a json document"))?;
            let field = |f: &str| {
                doc.get(f)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            // The test login is an API call Looker meters too: same meter as the admin's.
            let client = LookerClient::with_meter(
                LookerConfig {
                    base_url: self.base_url.clone(),
                    client_id: field("client_id"),
                    client_secret: SecretString::from(field("client_secret")),
                    timeout: self.timeout,
                    catalog_ttl: Duration::ZERO,
                    max_concurrent_calls: gatehouse_targets::client::looker::DEFAULT_MAX_CONCURRENT_CALLS,
                },
                self.admin.meter().clone(),
            )
            .map_err(|e| from_looker("the new key", e))?;
            let me = client
                .whoami()
                .await
                .map_err(|e| from_looker("login with the new key", e))?;
            if me != self.user_id {
                return Err(RotationError::new(
                    ErrorKind::Unauthorized,
                    format!("the new key logs in as user {me}, not {}", self.user_id),
                ));
            }
            Ok(())
        })
    }

    fn disable<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Res<()>> {
        self.delete(key_id)
    }

    fn delete<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            gone_is_done(
                self.admin
                    .delete_api3_key(&self.user_id, key_id)
                    .await
                    .map_err(|e| from_looker("delete api3 key", e)),
            )
        })
    }

    fn parse(&self, value: SecretString) -> Res<Credential> {
        parse_json_key(value, "key_id")
    }
}
