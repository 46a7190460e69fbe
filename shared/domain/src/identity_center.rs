//! AWS IAM Identity Center (issue 20): people get AWS access through Identity Store *group
//! memberships*, and the groups get permission sets on accounts (account assignments). No IAM
//! user, no long-lived key: credentials are short-lived role sessions, so removing a membership
//! ends the person's access at their next credential refresh.
//!
//! The policy names Identity Center groups on a rule as it names IAM groups
//! (`identity_center.groups = ["Data Analysts"]`); `[identity_center]` lists the optional
//! account assignments of those groups and what offboarding does. Everything here is pure:
//! the desired state of one person, the plan against what the Identity Store holds, and the
//! exact call each step makes (ledger, `gatehouse plan`).

use crate::identity::Identity;
use crate::looker::{HttpCall, Method};
use crate::policy::Policy;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::policy::identity_center::{
    Assignment, IdentityCenterGrant, IdentityCenterOffboarding, IdentityCenterPolicy,
};

/// How the person is looked up in the Identity Store the first time (afterwards: the
/// durable link to their UserId).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdcPerson {
    /// The IdP's user id (the part of `Subject.key` after `source:`): the `ExternalId` an IdP's
    /// SCIM provisioning sets.
    pub external_id: Option<String>,
    /// Current email (tried as `userName`, then as `emails.value`).
    pub email: Option<String>,
}

/// What Identity Center should hold for one person. Serializable: part of the converged
/// fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredIdc {
    pub person: IdcPerson,
    pub offboarded: bool,
    /// Group DisplayName → the rule that grants it.
    pub groups: BTreeMap<String, String>,
    /// Every group a rule names: only these are ever removed.
    pub managed_groups: BTreeSet<String>,
    /// The assignments of the groups the person holds, with the rule that grants the group.
    pub assignments: Vec<(Assignment, String)>,
    /// Offboarding deletes the Identity Store user.
    pub delete_user: bool,
}

impl DesiredIdc {
    /// Every group the read must resolve to an id.
    pub fn groups_to_resolve(&self) -> BTreeSet<String> {
        self.managed_groups
            .iter()
            .chain(self.groups.keys())
            .cloned()
            .collect()
    }
}

/// The rule name of offboarding steps (ledger).
pub const OFFBOARDING_RULE: &str = "offboarding";

/// The desired Identity Center state of one person; `None` when the policy names no Identity
/// Center group. Pure.
pub fn evaluate(policy: &Policy, identity: &Identity) -> Option<DesiredIdc> {
    let managed_groups = policy.managed_identity_center_groups();
    if managed_groups.is_empty() {
        return None;
    }
    let offboarded = identity.status.is_offboarded();
    let mut groups = BTreeMap::new();
    if !offboarded && policy.email_allowed(identity.email()) {
        for r in policy
            .rules
            .iter()
            .filter(|r| crate::policy::applies(&r.when, identity))
        {
            for g in &r.identity_center.groups {
                groups.entry(g.clone()).or_insert_with(|| r.name.clone());
            }
        }
    }
    let assignments = policy
        .identity_center
        .assignments
        .iter()
        .filter_map(|a| groups.get(&a.group).map(|rule| (a.clone(), rule.clone())))
        .collect();
    let external_id = identity
        .key
        .split_once(':')
        .map(|(_, id)| id.to_string())
        .filter(|id| !id.is_empty());
    Some(DesiredIdc {
        person: IdcPerson {
            external_id,
            email: identity.email().map(str::to_string),
        },
        offboarded,
        groups,
        managed_groups,
        assignments,
        delete_user: offboarded && policy.identity_center.offboarding.delete_user,
    })
}

/// An Identity Store user as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdcUser {
    pub user_id: String,
    pub user_name: Option<String>,
}

/// What Identity Center holds for one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdcActual {
    /// No Identity Store user resolves to the person.
    Absent,
    Present {
        user: IdcUser,
        /// Managed group DisplayName → the person's membership id in it.
        memberships: BTreeMap<String, String>,
        /// Group DisplayName → GroupId, for every managed group that exists.
        group_ids: BTreeMap<String, String>,
        /// The desired assignments that already exist.
        assignments: BTreeSet<Assignment>,
    },
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op")]
pub enum IdcOp {
    /// `CreateGroupMembership`.
    AddMembership { group: String, group_id: String },
    /// `DeleteGroupMembership`.
    RemoveMembership { group: String, membership_id: String },
    /// `sso-admin:CreateAccountAssignment` for the group (then its creation status polled).
    CreateAccountAssignment {
        group: String,
        group_id: String,
        account_id: String,
        permission_set_arn: String,
    },
    /// `DeleteUser` (offboarding with `delete_user = true`), after everything else.
    DeleteUser,
}

impl IdcOp {
    pub fn action(&self) -> &'static str {
        match self {
            IdcOp::AddMembership { .. } => "CreateGroupMembership",
            IdcOp::RemoveMembership { .. } => "DeleteGroupMembership",
            IdcOp::CreateAccountAssignment { .. } => "CreateAccountAssignment",
            IdcOp::DeleteUser => "DeleteUser",
        }
    }

    /// Whether this call takes access away.
    pub fn is_revoking(&self) -> bool {
        matches!(self, IdcOp::RemoveMembership { .. } | IdcOp::DeleteUser)
    }

    /// The exact JSON-protocol call (`POST /`, `X-Amz-Target: SERVICE.ACTION`, this body), as
    /// the ledger and `gatehouse plan` show it. `instance_arn` is the sso-admin instance.
    pub fn http(&self, identity_store_id: &str, instance_arn: Option<&str>, user_id: &str) -> HttpCall {
        use serde_json::json;
        let body = match self {
            IdcOp::AddMembership { group, group_id } => json!({
                "X-Amz-Target": "AWSIdentityStore.CreateGroupMembership",
                "IdentityStoreId": identity_store_id,
                "GroupId": group_id,
                "MemberId": { "UserId": user_id },
                "GroupDisplayName": group,
            }),
            IdcOp::RemoveMembership { group, membership_id } => json!({
                "X-Amz-Target": "AWSIdentityStore.DeleteGroupMembership",
                "IdentityStoreId": identity_store_id,
                "MembershipId": membership_id,
                "GroupDisplayName": group,
                "UserId": user_id,
            }),
            IdcOp::CreateAccountAssignment {
                group,
                group_id,
                account_id,
                permission_set_arn,
            } => json!({
                "X-Amz-Target": "SWBExternalService.CreateAccountAssignment",
                "InstanceArn": instance_arn.unwrap_or_default(),
                "TargetId": account_id,
                "TargetType": "AWS_ACCOUNT",
                "PermissionSetArn": permission_set_arn,
                "PrincipalType": "GROUP",
                "PrincipalId": group_id,
                "GroupDisplayName": group,
            }),
            IdcOp::DeleteUser => json!({
                "X-Amz-Target": "AWSIdentityStore.DeleteUser",
                "IdentityStoreId": identity_store_id,
                "UserId": user_id,
            }),
        };
        HttpCall {
            method: Method::Post,
            path: "/".into(),
            body: Some(body),
        }
    }
}

/// One step: the op and the rule (or `offboarding`) that asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdcStep {
    pub op: IdcOp,
    pub rule: String,
}

/// The Identity Center changes for one person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdcPlan {
    /// The person's Identity Store UserId (`None`: no user resolved; then the plan is empty).
    pub user_id: Option<String>,
    pub steps: Vec<IdcStep>,
    /// What could not be planned (a group that does not exist, a person not provisioned).
    pub notes: Vec<String>,
}

/// The plan from `actual` to `desired`. Pure. Only managed groups' memberships are removed;
/// a group missing from the Identity Store is skipped with a note, never created.
pub fn diff(desired: &DesiredIdc, actual: &IdcActual) -> IdcPlan {
    let IdcActual::Present {
        user,
        memberships,
        group_ids,
        assignments,
    } = actual
    else {
        let mut plan = IdcPlan::default();
        if !desired.groups.is_empty() {
            plan.notes.push(
                "identity center: no identity store user for the person yet (the IdP provisions \
                 users); nothing changed"
                    .into(),
            );
        }
        return plan;
    };
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    for (group, rule) in &desired.groups {
        if memberships.contains_key(group) {
            continue;
        }
        match group_ids.get(group) {
            Some(id) => steps.push(IdcStep {
                op: IdcOp::AddMembership {
                    group: group.clone(),
                    group_id: id.clone(),
                },
                rule: rule.clone(),
            }),
            None => notes.push(format!(
                "identity center group {group:?} was not found in the identity store; skipped"
            )),
        }
    }
    for (group, membership_id) in memberships {
        if desired.managed_groups.contains(group) && !desired.groups.contains_key(group) {
            steps.push(IdcStep {
                op: IdcOp::RemoveMembership {
                    group: group.clone(),
                    membership_id: membership_id.clone(),
                },
                rule: OFFBOARDING_RULE.into(),
            });
        }
    }
    for (a, rule) in &desired.assignments {
        if assignments.contains(a) {
            continue;
        }
        if let Some(id) = group_ids.get(&a.group) {
            steps.push(IdcStep {
                op: IdcOp::CreateAccountAssignment {
                    group: a.group.clone(),
                    group_id: id.clone(),
                    account_id: a.account_id.clone(),
                    permission_set_arn: a.permission_set_arn.clone(),
                },
                rule: rule.clone(),
            });
        }
    }
    if desired.offboarded && desired.delete_user {
        steps.push(IdcStep {
            op: IdcOp::DeleteUser,
            rule: OFFBOARDING_RULE.into(),
        });
    }
    IdcPlan {
        user_id: Some(user.user_id.clone()),
        steps,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Status;

    const POLICY: &str = r#"
[[rule]]
name = "analysts"
when = { idp_group = "Analysts" }
identity_center.groups = ["Data Analysts"]

[[rule]]
name = "admins"
when = { idp_group = "Admins" }
identity_center.groups = ["Admins"]

[[identity_center.assignments]]
group = "Data Analysts"
account_id = "111122223333"
permission_set_arn = "arn:aws:sso:::permissionSet/ssoins-1/ps-1"
"#;

    fn person(groups: &[&str]) -> Identity {
        let mut id = Identity::new("okta:00uada");
        id.status = Status::Active;
        let stamp = crate::identity::Stamp {
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            id: crate::envelope::EnvelopeId("e".into()),
        };
        id.profile.insert(
            "email".into(),
            crate::identity::Stamped {
                value: "ada@example.com".into(),
                stamp: stamp.clone(),
                source: None,
            },
        );
        for g in groups {
            id.groups.insert(
                (*g).into(),
                crate::identity::Membership {
                    name: (*g).into(),
                    member: true,
                    stamp: stamp.clone(),
                    source: None,
                },
            );
        }
        id
    }

    fn present(memberships: &[(&str, &str)], assigned: bool) -> IdcActual {
        let p: Policy = Policy::from_toml(POLICY).unwrap();
        IdcActual::Present {
            user: IdcUser {
                user_id: "u-1".into(),
                user_name: None,
            },
            memberships: memberships
                .iter()
                .map(|(g, m)| (g.to_string(), m.to_string()))
                .collect(),
            group_ids: BTreeMap::from([
                ("Data Analysts".to_string(), "g-da".to_string()),
                ("Admins".to_string(), "g-ad".to_string()),
            ]),
            assignments: if assigned {
                p.identity_center.assignments.iter().cloned().collect()
            } else {
                BTreeSet::new()
            },
        }
    }

    #[test]
    fn a_join_adds_the_membership_and_the_groups_assignment_once() {
        let p = Policy::from_toml(POLICY).unwrap();
        let d = evaluate(&p, &person(&["Analysts"])).unwrap();
        assert_eq!(d.person.external_id.as_deref(), Some("00uada"));
        let plan = diff(&d, &present(&[], false));
        let actions: Vec<_> = plan.steps.iter().map(|s| s.op.action()).collect();
        assert_eq!(actions, ["CreateGroupMembership", "CreateAccountAssignment"]);
        assert!(
            diff(&d, &present(&[("Data Analysts", "m-1")], true))
                .steps
                .is_empty()
        );
    }

    #[test]
    fn only_managed_memberships_are_removed_and_offboarding_deletes_only_when_asked() {
        let p = Policy::from_toml(POLICY).unwrap();
        let d = evaluate(&p, &person(&["Analysts"])).unwrap();
        let actual = IdcActual::Present {
            user: IdcUser {
                user_id: "u-1".into(),
                user_name: None,
            },
            memberships: BTreeMap::from([
                ("Data Analysts".to_string(), "m-1".to_string()),
                ("Admins".to_string(), "m-2".to_string()),
            ]),
            group_ids: BTreeMap::new(),
            assignments: p.identity_center.assignments.iter().cloned().collect(),
        };
        let plan = diff(&d, &actual);
        assert_eq!(
            plan.steps.iter().map(|s| &s.op).collect::<Vec<_>>(),
            [&IdcOp::RemoveMembership {
                group: "Admins".into(),
                membership_id: "m-2".into()
            }]
        );
        let mut gone = person(&["Analysts"]);
        gone.status = Status::Deactivated;
        let d = evaluate(&p, &gone).unwrap();
        assert!(!d.delete_user);
        assert_eq!(diff(&d, &actual).steps.len(), 2);
        let p = Policy::from_toml(&format!(
            "{POLICY}\n[identity_center.offboarding]\ndelete_user = true\n"
        ))
        .unwrap();
        let d = evaluate(&p, &gone).unwrap();
        let plan = diff(&d, &actual);
        assert_eq!(plan.steps.last().map(|s| &s.op), Some(&IdcOp::DeleteUser));
    }

    #[test]
    fn bad_sections_are_refused_naming_the_field() {
        for (bad, field) in [
            (
                "group = \"Nobody\"\naccount_id = \"111122223333\"\npermission_set_arn = \"arn:aws:sso:::permissionSet/a/b\"",
                "identity_center.assignments[0].group",
            ),
            (
                "group = \"Admins\"\naccount_id = \"12\"\npermission_set_arn = \"arn:aws:sso:::permissionSet/a/b\"",
                "identity_center.assignments[0].account_id",
            ),
            (
                "group = \"Admins\"\naccount_id = \"111122223333\"\npermission_set_arn = \"ps-1\"",
                "identity_center.assignments[0].permission_set_arn",
            ),
        ] {
            let text = format!(
                "[[rule]]\nname = \"a\"\nwhen = \"everyone\"\nidentity_center.groups = [\"Admins\"]\n\n[[identity_center.assignments]]\n{bad}\n"
            );
            let e = Policy::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
        assert!(Policy::from_toml("[identity_center]\nunknown = 1\n").is_err());
    }

    #[test]
    fn no_identity_center_group_in_the_policy_means_nothing_to_manage() {
        assert_eq!(evaluate(&Policy::default(), &person(&[])), None);
    }
}
