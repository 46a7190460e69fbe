//! The plan: the minimal list of Looker calls that turns the actual state into the desired one.
//! A replayed or no-op event yields an empty plan. Pure.

use crate::looker::{Catalog, LookerOp, LookerUser, Named, ReadNeeds, UserRef};
pub use crate::looker_core::Platform;
use crate::policy::{DesiredLooker, Presence, RuleName, rules};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// What Looker holds for the person, as far as it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actual {
    /// No Looker is configured (offline dry run): the plan names every call that could apply.
    Unknown,
    Absent,
    Present(LookerUser),
}

/// One planned call and the policy element that asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub op: LookerOp,
    pub rule: RuleName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub user: UserRef,
    pub steps: Vec<Step>,
    /// Things the plan could not do or chose not to, in words (e.g. a group missing in Looker).
    pub notes: Vec<String>,
    /// Issue 16: how the person resolved to their Looker user(s), and their other accounts.
    #[serde(default, skip_serializing_if = "Resolution::is_default")]
    pub resolution: Resolution,
}

/// How one person resolved in Looker (issue 16): `gatehouse plan` shows it, the engine acts on
/// its alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// How the plan's user was found, in words (`linked user 101`, `email john@x.io`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub how: Vec<String>,
    /// Plans for the person's other Looker accounts: offboarding closes every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<Plan>,
    /// Other Looker users that look like the person's, not acted on (onboarding, updates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<String>,
    /// Why the plan refuses to act (several candidates and no link): an alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Why an offboarding found no account of a person linked before: an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<String>,
}

impl Resolution {
    fn is_default(&self) -> bool {
        *self == Resolution::default()
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.resolution.others.iter().all(Plan::is_empty)
    }

    /// The create call (if any) must finish first: every other call needs the new user's id.
    /// The rest are independent and may run concurrently.
    pub fn phases(&self) -> (Option<&Step>, Vec<&Step>) {
        let create = self
            .steps
            .iter()
            .find(|s| matches!(s.op, LookerOp::CreateUser { .. }));
        let rest = self
            .steps
            .iter()
            .filter(|s| !matches!(s.op, LookerOp::CreateUser { .. }))
            .collect();
        (create, rest)
    }

    /// Human-readable: one exact Looker call per line, with the rule behind it.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if self.steps.is_empty() {
            out.push_str("  (no Looker calls: already as the policy wants)\n");
        }
        for s in &self.steps {
            let _ = writeln!(out, "  {}    # rule: {}", s.op.http(&self.user), s.rule);
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        let r = &self.resolution;
        for h in &r.how {
            let _ = writeln!(out, "  resolved: {h}");
        }
        for d in &r.duplicates {
            let _ = writeln!(out, "  duplicate: {d}");
        }
        if let Some(why) = &r.refused {
            let _ = writeln!(out, "  refused: {why}");
        }
        if let Some(why) = &r.unresolved {
            let _ = writeln!(out, "  unresolved: {why}");
        }
        for o in &r.others {
            let _ = writeln!(
                out,
                "  and the person's other looker user {}:",
                o.user.path_part()
            );
            out.push_str(&o.render_text());
        }
        out
    }
}

/// Which reads the plan needs besides `GET /users/search` (keeps read calls to the minimum).
pub fn read_needs(desired: &DesiredLooker, catalog: &Catalog) -> ReadNeeds {
    let active = matches!(desired.presence, Presence::Active { .. });
    ReadNeeds {
        direct_roles: active && !desired.managed_roles.is_empty(),
        attribute_ids: if active {
            desired
                .managed_attributes
                .iter()
                .filter_map(|a| catalog.user_attributes.get(a).cloned())
                .collect()
        } else {
            Vec::new()
        },
        logins: false,
    }
}

/// Diff desired against actual. `catalog` is `None` only in an offline dry run.
pub fn diff(desired: &DesiredLooker, actual: &Actual, catalog: Option<&Catalog>) -> Plan {
    diff_on(desired, actual, catalog, Platform::Original)
}

/// The note of a person whose Looker (Google Cloud core) user does not exist yet.
pub const PENDING_FIRST_LOGIN: &str = "pending first login";

/// Whether `plan` is that of a person the policy gives a Looker (Google Cloud core) account
/// whose user does not exist yet: nothing is written in Looker until they sign in once.
pub fn is_pending_first_login(desired: &DesiredLooker, plan: &Plan, platform: Platform) -> bool {
    platform.is_core()
        && matches!(desired.presence, Presence::Active { .. })
        && plan.user == UserRef::New
        && plan.resolution.refused.is_none()
}

/// [`diff`] for one Looker platform. In Looker (Google Cloud core) a user is never created
/// (its account appears at its first login through the identity provider) and its email is
/// never changed (names and emails are the identity provider's): a person the policy gives an
/// account and Looker does not have yet is pending first login, with no step.
pub fn diff_on(
    desired: &DesiredLooker,
    actual: &Actual,
    catalog: Option<&Catalog>,
    platform: Platform,
) -> Plan {
    let mut b = Builder {
        steps: Vec::new(),
        notes: Vec::new(),
        offline: catalog.is_none(),
    };
    let Some(email) = desired.email.clone() else {
        b.notes
            .push("the identity has no email, so its Looker user cannot be found".into());
        return Plan {
            user: UserRef::Email(String::new()),
            steps: b.steps,
            notes: b.notes,
            resolution: Resolution::default(),
        };
    };
    let empty = Catalog::default();
    let cat = catalog.unwrap_or(&empty);

    let user = match actual {
        Actual::Unknown => UserRef::Email(email.clone()),
        Actual::Absent => UserRef::New,
        Actual::Present(u) => UserRef::Id(u.id.clone()),
    };

    match &desired.presence {
        Presence::Offboarded {
            disable,
            revoke_sessions,
            revoke_api_keys,
            delete_after_days,
        } => {
            let groups: Vec<Named> = desired
                .managed_groups
                .iter()
                .filter_map(|g| b.resolve("group", &cat.groups, g))
                .collect();
            match actual {
                Actual::Absent => b
                    .notes
                    .push(format!("no Looker user has the email {email}; nothing to revoke")),
                Actual::Unknown => {
                    if *disable {
                        b.push(LookerOp::SetDisabled { disabled: true }, rules::OFFBOARD_DISABLE);
                    }
                    if *revoke_sessions {
                        b.push(LookerOp::DeleteEverySession, rules::OFFBOARD_SESSIONS);
                    }
                    if *revoke_api_keys {
                        b.push(LookerOp::DeleteEveryApiKey, rules::OFFBOARD_API_KEYS);
                    }
                    for g in groups {
                        b.push(LookerOp::RemoveFromGroup { group: g }, rules::OFFBOARD_GROUPS);
                    }
                }
                Actual::Present(u) => {
                    if *disable && !u.is_disabled {
                        b.push(LookerOp::SetDisabled { disabled: true }, rules::OFFBOARD_DISABLE);
                    }
                    if *revoke_sessions {
                        for s in &u.session_ids {
                            b.push(
                                LookerOp::DeleteSession {
                                    session_id: s.clone(),
                                },
                                rules::OFFBOARD_SESSIONS,
                            );
                        }
                    }
                    if *revoke_api_keys {
                        for k in &u.api3_key_ids {
                            b.push(
                                LookerOp::DeleteApiKey { key_id: k.clone() },
                                rules::OFFBOARD_API_KEYS,
                            );
                        }
                    }
                    for g in groups {
                        if g.id.as_ref().is_some_and(|id| u.group_ids.contains(id)) {
                            b.push(LookerOp::RemoveFromGroup { group: g }, rules::OFFBOARD_GROUPS);
                        }
                    }
                }
            }
            if let Some(days) = delete_after_days {
                b.notes.push(format!(
                    "the Looker user is deleted {days} days after offboarding unless reactivated"
                ));
            }
        }
        Presence::Active { create } => {
            let present = match actual {
                // Nobody to converge yet: core creates the user at the first sign-in; with
                // `create_users = false` nobody creates it.
                Actual::Absent if platform.is_core() || !create => {
                    b.notes.push(if platform.is_core() {
                        format!(
                            "{PENDING_FIRST_LOGIN}: no Looker user has the email {email}; Looker (Google Cloud core) creates it when the person first signs in, and Gatehouse converges it then"
                        )
                    } else {
                        format!("no Looker user has the email {email} and onboarding.create_users is false")
                    });
                    return Plan {
                        user,
                        steps: b.steps,
                        notes: b.notes,
                        resolution: Resolution::default(),
                    };
                }
                Actual::Absent => {
                    b.push(
                        LookerOp::CreateUser {
                            first_name: desired.first_name.clone(),
                            last_name: desired.last_name.clone(),
                            email: Some(email.clone()),
                        },
                        rules::ONBOARD_CREATE,
                    );
                    None
                }
                Actual::Unknown if platform.is_core() => {
                    b.notes.push(format!(
                        "looker (google cloud core): if no Looker user has the email {email}, nothing is done in Looker until the person first signs in"
                    ));
                    None
                }
                Actual::Unknown => {
                    if *create {
                        b.notes.push(format!(
                            "if no Looker user has the email {email}, one is created first (POST /api/4.0/users with its email credentials in the same call)"
                        ));
                    }
                    None
                }
                Actual::Present(u) => {
                    if u.is_disabled {
                        b.push(LookerOp::SetDisabled { disabled: false }, rules::ONBOARD_ENABLE);
                    }
                    // Issue 16: an email change is a change of this user, never a new one. In
                    // core the identity provider owns the email: noted, never written.
                    let moved = u.email.as_ref().filter(|e| !e.eq_ignore_ascii_case(&email));
                    if let (Some(held), true) = (moved, platform.is_core()) {
                        b.notes.push(format!(
                            "looker user {} has the email {held}, the directory says {email}: in Looker (Google Cloud core) emails are changed in the identity provider, not by Gatehouse",
                            u.id
                        ));
                    } else if moved.is_some() {
                        b.push(
                            LookerOp::UpdateEmail { email: email.clone() },
                            rules::ONBOARD_EMAIL,
                        );
                    }
                    Some(u)
                }
            };

            // Groups: add what a rule grants, remove managed groups no rule grants.
            for g in &desired.managed_groups {
                let Some(n) = b.resolve("group", &cat.groups, g) else {
                    continue;
                };
                let has = present.map(|u| n.id.as_ref().is_some_and(|id| u.group_ids.contains(id)));
                match (desired.groups.get(g), has) {
                    (Some(rule), Some(false) | None) => b.push(LookerOp::AddToGroup { group: n }, rule),
                    (None, Some(true)) => b.push(LookerOp::RemoveFromGroup { group: n }, rules::UNMANAGED),
                    _ => {}
                }
            }

            // Roles: one PUT of the full direct-role list, only when it changes.
            if !desired.managed_roles.is_empty() {
                let wanted: Vec<Named> = desired
                    .roles
                    .keys()
                    .filter_map(|r| b.resolve("role", &cat.roles, r))
                    .collect();
                let rule = desired
                    .roles
                    .values()
                    .next()
                    .cloned()
                    .unwrap_or_else(|| rules::UNMANAGED.into());
                match present.and_then(|u| u.direct_role_ids.as_ref()) {
                    Some(direct) => {
                        let managed_ids: BTreeSet<&String> = desired
                            .managed_roles
                            .iter()
                            .filter_map(|r| cat.roles.get(r))
                            .collect();
                        let mut target: BTreeSet<String> = direct
                            .iter()
                            .filter(|id| !managed_ids.contains(id))
                            .cloned()
                            .collect();
                        target.extend(wanted.iter().filter_map(|n| n.id.clone()));
                        if &target != direct {
                            let roles = target
                                .into_iter()
                                .map(|id| Named {
                                    name: cat
                                        .roles
                                        .iter()
                                        .find(|(_, v)| **v == id)
                                        .map(|(k, _)| k.clone())
                                        .unwrap_or_else(|| id.clone()),
                                    id: Some(id),
                                })
                                .collect();
                            b.push(LookerOp::SetRoles { roles }, &rule);
                        }
                    }
                    None if !wanted.is_empty() => b.push(LookerOp::SetRoles { roles: wanted }, &rule),
                    None => {}
                }
            }

            // User attributes: set the user's own value where it differs; clear managed ones no
            // rule sets.
            for a in &desired.managed_attributes {
                let Some(n) = b.resolve("user attribute", &cat.user_attributes, a) else {
                    continue;
                };
                let current = present
                    .and_then(|u| u.user_attribute_values.as_ref())
                    .and_then(|vals| n.id.as_ref().and_then(|id| vals.get(id)));
                match desired.attributes.get(a) {
                    Some((value, rule)) if current != Some(value) => b.push(
                        LookerOp::SetAttribute {
                            attribute: n,
                            value: value.clone(),
                        },
                        rule,
                    ),
                    None if current.is_some() => {
                        b.push(LookerOp::DeleteAttribute { attribute: n }, rules::UNMANAGED)
                    }
                    _ => {}
                }
            }
        }
    }
    if matches!(actual, Actual::Unknown) {
        b.notes.push(
            "no Looker is configured: current state unknown, so this lists every call that may apply".into(),
        );
    }
    Plan {
        user,
        steps: b.steps,
        notes: b.notes,
        resolution: Resolution::default(),
    }
}

struct Builder {
    steps: Vec<Step>,
    notes: Vec<String>,
    offline: bool,
}

impl Builder {
    fn push(&mut self, op: LookerOp, rule: &str) {
        self.steps.push(Step {
            op,
            rule: rule.to_string(),
        });
    }

    /// Resolve a policy name to a Looker id; a name Looker does not have is skipped with a note
    /// (Gatehouse never creates groups, roles or attributes).
    fn resolve(
        &mut self,
        kind: &str,
        map: &std::collections::BTreeMap<String, String>,
        name: &str,
    ) -> Option<Named> {
        let n = Named {
            name: name.to_string(),
            id: map.get(name).cloned(),
        };
        if !self.offline && n.id.is_none() {
            self.notes
                .push(format!("looker has no {kind} named {name:?}; skipped"));
            None
        } else {
            Some(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::looker::LookerUser;
    use crate::policy::DesiredLooker;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn catalog() -> Catalog {
        Catalog {
            groups: BTreeMap::from([
                ("G1".into(), "1".into()),
                ("G2".into(), "2".into()),
                ("Other".into(), "9".into()),
            ]),
            roles: BTreeMap::from([
                ("R1".into(), "11".into()),
                ("R2".into(), "12".into()),
                ("Admin".into(), "19".into()),
            ]),
            user_attributes: BTreeMap::from([("a1".into(), "21".into()), ("a2".into(), "22".into())]),
        }
    }

    fn desired(presence: Presence, groups: &[&str], roles: &[&str], attrs: &[(&str, &str)]) -> DesiredLooker {
        DesiredLooker {
            email: Some("p@x.io".into()),
            first_name: Some("P".into()),
            last_name: Some("X".into()),
            presence,
            groups: groups.iter().map(|g| (g.to_string(), "r".to_string())).collect(),
            roles: roles.iter().map(|g| (g.to_string(), "r".to_string())).collect(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), (v.to_string(), "r".to_string())))
                .collect(),
            managed_groups: ["G1", "G2"].iter().map(|s| s.to_string()).collect(),
            managed_roles: ["R1", "R2"].iter().map(|s| s.to_string()).collect(),
            managed_attributes: ["a1", "a2"].iter().map(|s| s.to_string()).collect(),
        }
    }

    fn offboard() -> Presence {
        Presence::Offboarded {
            disable: true,
            revoke_sessions: true,
            revoke_api_keys: true,
            delete_after_days: None,
        }
    }

    /// Apply a plan to a model of the Looker user, as Looker would.
    fn simulate(mut u: Option<LookerUser>, plan: &Plan) -> Option<LookerUser> {
        for s in &plan.steps {
            let id = |n: &Named| n.id.clone().unwrap();
            match &s.op {
                LookerOp::CreateUser { email, .. } => {
                    u = Some(LookerUser {
                        id: "new".into(),
                        is_disabled: false,
                        email: email.clone(),
                        group_ids: Default::default(),
                        session_ids: vec![],
                        api3_key_ids: vec![],
                        direct_role_ids: Some(Default::default()),
                        user_attribute_values: Some(Default::default()),
                        logins: None,
                    })
                }
                op => {
                    let u = u.as_mut().expect("op on a user that exists");
                    match op {
                        LookerOp::CreateEmailCredentials { email } => u.email = Some(email.clone()),
                        LookerOp::SetDisabled { disabled } => u.is_disabled = *disabled,
                        LookerOp::DeleteSession { session_id } => u.session_ids.retain(|s| s != session_id),
                        LookerOp::DeleteApiKey { key_id } => u.api3_key_ids.retain(|k| k != key_id),
                        LookerOp::AddToGroup { group } => {
                            assert!(u.group_ids.insert(id(group)), "add is never a no-op")
                        }
                        LookerOp::RemoveFromGroup { group } => {
                            assert!(u.group_ids.remove(&id(group)), "remove is never a no-op")
                        }
                        LookerOp::SetRoles { roles } => {
                            u.direct_role_ids = Some(roles.iter().map(id).collect())
                        }
                        LookerOp::SetAttribute { attribute, value } => {
                            u.user_attribute_values
                                .as_mut()
                                .unwrap()
                                .insert(id(attribute), value.clone());
                        }
                        LookerOp::DeleteAttribute { attribute } => {
                            u.user_attribute_values.as_mut().unwrap().remove(&id(attribute));
                        }
                        other => panic!("unexpected op {other:?} in an online plan"),
                    }
                }
            }
        }
        u
    }

    fn arb_user() -> impl Strategy<Value = Option<LookerUser>> {
        let ids = |pool: &'static [&'static str]| {
            prop::collection::btree_set(prop::sample::select(pool), 0..pool.len())
        };
        prop::option::of((
            any::<bool>(),
            ids(&["1", "2", "9"]),
            ids(&["11", "12", "19"]),
            prop::collection::btree_map(
                prop::sample::select(&["21", "22"][..]),
                prop_oneof![Just("x"), Just("y")],
                0..2,
            ),
            0usize..3,
            0usize..3,
        ))
        .prop_map(|o| {
            o.map(|(dis, g, r, a, s, k)| LookerUser {
                id: "u1".into(),
                is_disabled: dis,
                email: Some("p@x.io".into()),
                group_ids: g.into_iter().map(str::to_string).collect(),
                session_ids: (0..s).map(|i| format!("s{i}")).collect(),
                api3_key_ids: (0..k).map(|i| format!("k{i}")).collect(),
                direct_role_ids: Some(r.into_iter().map(str::to_string).collect()),
                user_attribute_values: Some(
                    a.into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                logins: None,
            })
        })
    }

    fn actual(u: &Option<LookerUser>) -> Actual {
        u.clone().map(Actual::Present).unwrap_or(Actual::Absent)
    }

    proptest! {
        /// Applying a plan converges: the next plan is empty, and nothing unmanaged was touched.
        #[test]
        fn plan_converges_and_leaves_unmanaged_alone(
            user in arb_user(),
            off in any::<bool>(),
            groups in prop::sample::subsequence(vec!["G1", "G2"], 0..=2),
            roles in prop::sample::subsequence(vec!["R1", "R2"], 0..=2),
            a1 in prop::option::of(prop_oneof![Just("x"), Just("z")]),
        ) {
            let attrs: Vec<(&str, &str)> = a1.map(|v| vec![("a1", v)]).unwrap_or_default();
            let d = if off { desired(offboard(), &[], &[], &[]) } else { desired(Presence::Active { create: true }, &groups, &roles, &attrs) };
            let cat = catalog();
            let plan = diff(&d, &actual(&user), Some(&cat));
            let after = simulate(user.clone(), &plan);
            let again = diff(&d, &actual(&after), Some(&cat));
            prop_assert!(again.steps.is_empty(), "second plan not empty: {:?}", again.steps);
            if let (Some(before), Some(after)) = (&user, &after) {
                prop_assert_eq!(before.group_ids.contains("9"), after.group_ids.contains("9"), "unmanaged group touched");
                let r = |u: &LookerUser| u.direct_role_ids.as_ref().unwrap().contains("19");
                prop_assert_eq!(r(before), r(after), "unmanaged role touched");
            }
            if off {
                if let Some(a) = &after {
                    prop_assert!(a.is_disabled && a.session_ids.is_empty() && a.api3_key_ids.is_empty());
                    prop_assert!(!a.group_ids.contains("1") && !a.group_ids.contains("2"));
                }
                prop_assert!(plan.steps.iter().all(|s| s.op.is_revoking()), "offboarding only revokes");
            }
        }
    }

    #[test]
    fn offline_offboarding_lists_every_revocation() {
        let d = desired(offboard(), &[], &[], &[]);
        let plan = diff(&d, &Actual::Unknown, None);
        let text = plan.render_text();
        assert!(
            text.contains("PATCH /api/4.0/users/{id of p@x.io} {\"is_disabled\":true}"),
            "{text}"
        );
        assert!(
            text.contains("DELETE /api/4.0/users/{id of p@x.io}/sessions/{each}"),
            "{text}"
        );
        assert!(
            text.contains("DELETE /api/4.0/users/{id of p@x.io}/credentials_api3/{each}"),
            "{text}"
        );
        assert!(
            text.contains("DELETE /api/4.0/groups/{id of G1}/users/{id of p@x.io}"),
            "{text}"
        );
    }

    #[test]
    fn missing_looker_group_is_a_note_not_a_call() {
        let mut d = desired(Presence::Active { create: true }, &["G3"], &[], &[]);
        d.managed_groups.insert("G3".into());
        let plan = diff(&d, &Actual::Absent, Some(&catalog()));
        assert!(
            plan.notes.iter().any(|n| n.contains("\"G3\"")),
            "{:?}",
            plan.notes
        );
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s.op, LookerOp::AddToGroup { .. }))
        );
    }

    /// Issue 11, finding 11: a managed attribute the person has no value for was deleted, so
    /// Looker's group value or the attribute's default ("all regions") applied. The plan now
    /// sets the policy's deny value, and never deletes.
    #[test]
    fn a_missing_attribute_value_sets_the_deny_value_never_a_delete() {
        use crate::envelope::{Envelope, EnvelopeId, IdentityEvent, Profile, Source, Subject};
        use crate::identity::Identity;
        let policy = crate::policy::Policy::from_toml(
            "[[rule]]\nname = \"emea\"\nwhen = { idp_group = \"Sales EMEA\" }\nlooker_attributes = { a1 = \"EMEA\" }\n\
             [attributes.a1]\ndeny_value = \"__none__\"\n",
        )
        .unwrap();
        let mut person = Identity::new("k");
        person.fold(&Envelope {
            trace_parent: None,
            version: 1,
            id: EnvelopeId("e1".into()),
            source: Source::Manual,
            subject: Subject {
                key: "k".into(),
                email: Some("p@x.io".into()),
                display_name: None,
            },
            occurred_at: chrono::DateTime::from_timestamp(1, 0).unwrap(),
            received_at: chrono::DateTime::from_timestamp(1, 0).unwrap(),
            event: IdentityEvent::UserActivated,
            profile: Profile::new(),
            source_event_type: "t".into(),
            raw: serde_json::Value::Null,
        });
        let d = crate::policy::evaluate(&policy, &person);
        let user = |value: Option<&str>| LookerUser {
            id: "7".into(),
            is_disabled: false,
            email: Some("p@x.io".into()),
            group_ids: Default::default(),
            session_ids: vec![],
            api3_key_ids: vec![],
            direct_role_ids: Some(Default::default()),
            user_attribute_values: Some(
                value
                    .map(|v| ("21".to_string(), v.to_string()))
                    .into_iter()
                    .collect(),
            ),
            logins: None,
        };
        for held in [Some("ALL"), None] {
            let plan = diff(&d, &Actual::Present(user(held)), Some(&catalog()));
            assert!(
                !plan
                    .steps
                    .iter()
                    .any(|s| matches!(s.op, LookerOp::DeleteAttribute { .. })),
                "{held:?}: {plan:?}"
            );
            let set: Vec<_> = plan
                .steps
                .iter()
                .filter_map(|s| match &s.op {
                    LookerOp::SetAttribute { attribute, value } => {
                        Some((attribute.name.as_str(), value.as_str(), s.rule.as_str()))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                set,
                vec![("a1", "__none__", "attributes.a1.deny_value")],
                "{held:?}"
            );
        }
        let plan = diff(&d, &Actual::Present(user(Some("__none__"))), Some(&catalog()));
        assert!(plan.is_empty(), "already denied: nothing to do: {plan:?}");
    }

    #[test]
    fn absent_user_is_created_first_with_email_credentials() {
        let d = desired(
            Presence::Active { create: true },
            &["G1"],
            &["R1"],
            &[("a1", "x")],
        );
        let plan = diff(&d, &Actual::Absent, Some(&catalog()));
        let (create, rest) = plan.phases();
        // One call creates the user with its email: no crash can leave a user Gatehouse cannot find.
        assert!(create.is_some_and(|s| matches!(&s.op,
            LookerOp::CreateUser { email: Some(e), .. } if e == "p@x.io")));
        assert!(
            !rest
                .iter()
                .any(|s| matches!(s.op, LookerOp::CreateEmailCredentials { .. }))
        );
        assert_eq!(plan.user, UserRef::New);
    }

    /// Issue 16: the person's user under another email gets its email credentials updated;
    /// a difference in letter case only is no change.
    #[test]
    fn a_linked_user_under_another_email_follows_the_directory() {
        let d = desired(Presence::Active { create: true }, &[], &[], &[]);
        let user = |email: &str| LookerUser {
            id: "101".into(),
            is_disabled: false,
            email: Some(email.into()),
            group_ids: Default::default(),
            session_ids: vec![],
            api3_key_ids: vec![],
            direct_role_ids: Some(Default::default()),
            user_attribute_values: Some(Default::default()),
            logins: None,
        };
        let plan = diff(&d, &Actual::Present(user("old@x.io")), Some(&catalog()));
        let updates: Vec<_> = plan
            .steps
            .iter()
            .filter(|s| matches!(&s.op, LookerOp::UpdateEmail { email } if email == "p@x.io"))
            .collect();
        assert_eq!(updates.len(), 1, "{plan:?}");
        assert_eq!(updates[0].rule, rules::ONBOARD_EMAIL);
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s.op, LookerOp::CreateUser { .. }))
        );
        let call = updates[0].op.http(&plan.user);
        assert_eq!(
            call.to_string(),
            r#"PATCH /api/4.0/users/101/credentials_email {"email":"p@x.io"}"#
        );
        let same = diff(&d, &Actual::Present(user("P@X.io")), Some(&catalog()));
        assert!(
            !same
                .steps
                .iter()
                .any(|s| matches!(s.op, LookerOp::UpdateEmail { .. })),
            "{same:?}"
        );
    }

    /// Looker (Google Cloud core): no user is ever created and no email ever changed; a person
    /// whose user does not exist yet is pending first login (no step); once it exists, groups,
    /// roles and attributes converge as in original.
    #[test]
    fn core_never_creates_a_user_nor_changes_an_email() {
        let d = desired(
            Presence::Active { create: true },
            &["G1"],
            &["R1"],
            &[("a1", "x")],
        );
        let pending = diff_on(&d, &Actual::Absent, Some(&catalog()), Platform::Core);
        assert!(pending.steps.is_empty(), "{pending:?}");
        assert!(
            pending.notes.iter().any(|n| n.starts_with(PENDING_FIRST_LOGIN)),
            "{pending:?}"
        );
        assert!(is_pending_first_login(&d, &pending, Platform::Core));
        assert!(!is_pending_first_login(&d, &pending, Platform::Original));
        let offline = diff_on(&d, &Actual::Unknown, None, Platform::Core);
        assert!(
            !offline.steps.iter().any(|s| matches!(
                s.op,
                LookerOp::CreateUser { .. } | LookerOp::CreateEmailCredentials { .. }
            )),
            "{offline:?}"
        );
        let mut held = LookerUser {
            id: "101".into(),
            is_disabled: false,
            email: Some("old@x.io".into()),
            group_ids: Default::default(),
            session_ids: vec![],
            api3_key_ids: vec![],
            direct_role_ids: Some(Default::default()),
            user_attribute_values: Some(Default::default()),
            logins: None,
        };
        let plan = diff_on(
            &d,
            &Actual::Present(held.clone()),
            Some(&catalog()),
            Platform::Core,
        );
        assert!(
            !plan
                .steps
                .iter()
                .any(|s| matches!(s.op, LookerOp::UpdateEmail { .. } | LookerOp::CreateUser { .. })),
            "{plan:?}"
        );
        assert!(!is_pending_first_login(&d, &plan, Platform::Core));
        held.email = Some("p@x.io".into());
        let converged = simulate(Some(held), &plan);
        let again = diff_on(
            &d,
            &Actual::Present(converged.unwrap()),
            Some(&catalog()),
            Platform::Core,
        );
        assert!(
            again.steps.is_empty(),
            "groups, roles and attributes converged: {again:?}"
        );
        assert_eq!(plan.steps.len(), 3, "group, roles, attribute: {plan:?}");
    }
}
