//! AWS Secrets Manager with its staging labels: the new version is written with `AWSPENDING`
//! and `ClientRequestToken` = rotation id (a retry writes the same version once), tested, then
//! `AWSCURRENT` moves to it and the old version becomes `AWSPREVIOUS`. A rollback removes
//! `AWSPENDING` (a version without labels is deprecated and removed by AWS).

use super::SecretStore;
use crate::credential::{Credential, StoredVersion};
use crate::error::aws_error;
use crate::kinds::Res;
use aws_sdk_secretsmanager::Client;
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};

pub const CURRENT: &str = "AWSCURRENT";
pub const PENDING: &str = "AWSPENDING";
pub const PREVIOUS: &str = "AWSPREVIOUS";

/// One AWS secret.
pub struct AwsSecretsManager {
    client: Client,
    secret_id: String,
}

type Parse<'a> = &'a (dyn Fn(SecretString) -> Res<Credential> + Send + Sync);

impl AwsSecretsManager {
    pub fn new(sdk: &aws_config::SdkConfig, secret_id: &str) -> Self {
        AwsSecretsManager {
            client: Client::new(sdk),
            secret_id: secret_id.to_string(),
        }
    }

    async fn get(
        &self,
        version_id: Option<&str>,
        stage: Option<&str>,
        parse: Parse<'_>,
    ) -> Res<Option<StoredVersion>> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .set_version_id(version_id.map(str::to_string))
            .set_version_stage(stage.map(str::to_string))
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                let e = aws_error("secretsmanager GetSecretValue", e);
                return if e.is_not_found() { Ok(None) } else { Err(e) };
            }
        };
        let (Some(version), Some(value)) = (out.version_id(), out.secret_string()) else {
            return Ok(None);
        };
        Ok(Some(StoredVersion {
            version: version.to_string(),
            credential: parse(SecretString::from(value.to_string()))?,
        }))
    }

    async fn move_label(&self, label: &str, to: Option<&str>, from: Option<&str>) -> Res<()> {
        self.client
            .update_secret_version_stage()
            .secret_id(&self.secret_id)
            .version_stage(label)
            .set_move_to_version_id(to.map(str::to_string))
            .set_remove_from_version_id(from.map(str::to_string))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_error("secretsmanager UpdateSecretVersionStage", e))
    }

    /// The version that holds `label` now, if any.
    async fn holder_of(&self, label: &str) -> Res<Option<String>> {
        let out = self
            .client
            .describe_secret()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| aws_error("secretsmanager DescribeSecret", e))?;
        Ok(out.version_ids_to_stages().and_then(|m| {
            m.iter()
                .find(|(_, stages)| stages.iter().any(|s| s == label))
                .map(|(v, _)| v.clone())
        }))
    }
}

impl SecretStore for AwsSecretsManager {
    fn name(&self) -> &'static str {
        "aws_secrets_manager"
    }

    fn stages(&self) -> bool {
        true
    }

    fn current<'a>(&'a self, parse: Parse<'a>) -> BoxFuture<'a, Res<Option<StoredVersion>>> {
        Box::pin(self.get(None, Some(CURRENT), parse))
    }

    fn put<'a>(&'a self, token: &'a str, credential: &'a Credential) -> BoxFuture<'a, Res<String>> {
        Box::pin(async move {
            let put = || {
                self.client
                    .put_secret_value()
                    .secret_id(&self.secret_id)
                    .client_request_token(token)
                    .secret_string(credential.value.expose_secret())
                    .version_stages(PENDING)
                    .send()
            };
            let out = match put().await {
                Ok(o) => o,
                Err(e) => {
                    let e = aws_error("secretsmanager PutSecretValue", e);
                    if !e.is_not_found() {
                        return Err(e);
                    }
                    // First rotation of a secret that does not exist yet: create it empty, so
                    // nothing is current before the test step.
                    if let Err(e) = self.client.create_secret().name(&self.secret_id).send().await {
                        let e = aws_error("secretsmanager CreateSecret", e);
                        if !e.message.contains("ResourceExistsException") {
                            return Err(e);
                        }
                    }
                    put()
                        .await
                        .map_err(|e| aws_error("secretsmanager PutSecretValue", e))?
                }
            };
            Ok(out.version_id().unwrap_or(token).to_string())
        })
    }

    fn find<'a>(
        &'a self,
        token: &'a str,
        key_id: &'a str,
        parse: Parse<'a>,
    ) -> BoxFuture<'a, Res<Option<StoredVersion>>> {
        Box::pin(async move {
            Ok(self
                .get(Some(token), None, parse)
                .await?
                .filter(|v| v.credential.key_id == key_id))
        })
    }

    fn promote<'a>(&'a self, new: &'a str, old: Option<&'a str>) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            // Read who holds AWSCURRENT now, so a retried promote is a no-op.
            let holder = self.holder_of(CURRENT).await?;
            if holder.as_deref() != Some(new) {
                self.move_label(CURRENT, Some(new), holder.as_deref().or(old))
                    .await?;
            }
            if self.holder_of(PENDING).await?.as_deref() == Some(new) {
                self.move_label(PENDING, None, Some(new)).await?;
            }
            Ok(())
        })
    }

    fn discard<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async move {
            if self.holder_of(PENDING).await?.as_deref() == Some(version) {
                self.move_label(PENDING, None, Some(version)).await?;
            }
            Ok(())
        })
    }

    fn retire<'a>(&'a self, _version: &'a str) -> BoxFuture<'a, Res<()>> {
        // AWSPREVIOUS stays readable as AWS intends; the old key itself is revoked by its kind.
        Box::pin(async { Ok(()) })
    }

    fn destroy<'a>(&'a self, _version: &'a str) -> BoxFuture<'a, Res<()>> {
        Box::pin(async { Ok(()) })
    }
}
