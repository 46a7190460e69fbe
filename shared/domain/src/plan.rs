//! The plan: the minimal list of Looker calls that turns the actual state into the desired one.
//! A replayed or no-op event yields an empty plan. Pure.

use crate::looker::{Catalog, LookerOp, LookerUser, Named, ReadNeeds, UserRef};
use crate::policy::{rules, DesiredLooker, Presence, RuleName};
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
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The create call (if any) must finish first: every other call needs the new user's id.
    /// The rest are independent and may run concurrently.
    pub fn phases(&self) -> (Option<&Step>, Vec<&Step>) {
        let create = self.steps.iter().find(|s| matches!(s.op, LookerOp::CreateUser { .. }));
        let rest = self.steps.iter().filter(|s| !matches!(s.op, LookerOp::CreateUser { .. })).collect();
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
    }
}

/// Diff desired against actual. `catalog` is `None` only in an offline dry run.
pub fn diff(desired: &DesiredLooker, actual: &Actual, catalog: Option<&Catalog>) -> Plan {
    let mut b = Builder { steps: Vec::new(), notes: Vec::new(), offline: catalog.is_none() };
    let Some(email) = desired.email.clone() else {
        b.notes.push("the identity has no email, so its Looker user cannot be found".into());
        return Plan { user: UserRef::Email(String::new()), steps: b.steps, notes: b.notes };
    };
    let empty = Catalog::default();
    let cat = catalog.unwrap_or(&empty);

    let user = match actual {
        Actual::Unknown => UserRef::Email(email.clone()),
        Actual::Absent => UserRef::New,
        Actual::Present(u) => UserRef::Id(u.id.clone()),
    };

    match &desired.presence {
        Presence::Offboarded { disable, revoke_sessions, revoke_api_keys, delete_after_days } => {
            let groups: Vec<Named> = desired
                .managed_groups
                .iter()
                .filter_map(|g| b.resolve("group", &cat.groups, g))
                .collect();
            match actual {
                Actual::Absent => b.notes.push(format!("no Looker user has the email {email}; nothing to revoke")),
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
                            b.push(LookerOp::DeleteSession { session_id: s.clone() }, rules::OFFBOARD_SESSIONS);
                        }
                    }
                    if *revoke_api_keys {
                        for k in &u.api3_key_ids {
                            b.push(LookerOp::DeleteApiKey { key_id: k.clone() }, rules::OFFBOARD_API_KEYS);
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
                b.notes.push(format!("the Looker user is deleted {days} days after offboarding unless reactivated"));
            }
        }
        Presence::Active { create } => {
            let present = match actual {
                Actual::Absent if !create => {
                    b.notes.push(format!(
                        "no Looker user has the email {email} and onboarding.create_users is false"
                    ));
                    return Plan { user, steps: b.steps, notes: b.notes };
                }
                Actual::Absent => {
                    b.push(
                        LookerOp::CreateUser {
                            first_name: desired.first_name.clone(),
                            last_name: desired.last_name.clone(),
                        },
                        rules::ONBOARD_CREATE,
                    );
                    b.push(LookerOp::CreateEmailCredentials { email: email.clone() }, rules::ONBOARD_CREATE);
                    None
                }
                Actual::Unknown => None,
                Actual::Present(u) => {
                    if u.is_disabled {
                        b.push(LookerOp::SetDisabled { disabled: false }, rules::ONBOARD_ENABLE);
                    }
                    Some(u)
                }
            };

            // Groups: add what a rule grants, remove managed groups no rule grants.
            for g in &desired.managed_groups {
                let Some(n) = b.resolve("group", &cat.groups, g) else { continue };
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
                let rule = desired.roles.values().next().cloned().unwrap_or_else(|| rules::UNMANAGED.into());
                match present.and_then(|u| u.direct_role_ids.as_ref()) {
                    Some(direct) => {
                        let managed_ids: BTreeSet<&String> =
                            desired.managed_roles.iter().filter_map(|r| cat.roles.get(r)).collect();
                        let mut target: BTreeSet<String> =
                            direct.iter().filter(|id| !managed_ids.contains(id)).cloned().collect();
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
                let Some(n) = b.resolve("user attribute", &cat.user_attributes, a) else { continue };
                let current = present
                    .and_then(|u| u.user_attribute_values.as_ref())
                    .and_then(|vals| n.id.as_ref().and_then(|id| vals.get(id)));
                match desired.attributes.get(a) {
                    Some((value, rule)) if current != Some(value) => {
                        b.push(LookerOp::SetAttribute { attribute: n, value: value.clone() }, rule)
                    }
                    None if current.is_some() => b.push(LookerOp::DeleteAttribute { attribute: n }, rules::UNMANAGED),
                    _ => {}
                }
            }
        }
    }
    if matches!(actual, Actual::Unknown) {
        b.notes.push("no Looker is configured: current state unknown, so this lists every call that may apply".into());
    }
    Plan { user, steps: b.steps, notes: b.notes }
}

struct Builder {
    steps: Vec<Step>,
    notes: Vec<String>,
    offline: bool,
}

impl Builder {
    fn push(&mut self, op: LookerOp, rule: &str) {
        self.steps.push(Step { op, rule: rule.to_string() });
    }

    /// Resolve a policy name to a Looker id; a name Looker does not have is skipped with a note
    /// (Gatehouse never creates groups, roles or attributes).
    fn resolve(&mut self, kind: &str, map: &std::collections::BTreeMap<String, String>, name: &str) -> Option<Named> {
        let n = Named { name: name.to_string(), id: map.get(name).cloned() };
        if !self.offline && n.id.is_none() {
            self.notes.push(format!("looker has no {kind} named {name:?}; skipped"));
            None
        } else {
            Some(n)
        }
    }
}
