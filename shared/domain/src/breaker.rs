//! The mass-change circuit breaker's pure part (issue 19, item 3): which kinds of change a
//! person's plan makes, and the types the state store keeps (counted changes, trips, held
//! envelopes). Counting and holding happen in the state store, in one transaction, so every
//! replica sees the same counts.

use crate::cloud::CloudPlan;
use crate::looker::LookerOp;
use crate::plan::Plan;
use crate::policy::{DesiredLooker, Presence};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A kind of change the breaker counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A person is offboarded in some target.
    Offboarding,
    /// A group, role or cloud binding is taken from a person who stays.
    Removal,
    /// A privileged Looker group or role is given.
    PrivilegedGrant,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 3] = [
        ChangeKind::Offboarding,
        ChangeKind::Removal,
        ChangeKind::PrivilegedGrant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Offboarding => "offboarding",
            ChangeKind::Removal => "removal",
            ChangeKind::PrivilegedGrant => "privileged_grant",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What counts as privileged: Looker group and role names (compared without case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Privileged {
    pub groups: BTreeSet<String>,
    pub roles: BTreeSet<String>,
}

impl Privileged {
    pub fn new<'a>(
        groups: impl IntoIterator<Item = &'a String>,
        roles: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        Privileged {
            groups: groups.into_iter().map(|g| g.to_lowercase()).collect(),
            roles: roles.into_iter().map(|r| r.to_lowercase()).collect(),
        }
    }
}

/// The kinds of change a plan makes. `before` is what the policy wanted for the person before
/// this event, `after` what it wants now; `looker` and `cloud` are the plans about to be applied.
/// An offboarding counts once as an offboarding (its removals are part of it).
pub fn classify(
    before: &DesiredLooker,
    after: &DesiredLooker,
    looker: &Plan,
    cloud: &CloudPlan,
    privileged: &Privileged,
) -> BTreeSet<ChangeKind> {
    let mut kinds = BTreeSet::new();
    if looker.is_empty() && cloud.is_empty() {
        return kinds;
    }
    if matches!(after.presence, Presence::Offboarded { .. }) {
        kinds.insert(ChangeKind::Offboarding);
        return kinds;
    }
    let dropped_role = before.roles.keys().any(|r| !after.roles.contains_key(r));
    let removal = looker.steps.iter().any(|s| match &s.op {
        LookerOp::RemoveFromGroup { .. } | LookerOp::DeleteAttribute { .. } => true,
        LookerOp::SetRoles { .. } => dropped_role,
        LookerOp::SetDisabled { disabled } => *disabled,
        _ => false,
    }) || cloud
        .aws
        .as_ref()
        .is_some_and(|a| a.steps.iter().any(|s| s.op.is_revoking()))
        || cloud.gcp.iter().any(|s| s.op.is_revoking());
    if removal {
        kinds.insert(ChangeKind::Removal);
    }
    let privileged_grant = looker.steps.iter().any(|s| match &s.op {
        LookerOp::AddToGroup { group } => privileged.groups.contains(&group.name.to_lowercase()),
        // Roles are one PUT of the whole set: a grant is a privileged role the person gets now
        // and did not get before.
        LookerOp::SetRoles { roles } => roles.iter().any(|r| {
            privileged.roles.contains(&r.name.to_lowercase()) && !before.roles.contains_key(&r.name)
        }),
        _ => false,
    });
    if privileged_grant {
        kinds.insert(ChangeKind::PrivilegedGrant);
    }
    kinds
}

/// The limits of one kind, resolved for the store: counts over `since`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmitLimits {
    /// Changes counted from this time on (now − window).
    pub since: DateTime<Utc>,
    /// At most this many from all sources together.
    pub max: Option<u64>,
    /// At most this percentage of the people the store knows, from all sources together.
    pub max_percent: Option<f64>,
    /// At most this many from one source.
    pub max_per_source: Option<u64>,
}

impl AdmitLimits {
    /// The overall limit when `known` people are known (a percentage allows at least one).
    pub fn overall(&self, known: u64) -> Option<u64> {
        let pct = self
            .max_percent
            .map(|p| ((known as f64) * p / 100.0).floor().max(1.0) as u64);
        match (self.max, pct) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One change about to be applied, as the breaker counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub source: String,
    pub envelope_id: String,
    pub subject: String,
    pub at: DateTime<Utc>,
    /// The envelope as JSON, kept if the change is held.
    pub envelope: String,
}

/// The scope a trip holds: every source (`*`) or one.
pub const ALL_SOURCES: &str = "*";

/// A tripped breaker: changes of `kind` from `scope` are held until released or discarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trip {
    pub kind: ChangeKind,
    /// A source name, or [`ALL_SOURCES`].
    pub scope: String,
    pub at: DateTime<Utc>,
    /// The changes counted in the window when it tripped, the one that tripped it included.
    pub count: u64,
    pub limit: u64,
}

/// What the store decided about one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counted; apply it.
    Admitted,
    /// Held (kept for a person's decision). `tripped` is the trip this change caused, if any.
    Held { tripped: Option<Trip> },
    /// This envelope was held before (and is held, released or discarded): do nothing more.
    AlreadyHeld,
}

/// A held envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldChange {
    /// Order of holding: released in this order.
    pub seq: i64,
    pub kind: ChangeKind,
    pub source: String,
    pub envelope_id: String,
    pub subject: String,
    pub held_at: DateTime<Utc>,
    /// The envelope as JSON.
    pub envelope: String,
}

/// The decision on a held envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Released,
    Discarded,
}

impl Settle {
    pub fn as_str(self) -> &'static str {
        match self {
            Settle::Released => "released",
            Settle::Discarded => "discarded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::looker::{Named, UserRef};
    use crate::plan::Step;
    use crate::policy::{Policy, evaluate};

    fn desired(roles: &[&str], offboarded: bool) -> DesiredLooker {
        let mut identity = crate::identity::Identity::new("k");
        if offboarded {
            identity.status = crate::identity::Status::Deactivated;
        }
        let mut d = evaluate(&Policy::default(), &identity);
        d.roles = roles.iter().map(|r| (r.to_string(), "r".into())).collect();
        d
    }

    fn plan(ops: Vec<LookerOp>) -> Plan {
        Plan {
            user: UserRef::Id("1".into()),
            steps: ops.into_iter().map(|op| Step { op, rule: "r".into() }).collect(),
            notes: Vec::new(),
            resolution: Default::default(),
        }
    }

    fn named(n: &str) -> Named {
        Named {
            name: n.into(),
            id: None,
        }
    }

    #[test]
    fn kinds_of_change() {
        let privileged = Privileged::new(&["Admins".to_string()], &["Admin".to_string()]);
        let none = CloudPlan::default();
        let viewer = desired(&["Viewer"], false);
        // Offboarding counts once, whatever it removes.
        let off = plan(vec![
            LookerOp::SetDisabled { disabled: true },
            LookerOp::RemoveFromGroup { group: named("x") },
        ]);
        assert_eq!(
            classify(&viewer, &desired(&[], true), &off, &none, &privileged),
            BTreeSet::from([ChangeKind::Offboarding])
        );
        // Nothing to do is nothing to count, even for an offboarded person.
        assert!(classify(&viewer, &desired(&[], true), &plan(vec![]), &none, &privileged).is_empty());
        // A removal of a group, or a role set that drops a role.
        let rm = plan(vec![LookerOp::RemoveFromGroup { group: named("x") }]);
        assert_eq!(
            classify(&viewer, &viewer, &rm, &none, &privileged),
            BTreeSet::from([ChangeKind::Removal])
        );
        let dev = desired(&["Viewer", "Developer"], false);
        let set = plan(vec![LookerOp::SetRoles {
            roles: vec![named("Viewer")],
        }]);
        assert_eq!(
            classify(&dev, &viewer, &set, &none, &privileged),
            BTreeSet::from([ChangeKind::Removal])
        );
        assert!(classify(&viewer, &viewer, &set, &none, &privileged).is_empty());
        // A privileged grant: a privileged group, or a privileged role not held before (any case).
        let grant = plan(vec![LookerOp::AddToGroup {
            group: named("admins"),
        }]);
        assert_eq!(
            classify(&viewer, &viewer, &grant, &none, &privileged),
            BTreeSet::from([ChangeKind::PrivilegedGrant])
        );
        let admin = desired(&["Viewer", "Admin"], false);
        let roles = plan(vec![LookerOp::SetRoles {
            roles: vec![named("Viewer"), named("Admin")],
        }]);
        assert_eq!(
            classify(&viewer, &admin, &roles, &none, &privileged),
            BTreeSet::from([ChangeKind::PrivilegedGrant])
        );
        // Restating a role already held is no grant.
        assert!(classify(&admin, &admin, &roles, &none, &privileged).is_empty());
        let plain = plan(vec![LookerOp::AddToGroup {
            group: named("Engineers"),
        }]);
        assert!(classify(&viewer, &viewer, &plain, &none, &privileged).is_empty());
    }

    #[test]
    fn overall_limit_is_the_lower_of_count_and_percentage() {
        let l = AdmitLimits {
            since: crate::clock::now(),
            max: Some(500),
            max_percent: Some(10.0),
            max_per_source: None,
        };
        assert_eq!(l.overall(1000), Some(100));
        assert_eq!(l.overall(100_000), Some(500));
        assert_eq!(l.overall(3), Some(1));
    }
}
