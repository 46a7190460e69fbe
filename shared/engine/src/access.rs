//! The access review (issue 15 item 1).
//!
//! [`observe`] turns what one reconcile read ([`Snapshot`]) into [`AccessRow`]s: per person and
//! target the managed grants held (Looker groups, roles, attribute values, enabled; AWS groups,
//! tags, access-key states; GCP bindings), one row of the Looker catalog (ids → names, so the
//! ledger can be replayed offline), and the orphan accounts found in the same paged reads —
//! enabled accounts holding grants the policy manages that match nobody in the directory.
//!
//! [`build`] answers the review from the directory, the policy, the last snapshot at or before
//! `as_of` and the ledger rows written after that snapshot and up to `as_of` (replayed on top):
//! per person and grant, the rule that wants it, whether the target has it, and the drift. Pure:
//! it never calls a target.

use crate::reconcile_model::{CloudShape, Snapshot};
use chrono::{DateTime, Utc};
use gatehouse_domain::access::{AccessRow, AccessSnapshot, orphan_subject, parse_orphan_subject};
use gatehouse_domain::cloud::{self, AwsUserKey};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::{Catalog, LookerUser};
use gatehouse_domain::policy::{self, Policy, Presence};
use gatehouse_domain::ports::LedgerRow;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The subject of the Looker catalog row (names ↔ ids of what the policy names).
pub const CATALOG_SUBJECT: &str = "catalog";

/// The rule name on orphan ledger rows.
pub const ORPHAN_RULE: &str = "reconcile.orphans";

/// An account that holds grants Gatehouse manages and matches nobody in the directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    /// `looker`, `aws` or `gcp`.
    pub target: String,
    /// Looker user id, IAM user name, or GCP member (`user:EMAIL`).
    pub account: String,
    #[serde(default)]
    pub email: Option<String>,
    pub enabled: bool,
    /// The managed grants it holds (`group:Finance`, `role:Viewer`, `iam_group:analysts`,
    /// `binding:RESOURCE ROLE`).
    pub grants: Vec<String>,
}

/// What one reconcile saw, ready to store.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub rows: Vec<AccessRow>,
    pub orphans: Vec<Orphan>,
}

fn names_of(ids: impl IntoIterator<Item = impl AsRef<str>>, by_id: &BTreeMap<&str, &str>) -> Vec<String> {
    let mut v: Vec<String> = ids
        .into_iter()
        .filter_map(|id| by_id.get(id.as_ref()).map(|n| n.to_string()))
        .collect();
    v.sort();
    v
}

fn reverse(m: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    m.iter().map(|(n, id)| (id.as_str(), n.as_str())).collect()
}

/// Ids → names of the Looker objects the policy manages (the catalog lists every group and
/// role; only managed ones are recorded: Gatehouse reviews what it governs).
struct Managed<'a> {
    groups: BTreeMap<&'a str, &'a str>,
    roles: BTreeMap<&'a str, &'a str>,
    attributes: BTreeMap<&'a str, &'a str>,
}

impl<'a> Managed<'a> {
    fn of(policy: &Policy, catalog: &'a Catalog) -> Self {
        let only = |m: &'a BTreeMap<String, String>, names: BTreeSet<String>| {
            m.iter()
                .filter(|(n, _)| names.contains(*n))
                .map(|(n, id)| (id.as_str(), n.as_str()))
                .collect()
        };
        Managed {
            groups: only(&catalog.groups, policy.managed_groups()),
            roles: only(&catalog.roles, policy.managed_roles()),
            attributes: only(&catalog.user_attributes, policy.managed_attributes()),
        }
    }
}

/// One Looker user's managed state, as stored.
fn looker_state(u: &LookerUser, m: &Managed<'_>) -> Value {
    let attributes: BTreeMap<String, String> = u
        .user_attribute_values
        .iter()
        .flatten()
        .filter_map(|(id, v)| Some((m.attributes.get(id.as_str())?.to_string(), v.clone())))
        .collect();
    json!({
        "user_id": u.id,
        "email": u.email,
        "enabled": !u.is_disabled,
        "groups": names_of(&u.group_ids, &m.groups),
        "roles": u.direct_role_ids.as_ref().map(|r| names_of(r, &m.roles)),
        "attributes": u.user_attribute_values.as_ref().map(|_| attributes),
        "sessions": u.session_ids.len(),
        "api3_keys": u.api3_key_ids.len(),
    })
}

/// Everything a reconcile read, as rows (pure). `identities` are the directory's people.
pub fn observe(
    policy: &Policy,
    identities: &[Identity],
    snap: &Snapshot,
    shape: &CloudShape,
    now: DateTime<Utc>,
) -> Observed {
    let mut out = Observed::default();
    let row = |subject: &str, target: &str, state: Value| AccessRow {
        subject: subject.to_string(),
        target: target.to_string(),
        state,
    };
    // Looker.
    if let Some((catalog, users)) = &snap.looker {
        let managed = Managed::of(policy, catalog);
        // The managed part of the catalog: the ledger's replay maps ids back to names with it.
        let named = |m: &BTreeMap<&str, &str>| -> BTreeMap<String, String> {
            m.iter().map(|(id, n)| (n.to_string(), id.to_string())).collect()
        };
        let recorded = Catalog {
            groups: named(&managed.groups),
            roles: named(&managed.roles),
            user_attributes: named(&managed.attributes),
        };
        out.rows.push(row(
            CATALOG_SUBJECT,
            "looker",
            serde_json::to_value(&recorded).unwrap_or_default(),
        ));
        for id in identities {
            let d = policy::evaluate(policy, id);
            let Some(email) = d.email.as_ref() else { continue };
            let state = match users.get(&email.to_ascii_lowercase()) {
                Some(Some(u)) => looker_state(u, &managed),
                _ => json!({ "user_id": null }),
            };
            out.rows.push(row(&id.key, "looker", state));
        }
        for u in &snap.looker_unmatched {
            let holds = u
                .group_ids
                .iter()
                .any(|g| managed.groups.contains_key(g.as_str()))
                || u.direct_role_ids
                    .iter()
                    .flatten()
                    .any(|r| managed.roles.contains_key(r.as_str()));
            if u.is_disabled || !holds {
                continue;
            }
            let state = looker_state(u, &managed);
            let mut grants: Vec<String> = Vec::new();
            for g in state["groups"].as_array().into_iter().flatten() {
                grants.push(format!("group:{}", g.as_str().unwrap_or_default()));
            }
            for r in state["roles"].as_array().into_iter().flatten() {
                grants.push(format!("role:{}", r.as_str().unwrap_or_default()));
            }
            out.rows
                .push(row(&orphan_subject("looker", &u.id), "looker", state));
            out.orphans.push(Orphan {
                target: "looker".into(),
                account: u.id.clone(),
                email: u.email.clone(),
                enabled: true,
                grants,
            });
        }
    }
    // AWS and GCP.
    let desired: Vec<_> = identities
        .iter()
        .map(|id| {
            (
                id,
                cloud::evaluate(policy, id, shape.aws.as_ref(), shape.gcp, now),
            )
        })
        .collect();
    if let Some(users) = &snap.aws_users {
        let mut groups_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (g, members) in &snap.aws_groups {
            for m in members {
                groups_of.entry(&**m).or_default().insert(g.as_str());
            }
        }
        let mut matched = HashSet::new();
        for (id, dc) in &desired {
            let Some(d) = &dc.aws else { continue };
            let name = match &d.user {
                AwsUserKey::Name(n) => users.contains(n.as_str()).then(|| n.clone()),
                AwsUserKey::Tag { value, .. } => snap.aws_tag_index.get(value).cloned(),
            };
            let state = match &name {
                None => json!({ "user": null }),
                Some(n) => {
                    matched.insert(n.clone());
                    json!({
                        "user": n,
                        "groups": groups_of.get(n.as_str()).cloned().unwrap_or_default(),
                        "tags": snap.aws_tags.get(n),
                        "access_keys": snap.aws_credentials.get(n).map(|(keys, _)| keys
                            .iter()
                            .map(|k| json!({ "id": k.id, "status": if k.active { "Active" } else { "Inactive" } }))
                            .collect::<Vec<_>>()),
                        "login_profile": snap.aws_credentials.get(n).map(|(_, p)| *p),
                    })
                }
            };
            out.rows.push(row(&id.key, "aws", state));
        }
        for (user, groups) in &groups_of {
            if matched.contains(*user) {
                continue;
            }
            let groups: Vec<&str> = groups.iter().copied().collect();
            out.rows.push(row(
                &orphan_subject("aws", user),
                "aws",
                json!({ "user": user, "groups": groups }),
            ));
            out.orphans.push(Orphan {
                target: "aws".into(),
                account: user.to_string(),
                email: None,
                enabled: true,
                grants: groups.iter().map(|g| format!("iam_group:{g}")).collect(),
            });
        }
    }
    if let Some(policies) = &snap.gcp {
        let managed = policy.managed_gcp_grants();
        // member (lowercase) → managed (resource, role) it holds unconditionally.
        let mut held: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
        for (resource, p) in policies {
            for b in p.bindings.iter().filter(|b| b.condition.is_none()) {
                let g = policy::GcpGrant {
                    resource: resource.clone(),
                    role: b.role.clone(),
                };
                if !managed.contains(&g) {
                    continue;
                }
                for m in &b.members {
                    held.entry(m.to_ascii_lowercase())
                        .or_default()
                        .insert((resource.clone(), b.role.clone()));
                }
            }
        }
        let mut matched = HashSet::new();
        for (id, dc) in &desired {
            let Some(d) = &dc.gcp else { continue };
            let member = d.member.to_ascii_lowercase();
            let bindings: Vec<Value> = held
                .get(&member)
                .into_iter()
                .flatten()
                .map(|(r, role)| json!({ "resource": r, "role": role }))
                .collect();
            out.rows.push(row(
                &id.key,
                "gcp",
                json!({ "member": d.member, "bindings": bindings }),
            ));
            matched.insert(member);
        }
        for (member, grants) in &held {
            // People only: service accounts and groups bound to a managed role are not accounts
            // of a person the directory could name.
            if matched.contains(member) || !member.starts_with("user:") {
                continue;
            }
            let bindings: Vec<Value> = grants
                .iter()
                .map(|(r, role)| json!({ "resource": r, "role": role }))
                .collect();
            out.rows.push(row(
                &orphan_subject("gcp", member),
                "gcp",
                json!({ "member": member, "bindings": bindings }),
            ));
            out.orphans.push(Orphan {
                target: "gcp".into(),
                account: member.clone(),
                email: member.strip_prefix("user:").map(str::to_string),
                enabled: true,
                grants: grants
                    .iter()
                    .map(|(r, role)| format!("binding:{r} {role}"))
                    .collect(),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The review.

/// One person in the directory.
#[derive(Debug, Clone, Serialize)]
pub struct Person {
    pub subject: String,
    pub email: Option<String>,
    /// `active`, `suspended`, `deactivated`, `deleted` or `unknown`.
    pub idp_status: String,
    pub idp_groups: Vec<String>,
}

/// One grant of one person on one target.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub subject: String,
    pub email: Option<String>,
    pub idp_status: String,
    /// `looker`, `aws`, `gcp`.
    pub target: String,
    /// `account`, `group`, `role`, `attribute`, `iam_group`, `tag`, `access_key`, `binding`.
    pub kind: String,
    pub name: String,
    /// Attribute or tag value, access-key status, account id.
    pub value: Option<String>,
    /// The policy rule that wants it (none: nothing wants it).
    pub rule: Option<String>,
    pub wanted: bool,
    /// Whether the target has it (none: not known, no snapshot of that target).
    pub had: Option<bool>,
    /// `none`, `wanted-not-had`, `had-not-wanted` or `unknown`.
    pub drift: String,
}

/// An account the review exists to find.
#[derive(Debug, Clone, Serialize)]
pub struct OrphanRow {
    pub target: String,
    pub account: String,
    pub email: Option<String>,
    pub enabled: bool,
    pub grants: Vec<String>,
    /// `matches nobody in the directory`, or `idp status deactivated` (and the like) for a
    /// person the IdP says is gone whose account is still enabled or granted.
    pub reason: String,
    /// The person, for the second kind.
    pub subject: Option<String>,
}

/// Which ledger rows were replayed on top of the snapshot.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerRange {
    /// First and last seq written after the snapshot and at or before `as_of` (none: none).
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// Successful writes replayed onto the snapshot.
    pub replayed: usize,
    /// Rows in the range that are not writes that succeeded (reported, withheld, failed,
    /// dry run) or whose effect the review does not show (a Google group membership, the AWS
    /// leaver sweep's policy and credential calls): listed, not applied.
    pub not_replayed: usize,
}

/// The whole review.
#[derive(Debug, Clone, Serialize)]
pub struct AccessReport {
    pub as_of: DateTime<Utc>,
    /// The snapshot used (the last reconcile at or before `as_of`); none: no reconcile yet.
    pub snapshot_at: Option<DateTime<Utc>>,
    pub ledger: LedgerRange,
    pub people: Vec<Person>,
    pub grants: Vec<Grant>,
    pub orphans: Vec<OrphanRow>,
}

fn status_name(id: &Identity) -> String {
    format!("{:?}", id.status).to_ascii_lowercase()
}

fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn drift(wanted: bool, had: Option<bool>) -> String {
    match (wanted, had) {
        (_, None) => "unknown",
        (true, Some(false)) => "wanted-not-had",
        (false, Some(true)) => "had-not-wanted",
        _ => "none",
    }
    .into()
}

/// A write that took effect: `ok` (Looker), a 2xx status (clouds), or a revocation that
/// found it already done (`CallOutcome::ledger_status`).
fn succeeded(status: &str) -> bool {
    status == "ok"
        || status == "404 already gone"
        || status.parse::<u16>().is_ok_and(|s| (200..300).contains(&s))
}

/// An access key deactivated (kept, `Inactive`) or deleted (gone) in a replayed AWS state.
fn access_key(state: &mut Value, key_id: &str, delete: bool) -> Option<()> {
    if let Some(keys) = state["access_keys"].as_array_mut() {
        keys.retain(|x| !(delete && x["id"] == key_id));
        for x in keys.iter_mut().filter(|x| x["id"] == key_id) {
            x["status"] = json!("Inactive");
        }
    }
    Some(())
}

/// Replay `rows` (in seq order) onto the snapshot's states. Returns (replayed, not replayed).
fn replay(states: &mut BTreeMap<(String, String), Value>, rows: &[LedgerRow]) -> (usize, usize) {
    let catalog = states
        .get(&(CATALOG_SUBJECT.to_string(), "looker".to_string()))
        .and_then(|c| serde_json::from_value::<Catalog>(c.clone()).ok())
        .unwrap_or_default();
    let (groups, roles) = (reverse(&catalog.groups), reverse(&catalog.roles));
    let (mut done, mut skipped) = (0, 0);
    for r in rows {
        let e = &r.entry;
        let Some(state) = states.get_mut(&(e.subject.clone(), e.target.clone())) else {
            skipped += 1;
            continue;
        };
        if !succeeded(&e.status) {
            skipped += 1;
            continue;
        }
        let parts: Vec<&str> = e.call.path.trim_matches('/').split('/').collect();
        let method = format!("{:?}", e.call.method).to_ascii_uppercase();
        let set_list = |state: &mut Value, key: &str, name: &str, add: bool| -> Option<()> {
            let mut v = strs(&state[key]);
            if add {
                v.insert(name.to_string());
            } else {
                v.remove(name);
            }
            state[key] = json!(v);
            Some(())
        };
        let applied = match (e.target.as_str(), method.as_str(), parts.as_slice()) {
            ("looker", "POST", ["groups", gid, "users"]) => {
                groups.get(gid).and_then(|g| set_list(state, "groups", g, true))
            }
            ("looker", "DELETE", ["groups", gid, "users", _]) => {
                groups.get(gid).and_then(|g| set_list(state, "groups", g, false))
            }
            ("looker", "PATCH", ["users", _]) => {
                match e.call.body.as_ref().and_then(|b| b["is_disabled"].as_bool()) {
                    Some(d) => {
                        state["enabled"] = json!(!d);
                        Some(())
                    }
                    None => None,
                }
            }
            ("looker", "DELETE", ["users", _]) => {
                *state = json!({ "user_id": null });
                Some(())
            }
            ("looker", "PUT", ["users", _, "roles"]) => {
                e.call.body.as_ref().and_then(|b| b.as_array()).map(|ids| {
                    state["roles"] = json!(names_of(ids.iter().filter_map(|i| i.as_str()), &roles));
                })
            }
            ("looker", "PATCH", ["users", _, "attribute_values", aid]) => {
                let name = reverse(&catalog.user_attributes).get(aid).map(|s| s.to_string());
                match (name, e.call.body.as_ref().and_then(|b| b["value"].as_str())) {
                    (Some(n), Some(v)) => {
                        state["attributes"][n] = json!(v);
                        Some(())
                    }
                    _ => None,
                }
            }
            ("aws", _, _) => cloud::AwsIamOp::from_ledger(&e.call).and_then(|(_, op)| {
                use cloud::AwsIamOp as Op;
                match op {
                    Op::AddUserToGroup { group } => set_list(state, "groups", &group, true),
                    Op::RemoveUserFromGroup { group } => set_list(state, "groups", &group, false),
                    Op::TagUser { tags } => {
                        if !state["tags"].is_object() {
                            state["tags"] = json!({});
                        }
                        for (k, v) in tags {
                            state["tags"][k] = json!(v);
                        }
                        Some(())
                    }
                    Op::UntagUser { keys } => {
                        if let Some(held) = state["tags"].as_object_mut() {
                            for k in &keys {
                                held.remove(k);
                            }
                        }
                        Some(())
                    }
                    Op::DeactivateAccessKey { key_id } => access_key(state, &key_id, false),
                    Op::DeleteAccessKey { key_id } => access_key(state, &key_id, true),
                    Op::DeleteLoginProfile => {
                        state["login_profile"] = json!(false);
                        Some(())
                    }
                    _ => None,
                }
            }),
            // A binding of the member the state is about (a change of another member, e.g. a
            // linked one after a rename, is not this state's: listed, not applied).
            ("gcp", _, _) => {
                let change = match cloud::GcpIamOp::from_ledger(&e.call) {
                    Some(cloud::GcpIamOp::AddMember {
                        resource,
                        role,
                        member,
                    }) => Some((resource, role, member, true)),
                    Some(cloud::GcpIamOp::RemoveMember {
                        resource,
                        role,
                        member,
                    }) => Some((resource, role, member, false)),
                    _ => None,
                };
                change
                    .filter(|(_, _, member, _)| {
                        state["member"]
                            .as_str()
                            .is_some_and(|m| m.eq_ignore_ascii_case(member))
                    })
                    .map(|(resource, role, _, add)| {
                        let binding = json!({ "resource": resource, "role": role });
                        let mut held = state["bindings"].as_array().cloned().unwrap_or_default();
                        held.retain(|b| b != &binding);
                        if add {
                            held.push(binding);
                        }
                        state["bindings"] = json!(held);
                    })
            }
            _ => None,
        };
        match applied {
            Some(()) => done += 1,
            None => skipped += 1,
        }
    }
    (done, skipped)
}

/// Build the review (pure). `ledger` holds the rows after `snapshot.run_at` (any superset: the
/// rows outside (snapshot, as_of] are ignored).
pub fn build(
    policy: &Policy,
    identities: &[Identity],
    snapshot: Option<&AccessSnapshot>,
    ledger: &[LedgerRow],
    shape: &CloudShape,
    as_of: DateTime<Utc>,
) -> AccessReport {
    let mut states: BTreeMap<(String, String), Value> = snapshot
        .into_iter()
        .flat_map(|s| &s.rows)
        .map(|r| ((r.subject.clone(), r.target.clone()), r.state.clone()))
        .collect();
    let targets: BTreeSet<String> = states.keys().map(|(_, t)| t.clone()).collect();
    let mut range = LedgerRange::default();
    if let Some(s) = snapshot {
        let mut rows: Vec<LedgerRow> = ledger
            .iter()
            .filter(|r| r.entry.at > s.run_at && r.entry.at <= as_of)
            .cloned()
            .collect();
        rows.sort_by_key(|r| r.seq);
        range.first_seq = rows.first().map(|r| r.seq);
        range.last_seq = rows.last().map(|r| r.seq);
        (range.replayed, range.not_replayed) = replay(&mut states, &rows);
    }
    let mut report = AccessReport {
        as_of,
        snapshot_at: snapshot.map(|s| s.run_at),
        ledger: range,
        people: Vec::new(),
        grants: Vec::new(),
        orphans: Vec::new(),
    };
    for id in identities {
        let d = policy::evaluate(policy, id);
        let dc = cloud::evaluate(policy, id, shape.aws.as_ref(), shape.gcp, as_of);
        let status = status_name(id);
        let mut idp_groups: Vec<String> = id.group_names().map(str::to_string).collect();
        idp_groups.sort();
        report.people.push(Person {
            subject: id.key.clone(),
            email: d.email.clone(),
            idp_status: status.clone(),
            idp_groups,
        });
        let mut push = |target: &str,
                        kind: &str,
                        name: &str,
                        value: Option<String>,
                        rule: Option<String>,
                        wanted: bool,
                        had: Option<bool>| {
            report.grants.push(Grant {
                subject: id.key.clone(),
                email: d.email.clone(),
                idp_status: status.clone(),
                target: target.into(),
                kind: kind.into(),
                name: name.into(),
                value,
                rule,
                wanted,
                had,
                drift: drift(wanted, had),
            });
        };
        let get = |t: &str| {
            targets.contains(t).then(|| {
                states
                    .get(&(id.key.clone(), t.to_string()))
                    .cloned()
                    .unwrap_or(json!({}))
            })
        };
        let gone = id.status.is_offboarded();
        // Looker.
        if d.email.is_some() {
            let st = get("looker");
            let user = st
                .as_ref()
                .and_then(|s| s["user_id"].as_str().map(str::to_string));
            let enabled = st
                .as_ref()
                .map(|s| user.is_some() && s["enabled"].as_bool().unwrap_or(false));
            let wants_account = matches!(d.presence, Presence::Active { .. });
            push(
                "looker",
                "account",
                "enabled",
                user.clone(),
                None,
                wants_account,
                enabled,
            );
            let held_groups = st.as_ref().map(|s| strs(&s["groups"]));
            for g in &d.managed_groups {
                let rule = d.groups.get(g).map(|r| r.to_string());
                let had = held_groups.as_ref().map(|h| h.contains(g));
                if rule.is_some() || had == Some(true) {
                    push("looker", "group", g, None, rule.clone(), rule.is_some(), had);
                }
            }
            let held_roles = st
                .as_ref()
                .and_then(|s| s["roles"].is_array().then(|| strs(&s["roles"])));
            for r in &d.managed_roles {
                let rule = d.roles.get(r).map(|r| r.to_string());
                let had = match (&st, &held_roles) {
                    (None, _) => None,
                    (Some(_), Some(h)) => Some(h.contains(r)),
                    (Some(_), None) => Some(false),
                };
                if rule.is_some() || had == Some(true) {
                    push("looker", "role", r, None, rule.clone(), rule.is_some(), had);
                }
            }
            for a in &d.managed_attributes {
                let want = d.attributes.get(a);
                let held = st
                    .as_ref()
                    .map(|s| s["attributes"][a].as_str().map(str::to_string));
                let value = want.map(|(v, _)| v.clone()).or_else(|| held.clone().flatten());
                let had = held
                    .as_ref()
                    .map(|h| h.is_some() && h.as_deref() == want.map(|(v, _)| v.as_str()));
                let had = match (want, &held) {
                    (None, Some(Some(_))) => Some(true),
                    _ => had,
                };
                if want.is_some() || had == Some(true) {
                    push(
                        "looker",
                        "attribute",
                        a,
                        value,
                        want.map(|(_, r)| r.to_string()),
                        want.is_some(),
                        had,
                    );
                }
            }
            if gone
                && user.is_some()
                && (enabled == Some(true) || held_groups.as_ref().is_some_and(|g| !g.is_empty()))
            {
                let s = st.clone().unwrap_or_default();
                report.orphans.push(OrphanRow {
                    target: "looker".into(),
                    account: user.clone().unwrap_or_default(),
                    email: d.email.clone(),
                    enabled: enabled == Some(true),
                    grants: strs(&s["groups"])
                        .into_iter()
                        .map(|g| format!("group:{g}"))
                        .collect(),
                    reason: format!("idp status {status}"),
                    subject: Some(id.key.clone()),
                });
            }
        }
        // AWS.
        if let Some(a) = &dc.aws {
            let st = get("aws");
            let user = st.as_ref().and_then(|s| s["user"].as_str().map(str::to_string));
            push(
                "aws",
                "account",
                "user",
                user.clone(),
                None,
                !a.offboarded,
                st.as_ref().map(|_| user.is_some()),
            );
            let held = st.as_ref().map(|s| strs(&s["groups"]));
            for g in &a.managed_groups {
                let rule = a.groups.get(g).map(|r| r.to_string());
                let had = held.as_ref().map(|h| h.contains(g));
                if rule.is_some() || had == Some(true) {
                    push("aws", "iam_group", g, None, rule.clone(), rule.is_some(), had);
                }
            }
            for k in &a.managed_tags {
                let want = a.tags.get(k);
                let held = st.as_ref().map(|s| s["tags"][k].as_str().map(str::to_string));
                let had = held
                    .as_ref()
                    .map(|h| h.is_some() && h.as_deref() == want.map(|(v, _)| v.as_str()));
                // A managed tag nothing wants is held whatever its value (as for attributes).
                let had = match (want, &held) {
                    (None, Some(Some(_))) => Some(true),
                    _ => had,
                };
                if want.is_some() || matches!(held, Some(Some(_))) {
                    let value = want.map(|(v, _)| v.clone()).or_else(|| held.clone().flatten());
                    push(
                        "aws",
                        "tag",
                        k,
                        value,
                        want.map(|(_, r)| r.to_string()),
                        want.is_some(),
                        had,
                    );
                }
            }
            for key in st
                .as_ref()
                .and_then(|s| s["access_keys"].as_array().cloned())
                .into_iter()
                .flatten()
            {
                let status = key["status"].as_str().unwrap_or_default().to_string();
                push(
                    "aws",
                    "access_key",
                    key["id"].as_str().unwrap_or_default(),
                    Some(status.clone()),
                    None,
                    !a.offboarded,
                    Some(status == "Active"),
                );
            }
            let groups = held.unwrap_or_default();
            if gone && user.is_some() && !groups.is_empty() {
                report.orphans.push(OrphanRow {
                    target: "aws".into(),
                    account: user.unwrap_or_default(),
                    email: d.email.clone(),
                    enabled: true,
                    grants: groups.into_iter().map(|g| format!("iam_group:{g}")).collect(),
                    reason: format!("idp status {status}"),
                    subject: Some(id.key.clone()),
                });
            }
        }
        // GCP.
        if let Some(g) = &dc.gcp {
            let st = get("gcp");
            let held: Option<BTreeSet<(String, String)>> = st.as_ref().map(|s| {
                s["bindings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        (
                            b["resource"].as_str().unwrap_or_default().to_string(),
                            b["role"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            });
            for grant in &g.managed {
                let rule = g.bindings.get(grant).map(|r| r.to_string());
                let had = held
                    .as_ref()
                    .map(|h| h.contains(&(grant.resource.clone(), grant.role.clone())));
                if rule.is_some() || had == Some(true) {
                    let name = format!("{} {}", grant.resource, grant.role);
                    push(
                        "gcp",
                        "binding",
                        &name,
                        Some(g.member.clone()),
                        rule.clone(),
                        rule.is_some(),
                        had,
                    );
                }
            }
            let held = held.unwrap_or_default();
            if gone && !held.is_empty() {
                report.orphans.push(OrphanRow {
                    target: "gcp".into(),
                    account: g.member.clone(),
                    email: d.email.clone(),
                    enabled: true,
                    grants: held
                        .iter()
                        .map(|(r, role)| format!("binding:{r} {role}"))
                        .collect(),
                    reason: format!("idp status {status}"),
                    subject: Some(id.key.clone()),
                });
            }
        }
    }
    // Orphans recorded with the snapshot (after the ledger's replay: a disabled one is gone).
    for ((subject, target), st) in &states {
        let Some((t, account)) = parse_orphan_subject(subject) else {
            continue;
        };
        // Looker: as read or replayed (a deleted user has no id); IAM users and GCP members
        // have no disabled state: present means enabled.
        let enabled = t != "looker" || (st["enabled"].as_bool().unwrap_or(true) && !st["user_id"].is_null());
        let mut grants: Vec<String> = Vec::new();
        match t {
            "looker" => {
                grants.extend(strs(&st["groups"]).into_iter().map(|g| format!("group:{g}")));
                grants.extend(strs(&st["roles"]).into_iter().map(|r| format!("role:{r}")));
            }
            "aws" => grants.extend(strs(&st["groups"]).into_iter().map(|g| format!("iam_group:{g}"))),
            _ => grants.extend(st["bindings"].as_array().into_iter().flatten().map(|b| {
                format!(
                    "binding:{} {}",
                    b["resource"].as_str().unwrap_or_default(),
                    b["role"].as_str().unwrap_or_default()
                )
            })),
        }
        if !enabled && t == "looker" {
            continue;
        }
        report.orphans.push(OrphanRow {
            target: target.clone(),
            account: account.to_string(),
            email: st["email"].as_str().map(str::to_string),
            enabled,
            grants,
            reason: "matches nobody in the directory".into(),
            subject: None,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_domain::cloud::{AwsUserMapping, Binding, IamPolicy};
    use gatehouse_domain::envelope::EnvelopeId;
    use gatehouse_domain::identity::{Membership, Stamp, Stamped, Status};
    use gatehouse_domain::looker::HttpCall;
    use gatehouse_domain::ports::LedgerEntry;
    use std::sync::Arc;

    const POLICY: &str = r#"
        [[rule]]
        name = "fin"
        when = { idp_group = "Finance" }
        aws_groups = ["fin"]
        gcp_bindings = [{ resource = "projects/p1", role = "roles/viewer" }]
    "#;

    fn person(key: &str, email: &str, status: Status, groups: &[&str]) -> Identity {
        let stamp = Stamp {
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            id: EnvelopeId("e".into()),
        };
        let mut id = Identity::new(key);
        id.status = status;
        id.profile.insert(
            "email".into(),
            Stamped {
                value: email.into(),
                stamp: stamp.clone(),
                source: None,
            },
        );
        for g in groups {
            id.groups.insert(
                (*g).into(),
                Membership {
                    name: (*g).into(),
                    member: true,
                    stamp: stamp.clone(),
                    source: None,
                },
            );
        }
        id
    }

    /// ann (active) and bob (deactivated), both in the IdP group Finance.
    fn ann_and_bob() -> [Identity; 2] {
        [
            person("ann", "ann@x.com", Status::Active, &["Finance"]),
            person("bob", "bob@x.com", Status::Deactivated, &["Finance"]),
        ]
    }

    /// IAM users named by the email's local part; GCP configured.
    fn iam_user_by_local_part() -> CloudShape {
        CloudShape {
            aws: Some(AwsUserMapping::Template {
                template: "{local}".into(),
            }),
            gcp: true,
        }
    }

    fn binding(role: &str, members: &[&str]) -> Binding {
        Binding {
            role: role.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            condition: None,
            other: Default::default(),
        }
    }

    /// AWS and GCP: the person's grants with their drift, a member of a managed group or a
    /// managed binding that matches nobody is an orphan, a service account bound to a managed
    /// role is not, and a gone person still granted is listed.
    #[test]
    fn cloud_grants_drift_and_orphans() {
        let policy = Policy::from_toml(POLICY).unwrap();
        let (people, shape) = (ann_and_bob(), iam_user_by_local_part());
        let snap = Snapshot {
            aws_users: Some(["ann", "bob", "mallory"].map(Arc::from).into()),
            aws_groups: [(
                "fin".to_string(),
                ["bob", "mallory"].map(Arc::from).into_iter().collect(),
            )]
            .into(),
            gcp: Some(
                [(
                    "projects/p1".to_string(),
                    IamPolicy {
                        bindings: vec![
                            binding(
                                "roles/viewer",
                                &[
                                    "user:ann@x.com",
                                    "user:zed@x.com",
                                    "serviceAccount:ci@p1.iam.gserviceaccount.com",
                                ],
                            ),
                            binding("roles/owner", &["user:eve@x.com"]),
                        ],
                        ..Default::default()
                    },
                )]
                .into(),
            ),
            ..Default::default()
        };
        let now = gatehouse_domain::clock::now();
        let seen = observe(&policy, &people, &snap, &shape, now);
        let orphans: Vec<(&str, &str)> = seen
            .orphans
            .iter()
            .map(|o| (o.target.as_str(), o.account.as_str()))
            .collect();
        assert_eq!(
            orphans,
            [("aws", "mallory"), ("gcp", "user:zed@x.com")],
            "only managed grants of nobody"
        );
        let snapshot = AccessSnapshot {
            run_at: now,
            rows: seen.rows,
        };
        let r = build(&policy, &people, Some(&snapshot), &[], &shape, now);
        let g = |subject: &str, kind: &str| {
            r.grants
                .iter()
                .find(|g| g.subject == subject && g.kind == kind)
                .unwrap_or_else(|| panic!("no {kind} of {subject}: {:#?}", r.grants))
        };
        assert_eq!(
            (
                g("ann", "iam_group").drift.as_str(),
                g("ann", "iam_group").rule.as_deref()
            ),
            ("wanted-not-had", Some("fin"))
        );
        assert_eq!(g("ann", "binding").drift, "none");
        assert_eq!(g("bob", "iam_group").drift, "had-not-wanted");
        let listed: Vec<(&str, &str)> = r
            .orphans
            .iter()
            .map(|o| (o.account.as_str(), o.reason.as_str()))
            .collect();
        assert!(listed.contains(&("bob", "idp status deactivated")), "{listed:?}");
        assert!(
            listed.contains(&("mallory", "matches nobody in the directory")),
            "{listed:?}"
        );
        assert!(
            listed.contains(&("user:zed@x.com", "matches nobody in the directory")),
            "{listed:?}"
        );
    }

    fn row(
        seq: i64,
        at: DateTime<Utc>,
        subject: &str,
        target: &str,
        call: HttpCall,
        status: &str,
    ) -> LedgerRow {
        LedgerRow {
            seq,
            entry: LedgerEntry {
                at,
                envelope_id: format!("e{seq}"),
                subject: subject.into(),
                event: "user.deactivated".into(),
                rule: "fin".into(),
                target: target.into(),
                call,
                status: status.into(),
                policy_digest: None,
                actor: Some("reconcile".into()),
            },
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// `--as-of` after the snapshot: the AWS group, tag and access-key writes and the GCP
    /// binding changes of the ledger (as the targets record them) are replayed onto it, a
    /// failed write and a change the review does not show are counted, not applied, and a row
    /// after `as_of` is ignored.
    #[test]
    fn as_of_replays_aws_and_gcp_writes_onto_the_snapshot() {
        use gatehouse_domain::cloud::{AwsAccessKey, AwsIamOp, GcpIamOp};
        let policy = Policy::from_toml(
            r#"
            [[rule]]
            name = "fin"
            when = { idp_group = "Finance" }
            aws_groups = ["fin"]
            aws_tags = { cost = "finance" }
            gcp_bindings = [{ resource = "projects/p1/datasets/d1", role = "roles/bigquery.dataViewer" }]
            [[rule]]
            name = "eng"
            when = { idp_group = "Engineering" }
            aws_tags = { team = "eng" }
            "#,
        )
        .unwrap();
        let (people, shape) = (ann_and_bob(), iam_user_by_local_part());
        let key = |id: &str| AwsAccessKey {
            id: id.into(),
            active: true,
        };
        let snap = Snapshot {
            aws_users: Some(["ann", "bob"].map(Arc::from).into()),
            aws_groups: [("fin".to_string(), [Arc::from("bob")].into_iter().collect())].into(),
            // ann still carries a managed tag from a team she left.
            aws_tags: [(
                "ann".to_string(),
                [("team".to_string(), "eng".to_string())].into(),
            )]
            .into(),
            aws_credentials: [("bob".to_string(), (vec![key("AKIABOB1"), key("AKIABOB2")], true))].into(),
            gcp: Some(
                [(
                    "projects/p1/datasets/d1".to_string(),
                    IamPolicy {
                        bindings: vec![binding("roles/bigquery.dataViewer", &["user:bob@x.com"])],
                        ..Default::default()
                    },
                )]
                .into(),
            ),
            ..Default::default()
        };
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let snapshot = AccessSnapshot {
            run_at: t0,
            rows: observe(&policy, &people, &snap, &shape, t0).rows,
        };
        let dataset = "projects/p1/datasets/d1".to_string();
        let viewer = "roles/bigquery.dataViewer".to_string();
        let gcp = |add: bool, member: &str| {
            let (resource, role, member) = (dataset.clone(), viewer.clone(), member.to_string());
            if add {
                GcpIamOp::AddMember {
                    resource,
                    role,
                    member,
                }
                .http()
            } else {
                GcpIamOp::RemoveMember {
                    resource,
                    role,
                    member,
                }
                .http()
            }
        };
        let ledger = vec![
            row(
                1,
                at(1),
                "ann",
                "aws",
                AwsIamOp::AddUserToGroup { group: "fin".into() }.http("ann"),
                "200",
            ),
            row(
                2,
                at(2),
                "ann",
                "aws",
                AwsIamOp::TagUser {
                    tags: [("cost".to_string(), "finance".to_string())].into(),
                }
                .http("ann"),
                "200",
            ),
            row(3, at(3), "ann", "gcp", gcp(true, "user:ann@x.com"), "200"),
            row(
                4,
                at(4),
                "bob",
                "aws",
                AwsIamOp::RemoveUserFromGroup { group: "fin".into() }.http("bob"),
                "200",
            ),
            row(
                5,
                at(5),
                "ann",
                "aws",
                AwsIamOp::UntagUser {
                    keys: vec!["team".into()],
                }
                .http("ann"),
                "200",
            ),
            row(
                6,
                at(6),
                "bob",
                "aws",
                AwsIamOp::DeactivateAccessKey {
                    key_id: "AKIABOB1".into(),
                }
                .http("bob"),
                "200",
            ),
            row(
                7,
                at(7),
                "bob",
                "aws",
                AwsIamOp::DeleteAccessKey {
                    key_id: "AKIABOB2".into(),
                }
                .http("bob"),
                "200",
            ),
            row(8, at(8), "bob", "gcp", gcp(false, "user:bob@x.com"), "200"),
            // Not applied: a failed write, a Google group membership, another member's binding.
            row(9, at(9), "bob", "gcp", gcp(true, "user:bob@x.com"), "429"),
            row(
                10,
                at(10),
                "ann",
                "gcp",
                GcpIamOp::AddGroupMember {
                    group: "fin@x.com".into(),
                    group_name: Some("groups/1".into()),
                    member: "ann@x.com".into(),
                }
                .http(),
                "200",
            ),
            row(11, at(11), "ann", "gcp", gcp(false, "user:ann.old@x.com"), "200"),
            // After `as_of`.
            row(
                12,
                at(100),
                "ann",
                "aws",
                AwsIamOp::RemoveUserFromGroup { group: "fin".into() }.http("ann"),
                "200",
            ),
        ];
        let grant = |r: &AccessReport, subject: &str, kind: &str, name: &str| {
            r.grants
                .iter()
                .find(|g| g.subject == subject && g.kind == kind && g.name.starts_with(name))
                .map(|g| (g.had, g.drift.clone()))
        };
        // (kind, name) of ann's grants and of bob's (offboarded: tags are left as they are, so
        // not listed; groups and bindings are taken away).
        let anns = [
            ("iam_group", "fin"),
            ("tag", "cost"),
            ("binding", "projects/p1/datasets/d1"),
        ];
        let bobs = [("iam_group", "fin"), ("binding", "projects/p1/datasets/d1")];

        // At the snapshot: ann has nothing yet, bob (gone) still holds all of it.
        let before = build(&policy, &people, Some(&snapshot), &ledger, &shape, t0);
        assert_eq!((before.ledger.replayed, before.ledger.not_replayed), (0, 0));
        for (kind, name) in anns {
            assert_eq!(
                grant(&before, "ann", kind, name),
                Some((Some(false), "wanted-not-had".to_string())),
                "{kind} {name}"
            );
        }
        for (kind, name) in bobs {
            assert_eq!(
                grant(&before, "bob", kind, name),
                Some((Some(true), "had-not-wanted".to_string())),
                "{kind} {name}"
            );
        }
        assert_eq!(
            grant(&before, "ann", "tag", "team"),
            Some((Some(true), "had-not-wanted".to_string())),
            "a managed tag nothing wants is held"
        );
        let gone: Vec<&str> = before.orphans.iter().map(|o| o.target.as_str()).collect();
        assert_eq!(gone, ["aws", "gcp"], "bob's AWS user and GCP member are listed");

        // After the ledger: ann has what she is granted, bob has nothing left.
        let after = build(&policy, &people, Some(&snapshot), &ledger, &shape, at(50));
        assert_eq!(
            (after.ledger.first_seq, after.ledger.last_seq),
            (Some(1), Some(11))
        );
        assert_eq!((after.ledger.replayed, after.ledger.not_replayed), (8, 3));
        for (kind, name) in anns {
            assert_eq!(
                grant(&after, "ann", kind, name),
                Some((Some(true), "none".to_string())),
                "{kind} {name}"
            );
        }
        assert_eq!(grant(&after, "ann", "tag", "team"), None, "untagged");
        for (kind, name) in bobs {
            assert_eq!(grant(&after, "bob", kind, name), None, "bob's {kind} is gone");
        }
        let keys: Vec<(&str, Option<&str>)> = after
            .grants
            .iter()
            .filter(|g| g.kind == "access_key")
            .map(|g| (g.name.as_str(), g.value.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [("AKIABOB1", Some("Inactive"))],
            "one key deactivated, one deleted"
        );
        assert!(after.orphans.is_empty(), "{:#?}", after.orphans);
    }
}
