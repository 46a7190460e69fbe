//! `gatehouse plan --policy NEW.toml` (issue 15): what a policy change would do to everyone in
//! the directory before it is merged. Pure: both policies are evaluated for each person and the
//! grants they want compared, per target, per person and per rule. No target is read.
//!
//! A grant the new policy stops wanting is either **removed** (the new policy still manages it:
//! reconcile will take it away) or **released** (no rule of the new policy names it any more:
//! Gatehouse stops managing it and leaves it where it is).

use crate::cloud::{self, AwsUserMapping, DesiredCloud};
use crate::identity::Identity;
use crate::policy::{self, DesiredLooker, Policy, RuleName};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

/// One thing a policy grants a person in one target.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Grant {
    /// `looker`, `aws` or `gcp`.
    pub target: &'static str,
    /// `group`, `role`, `attribute` (Looker); `group`, `tag` (AWS); `binding` (GCP).
    pub kind: &'static str,
    /// The group, role, attribute or tag name; for GCP `RESOURCE ROLE`.
    pub name: String,
    /// The attribute's or tag's value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Grant {
    fn new(target: &'static str, kind: &'static str, name: impl Into<String>, value: Option<String>) -> Self {
        Grant {
            target,
            kind,
            name: name.into(),
            value,
        }
    }

    fn render(&self) -> String {
        match &self.value {
            Some(v) => format!("{} {} {}={}", self.target, self.kind, self.name, v),
            None => format!("{} {} {}", self.target, self.kind, self.name),
        }
    }
}

/// A grant and the rule that wants it (in the policy that wants it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuledGrant {
    #[serde(flatten)]
    pub grant: Grant,
    pub rule: RuleName,
}

/// What the change does to one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersonChange {
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Wanted by the new policy, not by the current one (rule: the new policy's).
    pub added: Vec<RuledGrant>,
    /// Wanted by the current policy, not by the new one, which still manages it: reconcile
    /// takes it away (rule: the current policy's).
    pub removed: Vec<RuledGrant>,
    /// Wanted by the current policy and managed by no rule of the new one: left as it is.
    pub released: Vec<RuledGrant>,
}

/// Per target or per rule: how many grants are added, removed and released, to how many people.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub added: usize,
    pub removed: usize,
    pub released: usize,
    pub people: usize,
}

/// The whole review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyReview {
    pub current_digest: String,
    pub new_digest: String,
    /// People in the directory evaluated.
    pub evaluated: usize,
    /// Only the people whose grants change, in subject order.
    pub people: Vec<PersonChange>,
    pub per_target: BTreeMap<&'static str, Counts>,
    pub per_rule: BTreeMap<RuleName, Counts>,
}

impl PolicyReview {
    pub fn is_unchanged(&self) -> bool {
        self.people.is_empty()
    }
}

/// How the targets are configured, as far as evaluating the policy needs it.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// The AWS identity mapping (`None`: AWS is not a target).
    pub aws: Option<AwsUserMapping>,
    /// GCP is a target.
    pub gcp: bool,
}

/// Everything `policy` grants `identity`, with the rule of each grant.
pub fn grants(
    policy: &Policy,
    identity: &Identity,
    targets: &Targets,
    now: DateTime<Utc>,
) -> BTreeMap<Grant, RuleName> {
    let looker = policy::evaluate(policy, identity);
    let cloud = cloud::evaluate(policy, identity, targets.aws.as_ref(), targets.gcp, now);
    collect(&looker, &cloud)
}

fn collect(looker: &DesiredLooker, cloud: &DesiredCloud) -> BTreeMap<Grant, RuleName> {
    let mut out = BTreeMap::new();
    for (g, r) in &looker.groups {
        out.insert(Grant::new("looker", "group", g, None), r.clone());
    }
    for (g, r) in &looker.roles {
        out.insert(Grant::new("looker", "role", g, None), r.clone());
    }
    for (a, (v, r)) in &looker.attributes {
        out.insert(Grant::new("looker", "attribute", a, Some(v.clone())), r.clone());
    }
    if let Some(aws) = &cloud.aws {
        for (g, r) in &aws.groups {
            out.insert(Grant::new("aws", "group", g, None), r.clone());
        }
        for (k, (v, r)) in &aws.tags {
            out.insert(Grant::new("aws", "tag", k, Some(v.clone())), r.clone());
        }
    }
    if let Some(gcp) = &cloud.gcp {
        for (g, r) in &gcp.bindings {
            out.insert(
                Grant::new("gcp", "binding", format!("{} {}", g.resource, g.role), None),
                r.clone(),
            );
        }
    }
    out
}

/// Whether `policy` manages `grant` (some rule names it): a grant it manages and does not want
/// is taken away; one it does not manage is left alone.
fn manages(policy: &Policy, grant: &Grant) -> bool {
    match (grant.target, grant.kind) {
        ("looker", "group") => policy.managed_groups().contains(&grant.name),
        ("looker", "role") => policy.managed_roles().contains(&grant.name),
        ("looker", "attribute") => policy.managed_attributes().contains(&grant.name),
        ("aws", "group") => policy.managed_aws_groups().contains(&grant.name),
        ("aws", "tag") => policy.managed_aws_tags().contains(&grant.name),
        ("gcp", "binding") => policy
            .managed_gcp_grants()
            .iter()
            .any(|g| format!("{} {}", g.resource, g.role) == grant.name),
        _ => true,
    }
}

/// Compare `current` with `new` for every person in `people`.
pub fn review<'a>(
    current: &Policy,
    new: &Policy,
    people: impl IntoIterator<Item = &'a Identity>,
    targets: &Targets,
    now: DateTime<Utc>,
) -> PolicyReview {
    let mut review = PolicyReview {
        current_digest: current.digest.to_string(),
        new_digest: new.digest.to_string(),
        evaluated: 0,
        people: Vec::new(),
        per_target: BTreeMap::new(),
        per_rule: BTreeMap::new(),
    };
    let mut people: Vec<&Identity> = people.into_iter().collect();
    people.sort_by(|a, b| a.key.cmp(&b.key));
    for person in people {
        review.evaluated += 1;
        let before = grants(current, person, targets, now);
        let after = grants(new, person, targets, now);
        let mut change = PersonChange {
            subject: person.key.clone(),
            email: person.email().map(str::to_string),
            added: Vec::new(),
            removed: Vec::new(),
            released: Vec::new(),
        };
        for (g, rule) in &after {
            if !before.contains_key(g) {
                change.added.push(RuledGrant {
                    grant: g.clone(),
                    rule: rule.clone(),
                });
            }
        }
        for (g, rule) in &before {
            if after.contains_key(g) {
                continue;
            }
            let r = RuledGrant {
                grant: g.clone(),
                rule: rule.clone(),
            };
            if manages(new, g) {
                change.removed.push(r);
            } else {
                change.released.push(r);
            }
        }
        if change.added.is_empty() && change.removed.is_empty() && change.released.is_empty() {
            continue;
        }
        let mut targets_seen = BTreeSet::new();
        let mut rules_seen = BTreeSet::new();
        for (list, pick) in [
            (&change.added, 0usize),
            (&change.removed, 1),
            (&change.released, 2),
        ] {
            for r in list {
                for c in [
                    review.per_target.entry(r.grant.target).or_default(),
                    review.per_rule.entry(r.rule.clone()).or_default(),
                ] {
                    match pick {
                        0 => c.added += 1,
                        1 => c.removed += 1,
                        _ => c.released += 1,
                    }
                }
                if targets_seen.insert(r.grant.target) {
                    review.per_target.entry(r.grant.target).or_default().people += 1;
                }
                if rules_seen.insert(r.rule.clone()) {
                    review.per_rule.entry(r.rule.clone()).or_default().people += 1;
                }
            }
        }
        review.people.push(change);
    }
    review
}

/// The review as a reviewer reads it (what `gatehouse plan --policy` prints).
pub fn render_text(r: &PolicyReview) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "policy {} -> {}",
        short(&r.current_digest),
        short(&r.new_digest)
    );
    if r.is_unchanged() {
        let _ = writeln!(
            s,
            "no change: the new policy grants the same to all {} people in the directory",
            r.evaluated
        );
        return s;
    }
    for p in &r.people {
        let _ = writeln!(s, "{} ({})", p.subject, p.email.as_deref().unwrap_or("-"));
        for (sign, list, note) in [
            ("+", &p.added, ""),
            ("-", &p.removed, ""),
            ("~", &p.released, " (no longer managed: left as is)"),
        ] {
            for g in list {
                let _ = writeln!(s, "  {sign} {}  [{}]{note}", g.grant.render(), g.rule);
            }
        }
    }
    let _ = writeln!(s, "per target:");
    for (t, c) in &r.per_target {
        let _ = writeln!(s, "  {t}: {}", counts(c));
    }
    let _ = writeln!(s, "per rule:");
    for (rule, c) in &r.per_rule {
        let _ = writeln!(s, "  {rule}: {}", counts(c));
    }
    let _ = writeln!(s, "{} of {} people affected", r.people.len(), r.evaluated);
    s
}

fn counts(c: &Counts) -> String {
    format!(
        "+{} -{} ~{} grants, {} people",
        c.added, c.removed, c.released, c.people
    )
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    const CURRENT: &str = r#"
[[rule]]
name = "engineers"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]
looker_roles = ["Developer"]
aws_groups = ["eng"]

[[rule]]
name = "finance"
when = { idp_group = "Finance" }
looker_groups = ["Finance"]
looker_roles = ["Viewer", "Finance Analyst"]
"#;

    /// One group added to `engineers`, one role (`Finance Analyst`, which no rule grants any
    /// more) removed from `finance`.
    const NEW: &str = r#"
[[rule]]
name = "engineers"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers", "Oncall"]
looker_roles = ["Developer"]
aws_groups = ["eng"]

[[rule]]
name = "finance"
when = { idp_group = "Finance" }
looker_groups = ["Finance"]
looker_roles = ["Viewer"]
"#;

    fn person(key: &str, email: &str, groups: &[&str]) -> Identity {
        use crate::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
        let mut p = Identity::new(key);
        let mut n = 0;
        let mut fold = |event: IdentityEvent, profile: Profile| {
            n += 1;
            p.fold(&Envelope {
                trace_parent: None,
                version: 1,
                id: EnvelopeId(format!("{key}-e{n}")),
                source: Source::Okta,
                subject: Subject {
                    key: key.into(),
                    email: None,
                    display_name: None,
                },
                occurred_at: DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap(),
                received_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                event,
                profile,
                source_event_type: "t".into(),
                raw: serde_json::Value::Null,
            });
        };
        for g in groups {
            let group = GroupRef {
                id: format!("id-{g}"),
                name: g.to_string(),
            };
            fold(IdentityEvent::GroupMemberAdded { group }, Profile::new());
        }
        fold(
            IdentityEvent::UserActivated,
            Profile::from([("email".to_string(), email.to_string())]),
        );
        p
    }

    fn people() -> Vec<Identity> {
        vec![
            person("okta:1", "ann@example.com", &["Engineering"]),
            person("okta:2", "bob@example.com", &["Finance"]),
            person("okta:3", "cy@example.com", &["Sales"]),
            person("okta:4", "dee@example.com", &["Engineering", "Finance"]),
        ]
    }

    fn targets() -> Targets {
        Targets {
            aws: Some(AwsUserMapping::Template {
                template: "{local}".into(),
            }),
            gcp: false,
        }
    }

    /// Subject, added, removed, released (each `grant [rule]`).
    type Summary = (String, Vec<String>, Vec<String>, Vec<String>);

    #[test]
    fn an_added_group_and_a_removed_role_show_exactly_those_people_and_grants() {
        let current = Policy::from_toml(CURRENT).unwrap();
        let new = Policy::from_toml(NEW).unwrap();
        let ppl = people();
        let r = review(&current, &new, &ppl, &targets(), crate::clock::now());
        assert_eq!(r.evaluated, 4);
        let summary: Vec<Summary> = r
            .people
            .iter()
            .map(|p| {
                let f = |l: &Vec<RuledGrant>| {
                    l.iter()
                        .map(|g| format!("{} [{}]", g.grant.render(), g.rule))
                        .collect::<Vec<_>>()
                };
                (p.subject.clone(), f(&p.added), f(&p.removed), f(&p.released))
            })
            .collect();
        let e = Vec::<String>::new;
        assert_eq!(
            summary,
            vec![
                (
                    "okta:1".to_string(),
                    vec!["looker group Oncall [engineers]".to_string()],
                    e(),
                    e()
                ),
                (
                    "okta:2".to_string(),
                    e(),
                    e(),
                    vec!["looker role Finance Analyst [finance]".to_string()]
                ),
                (
                    "okta:4".to_string(),
                    vec!["looker group Oncall [engineers]".to_string()],
                    e(),
                    vec!["looker role Finance Analyst [finance]".to_string()]
                ),
            ]
        );
        assert_eq!(
            r.per_rule["engineers"],
            Counts {
                added: 2,
                removed: 0,
                released: 0,
                people: 2
            }
        );
        assert_eq!(
            r.per_rule["finance"],
            Counts {
                added: 0,
                removed: 0,
                released: 2,
                people: 2
            }
        );
        assert_eq!(
            r.per_target.len(),
            1,
            "nothing changes in aws: {:?}",
            r.per_target
        );
        assert_eq!(r.per_target["looker"].people, 3);
        let text = render_text(&r);
        assert!(text.contains("  + looker group Oncall  [engineers]"), "{text}");
        assert!(text.contains("3 of 4 people affected"), "{text}");
        assert!(!text.contains("okta:3"), "{text}");
    }

    #[test]
    fn a_role_another_rule_still_manages_is_removed_not_released() {
        let current = Policy::from_toml(CURRENT).unwrap();
        // `Developer` moves to finance only: engineers lose it, and it stays managed.
        let new = Policy::from_toml(
            &CURRENT
                .replace("looker_roles = [\"Developer\"]", "looker_roles = []")
                .replace(
                    "[\"Viewer\", \"Finance Analyst\"]",
                    "[\"Viewer\", \"Finance Analyst\", \"Developer\"]",
                ),
        )
        .unwrap();
        let ppl = people();
        let r = review(&current, &new, &ppl, &targets(), crate::clock::now());
        let ann = r.people.iter().find(|p| p.subject == "okta:1").unwrap();
        assert_eq!(ann.removed.len(), 1);
        assert_eq!(ann.removed[0].grant.render(), "looker role Developer");
        assert_eq!(ann.removed[0].rule, "engineers");
        assert!(ann.added.is_empty() && ann.released.is_empty());
        let bob = r.people.iter().find(|p| p.subject == "okta:2").unwrap();
        assert_eq!(bob.added[0].grant.render(), "looker role Developer");
        // dee is in both: engineers' Developer becomes finance's; same grant, no change.
        assert!(r.people.iter().all(|p| p.subject != "okta:4"), "{:?}", r.people);
        assert_eq!(r.per_rule["engineers"].removed, 1);
    }

    #[test]
    fn an_unchanged_policy_shows_no_change() {
        let current = Policy::from_toml(CURRENT).unwrap();
        let same = Policy::from_toml(&format!("# reformatted\n{CURRENT}")).unwrap();
        assert_ne!(current.digest, same.digest);
        let ppl = people();
        let r = review(&current, &same, &ppl, &targets(), crate::clock::now());
        assert!(r.is_unchanged());
        assert!(r.per_rule.is_empty() && r.per_target.is_empty());
        assert!(render_text(&r).contains("no change"), "{}", render_text(&r));
    }

    #[test]
    fn aws_and_gcp_grants_are_compared_too() {
        let current = Policy::from_toml(CURRENT).unwrap();
        let new = Policy::from_toml(&CURRENT.replace(
            "aws_groups = [\"eng\"]",
            "aws_groups = [\"eng\", \"eng-admin\"]\ngcp_bindings = [{ resource = \"projects/p1\", role = \"roles/viewer\" }]",
        ))
        .unwrap();
        let ppl = people();
        let t = Targets {
            gcp: true,
            ..targets()
        };
        let r = review(&current, &new, &ppl, &t, crate::clock::now());
        let ann = r.people.iter().find(|p| p.subject == "okta:1").unwrap();
        let added: Vec<String> = ann.added.iter().map(|g| g.grant.render()).collect();
        assert_eq!(
            added,
            vec!["aws group eng-admin", "gcp binding projects/p1 roles/viewer"]
        );
        assert_eq!(r.per_target["aws"].people, 2);
        assert_eq!(r.per_target["gcp"].added, 2);
    }
}
