//! AWS IAM through `aws-sdk-iam`: reading one user (groups, tags, access keys, login profile),
//! the paginated listings reconcile uses, and one write per call. The SDK's own retries are
//! off: the runtime owns the retry policy. Failures are classified here, once, into
//! [`CloudError`]: throttling → `Throttled`, `NoSuchEntity` → `NotFound` (a revocation that
//! finds nothing is already done), `AccessDenied` → `Unauthorized` (permanent).

use aws_sdk_iam::Client;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::{StatusType, Tag};
use gatehouse_domain::cloud::{
    AwsAccessKey, AwsIamOp, AwsReadNeeds, AwsUser, AwsUserKey, CloudError, Target,
};
use gatehouse_domain::looker::ErrorKind;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

mod sweep;

/// The IAM client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AwsIam {
    client: Client,
    /// STS on the same credentials and endpoint (`None` when built from an IAM client alone).
    sts: Option<aws_sdk_sts::Client>,
    /// Tag mapping index: tag value → user name (filled by one listing, refreshed on a miss).
    tag_index: Arc<Mutex<Option<BTreeMap<String, String>>>>,
    reads: Arc<AtomicUsize>,
}

/// Overrides of the SDK's default chain.
#[derive(Debug, Clone, Default)]
pub struct AwsConnect {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub credentials_file: Option<std::path::PathBuf>,
}

impl AwsConnect {
    /// The SDK's shared configuration: its default chain (region, credentials) with these
    /// overrides. Each client then turns the SDK's own retries off.
    pub async fn load(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(p) = &self.profile {
            loader = loader.profile_name(p);
        }
        if let Some(f) = &self.credentials_file {
            // The replacement types live in aws-runtime, which aws-config does not re-export.
            #[allow(deprecated)]
            use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
            #[allow(deprecated)]
            let files = ProfileFiles::builder()
                .with_file(ProfileFileKind::Credentials, f)
                .build();
            loader = loader.profile_files(files);
        }
        loader.load().await
    }
}

/// Page size of every listing (IAM's maximum).
const PAGE: i32 = 1000;

/// The one place IAM failures are classified.
/// The SDK's error is kept as the cause (`source`): a dispatch failure's chain says why.
pub fn classify<E>(action: &str, e: SdkError<E>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or_default();
    let kind = match (&e, code, status) {
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_), _, _) => {
            ErrorKind::Transient
        }
        (
            _,
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "TooManyRequestsException",
            _,
        )
        | (_, _, Some(429)) => ErrorKind::Throttled,
        (_, "NoSuchEntity" | "NoSuchEntityException", _) | (_, _, Some(404)) => ErrorKind::NotFound,
        (
            _,
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken",
            _,
        )
        | (_, _, Some(401 | 403)) => ErrorKind::Unauthorized,
        (_, "ServiceFailure" | "ServiceUnavailable" | "InternalFailure" | "ConcurrentModification", _)
        | (_, _, Some(500..=599)) => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    };
    let message = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{action}: {c}: {m}"),
        (Some(c), None) => format!("{action}: {c}"),
        _ => format!("{action}: {}", describe(&e)),
    };
    CloudError {
        target: Target::Aws,
        kind,
        status,
        message,
        retry_after: None,
        source: Some(Arc::new(e)),
    }
}

fn describe<E>(e: &SdkError<E>) -> &'static str {
    match e {
        SdkError::TimeoutError(_) => "timed out",
        SdkError::DispatchFailure(_) => "cannot reach iam",
        SdkError::ResponseError(_) => "unreadable response",
        SdkError::ConstructionFailure(_) => "request could not be built",
        _ => "service error",
    }
}

impl AwsIam {
    /// From the SDK's default chain (region, credentials), with optional overrides.
    pub async fn connect(o: &AwsConnect) -> Self {
        let shared = o.load().await;
        let conf = aws_sdk_iam::config::Builder::from(&shared)
            .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled())
            .build();
        let sts = aws_sdk_sts::config::Builder::from(&shared)
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
            .build();
        AwsIam {
            sts: Some(aws_sdk_sts::Client::from_conf(sts)),
            ..Self::from_client(Client::from_conf(conf))
        }
    }

    /// The ARN Gatehouse calls AWS as (`sts:GetCallerIdentity`); `None` without an STS client.
    pub async fn caller_arn(&self) -> Result<Option<String>, CloudError> {
        let Some(sts) = &self.sts else { return Ok(None) };
        let out = sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| classify("GetCallerIdentity", e))?;
        Ok(out.arn().map(str::to_string))
    }

    /// With an STS client too, so [`AwsIam::caller_arn`] can say who Gatehouse is (tests give both
    /// explicit credentials; [`AwsIam::connect`] builds both from the SDK's chain).
    pub fn from_clients(client: Client, sts: aws_sdk_sts::Client) -> Self {
        AwsIam {
            sts: Some(sts),
            ..Self::from_client(client)
        }
    }

    pub fn from_client(client: Client) -> Self {
        AwsIam {
            client,
            sts: None,
            tag_index: Arc::new(Mutex::new(None)),
            reads: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Read calls made so far (for reconcile statistics and tests).
    pub fn read_calls(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The IAM user name of a person, or `None` when there is no such user.
    pub async fn resolve(&self, key: &AwsUserKey) -> Result<Option<String>, CloudError> {
        match key {
            AwsUserKey::Name(n) => Ok(Some(n.clone())),
            AwsUserKey::Tag { key, value } => {
                let cached = self
                    .tag_index
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .and_then(|m| m.get(value).cloned());
                if let Some(name) = cached {
                    return Ok(Some(name));
                }
                let index = self.tag_index_of(key).await?;
                let found = index.get(value).cloned();
                *self.tag_index.lock().unwrap_or_else(PoisonError::into_inner) = Some(index);
                Ok(found)
            }
        }
    }

    /// Tag value → user name for every user carrying `key` (ListUsers + ListUserTags per user).
    pub async fn tag_index_of(&self, key: &str) -> Result<BTreeMap<String, String>, CloudError> {
        let mut index = BTreeMap::new();
        for user in self.list_users().await? {
            if let Some(v) = self.tags(&user).await?.remove(key) {
                index.insert(v, user);
            }
        }
        Ok(index)
    }

    /// Read one user: groups always; tags and credentials when the plan needs them.
    /// `None` when IAM has no such user.
    #[tracing::instrument(name = "aws.iam", skip_all, fields(
        otel.name = "read_user", otel.kind = "client", rpc.method = "read_user",
        tags = needs.tags, credentials = needs.credentials,
    ))]
    pub async fn read_user(&self, name: &str, needs: AwsReadNeeds) -> Result<Option<AwsUser>, CloudError> {
        let groups = match self.groups_for_user(name).await {
            Ok(g) => g,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let tags = if needs.tags {
            self.tags(name).await?
        } else {
            BTreeMap::new()
        };
        let (access_keys, login_profile) = if needs.credentials {
            let (k, p) = futures::join!(self.access_keys(name), self.has_login_profile(name));
            (k?, p?)
        } else {
            (Vec::new(), false)
        };
        let held = if needs.sweep {
            Some(Box::new(self.read_held(name, needs.service_specific).await?))
        } else {
            None
        };
        Ok(Some(AwsUser {
            name: name.to_string(),
            groups,
            tags,
            access_keys,
            login_profile,
            held,
            remapped: None,
        }))
    }

    async fn groups_for_user(&self, name: &str) -> Result<BTreeSet<String>, CloudError> {
        let mut out = BTreeSet::new();
        // One request per page; the SDK's paginator follows `Marker` while `IsTruncated`.
        let mut pages = self
            .client
            .list_groups_for_user()
            .user_name(name)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListGroupsForUser", e))?;
            out.extend(r.groups().iter().map(|g| g.group_name().to_string()));
        }
        Ok(out)
    }

    /// `ListUserTags` (paginated).
    pub async fn tags(&self, name: &str) -> Result<BTreeMap<String, String>, CloudError> {
        let mut out = BTreeMap::new();
        // One request per page; the SDK's paginator follows `Marker` while `IsTruncated`.
        let mut pages = self
            .client
            .list_user_tags()
            .user_name(name)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListUserTags", e))?;
            out.extend(
                r.tags()
                    .iter()
                    .map(|t| (t.key().to_string(), t.value().to_string())),
            );
        }
        Ok(out)
    }

    /// `ListAccessKeys`.
    pub async fn access_keys(&self, name: &str) -> Result<Vec<AwsAccessKey>, CloudError> {
        let mut out = Vec::new();
        // One request per page; the SDK's paginator follows `Marker` while `IsTruncated`.
        let mut pages = self
            .client
            .list_access_keys()
            .user_name(name)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListAccessKeys", e))?;
            out.extend(r.access_key_metadata().iter().filter_map(|k| {
                Some(AwsAccessKey {
                    id: k.access_key_id()?.to_string(),
                    active: k.status() == Some(&StatusType::Active),
                })
            }));
        }
        Ok(out)
    }

    /// `GetLoginProfile`: whether the user has a console password.
    pub async fn has_login_profile(&self, name: &str) -> Result<bool, CloudError> {
        self.read();
        match self.client.get_login_profile().user_name(name).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = classify("GetLoginProfile", e);
                if e.kind == ErrorKind::NotFound {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Every IAM user name (`ListUsers`, 1,000 per call).
    pub async fn list_users(&self) -> Result<Vec<String>, CloudError> {
        let mut out = Vec::new();
        // One request per page; the SDK's paginator follows `Marker` while `IsTruncated`.
        let mut pages = self.client.list_users().max_items(PAGE).into_paginator().send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListUsers", e))?;
            out.extend(r.users().iter().map(|u| u.user_name().to_string()));
        }
        Ok(out)
    }

    /// Members of one group (`GetGroup`, 1,000 per call); `None` when the group does not exist.
    pub async fn group_members(&self, group: &str) -> Result<Option<Vec<String>>, CloudError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .get_group()
            .group_name(group)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = match page {
                Ok(r) => r,
                Err(e) => {
                    let e = classify("GetGroup", e);
                    return if e.kind == ErrorKind::NotFound {
                        Ok(None)
                    } else {
                        Err(e)
                    };
                }
            };
            out.extend(r.users().iter().map(|u| u.user_name().to_string()));
        }
        Ok(Some(out))
    }

    /// Perform one write (no retry).
    #[tracing::instrument(name = "aws.iam", skip_all, fields(
        otel.name = op.action(), otel.kind = "client", rpc.method = op.action(),
    ))]
    pub async fn execute(&self, user: &str, op: &AwsIamOp) -> Result<(), CloudError> {
        let c = &self.client;
        let action = op.action();
        match op {
            AwsIamOp::AddUserToGroup { group } => c
                .add_user_to_group()
                .user_name(user)
                .group_name(group)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            AwsIamOp::RemoveUserFromGroup { group } => c
                .remove_user_from_group()
                .user_name(user)
                .group_name(group)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            AwsIamOp::TagUser { tags } => {
                let tags: Result<Vec<Tag>, _> = tags
                    .iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect();
                let tags = tags.map_err(|e| CloudError {
                    target: Target::Aws,
                    kind: ErrorKind::Permanent,
                    status: None,
                    message: format!("TagUser: {e}"),
                    retry_after: None,
                    source: None,
                })?;
                c.tag_user()
                    .user_name(user)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(action, e))
            }
            AwsIamOp::UntagUser { keys } => c
                .untag_user()
                .user_name(user)
                .set_tag_keys(Some(keys.clone()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            AwsIamOp::DeactivateAccessKey { key_id } => c
                .update_access_key()
                .user_name(user)
                .access_key_id(key_id)
                .status(StatusType::Inactive)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            AwsIamOp::DeleteAccessKey { key_id } => c
                .delete_access_key()
                .user_name(user)
                .access_key_id(key_id)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            AwsIamOp::DeleteLoginProfile => c
                .delete_login_profile()
                .user_name(user)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            _ => self.execute_sweep(user, op).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iam::config::http::HttpResponse;
    use aws_sdk_iam::error::ErrorMetadata;
    use aws_sdk_iam::operation::add_user_to_group::AddUserToGroupError;

    fn service_error(status: u16, code: &str) -> SdkError<AddUserToGroupError> {
        let meta = ErrorMetadata::builder().code(code).message("the message").build();
        let raw = HttpResponse::new(status.try_into().unwrap(), "".into());
        SdkError::service_error(AddUserToGroupError::generic(meta), raw)
    }

    #[test]
    fn iam_errors_are_classified_in_one_place() {
        for (status, code, kind) in [
            (400, "Throttling", ErrorKind::Throttled),
            (404, "NoSuchEntity", ErrorKind::NotFound),
            (403, "AccessDenied", ErrorKind::Unauthorized),
            (403, "InvalidClientTokenId", ErrorKind::Unauthorized),
            (500, "ServiceFailure", ErrorKind::Transient),
            (409, "LimitExceeded", ErrorKind::Permanent),
            (400, "ValidationError", ErrorKind::Permanent),
        ] {
            let e = classify("AddUserToGroup", service_error(status, code));
            assert_eq!(e.kind, kind, "{code}");
            assert_eq!(e.status, Some(status));
            assert!(
                e.message
                    .starts_with(&format!("AddUserToGroup: {code}: the message")),
                "{e}"
            );
        }
        let denied = classify("AddUserToGroup", service_error(403, "AccessDenied"));
        assert!(!denied.is_retryable());
        assert!(
            denied
                .ledger_status()
                .starts_with("error: access denied: AddUserToGroup: AccessDenied")
        );
    }
}
