//! Policy as code: one file maps IdP groups and profile attributes to Looker groups, roles and
//! user-attribute values, and says what offboarding does. [`evaluate`] is a pure function of
//! (policy, identity) → desired state.

pub mod handover;
pub mod identity_center;
pub mod inactivity;

use crate::envelope::Source;
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
    /// Per managed Looker user attribute (`[attributes.NAME]`): what a person the policy gives
    /// no value gets. Required for every managed attribute: row-level security fails closed.
    #[serde(default, rename = "attributes")]
    pub attribute_settings: BTreeMap<String, ManagedAttribute>,
    /// What offboarding does in AWS IAM (`[aws.offboarding]`).
    #[serde(default)]
    pub aws: AwsPolicy,
    /// What offboarding does in GCP IAM (`[gcp.offboarding]`).
    #[serde(default)]
    pub gcp: GcpPolicy,
    /// AWS IAM Identity Center: the managed groups' account assignments and offboarding
    /// (`[identity_center]`, issue 20).
    #[serde(default)]
    pub identity_center: identity_center::IdentityCenterPolicy,
    /// Email domains (lowercase) a person must be in to be onboarded or granted anything (Looker
    /// or cloud); `None`: any domain. Set from the configuration (`[identity]
    /// allowed_email_domains`), not from the policy file. Offboarding applies to everyone.
    #[serde(skip)]
    pub allowed_email_domains: Option<BTreeSet<String>>,
    /// Issue 16: the SSO credential unlinked people are looked up by in Looker, after their
    /// email (`None`: off). Set from the configuration (`[identity.looker_sso]`).
    #[serde(skip)]
    pub looker_sso: Option<crate::sso::SsoLookup>,
    /// Looker (Google Cloud core): the IAM grant that lets people sign in (`None`: Looker
    /// (original)). Set from the configuration (`[looker] platform = "core"`) with
    /// [`Policy::set_looker_core`], which also adds the rule granting it.
    #[serde(skip)]
    pub looker_core: Option<LookerCore>,
    /// License reclamation (`[inactivity]`, issue 15); off when absent.
    #[serde(default)]
    pub inactivity: Option<inactivity::Inactivity>,
    /// SHA-256 of the policy file's bytes (what every ledger row of a decision records). The
    /// built-in default policy has the digest of an empty file, which it equals.
    #[serde(skip)]
    pub digest: PolicyDigest,
}

/// SHA-256 (lower-case hex) of a policy file's bytes, exactly as read: `sha256sum policy.toml`
/// gives the same value, so a reviewer can match a ledger row to a commit of the policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyDigest(pub String);

impl PolicyDigest {
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        PolicyDigest(Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PolicyDigest {
    /// The digest of an empty file (the built-in default policy).
    fn default() -> Self {
        PolicyDigest::of(b"")
    }
}

impl std::fmt::Display for PolicyDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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
    // The rest of the leaver sweep (docs/cloud-iam.md); defaults never lose data.
    /// `DetachUserPolicy` for every managed policy attached to the user directly.
    #[serde(default = "yes")]
    pub detach_user_policies: bool,
    /// `DeleteUserPolicy` for every inline user policy (the document is lost: off by default).
    #[serde(default)]
    pub delete_inline_policies: bool,
    /// SSH public keys (CodeCommit): `keep`, `deactivate` (default) or `delete`.
    #[serde(default = "deactivate")]
    pub ssh_public_keys: KeyAction,
    /// Service-specific credentials (CodeCommit/Keyspaces passwords): `keep`, `deactivate`, `delete`.
    #[serde(default = "deactivate")]
    pub service_specific_credentials: KeyAction,
    /// X.509 signing certificates: `keep`, `deactivate` (default) or `delete`.
    #[serde(default = "deactivate")]
    pub signing_certificates: KeyAction,
    /// `DeactivateMFADevice` for every MFA device of the user.
    #[serde(default = "yes")]
    pub deactivate_mfa_devices: bool,
    /// `PutUserPolicy`: deny everything to tokens issued before the offboarding time
    /// (`aws:TokenIssueTime`), so STS sessions already issued die now.
    #[serde(default = "yes")]
    pub revoke_sessions: bool,
}

/// What to do with the access keys of an offboarded person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyAction {
    Keep,
    Deactivate,
    Delete,
}

fn deactivate() -> KeyAction {
    KeyAction::Deactivate
}

impl Default for AwsOffboarding {
    fn default() -> Self {
        AwsOffboarding {
            remove_groups: true,
            deactivate_access_keys: true,
            delete_access_keys_after_days: None,
            delete_login_profile: true,
            detach_user_policies: true,
            delete_inline_policies: false,
            ssh_public_keys: KeyAction::Deactivate,
            service_specific_credentials: KeyAction::Deactivate,
            signing_certificates: KeyAction::Deactivate,
            deactivate_mfa_devices: true,
            revoke_sessions: true,
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
    /// Remove the person from every Google group the policy manages (`gcp_groups`).
    #[serde(default = "yes")]
    pub remove_group_memberships: bool,
}

impl Default for GcpOffboarding {
    fn default() -> Self {
        GcpOffboarding {
            remove_bindings: true,
            remove_group_memberships: true,
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
    /// Before that deletion: where the person's content goes (`handover = { folder_id, owner_id }`
    /// or `"none"`). Absent: a deletion that would destroy content is withheld
    /// (`crate::handover::deletion`).
    #[serde(default)]
    pub handover: Option<handover::Handover>,
}

impl Default for Offboarding {
    fn default() -> Self {
        Offboarding {
            disable: true,
            revoke_sessions: true,
            revoke_api_keys: true,
            remove_managed_groups: true,
            delete_after_days: None,
            handover: None,
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
    /// AWS IAM Identity Center groups the rule grants (`identity_center.groups = [...]`).
    #[serde(default)]
    pub identity_center: identity_center::IdentityCenterGrant,
    /// Google groups (Cloud Identity, by group email) the rule makes the person a MEMBER of;
    /// the resources bind `group:EMAIL` once (docs/cloud-iam.md "Google groups").
    #[serde(default)]
    pub gcp_groups: Vec<String>,
    /// Precedence when several rules (or attribute mappings) set the same Looker user attribute
    /// to different values: the applicable one with the highest priority wins. Required (and
    /// distinct) on each of them; without it such a policy is refused.
    #[serde(default)]
    pub priority: Option<i64>,
}

/// When a rule applies: `"everyone"`, `{ idp_group = "NAME" }` or
/// `{ attribute = { name = "...", equals = "..." } }`. The last two may add
/// `source = "okta"` (or a list): only a membership or attribute asserted by one of these
/// intakes counts, so another intake's credential cannot claim the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConditionToml", into = "ConditionToml")]
pub enum Condition {
    /// Every active person.
    Everyone,
    /// Member of the IdP group with this name (or id), asserted by one of `sources` (any if `None`).
    IdpGroup { group: String, sources: Option<Sources> },
    /// The IdP profile attribute equals the value, asserted by one of `sources` (any if `None`).
    Attribute {
        name: String,
        equals: String,
        sources: Option<Sources>,
    },
}

impl Condition {
    /// A group or attribute condition that any intake may satisfy.
    pub fn accepts_any_source(&self) -> bool {
        matches!(
            self,
            Condition::IdpGroup { sources: None, .. } | Condition::Attribute { sources: None, .. }
        )
    }
}

/// The intakes allowed to assert a fact: `source = "okta"` or `source = ["okta", "scim"]`
/// (names as in the envelope: `okta`, `scim`, `graph`, `google_workspace`, `generic`, `manual`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources(pub Vec<Source>);

impl Sources {
    pub fn as_slice(&self) -> &[Source] {
        &self.0
    }
}

const SOURCES: [Source; 8] = [
    Source::Okta,
    Source::Scim,
    Source::Graph,
    Source::GoogleWorkspace,
    Source::Generic,
    Source::AwsCloudTrail,
    Source::GcpAudit,
    Source::Manual,
];

impl Serialize for Sources {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.iter().map(|x| x.as_str()).collect::<Vec<_>>().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Sources {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let names = match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        };
        if names.is_empty() {
            return Err(serde::de::Error::custom("source: name at least one intake"));
        }
        names
            .iter()
            .map(|n| {
                SOURCES.into_iter().find(|s| s.as_str() == n).ok_or_else(|| {
                    serde::de::Error::custom(format!(
                        "source {n:?} is not one of {}",
                        SOURCES.map(|s| s.as_str()).join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Sources)
    }
}

/// The TOML shape of a [`Condition`].
#[derive(Serialize)]
#[serde(untagged)]
enum ConditionToml {
    Word(String),
    Table(WhenTable),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenTable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idp_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attribute: Option<AttributeEquals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<Sources>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributeEquals {
    name: String,
    equals: String,
}

impl<'de> Deserialize<'de> for ConditionToml {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ConditionToml;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "\"everyone\", { idp_group = \"NAME\" } or { attribute = { name = \"...\", equals = \"...\" } }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ConditionToml, E> {
                Ok(ConditionToml::Word(s.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ConditionToml, A::Error> {
                WhenTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(ConditionToml::Table)
            }
        }
        d.deserialize_any(V)
    }
}

impl TryFrom<ConditionToml> for Condition {
    type Error = String;
    fn try_from(c: ConditionToml) -> Result<Self, String> {
        match c {
            ConditionToml::Word(w) if w == "everyone" => Ok(Condition::Everyone),
            ConditionToml::Word(w) => Err(format!(
                "when = {w:?}: the only word is \"everyone\"; otherwise {{ idp_group = ... }} or {{ attribute = ... }}"
            )),
            ConditionToml::Table(WhenTable {
                idp_group: Some(group),
                attribute: None,
                source,
            }) => Ok(Condition::IdpGroup {
                group,
                sources: source,
            }),
            ConditionToml::Table(WhenTable {
                idp_group: None,
                attribute: Some(a),
                source,
            }) => Ok(Condition::Attribute {
                name: a.name,
                equals: a.equals,
                sources: source,
            }),
            ConditionToml::Table(_) => {
                Err("when: name exactly one of idp_group or attribute (and optionally source)".into())
            }
        }
    }
}

impl From<Condition> for ConditionToml {
    fn from(c: Condition) -> Self {
        match c {
            Condition::Everyone => ConditionToml::Word("everyone".into()),
            Condition::IdpGroup { group, sources } => ConditionToml::Table(WhenTable {
                idp_group: Some(group),
                attribute: None,
                source: sources,
            }),
            Condition::Attribute {
                name,
                equals,
                sources,
            } => ConditionToml::Table(WhenTable {
                idp_group: None,
                attribute: Some(AttributeEquals { name, equals }),
                source: sources,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMapping {
    pub idp_attribute: String,
    pub looker_attribute: String,
    /// Only a value asserted by one of these intakes is mapped (any if absent).
    #[serde(default, rename = "source", skip_serializing_if = "Option::is_none")]
    pub sources: Option<Sources>,
    /// Precedence against rules setting the same Looker attribute (see [`Rule::priority`]).
    #[serde(default)]
    pub priority: Option<i64>,
}

/// `[attributes.NAME]`: how a managed Looker user attribute fails closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedAttribute {
    /// The value set on a person no rule or mapping gives a value (never a delete, which would
    /// let Looker's group value or the attribute's default apply). Choose one that matches no
    /// rows, e.g. `"__none__"`. Looker's own default for the attribute must be empty or this.
    pub deny_value: String,
}

/// The rule name cited for a deny value.
pub fn deny_rule(attribute: &str) -> RuleName {
    format!("attributes.{attribute}.deny_value")
}

/// Who sets a Looker attribute: (priority, value if fixed, name for messages).
struct Setter<'a> {
    priority: Option<i64>,
    value: Option<&'a str>,
    name: String,
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
        let mut policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        policy.validate()?;
        policy.digest = PolicyDigest::of(text.as_bytes());
        Ok(policy)
    }

    fn validate(&self) -> Result<(), PolicyError> {
        if let Some(i) = &self.inactivity {
            i.validate().map_err(PolicyError::Invalid)?;
        }
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
        self.validate_attributes()?;
        self.identity_center.validate(self)?;
        for rule in &self.rules {
            for g in &rule.gcp_groups {
                if !crate::gcp::is_group_email(g) {
                    return Err(PolicyError::Invalid(format!(
                        "rule {:?}: gcp group {:?} is not a group email (name@domain)",
                        rule.name, g
                    )));
                }
            }
            for g in &rule.gcp_bindings {
                if crate::gcp::GcpResource::parse(&g.resource).is_none() {
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

    /// Row-level security fails closed: every managed Looker attribute has a deny value, and
    /// an attribute set by several rules/mappings to different values has a precedence.
    fn validate_attributes(&self) -> Result<(), PolicyError> {
        let managed = self.managed_attributes();
        for (name, s) in &self.attribute_settings {
            if !managed.contains(name) {
                return Err(PolicyError::Invalid(format!(
                    "[attributes.{name}]: no rule or mapping sets looker attribute {name:?}"
                )));
            }
            if s.deny_value.trim().is_empty() {
                return Err(PolicyError::Invalid(format!(
                    "[attributes.{name}] deny_value is empty: use a value that matches no rows, e.g. \"__none__\""
                )));
            }
        }
        for name in &managed {
            if !self.attribute_settings.contains_key(name) {
                return Err(PolicyError::Invalid(format!(
                    "looker attribute {name:?} is managed but has no deny value: add [attributes.{name}] \
                     deny_value = \"...\" (what a person without a value gets; it must match no rows)"
                )));
            }
            let setters = self.setters(name);
            let values: BTreeSet<Option<&str>> = setters.iter().map(|s| s.value).collect();
            if setters.len() < 2 || (values.len() == 1 && !values.contains(&None)) {
                continue;
            }
            if let Some(s) = setters.iter().find(|s| s.priority.is_none()) {
                return Err(PolicyError::Invalid(format!(
                    "looker attribute {name:?} is set by {} with different values and {} has no \
                     priority: give each a distinct priority (the highest that applies wins)",
                    setters
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    s.name
                )));
            }
            let mut seen = BTreeMap::new();
            for s in &setters {
                if let Some(other) = seen.insert(s.priority, &s.name) {
                    return Err(PolicyError::Invalid(format!(
                        "looker attribute {name:?}: {other} and {} have the same priority {}: \
                         priorities of rules setting one attribute must differ",
                        s.name,
                        s.priority.unwrap_or_default()
                    )));
                }
            }
        }
        Ok(())
    }

    fn setters(&self, attribute: &str) -> Vec<Setter<'_>> {
        let rules = self.rules.iter().filter_map(|r| {
            r.looker_attributes.get(attribute).map(|v| Setter {
                priority: r.priority,
                value: Some(v.as_str()),
                name: format!("rule {:?}", r.name),
            })
        });
        let mappings = self
            .attributes
            .iter()
            .filter(|m| m.looker_attribute == attribute)
            .map(|m| Setter {
                priority: m.priority,
                value: None,
                name: format!("the mapping of idp attribute {:?}", m.idp_attribute),
            });
        rules.chain(mappings).collect()
    }

    /// Whether a person with this email may be onboarded and granted anything: always when no
    /// allow-list is set; otherwise only an email whose domain (after the last `@`, any case) is
    /// listed. No email: not allowed.
    pub fn email_allowed(&self, email: Option<&str>) -> bool {
        match &self.allowed_email_domains {
            None => true,
            Some(domains) => email
                .and_then(|e| e.rsplit_once('@'))
                .is_some_and(|(local, domain)| {
                    !local.is_empty() && domains.contains(&domain.to_ascii_lowercase())
                }),
        }
    }

    /// Rules and mappings whose group or attribute claim any intake may make (one warning at
    /// start lists them).
    pub fn any_source_claims(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.when.accepts_any_source())
            .map(|r| format!("rule {:?}", r.name))
            .chain(
                self.attributes
                    .iter()
                    .filter(|m| m.sources.is_none())
                    .map(|m| format!("attribute mapping {:?}", m.idp_attribute)),
            )
            .collect()
    }

    /// The deny value of a managed Looker attribute.
    pub fn deny_value(&self, attribute: &str) -> Option<&str> {
        self.attribute_settings
            .get(attribute)
            .map(|s| s.deny_value.as_str())
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

    /// Identity Center groups (DisplayName) the policy manages: only their memberships are ever
    /// added or removed.
    pub fn managed_identity_center_groups(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.identity_center.groups.iter().cloned())
            .collect()
    }

    /// GCP (resource, role) pairs the policy manages.
    pub fn managed_gcp_grants(&self) -> BTreeSet<GcpGrant> {
        self.rules
            .iter()
            .flat_map(|r| r.gcp_bindings.iter().cloned())
            .collect()
    }

    /// Google groups the policy manages (lowercased emails): only their memberships change.
    pub fn managed_gcp_groups(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.gcp_groups.iter().map(|g| g.to_ascii_lowercase()))
            .collect()
    }

    /// Whether any rule names a cloud target (AWS or GCP).
    pub fn manages_cloud(&self) -> bool {
        self.rules.iter().any(|r| {
            !r.aws_groups.is_empty()
                || !r.aws_tags.is_empty()
                || !r.gcp_bindings.is_empty()
                || !r.gcp_groups.is_empty()
        })
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

/// What is unsafe about how Looker holds the managed attributes (`held` from
/// `GET /user_attributes`): a person could edit their own row-level-security value, or a person
/// without a value would get a default other than the deny value. Empty = safe. Attributes Looker
/// does not have are left to the plan (it notes and skips them).
pub fn attribute_problems(policy: &Policy, held: &[crate::looker::UserAttributeSettings]) -> Vec<String> {
    let mut problems = Vec::new();
    for name in policy.managed_attributes() {
        let Some(a) = held.iter().find(|a| a.name == name) else {
            continue;
        };
        if a.user_can_edit {
            problems.push(format!(
                "looker user attribute {name:?}: users can edit their own value (user_can_edit is true); \
                 set its user access to none or view"
            ));
        }
        let deny = policy.deny_value(&name).unwrap_or_default();
        if let Some(d) = a.default_value.as_deref().filter(|d| !d.is_empty() && *d != deny) {
            problems.push(format!(
                "looker user attribute {name:?}: its default value {d:?} applies to anyone without a \
                 value; make it empty or the deny value {deny:?}"
            ));
        }
    }
    problems
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

/// The GCP grant that lets people sign in to the core instance: `role` on `project`
/// (`projects/P`, the project that holds the instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookerCore {
    pub project: String,
    pub role: String,
}

impl LookerCore {
    pub fn grant(&self) -> GcpGrant {
        GcpGrant {
            resource: self.project.clone(),
            role: self.role.clone(),
        }
    }
}

/// Rule names used for facts that come from the offboarding section rather than a `[[rule]]`.
pub use crate::rules;

/// Evaluate the policy for one person. Pure.
pub fn evaluate(policy: &Policy, identity: &Identity) -> DesiredLooker {
    let managed = LookerManaged {
        groups: policy.managed_groups(),
        roles: policy.managed_roles(),
        attributes: policy.managed_attributes(),
    };
    evaluate_scoped(policy, identity, policy.rules.iter(), managed)
}

/// The managed Looker names an evaluation puts into [`DesiredLooker`].
#[derive(Debug, Clone, Default)]
pub struct LookerManaged {
    /// Every managed group, or (reconcile's compiled planner) a subset that still holds every
    /// managed group the person is granted, holds, or that Looker lacks (the diff is then the same).
    pub groups: BTreeSet<String>,
    /// Every managed role.
    pub roles: BTreeSet<String>,
    /// Every managed attribute (fail-closed: each one gets a value or its deny value).
    pub attributes: BTreeSet<String>,
}

/// [`evaluate`] over `rules` (in policy order; rules that cannot match may be left out) with
/// `managed` computed by the caller: reconcile's compiled planner evaluates 100,000 people
/// without recomputing the policy's managed sets or testing every rule for each of them.
pub fn evaluate_scoped<'r>(
    policy: &Policy,
    identity: &Identity,
    rules: impl IntoIterator<Item = &'r Rule>,
    managed: LookerManaged,
) -> DesiredLooker {
    let LookerManaged {
        groups: managed_groups,
        roles: managed_roles,
        attributes: managed_attributes,
    } = managed;
    let mut groups = BTreeMap::new();
    let mut roles = BTreeMap::new();
    let mut attributes: BTreeMap<String, (String, RuleName, Option<i64>)> = BTreeMap::new();

    let presence = if identity.status.is_offboarded() {
        let o = &policy.offboarding;
        Presence::Offboarded {
            disable: o.disable,
            revoke_sessions: o.revoke_sessions,
            revoke_api_keys: o.revoke_api_keys,
            delete_after_days: o.delete_after_days,
        }
    } else {
        // Outside the allowed email domains: no user is created and nothing is granted.
        let allowed = policy.email_allowed(identity.email());
        for rule in rules {
            if !allowed || !applies(&rule.when, identity) {
                continue;
            }
            for g in &rule.looker_groups {
                groups.entry(g.clone()).or_insert_with(|| rule.name.clone());
            }
            for r in &rule.looker_roles {
                roles.entry(r.clone()).or_insert_with(|| rule.name.clone());
            }
            for (k, v) in &rule.looker_attributes {
                set_attribute(&mut attributes, k, rule.priority, v, &rule.name);
            }
        }
        for m in policy.attributes.iter().filter(|_| allowed) {
            if let Some(v) =
                identity.attribute_by(&m.idp_attribute, m.sources.as_ref().map(Sources::as_slice))
            {
                let rule = format!("attribute.{}", m.idp_attribute);
                set_attribute(&mut attributes, &m.looker_attribute, m.priority, v, &rule);
            }
        }
        // Fail closed: a managed attribute nothing sets gets its deny value, never a delete
        // (which would let Looker's group value or the attribute's default apply).
        for a in &managed_attributes {
            if !attributes.contains_key(a)
                && let Some(deny) = policy.deny_value(a)
            {
                attributes.insert(a.clone(), (deny.to_string(), deny_rule(a), None));
            }
        }
        Presence::Active {
            create: policy.onboarding.create_users && allowed,
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
        attributes: attributes
            .into_iter()
            .map(|(k, (v, rule, _))| (k, (v, rule)))
            .collect(),
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

/// Record `value` for `attribute` unless an applicable setter of higher priority already did
/// (validation makes priorities distinct wherever values can differ; on a tie the first stays).
fn set_attribute(
    attributes: &mut BTreeMap<String, (String, RuleName, Option<i64>)>,
    attribute: &str,
    priority: Option<i64>,
    value: &str,
    rule: &str,
) {
    match attributes.get(attribute) {
        Some((_, _, held)) if *held >= priority => {}
        _ => {
            attributes.insert(
                attribute.to_string(),
                (value.to_string(), rule.to_string(), priority),
            );
        }
    }
}

pub(crate) fn applies(cond: &Condition, identity: &Identity) -> bool {
    match cond {
        Condition::Everyone => true,
        Condition::IdpGroup { group, sources } => {
            identity.is_member_by(group, sources.as_ref().map(Sources::as_slice))
        }
        Condition::Attribute {
            name,
            equals,
            sources,
        } => identity.attribute_by(name, sources.as_ref().map(Sources::as_slice)) == Some(equals.as_str()),
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
    fn the_digest_is_the_sha256_of_the_file_bytes() {
        let text = "[[rule]]\nname='a'\nwhen='everyone'\nlooker_groups=['G']\n";
        let a = Policy::from_toml(text).unwrap();
        let b = Policy::from_toml(&format!("{text}\n")).unwrap();
        assert_eq!(a.digest, PolicyDigest::of(text.as_bytes()));
        assert_eq!(a.digest.as_str().len(), 64);
        // The same rules in different bytes: a different file, a different digest.
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn default_policy_offboards_fully_and_maps_nothing() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(
            p.digest.as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
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

    /// Issue 11, finding 11: two rules setting one Looker attribute to different values used to
    /// let the first win silently. Now the policy must name a precedence.
    #[test]
    fn conflicting_attribute_rules_need_distinct_priorities() {
        let two = |p1: &str, p2: &str, v2: &str| {
            format!(
                "[[rule]]\nname = \"eng\"\nwhen = {{ idp_group = \"Engineering\" }}\nlooker_attributes = {{ region = \"emea\" }}\n{p1}\n\
                 [[rule]]\nname = \"all\"\nwhen = \"everyone\"\nlooker_attributes = {{ region = \"{v2}\" }}\n{p2}\n\
                 [attributes.region]\ndeny_value = \"__none__\"\n"
            )
        };
        let e = Policy::from_toml(&two("", "", "all")).unwrap_err().to_string();
        assert!(
            e.contains("\"region\"")
                && e.contains("\"eng\"")
                && e.contains("\"all\"")
                && e.contains("priority"),
            "{e}"
        );
        let e = Policy::from_toml(&two("priority = 10", "", "all"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule \"all\" has no priority"), "{e}");
        let e = Policy::from_toml(&two("priority = 10", "priority = 10", "all"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("same priority 10"), "{e}");
        // the same value twice is no conflict
        Policy::from_toml(&two("", "", "emea")).unwrap();
        // a mapping and a rule conflict too
        let e = Policy::from_toml(
            "[[rule]]\nname = \"all\"\nwhen = \"everyone\"\nlooker_attributes = { region = \"all\" }\n\
             [[attribute]]\nidp_attribute = \"region\"\nlooker_attribute = \"region\"\n\
             [attributes.region]\ndeny_value = \"__none__\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("mapping of idp attribute \"region\""), "{e}");

        // With priorities, the highest applicable wins, whatever the rule order.
        for (p_eng, p_all, want_eng) in [(20, 10, "emea"), (10, 20, "all")] {
            let p = Policy::from_toml(&two(
                &format!("priority = {p_eng}"),
                &format!("priority = {p_all}"),
                "all",
            ))
            .unwrap();
            let eng = identity(IdentityEvent::UserActivated, &[0], None);
            let other = identity(IdentityEvent::UserActivated, &[1], None);
            assert_eq!(evaluate(&p, &eng).attributes["region"].0, want_eng);
            assert_eq!(evaluate(&p, &other).attributes["region"].0, "all");
        }
    }

    /// Issue 11, finding 11: a managed attribute without a value was deleted (Looker's default
    /// or group value then applied). It now needs a deny value, which a person without a value gets.
    #[test]
    fn a_managed_attribute_needs_a_deny_value_and_the_person_without_one_gets_it() {
        let rule = "[[rule]]\nname = \"emea\"\nwhen = { idp_group = \"Sales\" }\nlooker_attributes = { region = \"EMEA\" }\n";
        let e = Policy::from_toml(rule).unwrap_err().to_string();
        assert!(
            e.contains("[attributes.region]") && e.contains("deny_value"),
            "{e}"
        );
        let e = Policy::from_toml(&format!("{rule}[attributes.region]\ndeny_value = \" \"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty"), "{e}");
        let e = Policy::from_toml(&format!(
            "{rule}[attributes.region]\ndeny_value = \"x\"\n[attributes.regoin]\ndeny_value = \"x\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("regoin"), "{e}");
        let e =
            Policy::from_toml("[[attribute]]\nidp_attribute = \"email\"\nlooker_attribute = \"email_rls\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("[attributes.email_rls]"), "{e}");

        let p =
            Policy::from_toml(&format!("{rule}[attributes.region]\ndeny_value = \"__none__\"\n")).unwrap();
        let sales = identity(IdentityEvent::UserActivated, &[2], None);
        let other = identity(IdentityEvent::UserActivated, &[0], None);
        assert_eq!(
            evaluate(&p, &sales).attributes["region"],
            ("EMEA".to_string(), "emea".to_string())
        );
        assert_eq!(
            evaluate(&p, &other).attributes["region"],
            ("__none__".to_string(), "attributes.region.deny_value".to_string())
        );
        let gone = identity(IdentityEvent::UserDeactivated, &[0], None);
        assert!(
            evaluate(&p, &gone).attributes.is_empty(),
            "an offboarded person's values are left alone"
        );
    }

    #[test]
    fn attribute_settings_that_fail_open_are_named() {
        use crate::looker::UserAttributeSettings as S;
        let p = policy();
        let held = |name: &str, default: Option<&str>, edit: bool| S {
            name: name.into(),
            default_value: default.map(str::to_string),
            user_can_edit: edit,
        };
        let safe = [
            held("team", None, false),
            held("region", Some("__no_region__"), false),
            held("email_rls", Some(""), false),
            held("unmanaged", Some("ALL"), true),
        ];
        assert!(attribute_problems(&p, &safe).is_empty());
        assert!(
            attribute_problems(&p, &[]).is_empty(),
            "missing attributes are the plan's note"
        );
        let unsafe_ = [held("team", None, true), held("region", Some("ALL"), false)];
        let problems = attribute_problems(&p, &unsafe_);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("\"region\"") && problems[0].contains("\"ALL\""),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("\"team\"") && problems[1].contains("user_can_edit"),
            "{problems:?}"
        );
    }

    fn fold_from(id: &mut Identity, n: i64, source: Source, event: IdentityEvent, profile: Profile) {
        id.fold(&Envelope {
            trace_parent: None,
            version: 1,
            id: EnvelopeId(format!("s{n}")),
            source,
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
    }

    fn admins(member: bool) -> IdentityEvent {
        let group = GroupRef {
            id: "00g-admins".into(),
            name: "Admins".into(),
        };
        if member {
            IdentityEvent::GroupMemberAdded { group }
        } else {
            IdentityEvent::GroupMemberRemoved { group }
        }
    }

    const SOURCED: &str = r#"
        [[rule]]
        name = "admins"
        when = { idp_group = "Admins", source = "okta" }
        looker_groups = ["Looker Admins"]
        [[rule]]
        name = "emea"
        when = { attribute = { name = "region", equals = "emea" }, source = ["okta", "scim"] }
        looker_groups = ["EMEA"]
        [[attribute]]
        idp_attribute = "cost_center"
        looker_attribute = "cost_center"
        source = "okta"
        [attributes.cost_center]
        deny_value = "__none__"
    "#;

    /// Issue 11, finding 3: a condition with `source` counts only facts that intake asserted.
    #[test]
    fn a_sourced_condition_ignores_claims_from_other_intakes() {
        let p = Policy::from_toml(SOURCED).unwrap();
        let person = |source: Source| {
            let mut id = Identity::new("k");
            let profile = Profile::from([
                ("email".to_string(), "p@x.io".to_string()),
                ("region".to_string(), "emea".to_string()),
                ("cost_center".to_string(), "cc-7".to_string()),
            ]);
            fold_from(&mut id, 1, source, IdentityEvent::UserActivated, profile);
            fold_from(&mut id, 2, source, admins(true), Profile::new());
            evaluate(&p, &id)
        };
        let okta = person(Source::Okta);
        assert!(okta.groups.contains_key("Looker Admins") && okta.groups.contains_key("EMEA"));
        assert_eq!(okta.attributes["cost_center"].0, "cc-7");
        let scim = person(Source::Scim);
        assert!(!scim.groups.contains_key("Looker Admins") && scim.groups.contains_key("EMEA"));
        assert_eq!(scim.attributes["cost_center"].0, "__none__");
        for s in [Source::GoogleWorkspace, Source::Generic, Source::Graph] {
            let d = person(s);
            assert!(d.groups.is_empty(), "{s:?}: {:?}", d.groups);
            assert_eq!(d.attributes["cost_center"].0, "__none__");
        }
        // An Okta membership later re-asserted by Google no longer counts as Okta's.
        let mut id = Identity::new("k");
        fold_from(&mut id, 1, Source::Okta, admins(true), Profile::new());
        assert!(evaluate(&p, &id).groups.contains_key("Looker Admins"));
        fold_from(&mut id, 2, Source::GoogleWorkspace, admins(true), Profile::new());
        assert!(!evaluate(&p, &id).groups.contains_key("Looker Admins"));
        assert_eq!(p.any_source_claims(), Vec::<String>::new());
        assert_eq!(
            policy().any_source_claims(),
            [
                "rule \"eng\"",
                "rule \"fin\"",
                "rule \"sales-region\"",
                "attribute mapping \"email\""
            ]
        );
    }

    #[test]
    fn bad_conditions_are_refused_with_a_reason() {
        for (when, why) in [
            ("{ idp_group = \"A\", source = \"okat\" }", "okat"),
            ("{ idp_group = \"A\", source = [] }", "at least one"),
            (
                "{ idp_group = \"A\", attribute = { name = \"x\", equals = \"y\" } }",
                "exactly one",
            ),
            ("{ source = \"okta\" }", "exactly one"),
            ("{ idp_grup = \"A\" }", "idp_grup"),
            ("\"everybody\"", "everybody"),
        ] {
            let e = Policy::from_toml(&format!("[[rule]]\nname = \"r\"\nwhen = {when}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{when}: {e}");
        }
        let p = Policy::from_toml("[[rule]]\nname = \"r\"\nwhen = \"everyone\"\n").unwrap();
        assert_eq!(p.rules[0].when, Condition::Everyone);
    }

    /// Issue 11, finding 3: outside the allowed email domains no Looker user is created and
    /// nothing is granted; offboarding still applies.
    #[test]
    fn allowed_email_domains_gate_onboarding_and_grants() {
        let mut p = policy();
        let id = |email: Option<&str>, status: IdentityEvent| {
            let mut i = Identity::new("k");
            let profile = email
                .map(|e| Profile::from([("email".to_string(), e.to_string())]))
                .unwrap_or_default();
            fold_from(&mut i, 1, Source::Okta, status, profile);
            fold_from(
                &mut i,
                2,
                Source::Okta,
                IdentityEvent::GroupMemberAdded {
                    group: GroupRef {
                        id: "g".into(),
                        name: "Engineering".into(),
                    },
                },
                Profile::new(),
            );
            i
        };
        p.allowed_email_domains = Some(["x.io".to_string()].into());
        for (email, allowed) in [
            (Some("p@x.io"), true),
            (Some("P@X.IO"), true),
            (Some("p@evil.io"), false),
            (Some("p@x.io.evil"), false),
            (Some("@x.io"), false),
            (None, false),
        ] {
            let d = evaluate(&p, &id(email, IdentityEvent::UserActivated));
            assert_eq!(d.presence, Presence::Active { create: allowed }, "{email:?}");
            assert_eq!(d.groups.contains_key("Engineers"), allowed, "{email:?}");
            assert_eq!(d.roles.contains_key("Developer"), allowed, "{email:?}");
            assert!(
                !d.managed_groups.is_empty(),
                "managed groups are still removed: {email:?}"
            );
            let gone = evaluate(&p, &id(email, IdentityEvent::UserDeactivated));
            assert!(
                matches!(gone.presence, Presence::Offboarded { disable: true, .. }),
                "{email:?}"
            );
        }
        p.allowed_email_domains = None;
        assert!(
            evaluate(&p, &id(Some("p@evil.io"), IdentityEvent::UserActivated))
                .groups
                .contains_key("Engineers")
        );
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
            [attributes.team]
            deny_value = "__none__"
            [attributes.region]
            deny_value = "__no_region__"
            [attributes.email_rls]
            deny_value = "__nobody__"
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

    fn arb_source() -> impl Strategy<Value = Source> {
        prop_oneof![
            Just(Source::Okta),
            Just(Source::Scim),
            Just(Source::GoogleWorkspace),
            Just(Source::Generic),
            Just(Source::Graph),
        ]
    }

    proptest! {
        /// Whatever events arrive from whichever intakes, in any order, a rule that requires Okta
        /// grants exactly when the person's latest membership fact is an Okta "add".
        #[test]
        fn only_the_named_source_can_grant(
            events in prop::collection::vec((0i64..30, arb_source(), any::<bool>()), 1..20),
        ) {
            let p = Policy::from_toml(SOURCED).unwrap();
            let mut id = Identity::new("k");
            for (i, (at, source, member)) in events.iter().enumerate() {
                id.fold(&Envelope {
                    trace_parent: None,
                    version: 1,
                    id: EnvelopeId(format!("e{i:03}")),
                    source: *source,
                    subject: Subject { key: "k".into(), email: None, display_name: None },
                    occurred_at: DateTime::from_timestamp(*at, 0).unwrap(),
                    received_at: DateTime::from_timestamp(0, 0).unwrap(),
                    event: admins(*member),
                    profile: Profile::new(),
                    source_event_type: "t".into(),
                    raw: serde_json::Value::Null,
                });
            }
            let latest = events.iter().enumerate().max_by_key(|(i, (at, _, _))| (*at, format!("e{i:03}"))).map(|(_, e)| e).unwrap();
            let want = latest.1 == Source::Okta && latest.2;
            prop_assert_eq!(evaluate(&p, &id).groups.contains_key("Looker Admins"), want);
        }

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
                // every managed attribute has a value: the rule's, else its deny value
                prop_assert_eq!(d.attributes.get("team").map(|v| v.0.as_str()), Some(if fin { "finance" } else { "__none__" }));
                prop_assert_eq!(d.attributes.get("region").map(|v| v.0.as_str()), Some(if region == Some("emea") { "EMEA" } else { "__no_region__" }));
                if !fin {
                    prop_assert_eq!(d.attributes["team"].1.as_str(), "attributes.team.deny_value");
                }
                prop_assert_eq!(d.attributes.get("email_rls").map(|v| v.0.as_str()), Some("p@x.io"));
                // the rule cited is one that grants it
                if let Some(rule) = d.groups.get("Engineers") {
                    prop_assert!((rule == "eng" && eng) || (rule == "fin" && fin));
                }
            }
        }
    }
}
