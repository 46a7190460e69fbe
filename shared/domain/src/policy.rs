//! Policy as code: one file maps IdP groups and profile attributes to Looker groups, roles and
//! user-attribute values, and says what offboarding does. [`evaluate`] is a pure function of
//! (policy, identity) → desired state.

use crate::identity::Identity;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The policy file (TOML). See `examples/policy.toml` for a documented example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub onboarding: Onboarding,
    #[serde(default)]
    pub offboarding: Offboarding,
    /// Group/role/attribute grants, each under a name that the ledger cites.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    /// IdP profile attribute → Looker user attribute (row-level security).
    #[serde(default, rename = "attribute")]
    pub attributes: Vec<AttributeMapping>,
    /// What offboarding does in AWS IAM (`[aws.offboarding]`).
    #[serde(default)]
    pub aws: AwsPolicy,
    /// What offboarding does in GCP IAM (`[gcp.offboarding]`).
    #[serde(default)]
    pub gcp: GcpPolicy,
}

/// The `[aws]` section of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AwsPolicy {
    #[serde(default)]
    pub offboarding: AwsOffboarding,
}

/// What offboarding does to the person's IAM user. The default closes every door.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsOffboarding {
    /// Remove the managed IAM groups (those named by a rule); others are left alone.
    #[serde(default = "yes")]
    pub remove_groups: bool,
    /// `UpdateAccessKey Status=Inactive` on every access key.
    #[serde(default = "yes")]
    pub deactivate_access_keys: bool,
    /// Delete the (deactivated) access keys this many days after offboarding; absent = never.
    #[serde(default)]
    pub delete_access_keys_after_days: Option<u32>,
    /// `DeleteLoginProfile`: no more console password.
    #[serde(default = "yes")]
    pub delete_login_profile: bool,
}

impl Default for AwsOffboarding {
    fn default() -> Self {
        AwsOffboarding {
            remove_groups: true,
            deactivate_access_keys: true,
            delete_access_keys_after_days: None,
            delete_login_profile: true,
        }
    }
}

/// The `[gcp]` section of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GcpPolicy {
    #[serde(default)]
    pub offboarding: GcpOffboarding,
}

/// What offboarding does to the person's GCP role bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpOffboarding {
    /// Remove `user:EMAIL` from every managed binding on every resource the policy names.
    #[serde(default = "yes")]
    pub remove_bindings: bool,
}

impl Default for GcpOffboarding {
    fn default() -> Self {
        GcpOffboarding {
            remove_bindings: true,
        }
    }
}

/// One GCP role on one resource. `resource` is `projects/P`, `projects/P/datasets/D` (BigQuery)
/// or `projects/P/serviceAccounts/EMAIL`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpGrant {
    pub resource: String,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Onboarding {
    /// Create a Looker user (with email credentials) when none exists.
    #[serde(default = "yes")]
    pub create_users: bool,
}

impl Default for Onboarding {
    fn default() -> Self {
        Onboarding { create_users: true }
    }
}

/// What happens when a person is suspended, deactivated or deleted at the IdP.
/// The default offboards fully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offboarding {
    #[serde(default = "yes")]
    pub disable: bool,
    #[serde(default = "yes")]
    pub revoke_sessions: bool,
    #[serde(default = "yes")]
    pub revoke_api_keys: bool,
    #[serde(default = "yes")]
    pub remove_managed_groups: bool,
    /// Delete the Looker user this many days after offboarding; absent = never.
    #[serde(default)]
    pub delete_after_days: Option<u32>,
}

impl Default for Offboarding {
    fn default() -> Self {
        Offboarding {
            disable: true,
            revoke_sessions: true,
            revoke_api_keys: true,
            remove_managed_groups: true,
            delete_after_days: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub when: Condition,
    #[serde(default)]
    pub looker_groups: Vec<String>,
    #[serde(default)]
    pub looker_roles: Vec<String>,
    /// Looker user attribute name → value.
    #[serde(default)]
    pub looker_attributes: BTreeMap<String, String>,
    /// AWS IAM group names the rule grants.
    #[serde(default)]
    pub aws_groups: Vec<String>,
    /// AWS IAM user tags the rule sets (e.g. read by role trust policies as `aws:PrincipalTag/KEY`).
    #[serde(default)]
    pub aws_tags: BTreeMap<String, String>,
    /// GCP role bindings the rule grants to `user:EMAIL`.
    #[serde(default)]
    pub gcp_bindings: Vec<GcpGrant>,
}

/// When a rule applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Every active person.
    Everyone,
    /// Member of the IdP group with this name (or id).
    IdpGroup(String),
    /// The IdP profile attribute equals the value.
    Attribute { name: String, equals: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMapping {
    pub idp_attribute: String,
    pub looker_attribute: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid: {0}")]
    Parse(String),
    #[error("policy is not valid: {0}")]
    Invalid(String),
}

impl Policy {
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        let mut names = BTreeSet::new();
        for rule in &self.rules {
            if rule.name.trim().is_empty() {
                return Err(PolicyError::Invalid("a rule has an empty name".into()));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(PolicyError::Invalid(format!(
                    "rule name {:?} is used twice",
                    rule.name
                )));
            }
        }
        let mut targets = BTreeSet::new();
        for m in &self.attributes {
            if !targets.insert(m.looker_attribute.as_str()) {
                return Err(PolicyError::Invalid(format!(
                    "looker attribute {:?} is mapped twice",
                    m.looker_attribute
                )));
            }
        }
        for rule in &self.rules {
            for g in &rule.gcp_bindings {
                if crate::cloud::GcpResource::parse(&g.resource).is_none() {
                    return Err(PolicyError::Invalid(format!(
                        "rule {:?}: gcp resource {:?} is not projects/P, projects/P/datasets/D or \
                         projects/P/serviceAccounts/EMAIL",
                        rule.name, g.resource
                    )));
                }
                if !g.role.starts_with("roles/") && !g.role.starts_with("projects/") {
                    return Err(PolicyError::Invalid(format!(
                        "rule {:?}: gcp role {:?} is not roles/NAME or projects/P/roles/NAME",
                        rule.name, g.role
                    )));
                }
            }
        }
        Ok(())
    }

    /// AWS IAM groups the policy manages: only these are ever added or removed.
    pub fn managed_aws_groups(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.aws_groups.iter().cloned())
            .collect()
    }

    /// AWS IAM user tag keys the policy manages.
    pub fn managed_aws_tags(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.aws_tags.keys().cloned())
            .collect()
    }

    /// GCP (resource, role) pairs the policy manages.
    pub fn managed_gcp_grants(&self) -> BTreeSet<GcpGrant> {
        self.rules
            .iter()
            .flat_map(|r| r.gcp_bindings.iter().cloned())
            .collect()
    }

    /// Whether any rule names a cloud target (AWS or GCP).
    pub fn manages_cloud(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !r.aws_groups.is_empty() || !r.aws_tags.is_empty() || !r.gcp_bindings.is_empty())
    }

    /// Looker groups the policy manages: only these are ever added or removed.
    pub fn managed_groups(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.looker_groups.iter().cloned())
            .collect()
    }

    pub fn managed_roles(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.looker_roles.iter().cloned())
            .collect()
    }

    pub fn managed_attributes(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.looker_attributes.keys().cloned())
            .chain(self.attributes.iter().map(|m| m.looker_attribute.clone()))
            .collect()
    }
}

/// The name of the policy element a desired fact comes from (cited in the ledger).
pub type RuleName = String;

/// What Looker should look like for one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLooker {
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub presence: Presence,
    /// Looker group name → rule that grants it.
    pub groups: BTreeMap<String, RuleName>,
    pub roles: BTreeMap<String, RuleName>,
    /// Looker attribute name → (value, rule).
    pub attributes: BTreeMap<String, (String, RuleName)>,
    pub managed_groups: BTreeSet<String>,
    pub managed_roles: BTreeSet<String>,
    pub managed_attributes: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Presence {
    /// Exists (created if missing and allowed) and enabled.
    Active { create: bool },
    /// Offboarded: what to revoke.
    Offboarded {
        disable: bool,
        revoke_sessions: bool,
        revoke_api_keys: bool,
        delete_after_days: Option<u32>,
    },
}

impl DesiredLooker {
    /// A stable fingerprint: equal fingerprints mean nothing new to converge.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).expect("desired state serializes");
        let digest = Sha256::digest(json);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Rule names used for facts that come from the offboarding section rather than a `[[rule]]`.
pub mod rules {
    pub const OFFBOARD_DISABLE: &str = "offboarding.disable";
    pub const OFFBOARD_SESSIONS: &str = "offboarding.revoke_sessions";
    pub const OFFBOARD_API_KEYS: &str = "offboarding.revoke_api_keys";
    pub const OFFBOARD_GROUPS: &str = "offboarding.remove_managed_groups";
    pub const OFFBOARD_DELETE: &str = "offboarding.delete_after_days";
    pub const ONBOARD_CREATE: &str = "onboarding.create_users";
    pub const ONBOARD_ENABLE: &str = "onboarding.enable";
    pub const UNMANAGED: &str = "policy.unmanaged";
}

/// Evaluate the policy for one person. Pure.
pub fn evaluate(policy: &Policy, identity: &Identity) -> DesiredLooker {
    let managed_groups = policy.managed_groups();
    let managed_roles = policy.managed_roles();
    let managed_attributes = policy.managed_attributes();
    let mut groups = BTreeMap::new();
    let mut roles = BTreeMap::new();
    let mut attributes = BTreeMap::new();

    let presence = if identity.status.is_offboarded() {
        let o = &policy.offboarding;
        Presence::Offboarded {
            disable: o.disable,
            revoke_sessions: o.revoke_sessions,
            revoke_api_keys: o.revoke_api_keys,
            delete_after_days: o.delete_after_days,
        }
    } else {
        for rule in &policy.rules {
            if !applies(&rule.when, identity) {
                continue;
            }
            for g in &rule.looker_groups {
                groups.entry(g.clone()).or_insert_with(|| rule.name.clone());
            }
            for r in &rule.looker_roles {
                roles.entry(r.clone()).or_insert_with(|| rule.name.clone());
            }
            for (k, v) in &rule.looker_attributes {
                attributes
                    .entry(k.clone())
                    .or_insert_with(|| (v.clone(), rule.name.clone()));
            }
        }
        for m in &policy.attributes {
            if let Some(v) = identity.attribute(&m.idp_attribute) {
                attributes
                    .entry(m.looker_attribute.clone())
                    .or_insert_with(|| (v.to_string(), format!("attribute.{}", m.idp_attribute)));
            }
        }
        Presence::Active {
            create: policy.onboarding.create_users,
        }
    };

    let offboarded_keeping_groups =
        matches!(presence, Presence::Offboarded { .. }) && !policy.offboarding.remove_managed_groups;
    DesiredLooker {
        email: identity.email().map(str::to_string),
        first_name: identity.attribute("firstName").map(str::to_string),
        last_name: identity.attribute("lastName").map(str::to_string),
        presence,
        groups,
        roles,
        attributes,
        managed_groups: if offboarded_keeping_groups {
            BTreeSet::new()
        } else {
            managed_groups
        },
        // While offboarded, roles and attributes are left as they are (the user is disabled).
        managed_roles: if identity.status.is_offboarded() {
            BTreeSet::new()
        } else {
            managed_roles
        },
        managed_attributes: if identity.status.is_offboarded() {
            BTreeSet::new()
        } else {
            managed_attributes
        },
    }
}

pub(crate) fn applies(cond: &Condition, identity: &Identity) -> bool {
    match cond {
        Condition::Everyone => true,
        Condition::IdpGroup(g) => identity.is_member(g),
        Condition::Attribute { name, equals } => identity.attribute(name) == Some(equals.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
    use chrono::DateTime;
    use proptest::prelude::*;

    #[test]
    fn example_policy_parses() {
        let p = Policy::from_toml(include_str!("../../../examples/policy.toml")).unwrap();
        assert!(p.managed_groups().contains("Engineers"));
        assert_eq!(p.offboarding.delete_after_days, Some(30));
    }

    #[test]
    fn default_policy_offboards_fully_and_maps_nothing() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.offboarding, Offboarding::default());
        assert!(p.offboarding.disable && p.offboarding.revoke_sessions && p.offboarding.revoke_api_keys);
        assert!(p.managed_groups().is_empty());
    }

    #[test]
    fn unknown_key_and_duplicate_rule_are_rejected() {
        let e = Policy::from_toml("[offboarding]\ndisabel = true\n").unwrap_err();
        assert!(e.to_string().contains("disabel"), "{e}");
        let e =
            Policy::from_toml("[[rule]]\nname='a'\nwhen='everyone'\n[[rule]]\nname='a'\nwhen='everyone'\n")
                .unwrap_err();
        assert!(e.to_string().contains("used twice"), "{e}");
    }

    const GROUPS: [&str; 4] = ["Engineering", "Finance", "Sales", "Ops"];

    fn policy() -> Policy {
        Policy::from_toml(
            r#"
            [[rule]]
            name = "eng"
            when = { idp_group = "Engineering" }
            looker_groups = ["Engineers"]
            looker_roles = ["Developer"]
            [[rule]]
            name = "fin"
            when = { idp_group = "Finance" }
            looker_groups = ["Finance Analysts", "Engineers"]
            looker_attributes = { team = "finance" }
            [[rule]]
            name = "sales-region"
            when = { attribute = { name = "region", equals = "emea" } }
            looker_attributes = { region = "EMEA" }
            [[attribute]]
            idp_attribute = "email"
            looker_attribute = "email_rls"
            "#,
        )
        .unwrap()
    }

    fn identity(status: IdentityEvent, groups: &[usize], region: Option<&str>) -> Identity {
        let mut id = Identity::new("k");
        let mut n = 0;
        let mut fold = |event: IdentityEvent, profile: Profile| {
            n += 1;
            id.fold(&Envelope {
                trace_parent: None,
                version: 1,
                id: EnvelopeId(format!("e{n}")),
                source: Source::Manual,
                subject: Subject {
                    key: "k".into(),
                    email: None,
                    display_name: None,
                },
                occurred_at: DateTime::from_timestamp(n, 0).unwrap(),
                received_at: DateTime::from_timestamp(0, 0).unwrap(),
                event,
                profile,
                source_event_type: "t".into(),
                raw: serde_json::Value::Null,
            });
        };
        let mut profile = Profile::from([("email".to_string(), "p@x.io".to_string())]);
        if let Some(r) = region {
            profile.insert("region".into(), r.into());
        }
        fold(status, profile);
        for &g in groups {
            let group = GroupRef {
                id: format!("id-{g}"),
                name: GROUPS[g].into(),
            };
            fold(IdentityEvent::GroupMemberAdded { group }, Profile::new());
        }
        id
    }

    fn arb_status() -> impl Strategy<Value = IdentityEvent> {
        prop_oneof![
            Just(IdentityEvent::UserActivated),
            Just(IdentityEvent::UserCreated),
            Just(IdentityEvent::UserSuspended),
            Just(IdentityEvent::UserDeactivated),
            Just(IdentityEvent::UserDeleted),
        ]
    }

    proptest! {
        /// Only managed objects are ever desired, and the grant follows the rules exactly.
        #[test]
        fn desired_follows_rules(
            status in arb_status(),
            groups in prop::collection::btree_set(0usize..4, 0..4),
            region in prop::option::of(prop_oneof![Just("emea"), Just("amer")]),
        ) {
            let p = policy();
            let groups: Vec<usize> = groups.into_iter().collect();
            let id = identity(status, &groups, region);
            let d = evaluate(&p, &id);
            prop_assert_eq!(&d, &evaluate(&p, &id), "evaluation is deterministic");
            for g in d.groups.keys() { prop_assert!(p.managed_groups().contains(g)); }
            for r in d.roles.keys() { prop_assert!(p.managed_roles().contains(r)); }
            for a in d.attributes.keys() { prop_assert!(p.managed_attributes().contains(a)); }
            let eng = groups.contains(&0);
            let fin = groups.contains(&1);
            if id.status.is_offboarded() {
                prop_assert!(matches!(d.presence, Presence::Offboarded { disable: true, revoke_sessions: true, revoke_api_keys: true, .. }), "default offboarding is full");
                prop_assert!(d.groups.is_empty() && d.roles.is_empty() && d.attributes.is_empty());
                prop_assert_eq!(d.managed_groups, p.managed_groups(), "offboarding removes every managed group");
            } else {
                prop_assert_eq!(d.groups.contains_key("Engineers"), eng || fin);
                prop_assert_eq!(d.groups.contains_key("Finance Analysts"), fin);
                prop_assert_eq!(d.roles.contains_key("Developer"), eng);
                prop_assert_eq!(d.attributes.get("team").map(|v| v.0.as_str()), fin.then_some("finance"));
                prop_assert_eq!(d.attributes.get("region").map(|v| v.0.as_str()), (region == Some("emea")).then_some("EMEA"));
                prop_assert_eq!(d.attributes.get("email_rls").map(|v| v.0.as_str()), Some("p@x.io"));
                // the rule cited is one that grants it
                if let Some(rule) = d.groups.get("Engineers") {
                    prop_assert!((rule == "eng" && eng) || (rule == "fin" && fin));
                }
            }
        }
    }
}
