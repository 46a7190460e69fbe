//! The compiled reconcile planner (issue 14): the same kept plans (drift or an inactive user) as
//! [`reconcile::plan_all_reference`](crate::reconcile::plan_all_reference), at 100,000 people ×
//! 1,000 groups in about a second instead of minutes, holding only those plans and compact
//! reverse indexes (figures per stage in bench/reconcile.md).
//!
//! The reference evaluates every rule for every person and diffs every managed group, binding
//! and Google group of the policy for each of them (O(people × policy)). Here, once per
//! reconcile:
//! - the policy is compiled: its managed sets are computed once, and its rules are indexed by
//!   the IdP group (name or id) they ask for, so a person only evaluates the rules that can
//!   match them (rules on `everyone` or an attribute are always evaluated);
//! - what the targets hold is indexed by person: Looker group id → managed group names, IAM
//!   user → groups, GCP member → (resource, role) of the unconditional bindings holding it,
//!   member email → Google groups;
//!
//! and per person the managed sets handed to the (unchanged) diff are narrowed to what the
//! person is granted ∪ what they hold ∪ what was not read or does not exist (those produce
//! calls or notes for everyone). A managed name outside that union yields no call and no note
//! in any diff, so the plans are the same; the property test in this module checks it against
//! the reference on random directories, policies and held states.

use crate::reconcile_model::{CloudShape, Snapshot, SubjectPlan};
use chrono::{DateTime, Utc};
use gatehouse_domain::cloud::{AwsActual, AwsUser, AwsUserKey, CloudManaged, CloudPlan};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::plan::{self, Actual};
use gatehouse_domain::policy::{self, Condition, GcpGrant, LookerManaged, Policy, Rule};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The policy, compiled once per reconcile.
struct Compiled<'p> {
    policy: &'p Policy,
    /// IdP group name or id → indexes of the rules asking for it.
    by_group: HashMap<&'p str, Vec<usize>>,
    /// Rules every person evaluates (`everyone`, attribute conditions).
    always: Vec<usize>,
    looker: LookerManaged,
    cloud: CloudManaged,
}

impl<'p> Compiled<'p> {
    fn of(policy: &'p Policy) -> Self {
        let mut by_group: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut always = Vec::new();
        for (i, r) in policy.rules.iter().enumerate() {
            match &r.when {
                Condition::IdpGroup { group, .. } => by_group.entry(group.as_str()).or_default().push(i),
                Condition::Everyone | Condition::Attribute { .. } => always.push(i),
            }
        }
        Compiled {
            policy,
            by_group,
            always,
            looker: LookerManaged {
                groups: policy.managed_groups(),
                roles: policy.managed_roles(),
                attributes: policy.managed_attributes(),
            },
            cloud: CloudManaged::of(policy),
        }
    }

    /// The rules that can match `id`, in policy order.
    fn candidates(&self, id: &Identity) -> Vec<&'p Rule> {
        let mut idx = self.always.clone();
        for (gid, m) in id.groups.iter().filter(|(_, m)| m.member) {
            for key in [m.name.as_str(), gid.as_str()] {
                if let Some(rs) = self.by_group.get(key) {
                    idx.extend_from_slice(rs);
                }
            }
        }
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| &self.policy.rules[i]).collect()
    }
}

/// What the targets hold, indexed by person; built once per reconcile.
struct Held<'a> {
    /// Looker group id → managed group names with that id.
    looker_names: HashMap<&'a str, Vec<&'a str>>,
    /// Managed Looker groups the catalog lacks (a note for everyone).
    looker_missing: Vec<&'a str>,
    /// IAM user → the groups read that hold them (indexes into `aws_group_names`), sorted: a
    /// user's groups are one run.
    aws_groups: Refs<'a, Arc<str>>,
    /// The groups read, in snapshot order (`aws_groups` holds indexes into it).
    aws_group_names: Vec<&'a str>,
    /// Resources whose policy was read.
    gcp_read: HashSet<&'a str>,
    /// (resource, role) of every unconditional binding read, sorted and unique.
    gcp_bindings: Vec<(&'a str, &'a str)>,
    /// Member (lowercase) → the unconditional bindings holding it (indexes into
    /// `gcp_bindings`).
    gcp_member: Refs<'a, String>,
    /// The managed grant each of `gcp_bindings` is, if it is one.
    gcp_managed: Vec<Option<&'a GcpGrant>>,
    /// Managed grants on resources not read (calls for everyone).
    gcp_unread: Vec<&'a GcpGrant>,
    /// Member email (lowercase) → Google groups holding it.
    gcp_group_member: HashMap<&'a str, Vec<&'a str>>,
    /// Managed Google groups not found (a note for everyone).
    gcp_groups_missing: Vec<&'a str>,
}

impl<'a> Held<'a> {
    /// The members of the snapshot's unconditional GCP bindings that are not lowercase, in
    /// ASCII lowercase, in snapshot order: what [`Held::of`] indexes them by.
    fn lowered(snap: &Snapshot) -> Vec<String> {
        snap.gcp
            .iter()
            .flatten()
            .flat_map(|(_, p)| p.bindings.iter().filter(|b| b.condition.is_none()))
            .flat_map(|b| b.members.iter().filter(|m| has_uppercase(m)))
            .map(|m| m.to_ascii_lowercase())
            .collect()
    }

    /// `lowered`: [`Held::lowered`] of `snap`.
    fn of(snap: &'a Snapshot, c: &'a Compiled<'_>, lowered: &'a [String]) -> Self {
        let mut looker_names: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut looker_missing = Vec::new();
        if let Some((catalog, _)) = &snap.looker {
            for g in &c.looker.groups {
                match catalog.groups.get(g) {
                    Some(id) => looker_names.entry(id.as_str()).or_default().push(g.as_str()),
                    None => looker_missing.push(g.as_str()),
                }
            }
        }
        let aws_group_names: Vec<&str> = snap.aws_groups.keys().map(String::as_str).collect();
        let aws_groups = Refs::build(
            snap.aws_groups
                .values()
                .zip(0u32..)
                .map(|(members, g)| (members.as_slice(), g))
                .collect(),
        );
        let mut gcp_read = HashSet::new();
        let mut gcp_bindings = Vec::new();
        for (r, p) in snap.gcp.iter().flatten() {
            gcp_read.insert(r.as_str());
            for b in p.bindings.iter().filter(|b| b.condition.is_none()) {
                gcp_bindings.push((r.as_str(), b.role.as_str()));
            }
        }
        gcp_bindings.sort_unstable();
        gcp_bindings.dedup();
        let binding = |r: &str, role: &str| gcp_bindings.binary_search(&(r, role)).ok();
        let unconditional = || {
            snap.gcp.iter().flatten().flat_map(|(r, p)| {
                p.bindings.iter().filter(|b| b.condition.is_none()).map(move |b| {
                    (
                        b,
                        binding(r, &b.role).expect("every unconditional binding is listed") as u32,
                    )
                })
            })
        };
        // Members not already lowercase (rare) are listed lowercased (`lowered`, in the same
        // order), one list each.
        let uppercase =
            unconditional().flat_map(|(b, i)| b.members.iter().filter(|m| has_uppercase(m)).map(move |_| i));
        let gcp_member = Refs::build_with(
            unconditional()
                .map(|(b, i)| (b.members.as_slice(), i))
                .chain(
                    lowered
                        .iter()
                        .zip(uppercase)
                        .map(|(m, i)| (std::slice::from_ref(m), i)),
                )
                .collect(),
            |m| !has_uppercase(m),
        );
        let gcp_managed = gcp_bindings
            .iter()
            .map(|(r, role)| {
                c.cloud.gcp_grants.get(&GcpGrant {
                    resource: r.to_string(),
                    role: role.to_string(),
                })
            })
            .collect();
        let gcp_unread = c
            .cloud
            .gcp_grants
            .iter()
            .filter(|g| !gcp_read.contains(g.resource.as_str()))
            .collect();
        let mut gcp_group_member: HashMap<&str, Vec<&str>> = HashMap::new();
        for (g, h) in &snap.gcp_groups {
            for m in h.memberships.keys() {
                gcp_group_member.entry(m.as_str()).or_default().push(g.as_str());
            }
        }
        let gcp_groups_missing = c
            .cloud
            .gcp_groups
            .iter()
            .filter(|g| !snap.gcp_groups.contains_key(g.as_str()))
            .map(String::as_str)
            .collect();
        Held {
            looker_names,
            looker_missing,
            aws_groups,
            aws_group_names,
            gcp_read,
            gcp_bindings,
            gcp_member,
            gcp_managed,
            gcp_unread,
            gcp_group_member,
            gcp_groups_missing,
        }
    }

    /// The groups read that hold IAM user `name`, in name order.
    fn aws_groups_of<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.aws_groups
            .get(name)
            .map(|g| self.aws_group_names[g as usize])
    }

    /// Whether the unconditional binding of `grant` holds `member`; `None` when not read.
    fn gcp_has(&self, grant: &GcpGrant, member: &str) -> Option<bool> {
        self.gcp_read.contains(grant.resource.as_str()).then(|| {
            self.gcp_bindings
                .binary_search(&(grant.resource.as_str(), grant.role.as_str()))
                .is_ok_and(|i| self.gcp_member.get(&lowercase(member)).any(|b| b as usize == i))
        })
    }

    /// The managed grants whose unconditional binding holds `member` (lowercase).
    fn gcp_managed_held<'s>(&'s self, member: &'s str) -> impl Iterator<Item = &'a GcpGrant> + 's {
        self.gcp_member
            .get(member)
            .filter_map(|b| self.gcp_managed[b as usize])
    }
}

fn has_uppercase(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_uppercase())
}

/// `s` in ASCII lowercase, borrowed when it already is.
fn lowercase(s: &str) -> Cow<'_, str> {
    if has_uppercase(s) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

/// A read-only multimap name → `u32` over names the snapshot already holds: `lists` of names,
/// each with the value its names map to, and one sorted, deduplicated `Vec` of (list, position)
/// references, so the values of a name are one run, found by binary search. 8 bytes per name
/// (a (name, value) pair would take 24, or 32 with a `Cow`: 7 to 10 MB more for 300,000
/// memberships, all held while planning; bench/reconcile.md).
struct Refs<'a, S> {
    lists: Vec<(&'a [S], u32)>,
    refs: Vec<(u32, u32)>,
}

impl<'a, S: std::ops::Deref<Target = str>> Refs<'a, S> {
    fn build(lists: Vec<(&'a [S], u32)>) -> Self {
        Self::build_with(lists, |_| true)
    }

    /// Every name of `lists` that `keep` keeps.
    fn build_with(lists: Vec<(&'a [S], u32)>, keep: impl Fn(&str) -> bool) -> Self {
        // Sized up front: growing a vector of 300,000 references by doubling would hold the old
        // and the new buffer at once.
        let mut refs = Vec::with_capacity(lists.iter().map(|(l, _)| l.len()).sum());
        for (l, (names, _)) in (0u32..).zip(&lists) {
            refs.extend(
                (0u32..)
                    .zip(names.iter())
                    .filter(|(_, n)| keep(n))
                    .map(|(p, _)| (l, p)),
            );
        }
        let mut index = Refs {
            lists,
            refs: Vec::new(),
        };
        refs.sort_unstable_by(|a, b| index.key(*a).cmp(&index.key(*b)));
        refs.dedup_by(|a, b| index.key(*a) == index.key(*b));
        if refs.len() < refs.capacity() / 2 {
            refs.shrink_to_fit();
        }
        index.refs = refs;
        index
    }

    fn name(&self, (l, p): (u32, u32)) -> &'a str {
        &self.lists[l as usize].0[p as usize]
    }

    fn key(&self, r: (u32, u32)) -> (&'a str, u32) {
        (self.name(r), self.lists[r.0 as usize].1)
    }

    /// The values of `name`, in order.
    fn get<'s>(&'s self, name: &'s str) -> impl Iterator<Item = u32> + 's {
        let start = self.refs.partition_point(|r| self.name(*r) < name);
        self.refs[start..]
            .iter()
            .take_while(move |r| self.name(**r) == name)
            .map(|r| self.lists[r.0 as usize].1)
    }
}

/// Plan every person against the snapshot and keep the plans a reconcile acts on or reports
/// ([`SubjectPlan::is_kept`]): the reference planner's kept plans, in the same order. Each
/// person's plan is dropped as soon as it is known to hold nothing, so memory is O(drift), not
/// O(people). Pure.
pub fn plan_all(
    policy: &Policy,
    identities: &[Identity],
    snapshot: &Snapshot,
    shape: &CloudShape,
    now: DateTime<Utc>,
) -> Vec<SubjectPlan> {
    let compiled = Compiled::of(policy);
    let lowered = Held::lowered(snapshot);
    let held = Held::of(snapshot, &compiled, &lowered);
    identities
        .iter()
        .map(|id| plan_one(&compiled, &held, id, snapshot, shape, now))
        .filter(SubjectPlan::is_kept)
        .collect()
}

/// The IAM user name `key` resolves to in the snapshot.
fn aws_name(snap: &Snapshot, users: &BTreeSet<Arc<str>>, key: &AwsUserKey) -> Option<String> {
    match key {
        AwsUserKey::Name(n) => users.contains(n.as_str()).then(|| n.clone()),
        AwsUserKey::Tag { value, .. } => snap.aws_tag_index.get(value).cloned(),
    }
}

fn plan_one(
    c: &Compiled<'_>,
    held: &Held<'_>,
    id: &Identity,
    snap: &Snapshot,
    shape: &CloudShape,
    now: DateTime<Utc>,
) -> SubjectPlan {
    let policy = c.policy;
    let rules = c.candidates(id);
    let email = id.email();
    let email_lower = email.map(str::to_ascii_lowercase);
    let mut inactive = None;
    let looker = snap.looker.as_ref().and_then(|(catalog, users)| {
        let email = email?;
        let user = users.get(email_lower.as_deref()?).and_then(Option::as_ref);
        // Granted ∪ held ∪ missing from the catalog (managed only).
        let mut groups: BTreeSet<String> = rules
            .iter()
            .flat_map(|r| r.looker_groups.iter().cloned())
            .collect();
        groups.extend(held.looker_missing.iter().map(|g| g.to_string()));
        for gid in user.iter().flat_map(|u| u.group_ids.iter()) {
            if let Some(names) = held.looker_names.get(gid.as_str()) {
                groups.extend(names.iter().map(|g| g.to_string()));
            }
        }
        let managed = LookerManaged {
            groups,
            roles: c.looker.roles.clone(),
            attributes: c.looker.attributes.clone(),
        };
        let desired = policy::evaluate_scoped(policy, id, rules.iter().copied(), managed);
        let actual = match user {
            Some(u) => Actual::Present(u.clone()),
            None => Actual::Absent,
        };
        let mut plan = plan::diff_on(&desired, &actual, Some(catalog), policy.looker_platform());
        inactive = gatehouse_domain::inactivity::hold(
            policy.inactivity.as_ref(),
            &mut plan,
            id,
            Some(email),
            &actual,
            catalog,
            now,
        );
        Some(plan)
    });

    // The IAM user, as the reference resolves it.
    let aws_key = shape.aws.as_ref().and_then(|m| m.key_for(id));
    let aws_user = match (&aws_key, &snap.aws_users) {
        (Some(k), Some(users)) => aws_name(snap, users, k),
        _ => None,
    };
    let aws_groups = match &snap.aws_users {
        // Not read: every managed group is a possible call.
        None => c.cloud.aws_groups.clone(),
        Some(_) => {
            let mut g: BTreeSet<String> = rules.iter().flat_map(|r| r.aws_groups.iter().cloned()).collect();
            let holds = aws_user
                .as_deref()
                .into_iter()
                .flat_map(|n| held.aws_groups_of(n));
            g.extend(
                holds
                    .filter(|g| c.cloud.aws_groups.contains(*g))
                    .map(|g| g.to_string()),
            );
            g
        }
    };
    let (gcp_grants, gcp_groups) = match (&snap.gcp, &email_lower) {
        (Some(_), Some(e)) => {
            let mut grants: BTreeSet<GcpGrant> = rules
                .iter()
                .flat_map(|r| r.gcp_bindings.iter().cloned())
                .collect();
            grants.extend(held.gcp_unread.iter().map(|g| (*g).clone()));
            let mut groups: BTreeSet<String> = rules
                .iter()
                .flat_map(|r| r.gcp_groups.iter().map(|g| g.to_ascii_lowercase()))
                .collect();
            groups.extend(held.gcp_groups_missing.iter().map(|g| g.to_string()));
            let previous = id.previous_emails.iter().map(|p| p.to_ascii_lowercase());
            for address in std::iter::once(e.clone()).chain(previous) {
                grants.extend(held.gcp_managed_held(&format!("user:{address}")).cloned());
                for g in held.gcp_group_member.get(address.as_str()).into_iter().flatten() {
                    if c.cloud.gcp_groups.contains(*g) {
                        groups.insert(g.to_string());
                    }
                }
            }
            (grants, groups)
        }
        // Not read: every managed grant is a possible call.
        _ => (c.cloud.gcp_grants.clone(), c.cloud.gcp_groups.clone()),
    };
    let narrowed = CloudManaged {
        aws_groups,
        aws_tags: c.cloud.aws_tags.clone(),
        gcp_grants,
        gcp_groups,
    };
    let dc = gatehouse_domain::cloud::evaluate_scoped(
        policy,
        id,
        shape.aws.as_ref(),
        shape.gcp,
        now,
        rules.iter().copied(),
        &c.cloud,
        narrowed,
    );
    let aws_actual = match (&dc.aws, &snap.aws_users) {
        (Some(_), Some(_)) => match aws_user {
            None => AwsActual::Absent,
            Some(n) => {
                let (keys, profile) = snap.aws_credentials.get(&n).cloned().unwrap_or_default();
                AwsActual::Present(AwsUser {
                    groups: held.aws_groups_of(&n).map(str::to_string).collect(),
                    tags: snap.aws_tags.get(&n).cloned().unwrap_or_default(),
                    access_keys: keys,
                    login_profile: profile,
                    // Not read by reconcile: the leaver sweep runs on the offboarding event.
                    held: None,
                    remapped: None,
                    name: n,
                })
            }
        },
        _ => AwsActual::Unknown,
    };
    let mut cloud = CloudPlan::default();
    if let Some(d) = &dc.aws {
        cloud.aws = Some(gatehouse_domain::cloud::diff_aws(d, &aws_actual));
    }
    if let Some(d) = &dc.gcp {
        let (steps, notes) = gatehouse_domain::cloud::diff_gcp_with(d, |g, member| held.gcp_has(g, member));
        cloud.gcp = steps;
        cloud.notes = notes;
        if snap.gcp.is_some() {
            let (steps, notes) = gatehouse_domain::cloud::diff_gcp_groups(d, Some(&snap.gcp_groups));
            cloud.gcp.extend(steps);
            cloud.notes.extend(notes);
        }
    }
    SubjectPlan {
        subject: id.key.clone(),
        email: email.map(str::to_string),
        looker,
        cloud,
        inactive,
    }
}

#[cfg(test)]
mod tests {
    //! The compiled planner against the reference on random directories, policies and held
    //! states: same kept plans, person for person (compared as the JSON the report prints).
    use super::*;
    use crate::reconcile::plan_all_reference;
    use gatehouse_domain::cloud::{AwsUserMapping, Binding, GroupHeld, IamPolicy};
    use gatehouse_domain::envelope::{EnvelopeId, Source};
    use gatehouse_domain::identity::{Membership, Stamp, Stamped, Status};
    use gatehouse_domain::looker::{Catalog, LookerUser};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const GROUPS: usize = 5;

    #[derive(Debug, Clone)]
    struct World {
        rules: Vec<(u8, u8, bool, Vec<u8>)>,
        offboarding: [bool; 4],
        people: Vec<Person>,
        aws: Option<bool>,
        gcp: bool,
        read: [bool; 3],
        orphan_member: Vec<u8>,
    }

    #[derive(Debug, Clone)]
    struct Person {
        offboarded: bool,
        email: Option<u8>,
        previous: Option<u8>,
        groups: Vec<(u8, bool, bool, bool)>,
        dept: u8,
        looker: Option<(bool, Vec<u8>)>,
        iam_user: bool,
        held: Vec<u8>,
    }

    fn person() -> impl Strategy<Value = Person> {
        (
            any::<bool>(),
            prop::option::weighted(0.9, 0u8..3),
            prop::option::of(0u8..8),
            prop::collection::vec(
                (0u8..GROUPS as u8, any::<bool>(), any::<bool>(), any::<bool>()),
                0..4,
            ),
            0u8..3,
            prop::option::weighted(0.8, (any::<bool>(), prop::collection::vec(0u8..8, 0..5))),
            any::<bool>(),
            prop::collection::vec(0u8..32, 0..8),
        )
            .prop_map(
                |(offboarded, email, previous, groups, dept, looker, iam_user, held)| Person {
                    offboarded,
                    email,
                    previous,
                    groups,
                    dept,
                    looker,
                    iam_user,
                    held,
                },
            )
    }

    fn world() -> impl Strategy<Value = World> {
        (
            // (condition kind, argument, with a source, grants)
            prop::collection::vec(
                (
                    0u8..4,
                    0u8..GROUPS as u8,
                    any::<bool>(),
                    prop::collection::vec(0u8..16, 0..4),
                ),
                0..7,
            ),
            any::<[bool; 4]>(),
            prop::collection::vec(person(), 0..8),
            prop::option::of(any::<bool>()),
            any::<bool>(),
            any::<[bool; 3]>(),
            prop::collection::vec(0u8..32, 0..4),
        )
            .prop_map(
                |(rules, offboarding, people, aws, gcp, read, orphan_member)| World {
                    rules,
                    offboarding,
                    people,
                    aws,
                    gcp,
                    read,
                    orphan_member,
                },
            )
    }

    /// Grants `ks` (each of 16): Looker group LG0..LG4 (LG4 not in Looker), IAM group ag0..ag3
    /// (ag3 not in IAM), GCP binding on p0 (read) or p1 (read or not), Google group gg0..gg2
    /// (gg2 missing). One TOML key per kind.
    fn grants(ks: &[u8]) -> String {
        let mut kinds: [BTreeSet<String>; 4] = Default::default();
        for &k in ks {
            match k {
                0..=4 => kinds[0].insert(format!("\"LG{k}\"")),
                5..=8 => kinds[1].insert(format!("\"ag{}\"", k - 5)),
                9..=12 => kinds[2].insert(format!(
                    "{{ resource = \"projects/p{}\", role = \"roles/r{}\" }}",
                    (k - 9) / 2,
                    k % 2
                )),
                _ => kinds[3].insert(format!("\"GG{}@x.io\"", k - 13)),
            };
        }
        ["looker_groups", "aws_groups", "gcp_bindings", "gcp_groups"]
            .iter()
            .zip(kinds)
            .filter(|(_, v)| !v.is_empty())
            .map(|(key, v)| format!("{key} = [{}]\n", v.into_iter().collect::<Vec<_>>().join(", ")))
            .collect()
    }

    fn policy(w: &World) -> Policy {
        let [looker_groups, aws_groups, bindings, memberships] = w.offboarding;
        let mut text = format!(
            "[offboarding]\nremove_managed_groups = {looker_groups}\n[aws.offboarding]\nremove_groups = {aws_groups}\n\
             [gcp.offboarding]\nremove_bindings = {bindings}\nremove_group_memberships = {memberships}\n"
        );
        for (i, (kind, arg, sourced, grants)) in w.rules.iter().enumerate() {
            let source = if *sourced { ", source = \"okta\"" } else { "" };
            let when = match kind {
                0 => "\"everyone\"".to_string(),
                1 => format!("{{ idp_group = \"G{arg}\"{source} }}"),
                2 => format!("{{ idp_group = \"00g{arg}\"{source} }}"),
                _ => format!(
                    "{{ attribute = {{ name = \"dept\", equals = \"d{}\" }}{source} }}",
                    arg % 3
                ),
            };
            text.push_str(&format!("[[rule]]\nname = \"r{i}\"\nwhen = {when}\n"));
            text.push_str(&self::grants(grants));
        }
        Policy::from_toml(&text).unwrap()
    }

    fn email(k: u8) -> String {
        // Mixed case on purpose: every lookup is case-blind.
        if k.is_multiple_of(2) {
            format!("p{k}@x.io")
        } else {
            format!("P{k}@X.io")
        }
    }

    fn identities(w: &World) -> Vec<Identity> {
        let stamp = Stamp {
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            id: EnvelopeId("e".into()),
        };
        w.people
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut id = Identity::new(format!("u{i}"));
                id.status = if p.offboarded {
                    Status::Deactivated
                } else {
                    Status::Active
                };
                id.status_stamp = Some(stamp.clone());
                if let Some(e) = p.email {
                    // Two people may share an email: both are planned against the same user.
                    id.profile.insert(
                        "email".into(),
                        Stamped {
                            value: email(e + (i as u8 % 2) * 3),
                            stamp: stamp.clone(),
                            source: None,
                        },
                    );
                }
                id.profile.insert(
                    "dept".into(),
                    Stamped {
                        value: format!("d{}", p.dept),
                        stamp: stamp.clone(),
                        source: Some(Source::Okta),
                    },
                );
                if let Some(prev) = p.previous {
                    id.previous_emails.push(email(prev));
                }
                for (g, member, okta, by_name) in &p.groups {
                    let name = if *by_name {
                        format!("G{g}")
                    } else {
                        format!("other{g}")
                    };
                    id.groups.insert(
                        format!("00g{g}"),
                        Membership {
                            name,
                            member: *member,
                            stamp: stamp.clone(),
                            source: okta.then_some(Source::Okta).or(Some(Source::Scim)),
                        },
                    );
                }
                id
            })
            .collect()
    }

    fn snapshot(w: &World, people: &[Identity]) -> Snapshot {
        let catalog = Catalog {
            groups: (0..4)
                .map(|g| (format!("LG{g}"), g.to_string()))
                .chain([("Unmanaged".to_string(), "7".to_string())])
                .collect(),
            ..Default::default()
        };
        let mut looker = BTreeMap::new();
        let mut aws_groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut bindings: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        let mut google: BTreeMap<String, GroupHeld> = (0..2)
            .map(|g| {
                (
                    format!("gg{g}@x.io"),
                    GroupHeld {
                        name: format!("groups/{g}"),
                        memberships: BTreeMap::new(),
                    },
                )
            })
            .collect();
        // `held` k of 32: IAM group ag0..ag2 or "other" (0..4), binding p0/p1 × r0/r1/r9 under the
        // current (5..11) or the previous email (11..17), Google group gg0/gg1 current or
        // previous (17..21); the rest hold nothing.
        let mut hold = |id: &Identity, p: &Person, k: u8, name: &str| {
            let current = id.email().map(str::to_string);
            let previous = id.previous_emails.first().cloned();
            match k {
                0..=3 => {
                    let g = if k == 3 {
                        "other".to_string()
                    } else {
                        format!("ag{k}")
                    };
                    aws_groups.entry(g).or_default().insert(name.to_string());
                }
                5..=16 => {
                    let who = if k < 11 { current } else { previous };
                    let j = (k - 5) % 6;
                    let role = ["roles/r0", "roles/r1", "roles/r9"][usize::from(j % 3)];
                    if let Some(e) = who {
                        bindings
                            .entry((format!("projects/p{}", j / 3), role.to_string()))
                            .or_default()
                            .push(format!("user:{e}"));
                    }
                }
                17..=20 => {
                    let who = if k < 19 { current } else { previous };
                    if let Some(e) = who {
                        google
                            .get_mut(&format!("gg{}@x.io", k % 2))
                            .unwrap()
                            .memberships
                            .insert(e.to_ascii_lowercase(), format!("m/{name}"));
                    }
                }
                _ => {}
            }
            let _ = p;
        };
        for (i, (id, p)) in people.iter().zip(&w.people).enumerate() {
            let name = format!("n{i}");
            for k in &p.held {
                hold(id, p, *k, &name);
            }
            if let (Some(e), Some((disabled, groups))) = (id.email(), &p.looker) {
                looker.insert(
                    e.to_ascii_lowercase(),
                    Some(LookerUser {
                        id: i.to_string(),
                        is_disabled: *disabled,
                        email: Some(e.to_string()),
                        group_ids: groups.iter().map(|g| g.to_string()).collect(),
                        session_ids: vec![format!("s{i}")],
                        api3_key_ids: vec![],
                        direct_role_ids: None,
                        user_attribute_values: None,
                        logins: None,
                    }),
                );
            }
        }
        for k in &w.orphan_member {
            let mut orphan = Identity::new("orphan");
            orphan.profile.insert(
                "email".into(),
                Stamped {
                    value: "orphan@x.io".into(),
                    stamp: Stamp {
                        at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                        id: EnvelopeId("e".into()),
                    },
                    source: None,
                },
            );
            let p = w.people.first().cloned().unwrap_or(Person {
                offboarded: false,
                email: None,
                previous: None,
                groups: vec![],
                dept: 0,
                looker: None,
                iam_user: false,
                held: vec![],
            });
            hold(&orphan, &p, *k, "orphan");
        }
        let mut gcp: BTreeMap<String, IamPolicy> = BTreeMap::new();
        for ((r, role), members) in bindings {
            let p = gcp.entry(r).or_default();
            p.bindings.push(Binding {
                role: role.clone(),
                members: members.clone(),
                condition: None,
                other: Default::default(),
            });
            // A conditional binding of the same role: never counted as held.
            p.bindings.push(Binding {
                role,
                members: members.iter().map(|m| format!("{m}x")).collect(),
                condition: Some(serde_json::json!({ "title": "t" })),
                other: Default::default(),
            });
        }
        gcp.entry("projects/p0".into()).or_default();
        if !w.read[2] {
            gcp.remove("projects/p1");
        }
        // Map each person's IAM name from the template below ({local}) to the name used here.
        let aws_users: BTreeSet<Arc<str>> = people
            .iter()
            .zip(&w.people)
            .filter(|(_, p)| p.iam_user)
            .filter_map(|(id, _)| id.email().map(|e| Arc::from(e.split('@').next().unwrap())))
            .collect();
        let rename = |n: &str| {
            let i: usize = n[1..].parse().unwrap_or(usize::MAX);
            people
                .get(i)
                .and_then(|id| id.email())
                .map(|e| e.split('@').next().unwrap().to_string())
                .unwrap_or_else(|| n.to_string())
        };
        let aws_groups = aws_groups
            .into_iter()
            .map(|(g, m)| {
                (
                    g,
                    crate::reconcile::iam_members(&aws_users, m.iter().map(|n| rename(n))),
                )
            })
            .collect();
        let aws_tag_index = people
            .iter()
            .zip(&w.people)
            .filter(|(_, p)| p.iam_user)
            .filter_map(|(id, _)| id.email().map(str::to_string))
            .map(|e| {
                let local = e.split('@').next().unwrap().to_string();
                (e, local)
            })
            .collect();
        Snapshot {
            aws_tag_index,
            looker: w.read[0].then_some((
                catalog,
                crate::reconcile::looker_users(looker.into_iter().collect()),
            )),
            aws_users: w.read[1].then_some(aws_users),
            aws_groups,
            gcp: w.gcp.then_some(gcp),
            gcp_groups: google,
            ..Default::default()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn the_compiled_planner_plans_what_the_reference_plans(w in world()) {
            let policy = policy(&w);
            let people = identities(&w);
            let snap = snapshot(&w, &people);
            let shape = CloudShape {
                aws: w.aws.map(|tag| if tag {
                    AwsUserMapping::Tag { key: "email".into() }
                } else {
                    AwsUserMapping::Template { template: "{local}".into() }
                }),
                gcp: w.gcp,
            };
            let now = DateTime::from_timestamp(1_700_000_000 + 40 * 86_400, 0).unwrap();
            let new = plan_all(&policy, &people, &snap, &shape, now);
            // What a reconcile keeps, written out here (not `is_kept`): a wrong filter in the
            // compiled planner must not be hidden by the same filter on the reference.
            let old: Vec<SubjectPlan> = plan_all_reference(&policy, &people, &snap, &shape, now)
                .into_iter()
                .filter(|p| {
                    p.looker.as_ref().is_some_and(|l| !l.steps.is_empty() || l.resolution.others.iter().any(|o| !o.is_empty()))
                        || p.cloud.aws.as_ref().is_some_and(|a| !a.steps.is_empty())
                        || !p.cloud.gcp.is_empty()
                        || p.inactive.is_some()
                })
                .collect();
            prop_assert_eq!(
                serde_json::to_value(&new).unwrap(),
                serde_json::to_value(&old).unwrap()
            );
        }
    }
}
