//! AWS IAM user access key. Create: `CreateAccessKey`; test: `sts:GetCallerIdentity` signed with
//! the new key must answer the user's ARN; disable: `UpdateAccessKey Inactive`; delete:
//! `DeleteAccessKey`. IAM allows two keys per user: the rotator makes room by deleting the
//! inactive (else oldest) key that is not the current one, never the current one.

use super::{Kind, Res, gone_is_done, parse_json_key};
use crate::credential::{Credential, KeyInfo};
use crate::error::{ErrorKind, RotationError, aws_error};
use aws_sdk_iam::types::StatusType;
use futures::future::BoxFuture;
use secrecy::SecretString;

/// The AWS access-key kind for one IAM user.
pub struct AwsAccessKey {
    iam: aws_sdk_iam::Client,
    sdk: aws_config::SdkConfig,
    user_name: String,
}

impl AwsAccessKey {
    /// Keys of `user_name`; `sdk` carries region, endpoint and Gatehouse's own credentials.
    pub fn new(sdk: &aws_config::SdkConfig, user_name: &str) -> Self {
        AwsAccessKey {
            iam: aws_sdk_iam::Client::new(sdk),
            sdk: sdk.clone(),
            user_name: user_name.to_string(),
        }
    }
}

impl Kind for AwsAccessKey {
    fn name(&self) -> &'static str {
        "aws_access_key"
    }

    fn principal(&self) -> &str {
        &self.user_name
    }

    fn max_keys(&self) -> Option<usize> {
        Some(2)
    }

    fn list(&self) -> BoxFuture<'_, Res<Vec<KeyInfo>>> {
        Box::pin(async move {
            let out = self
                .iam
                .list_access_keys()
                .user_name(&self.user_name)
                .send()
                .await
                .map_err(|e| aws_error("iam ListAccessKeys", e))?;
            let mut keys: Vec<KeyInfo> = out
                .access_key_metadata()
                .iter()
                .filter_map(|k| {
                    Some(KeyInfo {
                        id: k.access_key_id()?.to_string(),
                        created: k
                            .create_date()
                            .and_then(|d| d.fmt(aws_sdk_iam::primitives::DateTimeFormat::DateTime).ok())
                            .unwrap_or_default(),
                        active: k.status() == Some(&StatusType::Active),
                    })
                })
                .collect();
            keys.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
            Ok(keys)
        })
    }

    fn create(&self) -> BoxFuture<'_, Res<Credential>> {
        Box::pin(async move {
            let out = self
                .iam
                .create_access_key()
                .user_name(&self.user_name)
                .send()
                .await
                .map_err(|e| aws_error("iam CreateAccessKey", e))?;
            let key = out
                .access_key()
                .ok_or_else(|| RotationError::permanent("iam CreateAccessKey answered no key"))?;
            let id = key.access_key_id().to_string();
            let doc = serde_json::json!({
                "access_key_id": id,
                "secret_access_key": key.secret_access_key(),
            });
            Ok(Credential::new(id, SecretString::from(doc.to_string())))
        })
    }

    fn test<'a>(&'a self, credential: &'a Credential) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            let doc = credential
                .json()
                .ok_or_else(|| RotationError::permanent("the credential is not a json document"))?;
            let secret = doc
                .get("secret_access_key")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            let creds = aws_sdk_sts::config::Credentials::new(
                credential.key_id.clone(),
                secret.to_string(),
                None,
                None,
                "gatehouse-rotation-test",
            );
            let conf = aws_sdk_sts::config::Builder::from(&self.sdk)
                .credentials_provider(creds)
                .build();
            let who = aws_sdk_sts::Client::from_conf(conf)
                .get_caller_identity()
                .send()
                .await
                .map_err(|e| aws_error("sts GetCallerIdentity with the new key", e))?;
            let arn = who.arn().unwrap_or("");
            if !arn.ends_with(&format!(":user/{}", self.user_name)) {
                return Err(RotationError::new(
                    ErrorKind::Unauthorized,
                    format!(
                        "the new key authenticates as {arn:?}, not user {}",
                        self.user_name
                    ),
                ));
            }
            Ok(())
        })
    }

    fn disable<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            gone_is_done(
                self.iam
                    .update_access_key()
                    .user_name(&self.user_name)
                    .access_key_id(key_id)
                    .status(StatusType::Inactive)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| aws_error("iam UpdateAccessKey", e)),
            )
        })
    }

    fn delete<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            gone_is_done(
                self.iam
                    .delete_access_key()
                    .user_name(&self.user_name)
                    .access_key_id(key_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| aws_error("iam DeleteAccessKey", e)),
            )
        })
    }

    fn parse(&self, value: SecretString) -> Res<Credential> {
        parse_json_key(value, "access_key_id")
    }
}
