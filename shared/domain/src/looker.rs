//! Looker as Gatehouse sees it: what is read (a user snapshot and the name→id catalog) and the
//! write operations a plan is made of. Every operation renders to the exact Looker API 4.0 call
//! (method, path, JSON body) from the official OpenAPI spec, so `gatehouse plan` prints what the
//! client will send.

use crate::vec_map::VecSet;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// A Looker user as read by one `GET /users/search` (plus the role/attribute reads a plan needs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookerUser {
    pub id: String,
    pub is_disabled: bool,
    pub email: Option<String>,
    /// A [`VecSet`] (sorted `Vec`), not a `BTreeSet`: a reconcile holds one per Looker user
    /// (bench/reconcile.md).
    pub group_ids: VecSet<String>,
    pub session_ids: Vec<String>,
    pub api3_key_ids: Vec<String>,
    /// Direct role ids; read only when the plan manages roles.
    pub direct_role_ids: Option<BTreeSet<String>>,
    /// User attribute id → value set on the user itself (source `user`); read only when managed.
    pub user_attribute_values: Option<BTreeMap<String, String>>,
    /// Login times of the credentials; read only by reconcile's paged read (issue 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logins: Option<Box<Logins>>,
}

/// How a Looker user attribute is set up (`GET /user_attributes`): what decides whether a
/// managed attribute fails closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAttributeSettings {
    pub name: String,
    /// What a user with no value of their own (and none from a group) gets.
    #[serde(default)]
    pub default_value: Option<String>,
    /// Users can change their own value.
    #[serde(default)]
    pub user_can_edit: bool,
}

/// Names → ids of the Looker objects a policy names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub groups: BTreeMap<String, String>,
    pub roles: BTreeMap<String, String>,
    pub user_attributes: BTreeMap<String, String>,
}

/// What a plan needs to read besides the user itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadNeeds {
    pub direct_roles: bool,
    pub attribute_ids: Vec<String>,
    /// The credentials' login times (`LookerUser::logins`), for `[inactivity]`: more fields on
    /// the same search, never another call.
    pub logins: bool,
}

/// A Looker object referenced by name in the policy and by id in the API. The id is unknown in
/// an offline dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    pub id: Option<String>,
}

impl Named {
    fn path_part(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => format!("{{id of {}}}", self.name),
        }
    }
}

/// Which Looker user an operation is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum UserRef {
    Id(String),
    /// The user this plan creates (its id comes from the create call).
    New,
    /// Not resolved: offline dry run.
    Email(String),
}

impl UserRef {
    pub fn path_part(&self) -> String {
        match self {
            UserRef::Id(id) => id.clone(),
            UserRef::New => "{id of new user}".into(),
            UserRef::Email(e) => format!("{{id of {e}}}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LookerOp {
    /// `POST /users` with the email credentials in the same body (`User.credentials_email` is
    /// writable in the 4.0 spec), so a crash can never leave a user without its email — the key
    /// Gatehouse finds users by.
    CreateUser {
        first_name: Option<String>,
        last_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
    },
    CreateEmailCredentials {
        email: String,
    },
    SetDisabled {
        disabled: bool,
    },
    DeleteSession {
        session_id: String,
    },
    DeleteApiKey {
        key_id: String,
    },
    /// Offline dry run only: the sessions are not known.
    DeleteEverySession,
    /// Offline dry run only: the keys are not known.
    DeleteEveryApiKey,
    AddToGroup {
        group: Named,
    },
    RemoveFromGroup {
        group: Named,
    },
    SetRoles {
        roles: Vec<Named>,
    },
    SetAttribute {
        attribute: Named,
        value: String,
    },
    DeleteAttribute {
        attribute: Named,
    },
    DeleteUser,
    /// `PATCH /users/{id}/credentials_email`: the person's email changed (issue 16); the
    /// linked user follows instead of a second user being created.
    UpdateEmail {
        email: String,
    },
    /// `PATCH /looks/{id}` `{"folder_id"}`: hand a Look over before its owner is deleted.
    MoveLook {
        look_id: String,
        folder_id: String,
    },
    /// `PATCH /dashboards/{id}` `{"folder_id"}`.
    MoveDashboard {
        dashboard_id: String,
        folder_id: String,
    },
    /// `PATCH /scheduled_plans/{id}` `{"user_id"}`: the schedule keeps running under its new owner.
    SetScheduledPlanOwner {
        plan_id: String,
        user_id: String,
    },
    /// `PATCH /scheduled_plans/{id}` `{"enabled": false}`: it mails outside the allowed domains.
    DisableScheduledPlan {
        plan_id: String,
    },
    /// `PATCH /alerts/{id}` `{"owner_id"}` (`AlertPatch`).
    SetAlertOwner {
        alert_id: String,
        owner_id: String,
    },
    /// `PATCH /alerts/{id}` `{"is_disabled": true, "disabled_reason"}` (`AlertPatch`).
    DisableAlert {
        alert_id: String,
    },
}

/// The `disabled_reason` Gatehouse writes on an alert it disables.
pub const ALERT_DISABLED_REASON: &str =
    "disabled by gatehouse: its owner was offboarded and it delivers outside the allowed email domains";

impl LookerOp {
    /// Whether this call takes access away (the offboarding latency is measured to the last one).
    pub fn is_revoking(&self) -> bool {
        matches!(
            self,
            LookerOp::SetDisabled { disabled: true }
                | LookerOp::DeleteSession { .. }
                | LookerOp::DeleteApiKey { .. }
                | LookerOp::DeleteEverySession
                | LookerOp::DeleteEveryApiKey
                | LookerOp::RemoveFromGroup { .. }
                | LookerOp::DeleteUser
                | LookerOp::DisableScheduledPlan { .. }
                | LookerOp::DisableAlert { .. }
        )
    }

    /// The exact HTTP call, relative to `{base}/api/4.0`.
    pub fn http(&self, user: &UserRef) -> HttpCall {
        let u = user.path_part();
        let (method, path, body) = match self {
            LookerOp::CreateUser {
                first_name,
                last_name,
                email,
            } => {
                let mut body = serde_json::Map::new();
                if let Some(f) = first_name {
                    body.insert("first_name".into(), f.clone().into());
                }
                if let Some(l) = last_name {
                    body.insert("last_name".into(), l.clone().into());
                }
                if let Some(e) = email {
                    body.insert("credentials_email".into(), serde_json::json!({ "email": e }));
                }
                (
                    Method::Post,
                    "/users".to_string(),
                    Some(serde_json::Value::Object(body)),
                )
            }
            LookerOp::CreateEmailCredentials { email } => (
                Method::Post,
                format!("/users/{u}/credentials_email"),
                Some(serde_json::json!({ "email": email })),
            ),
            LookerOp::SetDisabled { disabled } => (
                Method::Patch,
                format!("/users/{u}"),
                Some(serde_json::json!({ "is_disabled": disabled })),
            ),
            LookerOp::DeleteSession { session_id } => {
                (Method::Delete, format!("/users/{u}/sessions/{session_id}"), None)
            }
            LookerOp::DeleteEverySession => (Method::Delete, format!("/users/{u}/sessions/{{each}}"), None),
            LookerOp::DeleteApiKey { key_id } => (
                Method::Delete,
                format!("/users/{u}/credentials_api3/{key_id}"),
                None,
            ),
            LookerOp::DeleteEveryApiKey => (
                Method::Delete,
                format!("/users/{u}/credentials_api3/{{each}}"),
                None,
            ),
            LookerOp::AddToGroup { group } => (
                Method::Post,
                format!("/groups/{}/users", group.path_part()),
                Some(serde_json::json!({ "user_id": u })),
            ),
            LookerOp::RemoveFromGroup { group } => (
                Method::Delete,
                format!("/groups/{}/users/{u}", group.path_part()),
                None,
            ),
            LookerOp::SetRoles { roles } => (
                Method::Put,
                format!("/users/{u}/roles"),
                Some(serde_json::Value::Array(
                    roles.iter().map(|r| r.path_part().into()).collect(),
                )),
            ),
            LookerOp::SetAttribute { attribute, value } => (
                Method::Patch,
                format!("/users/{u}/attribute_values/{}", attribute.path_part()),
                Some(serde_json::json!({ "value": value })),
            ),
            LookerOp::DeleteAttribute { attribute } => (
                Method::Delete,
                format!("/users/{u}/attribute_values/{}", attribute.path_part()),
                None,
            ),
            LookerOp::DeleteUser => (Method::Delete, format!("/users/{u}"), None),
            LookerOp::UpdateEmail { email } => (
                Method::Patch,
                format!("/users/{u}/credentials_email"),
                Some(serde_json::json!({ "email": email })),
            ),
            LookerOp::MoveLook { look_id, folder_id } => (
                Method::Patch,
                format!("/looks/{look_id}"),
                Some(serde_json::json!({ "folder_id": folder_id })),
            ),
            LookerOp::MoveDashboard {
                dashboard_id,
                folder_id,
            } => (
                Method::Patch,
                format!("/dashboards/{dashboard_id}"),
                Some(serde_json::json!({ "folder_id": folder_id })),
            ),
            LookerOp::SetScheduledPlanOwner { plan_id, user_id } => (
                Method::Patch,
                format!("/scheduled_plans/{plan_id}"),
                Some(serde_json::json!({ "user_id": user_id })),
            ),
            LookerOp::DisableScheduledPlan { plan_id } => (
                Method::Patch,
                format!("/scheduled_plans/{plan_id}"),
                Some(serde_json::json!({ "enabled": false })),
            ),
            LookerOp::SetAlertOwner { alert_id, owner_id } => (
                Method::Patch,
                format!("/alerts/{alert_id}"),
                Some(serde_json::json!({ "owner_id": owner_id })),
            ),
            LookerOp::DisableAlert { alert_id } => (
                Method::Patch,
                format!("/alerts/{alert_id}"),
                Some(serde_json::json!({ "is_disabled": true, "disabled_reason": ALERT_DISABLED_REASON })),
            ),
        };
        HttpCall { method, path, body }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        })
    }
}

/// One Looker API call as it goes on the wire (path relative to `/api/4.0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCall {
    pub method: Method,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

impl fmt::Display for HttpCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} /api/4.0{}", self.method, self.path)?;
        if let Some(b) = &self.body {
            write!(f, " {b}")?;
        }
        Ok(())
    }
}

/// How a failed call should be treated: the one [`crate::error::Kind`] every client classifies into.
pub use crate::error::Kind as ErrorKind;

/// A Looker call failed. Carries no secret: messages come from Looker's `Error.message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("looker {kind:?}{}: {message}", status.map(|s| format!(" (http {s})")).unwrap_or_default())]
pub struct LookerError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// What failed underneath (transport, decoding), kept as a value.
    #[source]
    pub source: Option<crate::error::Source>,
}

impl LookerError {
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

impl crate::error::Classified for LookerError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

/// What the paged read found about a user's logins (`None` on `LookerUser`: not read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logins {
    /// Latest `logged_in_at` over the user's credentials.
    pub last_login_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Earliest `created_at` over the user's credentials.
    pub first_credential_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Logins {
    /// The time inactivity counts from: the last login, else the first credential.
    pub fn active_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.last_login_at.or(self.first_credential_at)
    }
}
