//! Cloud IAM as Gatehouse sees it: the desired AWS IAM and GCP IAM state of one person (from the
//! policy), what is read back, the operations a plan is made of, and the diff. Pure.
//!
//! Only managed things change: IAM groups and tag keys a rule names, and the unconditional GCP
//! bindings of (resource, role) pairs a rule names. Every other group, tag, binding, member and
//! every conditional binding is kept exactly as it is.

use crate::identity::Identity;
use crate::looker::{HttpCall, Method};
use crate::policy::{GcpGrant, Policy, RuleName, applies};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Rule names used for cloud facts that come from the offboarding sections.
pub mod rules {
    pub const AWS_REMOVE_GROUPS: &str = "aws.offboarding.remove_groups";
    pub const AWS_DEACTIVATE_KEYS: &str = "aws.offboarding.deactivate_access_keys";
    pub const AWS_DELETE_KEYS: &str = "aws.offboarding.delete_access_keys_after_days";
    pub const AWS_LOGIN_PROFILE: &str = "aws.offboarding.delete_login_profile";
    pub const GCP_REMOVE_BINDINGS: &str = "gcp.offboarding.remove_bindings";
    /// The person's email changed: their earlier `user:` member leaves the managed bindings
    /// (the new one is granted by the rules that apply), issue 16.
    pub const GCP_MEMBER_CHANGED: &str = "identity.member_changed";
    /// The AWS user mapping now names another IAM user than the one linked to the person:
    /// reported, never acted on (issue 16).
    pub const AWS_MAPPING_CHANGED: &str = "identity.mapping_changed";
    pub const GCP_REMOVE_GROUP_MEMBERSHIPS: &str = "gcp.offboarding.remove_group_memberships";
    /// A Google group membership held under an email the person no longer has (issue 16).
    pub const GCP_PREVIOUS_EMAIL: &str = "identity.previous_email";
}

/// A cloud target, as named in the ledger and in reconcile modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Looker,
    Aws,
    Gcp,
}

impl Target {
    /// The ledger's `target` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Looker => "looker",
            Target::Aws => "aws",
            Target::Gcp => "gcp",
        }
    }
}

/// A cloud call failed. One adapter per cloud classifies; everyone else matches on `kind`.
/// Carries no secret: messages come from the API's error message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} {kind:?}{}: {message}", target.as_str(), status.map(|s| format!(" (http {s})")).unwrap_or_default())]
pub struct CloudError {
    pub target: Target,
    pub kind: crate::error::Kind,
    pub status: Option<u16>,
    pub message: String,
    pub retry_after: Option<std::time::Duration>,
    /// What failed underneath (the SDK's error, the transport), kept as a value.
    #[source]
    pub source: Option<crate::error::Source>,
}

impl crate::error::Classified for CloudError {
    fn kind(&self) -> crate::error::Kind {
        self.kind
    }
    fn retry_after(&self) -> Option<std::time::Duration> {
        self.retry_after
    }
}

impl CloudError {
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// How the ledger shows this failure (`429`, `404 already gone`, `error: access denied: …`).
    pub fn ledger_status(&self) -> String {
        use crate::error::Kind as K;
        match (self.kind, self.status) {
            (K::Unauthorized, _) => format!("error: access denied: {}", self.message),
            (K::Permanent, _) => format!("error: {}", self.message),
            (_, Some(s)) => s.to_string(),
            (k, None) => format!("error: {k:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AWS
// ---------------------------------------------------------------------------------------------

/// How an identity maps to its IAM user (explicit, from configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsUserMapping {
    /// The IAM user carrying this tag with the person's email as its value.
    Tag { key: String },
    /// An IAM user name made from a template: `{email}`, `{local}` (the email's local part),
    /// `{login}` (the IdP login attribute).
    Template { template: String },
}

impl AwsUserMapping {
    /// The IAM user key for this identity, or `None` when the identity lacks what the rule needs.
    pub fn key_for(&self, identity: &Identity) -> Option<AwsUserKey> {
        let email = identity.email()?;
        match self {
            AwsUserMapping::Tag { key } => Some(AwsUserKey::Tag {
                key: key.clone(),
                value: email.to_string(),
            }),
            AwsUserMapping::Template { template } => {
                let local = email.split('@').next().unwrap_or(email);
                let mut name = template.replace("{email}", email).replace("{local}", local);
                if name.contains("{login}") {
                    name = name.replace("{login}", identity.attribute("login")?);
                }
                Some(AwsUserKey::Name(name))
            }
        }
    }
}

/// Which IAM user a person is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AwsUserKey {
    Name(String),
    Tag { key: String, value: String },
}

impl AwsUserKey {
    /// How the plan names the user before it is resolved.
    pub fn describe(&self) -> String {
        match self {
            AwsUserKey::Name(n) => n.clone(),
            AwsUserKey::Tag { key, value } => format!("{{iam user tagged {key}={value}}}"),
        }
    }
}

/// What to do with the access keys of an offboarded person (the policy file's type).
pub use crate::policy::KeyAction;

/// What AWS IAM should look like for one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredAws {
    pub user: AwsUserKey,
    pub offboarded: bool,
    /// IAM group → rule that grants it.
    pub groups: BTreeMap<String, RuleName>,
    pub managed_groups: BTreeSet<String>,
    /// Tag key → (value, rule).
    pub tags: BTreeMap<String, (String, RuleName)>,
    pub managed_tags: BTreeSet<String>,
    pub keys: KeyAction,
    pub delete_login_profile: bool,
    /// The rest of the leaver sweep (policies, other credentials, MFA, live sessions).
    #[serde(default)]
    pub sweep: sweep::AwsSweep,
}

impl DesiredAws {
    /// What has to be read besides the user's groups.
    pub fn needs(&self) -> AwsReadNeeds {
        AwsReadNeeds {
            tags: !self.managed_tags.is_empty() || matches!(self.user, AwsUserKey::Tag { .. }),
            credentials: self.offboarded && (self.keys != KeyAction::Keep || self.delete_login_profile),
            sweep: self.offboarded && self.sweep.any(),
            service_specific: self.offboarded && self.sweep.service_specific_credentials != KeyAction::Keep,
        }
    }
}

/// Reads a plan needs for one IAM user (fewest calls: credentials only when offboarding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AwsReadNeeds {
    pub tags: bool,
    pub credentials: bool,
    /// What the leaver sweep looks at ([`sweep::AwsHeld`]).
    pub sweep: bool,
    /// Service-specific credentials too (only when that step is on).
    pub service_specific: bool,
}

/// One access key as `ListAccessKeys` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsAccessKey {
    pub id: String,
    pub active: bool,
}

/// An IAM user as read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsUser {
    pub name: String,
    pub groups: BTreeSet<String>,
    pub tags: BTreeMap<String, String>,
    pub access_keys: Vec<AwsAccessKey>,
    pub login_profile: bool,
    /// What the leaver sweep looks at; `None` when not read (no sweep is planned then).
    #[serde(default)]
    pub held: Option<Box<sweep::AwsHeld>>,
    /// Set when this is the IAM user linked to the person but the user mapping now names
    /// another (a renamed person): what the mapping names now (an IAM user name, or a
    /// description when it names none). Reported, never acted on (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remapped: Option<String>,
}

/// What IAM holds for the person, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsActual {
    /// AWS is not reachable in this run (offline plan): every call that may apply is listed.
    Unknown,
    Absent,
    Present(AwsUser),
}

/// One IAM write (Query API, version 2010-05-08).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AwsIamOp {
    AddUserToGroup {
        group: String,
    },
    RemoveUserFromGroup {
        group: String,
    },
    TagUser {
        tags: BTreeMap<String, String>,
    },
    UntagUser {
        keys: Vec<String>,
    },
    /// `UpdateAccessKey Status=Inactive`; `{each}` in an offline plan.
    DeactivateAccessKey {
        key_id: String,
    },
    DeleteAccessKey {
        key_id: String,
    },
    DeleteLoginProfile,
    // The leaver sweep (`cloud::sweep`).
    DetachUserPolicy {
        policy_arn: String,
    },
    DeleteUserPolicy {
        policy_name: String,
    },
    /// `Update{SSHPublicKey,ServiceSpecificCredential,SigningCertificate} Status=Inactive`.
    DeactivateCredential {
        kind: sweep::CredentialKind,
        id: String,
    },
    DeleteCredential {
        kind: sweep::CredentialKind,
        id: String,
    },
    DeactivateMfaDevice {
        serial: String,
    },
    /// Gatehouse's deny policy for sessions issued before the offboarding.
    PutUserPolicy {
        policy_name: String,
        document: String,
    },
}

impl AwsIamOp {
    /// The IAM action name.
    pub fn action(&self) -> &'static str {
        match self {
            AwsIamOp::AddUserToGroup { .. } => "AddUserToGroup",
            AwsIamOp::RemoveUserFromGroup { .. } => "RemoveUserFromGroup",
            AwsIamOp::TagUser { .. } => "TagUser",
            AwsIamOp::UntagUser { .. } => "UntagUser",
            AwsIamOp::DeactivateAccessKey { .. } => "UpdateAccessKey",
            AwsIamOp::DeleteAccessKey { .. } => "DeleteAccessKey",
            AwsIamOp::DeleteLoginProfile => "DeleteLoginProfile",
            AwsIamOp::DetachUserPolicy { .. } => "DetachUserPolicy",
            AwsIamOp::DeleteUserPolicy { .. } => "DeleteUserPolicy",
            AwsIamOp::DeactivateCredential { kind, .. } => kind.deactivate_action(),
            AwsIamOp::DeleteCredential { kind, .. } => kind.delete_action(),
            AwsIamOp::DeactivateMfaDevice { .. } => "DeactivateMFADevice",
            AwsIamOp::PutUserPolicy { .. } => "PutUserPolicy",
        }
    }

    /// Whether this call takes access away.
    pub fn is_revoking(&self) -> bool {
        !matches!(self, AwsIamOp::AddUserToGroup { .. } | AwsIamOp::TagUser { .. })
    }

    /// The exact Query API call (`POST /` with form parameters), as the ledger records it.
    pub fn http(&self, user: &str) -> HttpCall {
        let mut params: Vec<(String, String)> = vec![("Action".into(), self.action().into())];
        match self {
            AwsIamOp::AddUserToGroup { group } | AwsIamOp::RemoveUserFromGroup { group } => {
                params.push(("GroupName".into(), group.clone()));
            }
            AwsIamOp::TagUser { tags } => {
                for (i, (k, v)) in tags.iter().enumerate() {
                    params.push((format!("Tags.member.{}.Key", i + 1), k.clone()));
                    params.push((format!("Tags.member.{}.Value", i + 1), v.clone()));
                }
            }
            AwsIamOp::UntagUser { keys } => {
                for (i, k) in keys.iter().enumerate() {
                    params.push((format!("TagKeys.member.{}", i + 1), k.clone()));
                }
            }
            AwsIamOp::DeactivateAccessKey { key_id } => {
                params.push(("AccessKeyId".into(), key_id.clone()));
                params.push(("Status".into(), "Inactive".into()));
            }
            AwsIamOp::DeleteAccessKey { key_id } => params.push(("AccessKeyId".into(), key_id.clone())),
            AwsIamOp::DeleteLoginProfile => {}
            _ => params.extend(sweep::params(self)),
        }
        params.push(("UserName".into(), user.to_string()));
        params.push(("Version".into(), "2010-05-08".into()));
        let body: serde_json::Map<String, serde_json::Value> =
            params.into_iter().map(|(k, v)| (k, v.into())).collect();
        HttpCall {
            method: Method::Post,
            path: "/".into(),
            body: Some(serde_json::Value::Object(body)),
        }
    }

    /// The op a ledger row records (the inverse of [`AwsIamOp::http`]) and the user it names,
    /// for the ops whose effect the access review replays: group membership, tags, access-key
    /// state and the console password. `None` for any other call.
    pub fn from_ledger(call: &HttpCall) -> Option<(String, AwsIamOp)> {
        let params = call.body.as_ref()?.as_object()?;
        let p = |k: &str| params.get(k).and_then(|v| v.as_str()).map(str::to_string);
        // `Prefix.member.1`, `Prefix.member.2`, ... in order, until one is missing.
        let list = |prefix: &str, suffix: &str| -> Vec<String> {
            (1..)
                .map_while(|i| p(&format!("{prefix}.member.{i}{suffix}")))
                .collect()
        };
        let op = match p("Action")?.as_str() {
            "AddUserToGroup" => AwsIamOp::AddUserToGroup {
                group: p("GroupName")?,
            },
            "RemoveUserFromGroup" => AwsIamOp::RemoveUserFromGroup {
                group: p("GroupName")?,
            },
            "TagUser" => {
                let (keys, values) = (list("Tags", ".Key"), list("Tags", ".Value"));
                if keys.len() != values.len() {
                    return None;
                }
                AwsIamOp::TagUser {
                    tags: keys.into_iter().zip(values).collect(),
                }
            }
            "UntagUser" => AwsIamOp::UntagUser {
                keys: list("TagKeys", ""),
            },
            "UpdateAccessKey" if p("Status").as_deref() == Some("Inactive") => {
                AwsIamOp::DeactivateAccessKey {
                    key_id: p("AccessKeyId")?,
                }
            }
            "DeleteAccessKey" => AwsIamOp::DeleteAccessKey {
                key_id: p("AccessKeyId")?,
            },
            "DeleteLoginProfile" => AwsIamOp::DeleteLoginProfile,
            _ => return None,
        };
        Some((p("UserName")?, op))
    }

    /// One line for `gatehouse plan`: `aws iam AddUserToGroup GroupName=x UserName=y`.
    pub fn render(&self, user: &str) -> String {
        let call = self.http(user);
        let mut out = String::from("aws iam");
        if let Some(serde_json::Value::Object(params)) = &call.body {
            let _ = write!(out, " {}", self.action());
            for (k, v) in params {
                if k != "Action" && k != "Version" {
                    let _ = write!(out, " {k}={}", v.as_str().unwrap_or_default());
                }
            }
        }
        out
    }
}

/// One planned IAM call and the policy element that asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsStep {
    pub op: AwsIamOp,
    pub rule: RuleName,
}

/// The IAM calls for one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsPlan {
    /// The IAM user name (or a description when unresolved).
    pub user: String,
    pub steps: Vec<AwsStep>,
    pub notes: Vec<String>,
    /// What the user mapping names now when it is not the IAM user linked to the person (a
    /// renamed person): the plan acts on the linked user and this is reported (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_changed: Option<String>,
}

impl AwsPlan {
    /// The report of a changed mapping: the linked IAM user is kept, nothing is split.
    pub fn mapping_change_reason(&self) -> Option<String> {
        self.mapping_changed.as_ref().map(|now| {
            format!(
                "the user mapping now names {now}, not the linked iam user {}: gatehouse acts on the linked user and creates or changes no other; move or relink it by hand",
                self.user
            )
        })
    }
}

/// Diff desired against actual for one IAM user.
pub fn diff_aws(desired: &DesiredAws, actual: &AwsActual) -> AwsPlan {
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let push = |steps: &mut Vec<AwsStep>, op, rule: &str| {
        steps.push(AwsStep {
            op,
            rule: rule.to_string(),
        })
    };
    let user = match actual {
        AwsActual::Present(u) => u.name.clone(),
        _ => desired.user.describe(),
    };
    let group_rule = |g: &str| {
        desired.groups.get(g).cloned().unwrap_or_else(|| {
            if desired.offboarded {
                rules::AWS_REMOVE_GROUPS.into()
            } else {
                crate::policy::rules::UNMANAGED.into()
            }
        })
    };
    match actual {
        AwsActual::Absent => notes.push(format!(
            "no IAM user is {}; nothing to do (gatehouse never creates IAM users)",
            desired.user.describe()
        )),
        AwsActual::Unknown => {
            for g in &desired.managed_groups {
                let op = if desired.groups.contains_key(g) {
                    AwsIamOp::AddUserToGroup { group: g.clone() }
                } else {
                    AwsIamOp::RemoveUserFromGroup { group: g.clone() }
                };
                push(&mut steps, op, &group_rule(g));
            }
            if !desired.tags.is_empty() {
                let tags = desired
                    .tags
                    .iter()
                    .map(|(k, (v, _))| (k.clone(), v.clone()))
                    .collect();
                let rule = desired
                    .tags
                    .values()
                    .next()
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default();
                push(&mut steps, AwsIamOp::TagUser { tags }, &rule);
            }
            if desired.offboarded {
                let each = "{each}".to_string();
                match desired.keys {
                    KeyAction::Keep => {}
                    KeyAction::Deactivate => push(
                        &mut steps,
                        AwsIamOp::DeactivateAccessKey { key_id: each },
                        rules::AWS_DEACTIVATE_KEYS,
                    ),
                    KeyAction::Delete => push(
                        &mut steps,
                        AwsIamOp::DeleteAccessKey { key_id: each },
                        rules::AWS_DELETE_KEYS,
                    ),
                }
                if desired.delete_login_profile {
                    push(&mut steps, AwsIamOp::DeleteLoginProfile, rules::AWS_LOGIN_PROFILE);
                }
                steps.extend(sweep::plan(&desired.sweep, None, true));
            }
            notes.push(
                "aws is not configured: current state unknown, so this lists every call that may apply"
                    .into(),
            );
        }
        AwsActual::Present(u) => {
            for g in &desired.managed_groups {
                match (desired.groups.contains_key(g), u.groups.contains(g)) {
                    (true, false) => push(
                        &mut steps,
                        AwsIamOp::AddUserToGroup { group: g.clone() },
                        &group_rule(g),
                    ),
                    (false, true) => push(
                        &mut steps,
                        AwsIamOp::RemoveUserFromGroup { group: g.clone() },
                        &group_rule(g),
                    ),
                    _ => {}
                }
            }
            let mut set = BTreeMap::new();
            let mut set_rule = None;
            let mut unset = Vec::new();
            for k in &desired.managed_tags {
                match (desired.tags.get(k), u.tags.get(k)) {
                    (Some((v, rule)), cur) if cur != Some(v) => {
                        set.insert(k.clone(), v.clone());
                        set_rule.get_or_insert_with(|| rule.clone());
                    }
                    (None, Some(_)) => unset.push(k.clone()),
                    _ => {}
                }
            }
            if !set.is_empty() {
                push(
                    &mut steps,
                    AwsIamOp::TagUser { tags: set },
                    &set_rule.unwrap_or_default(),
                );
            }
            if !unset.is_empty() {
                push(
                    &mut steps,
                    AwsIamOp::UntagUser { keys: unset },
                    crate::policy::rules::UNMANAGED,
                );
            }
            if desired.offboarded {
                for k in &u.access_keys {
                    match desired.keys {
                        KeyAction::Deactivate if k.active => push(
                            &mut steps,
                            AwsIamOp::DeactivateAccessKey { key_id: k.id.clone() },
                            rules::AWS_DEACTIVATE_KEYS,
                        ),
                        KeyAction::Delete => push(
                            &mut steps,
                            AwsIamOp::DeleteAccessKey { key_id: k.id.clone() },
                            rules::AWS_DELETE_KEYS,
                        ),
                        _ => {}
                    }
                }
                if desired.delete_login_profile && u.login_profile {
                    push(&mut steps, AwsIamOp::DeleteLoginProfile, rules::AWS_LOGIN_PROFILE);
                }
                steps.extend(sweep::plan(&desired.sweep, u.held.as_deref(), false));
            }
        }
    }
    let mapping_changed = match actual {
        AwsActual::Present(u) => u.remapped.clone(),
        _ => None,
    };
    let mut plan = AwsPlan {
        user,
        steps,
        notes,
        mapping_changed,
    };
    if let Some(reason) = plan.mapping_change_reason() {
        plan.notes.push(reason);
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// GCP
// ---------------------------------------------------------------------------------------------

pub use crate::gcp::{GcpApi, GcpResource};

/// One role binding of an IAM policy. Fields Gatehouse does not know are kept as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<serde_json::Value>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// A GCP IAM policy (v3 shape). Unknown fields (`auditConfigs`, ...) round-trip untouched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IamPolicy {
    #[serde(default)]
    pub version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl IamPolicy {
    /// Whether the unconditional binding of `role` holds `member` (emails compare case-blind).
    pub fn has(&self, role: &str, member: &str) -> bool {
        self.bindings
            .iter()
            .filter(|b| b.role == role && b.condition.is_none())
            .any(|b| b.members.iter().any(|m| m.eq_ignore_ascii_case(member)))
    }
}

/// One change to one resource's policy: a member added to or removed from the unconditional
/// binding of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GcpIamOp {
    AddMember {
        resource: String,
        role: String,
        member: String,
    },
    RemoveMember {
        resource: String,
        role: String,
        member: String,
    },
    /// Cloud Identity `groups.memberships.create` (role MEMBER) of `member` (an email) in the
    /// Google group `group` (its email); `group_name` is its resource name (`groups/ID`) once
    /// looked up (`None` in an offline plan).
    AddGroupMember {
        group: String,
        group_name: Option<String>,
        member: String,
    },
    /// Cloud Identity `groups.memberships.delete`; `membership` is its resource name
    /// (`groups/ID/memberships/ID`) as read (`None` in an offline plan: looked up first).
    RemoveGroupMember {
        group: String,
        membership: Option<String>,
        member: String,
    },
}

impl GcpIamOp {
    /// The resource the op changes: the IAM resource, or the Google group's email.
    pub fn resource(&self) -> &str {
        match self {
            GcpIamOp::AddMember { resource, .. } | GcpIamOp::RemoveMember { resource, .. } => resource,
            GcpIamOp::AddGroupMember { group, .. } | GcpIamOp::RemoveGroupMember { group, .. } => group,
        }
    }

    pub fn is_revoking(&self) -> bool {
        matches!(
            self,
            GcpIamOp::RemoveMember { .. } | GcpIamOp::RemoveGroupMember { .. }
        )
    }

    /// Whether this is a Google group membership call (Cloud Identity), not a policy change.
    pub fn is_group_membership(&self) -> bool {
        matches!(
            self,
            GcpIamOp::AddGroupMember { .. } | GcpIamOp::RemoveGroupMember { .. }
        )
    }

    /// The IAM principal the op is about (`user:EMAIL` for a group member), for the screen.
    pub fn principal(&self) -> String {
        match self {
            GcpIamOp::AddMember { member, .. } | GcpIamOp::RemoveMember { member, .. } => member.clone(),
            GcpIamOp::AddGroupMember { member, .. } | GcpIamOp::RemoveGroupMember { member, .. } => {
                format!("user:{member}")
            }
        }
    }

    /// Whether the change names `member` (case-blind).
    pub fn member_is(&self, member: &str) -> bool {
        self.principal().eq_ignore_ascii_case(member)
    }

    /// The write as the ledger records it: the `setIamPolicy` call and the change it carries.
    pub fn http(&self) -> HttpCall {
        if self.is_group_membership() {
            return groups::http(self);
        }
        let path = GcpResource::parse(self.resource())
            .map(|r| format!("{}:setIamPolicy", r.path()))
            .unwrap_or_else(|| format!("/{}:setIamPolicy", self.resource()));
        let body = match self {
            GcpIamOp::AddMember { role, member, .. } => {
                serde_json::json!({ "add": { "role": role, "member": member } })
            }
            GcpIamOp::RemoveMember { role, member, .. } => {
                serde_json::json!({ "remove": { "role": role, "member": member } })
            }
            GcpIamOp::AddGroupMember { .. } | GcpIamOp::RemoveGroupMember { .. } => serde_json::Value::Null,
        };
        HttpCall {
            method: Method::Post,
            path,
            body: Some(body),
        }
    }

    /// The binding change a ledger row records (the inverse of [`GcpIamOp::http`] for
    /// `AddMember`/`RemoveMember`), for the access review's replay. `None` for a group
    /// membership or any other call.
    pub fn from_ledger(call: &HttpCall) -> Option<GcpIamOp> {
        let target = call.path.strip_suffix(":setIamPolicy")?;
        // `GcpResource::path` puts the API's version before the resource name; a resource it
        // cannot parse is recorded as `/{resource}`.
        let resource = ["/v3/", "/bigquery/v2/", "/v1/"]
            .iter()
            .find_map(|prefix| {
                target
                    .strip_prefix(prefix)
                    .filter(|r| GcpResource::parse(r).is_some())
            })
            .or_else(|| target.strip_prefix('/'))?
            .to_string();
        let body = call.body.as_ref()?;
        let change = |c: &serde_json::Value| -> Option<(String, String)> {
            Some((c["role"].as_str()?.to_string(), c["member"].as_str()?.to_string()))
        };
        if let Some((role, member)) = body.get("add").and_then(change) {
            return Some(GcpIamOp::AddMember {
                resource,
                role,
                member,
            });
        }
        let (role, member) = body.get("remove").and_then(change)?;
        Some(GcpIamOp::RemoveMember {
            resource,
            role,
            member,
        })
    }

    /// One line for `gatehouse plan`.
    pub fn render(&self) -> String {
        match self {
            GcpIamOp::AddMember {
                resource,
                role,
                member,
            } => {
                format!("gcp {resource}: getIamPolicy → add {member} to {role} → setIamPolicy")
            }
            GcpIamOp::RemoveMember {
                resource,
                role,
                member,
            } => {
                format!("gcp {resource}: getIamPolicy → remove {member} from {role} → setIamPolicy")
            }
            GcpIamOp::AddGroupMember { .. } | GcpIamOp::RemoveGroupMember { .. } => groups::render(self),
        }
    }
}

/// One planned GCP change and the policy element that asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcpStep {
    pub op: GcpIamOp,
    pub rule: RuleName,
}

/// What GCP IAM should look like for one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredGcp {
    /// `user:EMAIL`.
    pub member: String,
    pub offboarded: bool,
    /// Grant → rule (serialized as a list of pairs: JSON keys must be strings).
    #[serde(with = "pairs")]
    pub bindings: BTreeMap<GcpGrant, RuleName>,
    pub managed: BTreeSet<GcpGrant>,
    /// The person's earlier members (`user:OLD`, from their previous emails and, once read, the
    /// members linked to them): removed from every managed binding that still holds them, so
    /// bindings follow the member string when the email changes (issue 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub former_members: Vec<String>,
    /// Google group email → rule that makes the person a member (empty: none; not serialized
    /// then, so fingerprints of policies without groups are unchanged).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, RuleName>,
    /// Google groups whose memberships Gatehouse manages.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub managed_groups: BTreeSet<String>,
    /// Earlier emails of the person (issue 16): memberships under them are removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_emails: Vec<String>,
}

mod pairs {
    use super::{BTreeMap, GcpGrant, RuleName};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<GcpGrant, RuleName>, s: S) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<GcpGrant, RuleName>, D::Error> {
        Ok(Vec::<(GcpGrant, RuleName)>::deserialize(d)?.into_iter().collect())
    }
}

impl DesiredGcp {
    /// The resources whose policies must be read.
    pub fn resources(&self) -> BTreeSet<String> {
        self.managed.iter().map(|g| g.resource.clone()).collect()
    }

    /// Add earlier members of the person (the members linked to them): every one that is not
    /// the current member, each once (case-blind).
    pub fn add_former_members<'a>(&mut self, members: impl IntoIterator<Item = &'a String>) {
        for m in members {
            if !m.eq_ignore_ascii_case(&self.member)
                && !self.former_members.iter().any(|f| f.eq_ignore_ascii_case(m))
            {
                self.former_members.push(m.clone());
            }
        }
    }
}

/// Diff desired against the policies read (resource name → policy). A resource missing from
/// `actual` is unknown: its possible calls are listed with a note.
pub fn diff_gcp(desired: &DesiredGcp, actual: &BTreeMap<String, IamPolicy>) -> (Vec<GcpStep>, Vec<String>) {
    diff_gcp_with(desired, |grant, member| {
        actual.get(&grant.resource).map(|p| p.has(&grant.role, member))
    })
}

/// [`diff_gcp`] over any lookup: `has(grant, member)` is `None` when the resource was not read.
/// Reconcile passes an index built once for everyone.
pub fn diff_gcp_with(
    desired: &DesiredGcp,
    has: impl Fn(&GcpGrant, &str) -> Option<bool>,
) -> (Vec<GcpStep>, Vec<String>) {
    let mut steps = Vec::new();
    let mut notes = BTreeSet::new();
    for grant in &desired.managed {
        let want = desired.bindings.get(grant);
        let holds = match has(grant, &desired.member) {
            Some(h) => Some(h),
            None => {
                notes.insert(format!(
                    "{}: policy not read, so this lists every call that may apply",
                    grant.resource
                ));
                None
            }
        };
        let (resource, role, member) = (grant.resource.clone(), grant.role.clone(), desired.member.clone());
        match (want, holds) {
            (Some(rule), Some(false) | None) => steps.push(GcpStep {
                op: GcpIamOp::AddMember {
                    resource,
                    role,
                    member,
                },
                rule: rule.clone(),
            }),
            (None, Some(true) | None) => steps.push(GcpStep {
                op: GcpIamOp::RemoveMember {
                    resource,
                    role,
                    member,
                },
                rule: if desired.offboarded {
                    rules::GCP_REMOVE_BINDINGS.into()
                } else {
                    crate::policy::rules::UNMANAGED.into()
                },
            }),
            _ => {}
        }
        // A member the person had before (a renamed person) leaves the managed binding: the
        // binding follows the member string, never keeps the old one beside the new.
        for former in &desired.former_members {
            if matches!(has(grant, former), Some(true) | None) {
                steps.push(GcpStep {
                    op: GcpIamOp::RemoveMember {
                        resource: grant.resource.clone(),
                        role: grant.role.clone(),
                        member: former.clone(),
                    },
                    rule: if desired.offboarded {
                        rules::GCP_REMOVE_BINDINGS.into()
                    } else {
                        rules::GCP_MEMBER_CHANGED.into()
                    },
                });
            }
        }
    }
    (steps, notes.into_iter().collect())
}

/// Apply changes to a policy read with `getIamPolicy`. Only the unconditional binding of each
/// named role is touched; conditional bindings, other roles, other members and unknown fields are
/// kept. A binding left without members is dropped (as GCP does). Returns whether anything changed.
pub fn apply_gcp<'a>(policy: &mut IamPolicy, ops: impl IntoIterator<Item = &'a GcpIamOp>) -> bool {
    let mut changed = false;
    for op in ops {
        match op {
            GcpIamOp::AddMember { role, member, .. } => {
                if policy.has(role, member) {
                    continue;
                }
                match policy
                    .bindings
                    .iter_mut()
                    .find(|b| b.role == *role && b.condition.is_none())
                {
                    Some(b) => b.members.push(member.clone()),
                    None => policy.bindings.push(Binding {
                        role: role.clone(),
                        members: vec![member.clone()],
                        condition: None,
                        other: Default::default(),
                    }),
                }
                changed = true;
            }
            GcpIamOp::AddGroupMember { .. } | GcpIamOp::RemoveGroupMember { .. } => {}
            GcpIamOp::RemoveMember { role, member, .. } => {
                for b in policy
                    .bindings
                    .iter_mut()
                    .filter(|b| b.role == *role && b.condition.is_none())
                {
                    let before = b.members.len();
                    b.members.retain(|m| !m.eq_ignore_ascii_case(member));
                    changed |= b.members.len() != before;
                }
                policy
                    .bindings
                    .retain(|b| !(b.role == *role && b.condition.is_none() && b.members.is_empty()));
            }
        }
    }
    changed
}

// ---------------------------------------------------------------------------------------------
// Both
// ---------------------------------------------------------------------------------------------

/// What the clouds should look like for one person. A part is `None` when it does not apply
/// (target not configured, nothing managed, or the person has no email).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredCloud {
    pub aws: Option<DesiredAws>,
    pub gcp: Option<DesiredGcp>,
}

impl DesiredCloud {
    pub fn is_empty(&self) -> bool {
        self.aws.is_none() && self.gcp.is_none()
    }
}

/// Evaluate the policy's cloud part for one person. Pure. `aws` is the identity mapping (`None`
/// when AWS is not a target); `gcp` says whether GCP is a target. `now` decides whether the
/// access-key grace period is over (counted from the offboarding event's time).
pub fn evaluate(
    policy: &Policy,
    identity: &Identity,
    aws: Option<&AwsUserMapping>,
    gcp: bool,
    now: DateTime<Utc>,
) -> DesiredCloud {
    let managed = CloudManaged::of(policy);
    evaluate_scoped(
        policy,
        identity,
        aws,
        gcp,
        now,
        policy.rules.iter(),
        &managed,
        managed.clone(),
    )
}

/// The managed cloud names an evaluation puts into [`DesiredCloud`].
#[derive(Debug, Clone, Default)]
pub struct CloudManaged {
    pub aws_groups: BTreeSet<String>,
    pub aws_tags: BTreeSet<String>,
    pub gcp_grants: BTreeSet<GcpGrant>,
    pub gcp_groups: BTreeSet<String>,
}

impl CloudManaged {
    /// Everything the policy manages.
    pub fn of(policy: &Policy) -> Self {
        CloudManaged {
            aws_groups: policy.managed_aws_groups(),
            aws_tags: policy.managed_aws_tags(),
            gcp_grants: policy.managed_gcp_grants(),
            gcp_groups: policy.managed_gcp_groups(),
        }
    }
}

/// [`evaluate`] over `rules` (in policy order; rules that cannot match may be left out).
/// `all` is everything the policy manages (decides whether a part applies at all); `narrowed`
/// is what goes into the desired state: `all`, or (reconcile's compiled planner) a subset that
/// still holds every managed name the person is granted or holds, or whose state was not read
/// (the diff is then the same). Tags are never narrowed.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_scoped<'r>(
    policy: &Policy,
    identity: &Identity,
    aws: Option<&AwsUserMapping>,
    gcp: bool,
    now: DateTime<Utc>,
    rules: impl IntoIterator<Item = &'r crate::policy::Rule>,
    all: &CloudManaged,
    narrowed: CloudManaged,
) -> DesiredCloud {
    let offboarded = identity.status.is_offboarded();
    // Outside the allowed email domains nothing is granted (offboarding still applies).
    let active_rules: Vec<_> = if offboarded || !policy.email_allowed(identity.email()) {
        Vec::new()
    } else {
        rules.into_iter().filter(|r| applies(&r.when, identity)).collect()
    };
    let CloudManaged {
        aws_groups: narrowed_aws_groups,
        aws_tags: managed_tags,
        gcp_grants: narrowed_grants,
        gcp_groups: narrowed_gcp_groups,
    } = narrowed;
    let aws = aws.and_then(|m| m.key_for(identity)).and_then(|user| {
        let o = &policy.aws.offboarding;
        let groups_cleared = all.aws_groups.is_empty() || (offboarded && !o.remove_groups);
        let managed_groups = narrowed_aws_groups;
        let mut groups = BTreeMap::new();
        let mut tags = BTreeMap::new();
        for r in &active_rules {
            for g in &r.aws_groups {
                groups.entry(g.clone()).or_insert_with(|| r.name.clone());
            }
            for (k, v) in &r.aws_tags {
                tags.entry(k.clone())
                    .or_insert_with(|| (v.clone(), r.name.clone()));
            }
        }
        let keys = if !offboarded {
            KeyAction::Keep
        } else {
            let since = identity.status_stamp.as_ref().map(|s| s.at).unwrap_or(now);
            match o.delete_access_keys_after_days {
                Some(d) if now >= since + chrono::Duration::days(i64::from(d)) => KeyAction::Delete,
                _ if o.deactivate_access_keys => KeyAction::Deactivate,
                _ => KeyAction::Keep,
            }
        };
        let d = DesiredAws {
            user,
            offboarded,
            groups,
            managed_groups: if offboarded && !o.remove_groups {
                BTreeSet::new()
            } else {
                managed_groups
            },
            tags,
            // While offboarded, tags stay as they are (the keys and groups are what close doors).
            managed_tags: if offboarded { BTreeSet::new() } else { managed_tags },
            keys,
            delete_login_profile: offboarded && o.delete_login_profile,
            sweep: sweep::AwsSweep::from_policy(
                o,
                offboarded.then(|| identity.status_stamp.as_ref().map(|s| s.at).unwrap_or(now)),
            ),
        };
        let nothing = groups_cleared
            && d.managed_tags.is_empty()
            && d.keys == KeyAction::Keep
            && !d.delete_login_profile
            && !d.sweep.any();
        (!nothing).then_some(d)
    });
    let gcp = identity.email().filter(|_| gcp).and_then(|email| {
        let mut managed = narrowed_grants;
        let grants_cleared =
            all.gcp_grants.is_empty() || (offboarded && !policy.gcp.offboarding.remove_bindings);
        if grants_cleared {
            managed.clear();
        }
        let mut managed_groups = narrowed_gcp_groups;
        let groups_cleared =
            all.gcp_groups.is_empty() || (offboarded && !policy.gcp.offboarding.remove_group_memberships);
        if groups_cleared {
            managed_groups.clear();
        }
        let mut bindings = BTreeMap::new();
        let mut groups = BTreeMap::new();
        for r in &active_rules {
            for g in &r.gcp_bindings {
                bindings.entry(g.clone()).or_insert_with(|| r.name.clone());
            }
            for g in &r.gcp_groups {
                groups
                    .entry(g.to_ascii_lowercase())
                    .or_insert_with(|| r.name.clone());
            }
        }
        let previous_emails = if groups_cleared {
            Vec::new()
        } else {
            identity
                .previous_emails
                .iter()
                .map(|e| e.to_ascii_lowercase())
                .filter(|e| !e.eq_ignore_ascii_case(email))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        (!grants_cleared || !groups_cleared).then(|| {
            let mut d = DesiredGcp {
                member: format!("user:{}", email.to_ascii_lowercase()),
                offboarded,
                bindings,
                managed,
                former_members: Vec::new(),
                groups,
                managed_groups,
                previous_emails,
            };
            let former: Vec<String> = identity
                .previous_emails
                .iter()
                .map(|e| format!("user:{}", e.to_ascii_lowercase()))
                .collect();
            d.add_former_members(&former);
            d
        })
    });
    DesiredCloud { aws, gcp }
}

/// The cloud calls for one person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudPlan {
    pub aws: Option<AwsPlan>,
    pub gcp: Vec<GcpStep>,
    pub notes: Vec<String>,
}

impl CloudPlan {
    pub fn is_empty(&self) -> bool {
        self.aws.as_ref().is_none_or(|a| a.steps.is_empty()) && self.gcp.is_empty()
    }

    pub fn len(&self) -> usize {
        self.aws.as_ref().map_or(0, |a| a.steps.len()) + self.gcp.len()
    }

    /// One exact call per line, with the rule behind it (as `gatehouse plan` prints).
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if let Some(a) = &self.aws {
            for s in &a.steps {
                let _ = writeln!(out, "  {}    # rule: {}", s.op.render(&a.user), s.rule);
            }
            for n in &a.notes {
                let _ = writeln!(out, "  note: {n}");
            }
        }
        for s in &self.gcp {
            let _ = writeln!(out, "  {}    # rule: {}", s.op.render(), s.rule);
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}

pub mod groups;
pub use groups::{GroupHeld, diff_gcp_groups, is_group_email};
pub mod sweep;
#[cfg(test)]
mod tests;
impl crate::target::Failure for CloudError {
    /// `error: access denied: …` and `error: …` for what retrying cannot fix, else the status.
    fn outcome(&self) -> crate::target::CallOutcome {
        let detail = match self.kind {
            crate::looker::ErrorKind::Unauthorized => Some(format!("access denied: {}", self.message)),
            crate::looker::ErrorKind::Permanent => Some(self.message.clone()),
            _ => None,
        };
        crate::target::CallOutcome::Failed {
            kind: self.kind,
            status: self.status,
            detail,
        }
    }
}
