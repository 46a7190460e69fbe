//! Metric label values. Every label value Gatehouse emits comes from a closed set: an enum
//! here, a `&'static str` literal at the call site, a route or Looker endpoint template, or a
//! name the operator declared in the configuration (a rotated secret). Never a string from a
//! payload: each distinct label value is a new time series the exporter keeps for ever, so a
//! payload-chosen value lets anyone who can reach an intake exhaust memory (30 requests made
//! 66,005 series before this).

use crate::envelope::IdentityEvent;

/// `kind` of an event (`gatehouse_events_received_total{kind}`): its normalized kind. Events
/// Gatehouse does not act on, whatever the IdP called them, are all `ignored`.
pub fn event_kind(event: &IdentityEvent) -> &'static str {
    event.kind()
}

/// Every value [`event_kind`] can return.
pub const EVENT_KINDS: &[&str] = &[
    "user_created",
    "user_activated",
    "user_unsuspended",
    "user_deactivated",
    "user_suspended",
    "user_deleted",
    "profile_updated",
    "group_member_added",
    "group_member_removed",
    "cloud_drift",
    "rotation_requested",
    "ignored",
];

/// `provider` of a rotation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Aws,
    Gcp,
    Offboarding,
    Other,
}

impl Provider {
    pub fn of(s: &str) -> Self {
        match s {
            "aws" => Provider::Aws,
            "gcp" => Provider::Gcp,
            "offboarding" => Provider::Offboarding,
            _ => Provider::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Offboarding => "offboarding",
            Provider::Other => "other",
        }
    }
}

/// `kind` of a Graph notification: its change type or lifecycle event as Graph documents them,
/// anything else `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    Created,
    Updated,
    Deleted,
    ReauthorizationRequired,
    SubscriptionRemoved,
    Missed,
    Other,
}

impl GraphKind {
    /// From [`crate::graph::Notification::kind`] (verbatim from the payload).
    pub fn of(kind: &str) -> Self {
        match kind {
            "created" => GraphKind::Created,
            "updated" => GraphKind::Updated,
            "deleted" => GraphKind::Deleted,
            "reauthorizationRequired" => GraphKind::ReauthorizationRequired,
            "subscriptionRemoved" => GraphKind::SubscriptionRemoved,
            "missed" => GraphKind::Missed,
            _ => GraphKind::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GraphKind::Created => "created",
            GraphKind::Updated => "updated",
            GraphKind::Deleted => "deleted",
            GraphKind::ReauthorizationRequired => "reauthorizationRequired",
            GraphKind::SubscriptionRemoved => "subscriptionRemoved",
            GraphKind::Missed => "missed",
            GraphKind::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::GroupRef;

    #[test]
    fn event_kinds_are_the_closed_set_whatever_the_payload_said() {
        let events = [
            IdentityEvent::UserCreated,
            IdentityEvent::UserActivated,
            IdentityEvent::UserUnsuspended,
            IdentityEvent::UserDeactivated,
            IdentityEvent::UserSuspended,
            IdentityEvent::UserDeleted,
            IdentityEvent::ProfileUpdated,
            IdentityEvent::GroupMemberAdded {
                group: GroupRef {
                    id: "g\u{1}".into(),
                    name: "x".repeat(500),
                },
            },
            IdentityEvent::GroupMemberRemoved {
                group: GroupRef {
                    id: "g".into(),
                    name: "n".into(),
                },
            },
            IdentityEvent::CloudDrift {
                provider: "attacker".into(),
                action: "a".into(),
            },
            IdentityEvent::RotationRequested {
                provider: "attacker".into(),
                reason: "r".into(),
                secret: None,
            },
            IdentityEvent::Ignored {
                event_type: "random.\u{202e}type".into(),
            },
        ];
        let kinds: Vec<_> = events.iter().map(event_kind).collect();
        assert_eq!(kinds, EVENT_KINDS);
    }

    #[test]
    fn unknown_providers_and_graph_kinds_are_other() {
        assert_eq!(Provider::of("gcp").as_str(), "gcp");
        assert_eq!(Provider::of("gcp2").as_str(), "other");
        assert_eq!(GraphKind::of("deleted").as_str(), "deleted");
        assert_eq!(GraphKind::of("missed").as_str(), "missed");
        assert_eq!(GraphKind::of("deleted,updated").as_str(), "other");
        assert_eq!(GraphKind::of("x".repeat(64).as_str()).as_str(), "other");
    }
}
