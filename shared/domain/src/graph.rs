//! Microsoft Graph change notifications (Entra ID users and groups) → envelopes.
//!
//! A notification collection (`{"value":[changeNotification...]}`) carries only ids: which
//! subscription, which resource (`Users/{id}`, `Groups/{id}`) and the change type. The intake
//! stores each notification, fetches the changed object from Graph and then calls the pure
//! mapping functions here ([`user_envelope`], [`member_envelope`], [`reconcile_envelope`]).
//!
//! Envelope ids are derived from the notification itself ([`Notification::key`]), so a
//! redelivered notification yields the same ids. Graph notifications carry no event time: the
//! envelopes' `occurred_at` is the time the object was read from Graph.

use crate::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a body is not a Graph notification collection Gatehouse can accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphParseError {
    #[error("body is not valid json: {0}")]
    Json(String),
    #[error("not a graph change notification collection: {0}")]
    NotACollection(String),
    #[error("value[{index}] is invalid: {reason}")]
    Notification { index: usize, reason: String },
}

/// `lifecycleEvent` of a lifecycle notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleEvent {
    /// The access token behind the subscription must be refreshed: renew it.
    ReauthorizationRequired,
    /// Graph removed the subscription: create it again.
    SubscriptionRemoved,
    /// Notifications were dropped: reconcile the whole tenant.
    Missed,
    Other(String),
}

impl LifecycleEvent {
    fn parse(s: &str) -> Self {
        match s {
            "reauthorizationRequired" => LifecycleEvent::ReauthorizationRequired,
            "subscriptionRemoved" => LifecycleEvent::SubscriptionRemoved,
            "missed" => LifecycleEvent::Missed,
            other => LifecycleEvent::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            LifecycleEvent::ReauthorizationRequired => "reauthorizationRequired",
            LifecycleEvent::SubscriptionRemoved => "subscriptionRemoved",
            LifecycleEvent::Missed => "missed",
            LifecycleEvent::Other(s) => s,
        }
    }
}

/// What a notification is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    User(String),
    Group(String),
    /// Any other resource (e.g. mail): accepted, not acted on.
    Other(String),
}

/// One entry of `members@delta` (shape not confirmed by a primary source: see the fixtures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDelta {
    pub id: String,
    pub removed: bool,
}

/// One change (or lifecycle) notification, checked for shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: Option<String>,
    pub subscription_id: String,
    /// Compared by the intake, in constant time, with the configured value.
    pub client_state: Option<String>,
    pub change_type: Option<String>,
    pub resource: Option<String>,
    pub lifecycle_event: Option<LifecycleEvent>,
    pub tenant_id: Option<String>,
    pub subscription_expiration: Option<DateTime<Utc>>,
    pub target: Option<Target>,
    pub members_delta: Vec<MemberDelta>,
    pub raw: Value,
}

#[derive(Deserialize)]
struct RawCollection {
    value: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNotification {
    id: Option<String>,
    subscription_id: Option<String>,
    client_state: Option<String>,
    change_type: Option<String>,
    resource: Option<String>,
    lifecycle_event: Option<String>,
    tenant_id: Option<String>,
    subscription_expiration_date_time: Option<String>,
    resource_data: Option<Value>,
}

/// Parse a whole POST body. Either every notification parses, or the body is rejected with the
/// reason (a partially accepted body would lose notifications silently).
pub fn parse_collection(body: &[u8]) -> Result<Vec<Notification>, GraphParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| GraphParseError::Json(e.to_string()))?;
    let coll: RawCollection =
        serde_json::from_value(value).map_err(|e| GraphParseError::NotACollection(e.to_string()))?;
    let items = coll
        .value
        .ok_or_else(|| GraphParseError::NotACollection("missing value array".into()))?;
    if items.is_empty() {
        return Err(GraphParseError::NotACollection("value array is empty".into()));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            Notification::from_value(raw).map_err(|reason| GraphParseError::Notification { index, reason })
        })
        .collect()
}

/// Ids Gatehouse puts into Graph URL paths: GUIDs in practice; anything else is refused,
/// above all a path segment with a meaning of its own (`.`, `..`: `/users/..` is not a user).
pub fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && !id.ends_with('.')
        && !id.contains("..")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Notification {
    /// Parse one `value[]` element (also how the intake reads a stored notification back).
    pub fn from_value(raw: Value) -> Result<Notification, String> {
        if !raw.is_object() {
            return Err("not a json object".into());
        }
        let n: RawNotification =
            serde_json::from_value(raw.clone()).map_err(|e| format!("not a change notification: {e}"))?;
        let subscription_id = n
            .subscription_id
            .filter(|s| !s.is_empty())
            .ok_or("missing subscriptionId")?;
        let subscription_expiration = n
            .subscription_expiration_date_time
            .map(|s| {
                DateTime::parse_from_rfc3339(&s)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| format!("subscriptionExpirationDateTime {s:?} is not an RFC 3339 time: {e}"))
            })
            .transpose()?;
        // The shared secret is checked from `client_state` and never kept: `raw` goes to the
        // inbox, the envelope and the ledger.
        let mut raw = raw;
        if let Some(o) = raw.as_object_mut() {
            o.remove("clientState");
        }
        let lifecycle_event = n.lifecycle_event.as_deref().map(LifecycleEvent::parse);
        let (target, members_delta) = if lifecycle_event.is_some() {
            (None, Vec::new())
        } else {
            let change_type = n.change_type.as_deref().unwrap_or("");
            if change_type.is_empty() {
                return Err("missing changeType".into());
            }
            let resource = n
                .resource
                .as_deref()
                .filter(|r| !r.is_empty())
                .ok_or("missing resource")?;
            let target = target_of(resource, n.resource_data.as_ref())?;
            let delta = members_delta(n.resource_data.as_ref())?;
            (Some(target), delta)
        };
        Ok(Notification {
            id: n.id.filter(|i| !i.is_empty()),
            subscription_id,
            client_state: n.client_state,
            change_type: n.change_type,
            resource: n.resource,
            lifecycle_event,
            tenant_id: n.tenant_id,
            subscription_expiration,
            target,
            members_delta,
            raw,
        })
    }

    /// The change type, or the lifecycle event, verbatim (metrics, logs, `source_event_type`).
    pub fn kind(&self) -> &str {
        match &self.lifecycle_event {
            Some(l) => l.as_str(),
            None => self.change_type.as_deref().unwrap_or(""),
        }
    }

    /// Whether Gatehouse acts on it (user/group changes and the lifecycle events it knows).
    pub fn is_actionable(&self) -> bool {
        match (&self.lifecycle_event, &self.target) {
            (Some(LifecycleEvent::Other(_)), _) => false,
            (Some(_), _) => true,
            (None, Some(Target::User(_) | Target::Group(_))) => true,
            _ => false,
        }
    }

    /// A stable key: the same notification delivered twice has the same key. Built from the
    /// subscription, resource, change type, lifecycle event and the notification's own `id`, or,
    /// without an `id`, a hash of the whole notification (keys sorted, so field order is irrelevant).
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.subscription_id.as_str(),
            self.resource.as_deref().unwrap_or(""),
            self.change_type.as_deref().unwrap_or(""),
            self.lifecycle_event
                .as_ref()
                .map(LifecycleEvent::as_str)
                .unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        match &self.id {
            Some(id) => h.update(format!("id:{id}").as_bytes()),
            // serde_json's map is ordered by key: this serialization is canonical.
            None => h.update(format!("raw:{}", self.raw).as_bytes()),
        }
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn target_of(resource: &str, data: Option<&Value>) -> Result<Target, String> {
    let odata_type = data
        .and_then(|d| d.get("@odata.type"))
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let data_id = data.and_then(|d| d.get("id")).and_then(Value::as_str);
    let trimmed = resource.trim_start_matches('/');
    let (head, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
    let head = head.to_ascii_lowercase();
    let kind = match odata_type.as_deref() {
        Some("#microsoft.graph.user") => "users",
        Some("#microsoft.graph.group") => "groups",
        Some(_) => "",
        None => head.as_str(),
    };
    if kind != "users" && kind != "groups" {
        return Ok(Target::Other(resource.to_string()));
    }
    // A sub-resource (e.g. a user's messages) is not a change of the user itself; when
    // resourceData names a user or group, its id is what counts (and is checked below).
    if odata_type.is_none() && rest.contains('/') {
        return Ok(Target::Other(resource.to_string()));
    }
    let id = data_id
        .or(Some(rest).filter(|r| !r.is_empty()))
        .ok_or("resource has no id")?;
    if !is_safe_id(id) {
        return Err(format!("resource id {id:?} is not a directory object id"));
    }
    Ok(if kind == "users" {
        Target::User(id.to_string())
    } else {
        Target::Group(id.to_string())
    })
}

fn members_delta(data: Option<&Value>) -> Result<Vec<MemberDelta>, String> {
    let Some(list) = data.and_then(|d| d.get("members@delta")) else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or("resourceData.members@delta is not an array")?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let id = m
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| is_safe_id(id))
                .ok_or_else(|| format!("resourceData.members@delta[{i}] has no valid id"))?;
            Ok(MemberDelta {
                id: id.to_string(),
                removed: m.get("@removed").is_some(),
            })
        })
        .collect()
}

/// A user as Graph returns it (`GET /users/{id}?$select=...`, or a member listing).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    pub id: String,
    #[serde(default, rename = "@odata.type")]
    pub odata_type: Option<String>,
    #[serde(default)]
    pub user_principal_name: Option<String>,
    #[serde(default)]
    pub mail: Option<String>,
    #[serde(default)]
    pub given_name: Option<String>,
    #[serde(default)]
    pub surname: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub account_enabled: Option<bool>,
    #[serde(default)]
    pub department: Option<String>,
}

/// The `$select` Gatehouse asks for on users.
pub const USER_SELECT: &str =
    "id,userPrincipalName,mail,givenName,surname,displayName,accountEnabled,department";

impl GraphUser {
    /// Whether a directory object from a member listing is a user (not a device or a group).
    pub fn is_user(&self) -> bool {
        self.odata_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case("#microsoft.graph.user"))
    }

    /// `mail`, else `userPrincipalName` (when it looks like an address).
    pub fn email(&self) -> Option<String> {
        self.mail
            .clone()
            .filter(|m| m.contains('@'))
            .or_else(|| self.user_principal_name.clone().filter(|u| u.contains('@')))
    }

    fn subject_and_profile(&self) -> (Subject, Profile) {
        let mut profile = Profile::new();
        let email = self.email();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                profile.insert(k.to_string(), v.clone());
            }
        };
        put("email", &email);
        put("login", &self.user_principal_name);
        put("firstName", &self.given_name);
        put("lastName", &self.surname);
        put("displayName", &self.display_name);
        put("department", &self.department);
        put("mail", &self.mail);
        (
            Subject {
                key: subject_key(&self.id),
                email,
                display_name: self.display_name.clone().filter(|d| !d.is_empty()),
            },
            profile,
        )
    }
}

/// A group as Graph returns it (`GET /groups/{id}?$select=id,displayName`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphGroup {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

impl GraphGroup {
    pub fn group_ref(&self) -> GroupRef {
        GroupRef {
            id: self.id.clone(),
            name: self
                .display_name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| self.id.clone()),
        }
    }
}

/// `entra:<user id>`.
pub fn subject_key(user_id: &str) -> String {
    format!("entra:{user_id}")
}

fn bare_subject(user_id: &str) -> Subject {
    Subject {
        key: subject_key(user_id),
        email: None,
        display_name: None,
    }
}

/// The envelope for a change of one user. `user` is what Graph returned now (`None`: the user
/// is gone, 404). Only a missing user is `UserDeleted`: a `deleted` change type is a claim the
/// read confirms or not. Otherwise `accountEnabled` decides (`false` → `UserDeactivated`,
/// `true` → `UserActivated`, absent → `ProfileUpdated`).
pub fn user_envelope(
    n: &Notification,
    user_id: &str,
    user: Option<&GraphUser>,
    fetched_at: DateTime<Utc>,
) -> Envelope {
    let (subject, profile, event) = match user {
        Some(u) => {
            let (s, p) = u.subject_and_profile();
            let event = match u.account_enabled {
                Some(false) => IdentityEvent::UserDeactivated,
                Some(true) => IdentityEvent::UserActivated,
                None => IdentityEvent::ProfileUpdated,
            };
            (s, p, event)
        }
        None => (bare_subject(user_id), Profile::new(), IdentityEvent::UserDeleted),
    };
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("graph:{}", n.key())),
        source: Source::Graph,
        subject,
        occurred_at: fetched_at,
        received_at: fetched_at,
        event,
        profile,
        source_event_type: format!("users.{}", n.kind()),
        raw: n.raw.clone(),
    }
}

/// One membership change of one member in a group (from `members@delta` or from comparing a
/// member listing with the last one seen). `member` is the member as Graph returned it, if it
/// could be read.
pub fn member_envelope(
    n: &Notification,
    group: &GroupRef,
    member_id: &str,
    member: Option<&GraphUser>,
    added: bool,
    fetched_at: DateTime<Utc>,
) -> Envelope {
    let (subject, profile) = match member {
        Some(u) => u.subject_and_profile(),
        None => (bare_subject(member_id), Profile::new()),
    };
    let (event, verb) = if added {
        (IdentityEvent::GroupMemberAdded { group: group.clone() }, "add")
    } else {
        (
            IdentityEvent::GroupMemberRemoved { group: group.clone() },
            "remove",
        )
    };
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("graph:{}:{member_id}:{verb}", n.key())),
        source: Source::Graph,
        subject,
        occurred_at: fetched_at,
        received_at: fetched_at,
        event,
        profile,
        source_event_type: format!("groups.{}.member_{verb}", n.kind()),
        raw: n.raw.clone(),
    }
}

/// One user of a full reconcile (after a `missed` lifecycle notification): the user's state as
/// Graph has it now. `run` names the reconcile (the lifecycle notification's key).
pub fn reconcile_envelope(run: &str, user: &GraphUser, fetched_at: DateTime<Utc>) -> Envelope {
    let (subject, profile) = user.subject_and_profile();
    let event = match user.account_enabled {
        Some(false) => IdentityEvent::UserDeactivated,
        Some(true) => IdentityEvent::UserActivated,
        None => IdentityEvent::ProfileUpdated,
    };
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("graph:reconcile:{run}:{}", user.id)),
        source: Source::Graph,
        subject,
        occurred_at: fetched_at,
        received_at: fetched_at,
        event,
        profile,
        source_event_type: "reconcile".into(),
        raw: serde_json::json!({ "reconcile": run, "userId": user.id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPDATED: &str =
        include_str!("../../../../shared/fixtures/entra/graph.notification.users.updated.constructed.json");
    const DELETED: &str =
        include_str!("../../../../shared/fixtures/entra/graph.notification.users.deleted.constructed.json");
    const BATCH: &str =
        include_str!("../../../../shared/fixtures/entra/graph.notification.users.batch.constructed.json");
    const GROUP: &str =
        include_str!("../../../../shared/fixtures/entra/graph.notification.groups.updated.constructed.json");
    const DELTA: &str = include_str!(
        "../../../../shared/fixtures/entra/graph.notification.groups.members-delta.UNVERIFIED.constructed.json"
    );
    const MAIL: &str =
        include_str!("../../../../shared/fixtures/entra/graph.notification.messages.docs.json");

    const USER_ID: &str = "72b08237-30f1-4fbe-be57-1df593448f7a";

    #[test]
    fn client_state_is_read_but_never_kept_in_raw() {
        let n = parse_collection(UPDATED.as_bytes()).unwrap();
        assert!(n[0].client_state.is_some(), "the intake still sees it to compare");
        assert!(n[0].raw.get("clientState").is_none(), "{}", n[0].raw);
        assert!(!n[0].raw.to_string().contains("clientState"));
        let user = GraphUser {
            id: USER_ID.into(),
            odata_type: None,
            user_principal_name: None,
            mail: Some("john.doe@example.com".into()),
            given_name: None,
            surname: None,
            display_name: None,
            account_enabled: Some(true),
            department: None,
        };
        let env = user_envelope(&n[0], USER_ID, Some(&user), now());
        assert!(!env.raw.to_string().contains("clientState"), "{}", env.raw);
    }

    #[test]
    fn dot_segments_and_path_characters_are_not_ids() {
        for bad in [
            ".", "..", "...", ".hidden", "a..b", "a.", "a/b", "a%2e", "", "a b", "a?b",
        ] {
            assert!(!is_safe_id(bad), "{bad:?}");
        }
        for ok in [USER_ID, "a.b", "A-1_2"] {
            assert!(is_safe_id(ok), "{ok:?}");
        }
        for resource in ["Users/..", "Users/.", "Groups/.."] {
            let body = format!(
                r#"{{"value":[{{"subscriptionId":"s","changeType":"updated","resource":"{resource}"}}]}}"#
            );
            assert!(parse_collection(body.as_bytes()).is_err(), "{resource}");
        }
        let body = r#"{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Groups/g1",
            "resourceData":{"id":"g1","members@delta":[{"id":".."}]}}]}"#;
        assert!(parse_collection(body.as_bytes()).is_err());
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn user(enabled: Option<bool>) -> GraphUser {
        GraphUser {
            id: USER_ID.into(),
            odata_type: None,
            user_principal_name: Some("jdoe@contoso.onmicrosoft.com".into()),
            mail: Some("john.doe@example.com".into()),
            given_name: Some("John".into()),
            surname: Some("Doe".into()),
            display_name: Some("John Doe".into()),
            account_enabled: enabled,
            department: Some("Engineering".into()),
        }
    }

    #[test]
    fn user_fixtures_parse_to_user_targets() {
        let n = parse_collection(UPDATED.as_bytes()).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].target, Some(Target::User(USER_ID.into())));
        assert_eq!(n[0].change_type.as_deref(), Some("updated"));
        assert_eq!(
            n[0].client_state.as_deref(),
            Some("c2VjcmV0Q2xpZW50U3RhdGUtdXNlcnM")
        );
        assert_eq!(n[0].subscription_id, "f43589a8-2107-4c5d-9c24-000000000001");
        assert!(n[0].subscription_expiration.is_some());
        assert!(n[0].is_actionable());
        let d = parse_collection(DELETED.as_bytes()).unwrap();
        assert_eq!(d[0].kind(), "deleted");
        let b = parse_collection(BATCH.as_bytes()).unwrap();
        assert_eq!(b.len(), 2);
        assert_ne!(b[0].key(), b[1].key(), "different changes have different keys");
    }

    #[test]
    fn big_sequence_numbers_survive_in_raw() {
        let n = parse_collection(UPDATED.as_bytes()).unwrap();
        let seq = &n[0].raw["resourceData"]["sequenceNumber"];
        assert_eq!(seq.as_u64(), Some(638059995676961300));
    }

    #[test]
    fn group_fixtures_parse_with_and_without_members_delta() {
        let g = parse_collection(GROUP.as_bytes()).unwrap();
        assert_eq!(
            g[0].target,
            Some(Target::Group("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into()))
        );
        assert!(g[0].members_delta.is_empty());
        let d = parse_collection(DELTA.as_bytes()).unwrap();
        assert_eq!(
            d[0].members_delta,
            vec![
                MemberDelta {
                    id: "693acd06-2877-4339-8ade-b704261fe7a0".into(),
                    removed: false
                },
                MemberDelta {
                    id: USER_ID.into(),
                    removed: true
                },
            ]
        );
    }

    #[test]
    fn mail_notifications_are_accepted_but_not_actionable() {
        let n = parse_collection(MAIL.as_bytes()).unwrap();
        assert!(matches!(n[0].target, Some(Target::Other(_))));
        assert!(!n[0].is_actionable());
    }

    #[test]
    fn key_is_stable_across_field_order_and_changes_with_content() {
        let a = Notification::from_value(serde_json::json!({
            "subscriptionId": "s", "changeType": "updated", "resource": "Users/u1",
            "resourceData": {"id": "u1", "sequenceNumber": 1}}))
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"resourceData": {"sequenceNumber": 1, "id": "u1"}, "resource": "Users/u1",
                "changeType": "updated", "subscriptionId": "s"}"#,
        )
        .unwrap();
        let b = Notification::from_value(b).unwrap();
        assert_eq!(a.key(), b.key());
        let c = Notification::from_value(serde_json::json!({
            "subscriptionId": "s", "changeType": "updated", "resource": "Users/u1",
            "resourceData": {"id": "u1", "sequenceNumber": 2}}))
        .unwrap();
        assert_ne!(a.key(), c.key());
        assert_eq!(a.key().len(), 32);
    }

    #[test]
    fn malformed_bodies_are_refused_with_the_reason() {
        assert!(matches!(
            parse_collection(b"{nope"),
            Err(GraphParseError::Json(_))
        ));
        assert!(matches!(
            parse_collection(b"[]"),
            Err(GraphParseError::NotACollection(_))
        ));
        assert!(matches!(
            parse_collection(br#"{"value":[]}"#),
            Err(GraphParseError::NotACollection(_))
        ));
        let e = parse_collection(
            br#"{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u1"},
            {"changeType":"updated","resource":"Users/u1"}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            GraphParseError::Notification {
                index: 1,
                reason: "missing subscriptionId".into()
            }
        );
        let e = parse_collection(
            br#"{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/x?y"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a directory object id"), "{e}");
        let e = parse_collection(br#"{"value":[{"subscriptionId":"s","resource":"Users/u1"}]}"#).unwrap_err();
        assert!(e.to_string().contains("changeType"), "{e}");
        let e = parse_collection(
            br#"{"value":[{"subscriptionId":"s","changeType":"updated","resource":"Users/u1",
                "subscriptionExpirationDateTime":"tomorrow"}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("RFC 3339"), "{e}");
    }

    #[test]
    fn lifecycle_notifications_need_no_resource() {
        let n = parse_collection(
            br#"{"value":[{"subscriptionId":"s","lifecycleEvent":"missed","clientState":"c"}]}"#,
        )
        .unwrap();
        assert_eq!(n[0].lifecycle_event, Some(LifecycleEvent::Missed));
        assert!(n[0].is_actionable());
        assert_eq!(n[0].kind(), "missed");
    }

    #[test]
    fn user_state_maps_to_events() {
        let n = &parse_collection(UPDATED.as_bytes()).unwrap()[0];
        let off = user_envelope(n, USER_ID, Some(&user(Some(false))), now());
        assert_eq!(off.event, IdentityEvent::UserDeactivated);
        assert_eq!(off.subject.key, format!("entra:{USER_ID}"));
        assert_eq!(off.subject.email.as_deref(), Some("john.doe@example.com"));
        assert_eq!(off.profile["department"], "Engineering");
        assert_eq!(off.profile["firstName"], "John");
        assert_eq!(off.source, Source::Graph);
        assert_eq!(off.id.0, format!("graph:{}", n.key()));
        assert_eq!(off.occurred_at, now());
        let on = user_envelope(n, USER_ID, Some(&user(Some(true))), now());
        assert_eq!(on.event, IdentityEvent::UserActivated);
        let gone = user_envelope(n, USER_ID, None, now());
        assert_eq!(gone.event, IdentityEvent::UserDeleted);
        assert_eq!(gone.subject.email, None);
        let d = &parse_collection(DELETED.as_bytes()).unwrap()[0];
        assert_eq!(
            user_envelope(d, USER_ID, None, now()).event,
            IdentityEvent::UserDeleted
        );
        // A `deleted` claim about a user Graph still returns is not a deletion.
        assert_eq!(
            user_envelope(d, USER_ID, Some(&user(Some(true))), now()).event,
            IdentityEvent::UserActivated
        );
    }

    #[test]
    fn email_falls_back_to_the_user_principal_name() {
        let mut u = user(Some(true));
        u.mail = None;
        assert_eq!(u.email().as_deref(), Some("jdoe@contoso.onmicrosoft.com"));
        u.user_principal_name = Some("not-an-address".into());
        assert_eq!(u.email(), None);
    }

    #[test]
    fn members_map_to_membership_events_with_distinct_ids() {
        let n = &parse_collection(DELTA.as_bytes()).unwrap()[0];
        let g = GraphGroup {
            id: "g1".into(),
            display_name: Some("Engineers".into()),
        }
        .group_ref();
        let add = member_envelope(n, &g, USER_ID, Some(&user(Some(true))), true, now());
        let rm = member_envelope(n, &g, USER_ID, None, false, now());
        assert_eq!(add.event, IdentityEvent::GroupMemberAdded { group: g.clone() });
        assert_eq!(rm.event, IdentityEvent::GroupMemberRemoved { group: g });
        assert_ne!(add.id, rm.id);
        assert_eq!(rm.subject.key, format!("entra:{USER_ID}"));
    }

    #[test]
    fn reconcile_ids_are_per_run_and_user() {
        let a = reconcile_envelope("run1", &user(Some(false)), now());
        assert_eq!(a.id.0, format!("graph:reconcile:run1:{USER_ID}"));
        assert_eq!(a.event, IdentityEvent::UserDeactivated);
    }
}
