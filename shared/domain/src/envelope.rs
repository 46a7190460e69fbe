//! The envelope: one versioned, serde-tagged type for everything that travels on a queue.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Idempotency key of one event, namespaced by the source that proved itself:
/// `<source>:<tenant>:<the source's own id>` where the source (and, where the configuration names
/// one, the tenant) comes from Gatehouse, never from the payload — `okta:<org>:<uuid>`,
/// `scim:<uuid>`, `graph:<key>`, `google:<time>:<qualifier>:<i>`, `generic:<webhook-id>`,
/// `aws:cloudtrail:<eventID>`, `gcp:log:<insertId>`, ... So no source can name another's event
/// (an Okta `uuid` of `generic:msg_x` cannot suppress the generic event `msg_x`), and the same
/// event reaching Gatehouse by two transports (an Okta hook, later Okta's System Log) has one id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvelopeId(pub String);

/// Longest id part a payload may supply (its own event id).
pub const MAX_ID_PART_LEN: usize = 256;

/// Check an id a payload supplies (an Okta `uuid`, a CloudTrail `eventID`, ...) before it becomes
/// part of an envelope id: 1 to [`MAX_ID_PART_LEN`] visible ASCII characters (no space, no
/// control character). `what` names the field in the message; the value is not repeated.
pub fn check_id_part(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if id.len() > MAX_ID_PART_LEN {
        return Err(format!(
            "{what} is {} bytes long; at most {MAX_ID_PART_LEN} are accepted",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{what} has the character {:?}; only visible ascii characters are accepted",
            c
        ));
    }
    Ok(())
}

/// Check a tenant name from the configuration (e.g. `okta.org`): 1 to 128 of `A-Z a-z 0-9 . _ -`.
pub fn check_tenant(tenant: &str) -> Result<(), String> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 128
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'".into())
    }
}

impl EnvelopeId {
    /// `<source>:<tenant>:<id>`, the id checked with [`check_id_part`] (`what` names its field).
    pub fn namespaced(source: Source, tenant: &str, what: &str, id: &str) -> Result<EnvelopeId, String> {
        check_tenant(tenant).map_err(|m| format!("tenant {m}"))?;
        check_id_part(what, id)?;
        Ok(EnvelopeId(format!("{}:{tenant}:{id}", source.id_prefix())))
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Okta,
    /// SCIM 2.0 provisioning into Gatehouse's own directory (`/scim/v2`).
    Scim,
    /// Microsoft Graph change notifications (Entra ID).
    Graph,
    /// Google Workspace Admin SDK Reports push notifications.
    GoogleWorkspace,
    /// Standard Webhooks generic intake (`/hooks/generic`).
    Generic,
    /// AWS CloudTrail events delivered by EventBridge to SQS.
    AwsCloudTrail,
    /// GCP Cloud Audit Logs (log sink → Pub/Sub) and Secret Manager notifications.
    GcpAudit,
    /// Hand-made events (e.g. `gatehouse plan` on a canonical event, tests).
    Manual,
}

impl Source {
    /// The first part of the envelope ids this source makes (see [`EnvelopeId`]).
    pub fn id_prefix(self) -> &'static str {
        match self {
            Source::Okta => "okta",
            Source::Scim => "scim",
            Source::Graph => "graph",
            Source::GoogleWorkspace => "google",
            Source::Generic => "generic",
            Source::AwsCloudTrail => "aws",
            Source::GcpAudit => "gcp",
            Source::Manual => "manual",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Okta => "okta",
            Source::Scim => "scim",
            Source::Graph => "graph",
            Source::GoogleWorkspace => "google_workspace",
            Source::Generic => "generic",
            Source::AwsCloudTrail => "aws_cloudtrail",
            Source::GcpAudit => "gcp_audit",
            Source::Manual => "manual",
        }
    }
}

/// The person (or service account) an event is about.
///
/// `key` is stable and unique per source (the IdP's own user id); it orders and dedupes work per
/// subject. `email` is how the person is found in Looker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Subject {
    pub key: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
}

/// What happened, normalized across identity providers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IdentityEvent {
    UserCreated,
    UserActivated,
    /// Reactivation after a suspension.
    UserUnsuspended,
    UserDeactivated,
    UserSuspended,
    UserDeleted,
    ProfileUpdated,
    GroupMemberAdded {
        group: GroupRef,
    },
    GroupMemberRemoved {
        group: GroupRef,
    },
    /// A cloud IAM change made outside Gatehouse to this subject: reconcile it.
    CloudDrift {
        provider: String,
        action: String,
    },
    /// A credential of this subject was created outside Gatehouse, or its store asks for
    /// rotation: a request for the rotator (or an alert).
    RotationRequested {
        provider: String,
        reason: String,
        secret: Option<String>,
    },
    /// Accepted and counted, but Gatehouse does not act on it.
    Ignored {
        event_type: String,
    },
}

impl IdentityEvent {
    /// A stable short name, used in logs, metrics and the ledger.
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityEvent::UserCreated => "user_created",
            IdentityEvent::UserActivated => "user_activated",
            IdentityEvent::UserUnsuspended => "user_unsuspended",
            IdentityEvent::UserDeactivated => "user_deactivated",
            IdentityEvent::UserSuspended => "user_suspended",
            IdentityEvent::UserDeleted => "user_deleted",
            IdentityEvent::ProfileUpdated => "profile_updated",
            IdentityEvent::GroupMemberAdded { .. } => "group_member_added",
            IdentityEvent::GroupMemberRemoved { .. } => "group_member_removed",
            IdentityEvent::CloudDrift { .. } => "cloud_drift",
            IdentityEvent::RotationRequested { .. } => "rotation_requested",
            IdentityEvent::Ignored { .. } => "ignored",
        }
    }

    pub fn is_actionable(&self) -> bool {
        !matches!(self, IdentityEvent::Ignored { .. })
    }
}

/// An IdP group: its id at the IdP and its display name (what policies match on).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupRef {
    pub id: String,
    pub name: String,
}

/// Profile facts carried by the event itself (IdP attribute name → value).
pub type Profile = std::collections::BTreeMap<String, String>;

/// Everything that travels on a queue. `version` lets readers reject what they do not understand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub id: EnvelopeId,
    pub source: Source,
    pub subject: Subject,
    /// When the IdP says the change happened; orders events per subject.
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub event: IdentityEvent,
    /// Profile facts the event carried (may be empty).
    #[serde(default)]
    pub profile: Profile,
    /// The IdP's own event type, verbatim (e.g. `user.lifecycle.deactivate`).
    pub source_event_type: String,
    /// The raw event, kept for audit.
    pub raw: serde_json::Value,
    /// W3C `traceparent` of the intake request that enqueued it, so the processor's span joins
    /// the same trace (OpenTelemetry). Absent when traces are off; never part of identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_parent: Option<String>,
}

/// How far an event's own time may run ahead of the time Gatehouse received it before the claim
/// is not believed (the default of `processor.max_clock_skew`).
pub const DEFAULT_MAX_CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

impl Envelope {
    pub const VERSION: u32 = 1;

    /// Bound the payload's claimed time by the time Gatehouse received the event.
    ///
    /// `occurred_at` is a claim of the payload; `received_at` is Gatehouse's own clock. A claim
    /// more than `max_skew` after the receipt is a wrong clock or a lie (an event "from 2099"
    /// would otherwise outrank every real event about the person forever), so it is replaced by
    /// `received_at`: the latest time the event can honestly have happened. Any real event whose
    /// own time is after that receipt then wins over it. Claims within the skew, and claims in
    /// the past, are kept (an old event is simply stale-checked by the fold).
    ///
    /// Returns the claimed time when it was replaced. Deterministic for a given envelope, so a
    /// redelivery folds the same stamp.
    pub fn bound_time(&mut self, max_skew: std::time::Duration) -> Option<DateTime<Utc>> {
        let bounded = self.bounded_time(max_skew);
        (bounded != self.occurred_at).then(|| std::mem::replace(&mut self.occurred_at, bounded))
    }

    /// The time [`Envelope::bound_time`] would order this event by.
    pub fn bounded_time(&self, max_skew: std::time::Duration) -> DateTime<Utc> {
        let skew = chrono::TimeDelta::from_std(max_skew).unwrap_or(chrono::TimeDelta::MAX);
        match self.received_at.checked_add_signed(skew) {
            Some(limit) if self.occurred_at > limit => self.received_at,
            _ => self.occurred_at,
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string(self).expect("envelope serializes")
    }

    pub fn from_json(s: &str) -> Result<Self, EnvelopeDecodeError> {
        let env: Envelope = serde_json::from_str(s).map_err(EnvelopeDecodeError::Json)?;
        if env.version != Self::VERSION {
            return Err(EnvelopeDecodeError::Version(env.version));
        }
        Ok(env)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeDecodeError {
    #[error("envelope is not valid json for this version: {0}")]
    Json(#[source] serde_json::Error),
    #[error("envelope version {0} is not supported (this build reads version 1)")]
    Version(u32),
}
