//! The policy file's Identity Center parts: `[identity_center]` and a rule's
//! `identity_center = { groups = [...] }` (what `crate::identity_center` evaluates).

use super::{Policy, PolicyError};
use serde::{Deserialize, Serialize};

/// `identity_center = { groups = [...] }` on a rule: the Identity Store groups (by
/// DisplayName) the rule grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityCenterGrant {
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The policy's `[identity_center]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityCenterPolicy {
    /// Permission sets the managed groups get on accounts (`[[identity_center.assignments]]`).
    /// Made once, when a person first joins the group; never removed by Gatehouse (they are
    /// the group's, not the person's).
    #[serde(default)]
    pub assignments: Vec<Assignment>,
    #[serde(default)]
    pub offboarding: IdentityCenterOffboarding,
}

/// One account assignment: `group` gets `permission_set_arn` on `account_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub group: String,
    pub account_id: String,
    pub permission_set_arn: String,
}

/// What offboarding does in Identity Center. Memberships of every managed group are always
/// removed (that is what ends access).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityCenterOffboarding {
    /// `DeleteUser` on the person's Identity Store user after the memberships are gone. Off by
    /// default: the IdP usually provisions Identity Center over SCIM and owns the user (its
    /// SCIM `active = false` disables the user, which the Identity Store API cannot do), and a
    /// user deleted here is created again by the IdP's next push. The Identity Store API has
    /// no call that disables a user (`UserStatus` is read-only in `DescribeUser`); deleting is
    /// the only account-level step it offers.
    #[serde(default)]
    pub delete_user: bool,
}

impl IdentityCenterPolicy {
    /// Refuse a section that cannot work, naming the field.
    pub(crate) fn validate(&self, policy: &Policy) -> Result<(), PolicyError> {
        let managed = policy.managed_identity_center_groups();
        for (i, a) in self.assignments.iter().enumerate() {
            let at = format!("identity_center.assignments[{i}]");
            if !managed.contains(&a.group) {
                return Err(PolicyError::Invalid(format!(
                    "{at}.group: {:?} is not named by any rule's identity_center.groups",
                    a.group
                )));
            }
            if a.account_id.len() != 12 || !a.account_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(PolicyError::Invalid(format!(
                    "{at}.account_id: {:?} is not a 12-digit AWS account id",
                    a.account_id
                )));
            }
            if !a.permission_set_arn.starts_with("arn:aws:sso:::permissionSet/")
                && !a
                    .permission_set_arn
                    .starts_with("arn:aws-us-gov:sso:::permissionSet/")
                && !a
                    .permission_set_arn
                    .starts_with("arn:aws-cn:sso:::permissionSet/")
            {
                return Err(PolicyError::Invalid(format!(
                    "{at}.permission_set_arn: {:?} is not arn:aws:sso:::permissionSet/ssoins-…/ps-…",
                    a.permission_set_arn
                )));
            }
        }
        for r in &policy.rules {
            if r.identity_center.groups.iter().any(|g| g.trim().is_empty()) {
                return Err(PolicyError::Invalid(format!(
                    "rule {:?}: identity_center.groups has an empty group name",
                    r.name
                )));
            }
        }
        Ok(())
    }
}
