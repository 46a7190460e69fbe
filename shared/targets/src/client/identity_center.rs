//! AWS IAM Identity Center through `aws-sdk-identitystore` (users, groups, memberships) and
//! `aws-sdk-ssoadmin` (account assignments of permission sets to groups). Like the IAM client:
//! the SDK's own retries are off (the runtime owns the one retry policy), one write per call,
//! failures classified here once into [`CloudError`] (`ResourceNotFoundException` →
//! `NotFound`, `ConflictException` → `Conflict`, throttling → `Throttled`, access denied →
//! `Unauthorized`).
//!
//! Group ids are resolved from their DisplayName once and cached for the process (a group
//! renamed in Identity Center is found again after a miss).

use super::aws_iam::AwsConnect;
use aws_sdk_identitystore::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_identitystore::types::{AlternateIdentifier, ExternalId, MemberId, UniqueAttribute};
use aws_sdk_ssoadmin::types::{PrincipalType, StatusValues, TargetType};
use aws_smithy_types::Document;
use gatehouse_domain::cloud::CloudError;
use gatehouse_domain::identity_center::{Assignment, IdcOp, IdcPerson, IdcUser};
use gatehouse_domain::looker::ErrorKind;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Identity Center's settings (from `[aws.identity_center]`).
#[derive(Debug, Clone)]
pub struct IdcSettings {
    pub identity_store_id: String,
    pub instance_arn: Option<String>,
    pub external_id_issuer: Option<String>,
    /// How long an assignment's creation may stay `IN_PROGRESS`.
    pub assignment_timeout: Duration,
    /// First wait between two status polls (doubles, at most 5 s).
    pub poll_interval: Duration,
}

/// The Identity Center client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct IdentityCenter {
    store: aws_sdk_identitystore::Client,
    admin: aws_sdk_ssoadmin::Client,
    settings: Arc<IdcSettings>,
    /// Group DisplayName → GroupId.
    group_ids: Arc<Mutex<BTreeMap<String, String>>>,
}

/// The one place Identity Center failures are classified (over the IAM classification, which
/// knows the transport, throttling and access-denied codes).
pub fn classify<E>(action: &str, e: SdkError<E>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e.code().map(str::to_string);
    let mut c = super::aws_iam::classify(action, e);
    match code.as_deref() {
        Some("ResourceNotFoundException") => c.kind = ErrorKind::NotFound,
        Some("ConflictException") => c.kind = ErrorKind::Conflict,
        Some("InternalServerException" | "ServiceQuotaExceededException")
            if c.kind == ErrorKind::Permanent =>
        {
            c.kind = ErrorKind::Transient
        }
        _ => {}
    }
    c
}

fn not_found<T>(r: Result<T, CloudError>) -> Result<Option<T>, CloudError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn permanent(action: &str, message: String) -> CloudError {
    CloudError {
        target: gatehouse_domain::cloud::Target::Aws,
        kind: ErrorKind::Permanent,
        status: None,
        message: format!("{action}: {message}"),
        retry_after: None,
        source: None,
    }
}

impl IdentityCenter {
    /// From the SDK's default chain (region, credentials), with optional overrides; retries off.
    pub async fn connect(o: &AwsConnect, settings: IdcSettings) -> Self {
        let shared = o.load().await;
        let store = aws_sdk_identitystore::config::Builder::from(&shared)
            .retry_config(aws_sdk_identitystore::config::retry::RetryConfig::disabled())
            .build();
        let admin = aws_sdk_ssoadmin::config::Builder::from(&shared)
            .retry_config(aws_sdk_ssoadmin::config::retry::RetryConfig::disabled())
            .build();
        Self::from_clients(
            aws_sdk_identitystore::Client::from_conf(store),
            aws_sdk_ssoadmin::Client::from_conf(admin),
            settings,
        )
    }

    pub fn from_clients(
        store: aws_sdk_identitystore::Client,
        admin: aws_sdk_ssoadmin::Client,
        settings: IdcSettings,
    ) -> Self {
        IdentityCenter {
            store,
            admin,
            settings: Arc::new(settings),
            group_ids: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    pub fn settings(&self) -> &IdcSettings {
        &self.settings
    }

    fn store_id(&self) -> &str {
        &self.settings.identity_store_id
    }

    /// The user with this UserId (`None`: no such user).
    pub async fn user(&self, user_id: &str) -> Result<Option<IdcUser>, CloudError> {
        let r = self
            .store
            .describe_user()
            .identity_store_id(self.store_id())
            .user_id(user_id)
            .send()
            .await
            .map_err(|e| classify("DescribeUser", e));
        Ok(not_found(r)?.map(|u| IdcUser {
            user_id: u.user_id().to_string(),
            user_name: u.user_name().map(str::to_string),
        }))
    }

    async fn user_id_by(&self, id: AlternateIdentifier) -> Result<Option<String>, CloudError> {
        let r = self
            .store
            .get_user_id()
            .identity_store_id(self.store_id())
            .alternate_identifier(id)
            .send()
            .await
            .map_err(|e| classify("GetUserId", e));
        Ok(not_found(r)?.map(|o| o.user_id().to_string()))
    }

    fn unique(path: &str, value: &str) -> Result<AlternateIdentifier, CloudError> {
        UniqueAttribute::builder()
            .attribute_path(path)
            .attribute_value(Document::String(value.to_string()))
            .build()
            .map(AlternateIdentifier::UniqueAttribute)
            .map_err(|e| permanent("GetUserId", e.to_string()))
    }

    /// The person's UserId found the first time (afterwards the durable link names it): by
    /// (`external_id_issuer`, the IdP's user id) when configured, then `userName` = email, then
    /// `emails.value` = email, for the current email and then each earlier one.
    pub async fn find_user(
        &self,
        person: &IdcPerson,
        previous_emails: &[String],
    ) -> Result<Option<String>, CloudError> {
        if let (Some(issuer), Some(id)) = (&self.settings.external_id_issuer, &person.external_id) {
            let ext = ExternalId::builder()
                .issuer(issuer)
                .id(id)
                .build()
                .map_err(|e| permanent("GetUserId", e.to_string()))?;
            if let Some(u) = self.user_id_by(AlternateIdentifier::ExternalId(ext)).await? {
                return Ok(Some(u));
            }
        }
        for email in person.email.iter().chain(previous_emails) {
            for path in ["userName", "emails.value"] {
                if let Some(u) = self.user_id_by(Self::unique(path, email)?).await? {
                    return Ok(Some(u));
                }
            }
        }
        Ok(None)
    }

    /// The GroupId of the group with this DisplayName (`None`: no such group); cached.
    pub async fn group_id(&self, display_name: &str) -> Result<Option<String>, CloudError> {
        if let Some(id) = self
            .group_ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(display_name)
        {
            return Ok(Some(id.clone()));
        }
        let r = self
            .store
            .get_group_id()
            .identity_store_id(self.store_id())
            .alternate_identifier(AlternateIdentifier::UniqueAttribute(
                UniqueAttribute::builder()
                    .attribute_path("displayName")
                    .attribute_value(Document::String(display_name.to_string()))
                    .build()
                    .map_err(|e| permanent("GetGroupId", e.to_string()))?,
            ))
            .send()
            .await
            .map_err(|e| classify("GetGroupId", e));
        let id = not_found(r)?.map(|o| o.group_id().to_string());
        if let Some(id) = &id {
            self.group_ids
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(display_name.to_string(), id.clone());
        }
        Ok(id)
    }

    /// GroupId → MembershipId of every group the user is a member of (all pages).
    pub async fn memberships(&self, user_id: &str) -> Result<BTreeMap<String, String>, CloudError> {
        let mut out = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .store
                .list_group_memberships_for_member()
                .identity_store_id(self.store_id())
                .member_id(MemberId::UserId(user_id.to_string()))
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify("ListGroupMembershipsForMember", e))?;
            for m in page.group_memberships() {
                if let Some(g) = m.group_id() {
                    out.insert(g.to_string(), m.membership_id().to_string());
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    fn instance_arn(&self, action: &str) -> Result<&str, CloudError> {
        self.settings.instance_arn.as_deref().ok_or_else(|| {
            permanent(
                action,
                "aws.identity_center.instance_arn is not configured (needed for account assignments)".into(),
            )
        })
    }

    /// Whether `group_id` holds the assignment (ListAccountAssignments of its account and
    /// permission set, all pages).
    pub async fn has_assignment(&self, a: &Assignment, group_id: &str) -> Result<bool, CloudError> {
        let instance = self.instance_arn("ListAccountAssignments")?;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .admin
                .list_account_assignments()
                .instance_arn(instance)
                .account_id(&a.account_id)
                .permission_set_arn(&a.permission_set_arn)
                .max_results(100)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| classify("ListAccountAssignments", e))?;
            if page.account_assignments().iter().any(|x| {
                x.principal_type() == Some(&PrincipalType::Group) && x.principal_id() == Some(group_id)
            }) {
                return Ok(true);
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(false),
            }
        }
    }

    /// One write. An account assignment is created and its creation status polled until it
    /// leaves `IN_PROGRESS` (`FAILED` is a permanent error with AWS's reason).
    pub async fn execute(&self, user_id: &str, op: &IdcOp) -> Result<(), CloudError> {
        match op {
            IdcOp::AddMembership { group_id, .. } => {
                self.store
                    .create_group_membership()
                    .identity_store_id(self.store_id())
                    .group_id(group_id)
                    .member_id(MemberId::UserId(user_id.to_string()))
                    .send()
                    .await
                    .map_err(|e| classify("CreateGroupMembership", e))?;
            }
            IdcOp::RemoveMembership { membership_id, .. } => {
                self.store
                    .delete_group_membership()
                    .identity_store_id(self.store_id())
                    .membership_id(membership_id)
                    .send()
                    .await
                    .map_err(|e| classify("DeleteGroupMembership", e))?;
            }
            IdcOp::DeleteUser => {
                self.store
                    .delete_user()
                    .identity_store_id(self.store_id())
                    .user_id(user_id)
                    .send()
                    .await
                    .map_err(|e| classify("DeleteUser", e))?;
            }
            IdcOp::CreateAccountAssignment {
                group_id,
                account_id,
                permission_set_arn,
                ..
            } => {
                let instance = self.instance_arn("CreateAccountAssignment")?;
                let out = self
                    .admin
                    .create_account_assignment()
                    .instance_arn(instance)
                    .target_id(account_id)
                    .target_type(TargetType::AwsAccount)
                    .permission_set_arn(permission_set_arn)
                    .principal_type(PrincipalType::Group)
                    .principal_id(group_id)
                    .send()
                    .await
                    .map_err(|e| classify("CreateAccountAssignment", e))?;
                let status = out.account_assignment_creation_status();
                failed(status)?;
                let request = status.and_then(|s| s.request_id()).map(str::to_string);
                self.settle(instance, status.and_then(|s| s.status()).cloned(), request)
                    .await?;
            }
        }
        Ok(())
    }

    /// Poll `DescribeAccountAssignmentCreationStatus` until the request succeeded or failed.
    async fn settle(
        &self,
        instance: &str,
        mut status: Option<StatusValues>,
        request: Option<String>,
    ) -> Result<(), CloudError> {
        const ACTION: &str = "DescribeAccountAssignmentCreationStatus";
        let deadline = tokio::time::Instant::now() + self.settings.assignment_timeout;
        let mut wait = self.settings.poll_interval;
        loop {
            if status == Some(StatusValues::Succeeded) {
                return Ok(());
            }
            let Some(request) = &request else {
                return Err(permanent(
                    ACTION,
                    "the creation answer carried no request id".into(),
                ));
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(CloudError {
                    kind: ErrorKind::Transient,
                    ..permanent(
                        ACTION,
                        format!("still in progress after {:?}", self.settings.assignment_timeout),
                    )
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
            let out = self
                .admin
                .describe_account_assignment_creation_status()
                .instance_arn(instance)
                .account_assignment_creation_request_id(request)
                .send()
                .await
                .map_err(|e| classify(ACTION, e))?;
            let s = out.account_assignment_creation_status();
            failed(s)?;
            status = s.and_then(|s| s.status()).cloned();
        }
    }
}

/// A creation status that says `FAILED`: permanent, with AWS's reason.
fn failed(s: Option<&aws_sdk_ssoadmin::types::AccountAssignmentOperationStatus>) -> Result<(), CloudError> {
    match s {
        Some(s) if s.status() == Some(&StatusValues::Failed) => Err(permanent(
            "CreateAccountAssignment",
            format!("failed: {}", s.failure_reason().unwrap_or("no reason given")),
        )),
        _ => Ok(()),
    }
}
