//! GCP service-account key (IAM v1 REST). Create: `POST …/serviceAccounts/{email}/keys` (the
//! key file arrives base64 in `privateKeyData`, the only time it is shown); test: the key as
//! IAM describes it must exist, be enabled, be in its validity window and belong to the account
//! (see docs/rotation.md: proving the key by signing a token exchange is not done); disable:
//! `:disable`; delete: `DELETE`.

use super::{Kind, Res, gone_is_done, parse_json_key};
use crate::credential::{Credential, KeyInfo};
use crate::error::{ErrorKind, RotationError};
use crate::gcp::{GcpClient, join};
use base64::Engine as _;
use futures::future::BoxFuture;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::Value;

/// The GCP service-account key kind.
pub struct GcpServiceAccountKey {
    client: GcpClient,
    iam_url: String,
    email: String,
}

impl GcpServiceAccountKey {
    /// Keys of `email` through the IAM API at `iam_url` (`https://iam.googleapis.com/v1`).
    pub fn new(client: GcpClient, iam_url: &str, email: &str) -> Self {
        GcpServiceAccountKey {
            client,
            iam_url: iam_url.to_string(),
            email: email.to_string(),
        }
    }

    fn keys_url(&self) -> String {
        join(
            &self.iam_url,
            &format!("projects/-/serviceAccounts/{}/keys", self.email),
        )
    }

    fn key_url(&self, key_id: &str) -> String {
        format!("{}/{key_id}", self.keys_url())
    }
}

/// The last segment of `projects/P/serviceAccounts/E/keys/ID`.
fn key_id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

impl Kind for GcpServiceAccountKey {
    fn name(&self) -> &'static str {
        "gcp_service_account_key"
    }

    fn principal(&self) -> &str {
        &self.email
    }

    fn list(&self) -> BoxFuture<'_, Res<Vec<KeyInfo>>> {
        Box::pin(async move {
            let url = format!("{}?keyTypes=USER_MANAGED", self.keys_url());
            let v = self.client.call(Method::GET, &url, None).await?;
            let mut keys: Vec<KeyInfo> = v["keys"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|k| {
                    Some(KeyInfo {
                        id: key_id_of(k["name"].as_str()?).to_string(),
                        created: k["validAfterTime"].as_str().unwrap_or("").to_string(),
                        active: !k["disabled"].as_bool().unwrap_or(false),
                    })
                })
                .collect();
            keys.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
            Ok(keys)
        })
    }

    fn create(&self) -> BoxFuture<'_, Res<Credential>> {
        Box::pin(async move {
            let body = serde_json::json!({
                "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
                "keyAlgorithm": "KEY_ALG_RSA_2048",
            });
            let v = self
                .client
                .call(Method::POST, &self.keys_url(), Some(&body))
                .await?;
            let data = v["privateKeyData"]
                .as_str()
                .ok_or_else(|| RotationError::permanent("gcp create key answered no privateKeyData"))?;
            let file = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| RotationError::permanent("gcp privateKeyData is not base64 text"))?;
            let cred = parse_json_key(SecretString::from(file), "private_key_id")?;
            let name_id = v["name"].as_str().map(key_id_of).unwrap_or("");
            if cred.key_id != name_id {
                return Err(RotationError::permanent(format!(
                    "gcp key file names key {} but the key is {name_id}",
                    cred.key_id
                )));
            }
            Ok(cred)
        })
    }

    fn test<'a>(&'a self, credential: &'a Credential) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            let doc = credential
                .json()
                .ok_or_else(|| RotationError::permanent("the credential is not a json document"))?;
            if doc["client_email"].as_str() != Some(self.email.as_str()) {
                return Err(RotationError::new(
                    ErrorKind::Unauthorized,
                    format!("the key file is not for {}", self.email),
                ));
            }
            let key: Value = self
                .client
                .call(Method::GET, &self.key_url(&credential.key_id), None)
                .await
                .map_err(|e| match e.kind {
                    ErrorKind::NotFound => RotationError::new(ErrorKind::Unauthorized, e.message),
                    _ => e,
                })?;
            if key["disabled"].as_bool().unwrap_or(false) {
                return Err(RotationError::new(
                    ErrorKind::Unauthorized,
                    "the new key is disabled",
                ));
            }
            let now = gatehouse_domain::clock::now();
            let within = |f: &str, after: bool| {
                key[f]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_none_or(|t| if after { t <= now } else { t > now })
            };
            if !within("validAfterTime", true) || !within("validBeforeTime", false) {
                return Err(RotationError::new(
                    ErrorKind::Unauthorized,
                    "the new key is outside its validity window",
                ));
            }
            Ok(())
        })
    }

    fn disable<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            let url = format!("{}:disable", self.key_url(key_id));
            gone_is_done(
                self.client
                    .call(Method::POST, &url, Some(&serde_json::json!({})))
                    .await
                    .map(|_| ()),
            )
        })
    }

    fn delete<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            gone_is_done(
                self.client
                    .call(Method::DELETE, &self.key_url(key_id), None)
                    .await
                    .map(|_| ()),
            )
        })
    }

    fn parse(&self, value: SecretString) -> Res<Credential> {
        parse_json_key(value, "private_key_id")
    }
}
