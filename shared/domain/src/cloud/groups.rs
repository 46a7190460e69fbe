//! Google groups as GCP grants (issue 20): a rule's `gcp_groups` make the person a MEMBER of
//! those Google groups through the Cloud Identity Groups API, and the resources bind
//! `group:EMAIL` once instead of `user:EMAIL` per person. Pure: what is held, the diff, and the
//! exact calls (`groups.memberships.create` / `.delete`) the ledger and `gatehouse plan` show.
//!
//! Only managed groups (named by a rule) are ever joined or left; other groups and other
//! members are never touched. A membership held under an earlier email of the person is
//! removed (issue 16: the membership follows the email).

use super::{DesiredGcp, GcpIamOp, GcpStep, rules};
use crate::looker::{HttpCall, Method};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::gcp::is_group_email;

/// A managed Google group as read: its resource name (`groups/ID`, from `groups:lookup`) and
/// the memberships found, member email (lowercased) → membership resource name
/// (`groups/ID/memberships/ID`). An event reads only the person's emails; reconcile lists all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupHeld {
    pub name: String,
    pub memberships: BTreeMap<String, String>,
}

/// The membership changes for one person. `held`: group email → what was read; `None` when
/// nothing was read (offline plan: every call that may apply is listed). A managed group
/// missing from `held` does not exist: skipped with a note, never guessed at.
pub fn diff_gcp_groups(
    desired: &DesiredGcp,
    held: Option<&BTreeMap<String, GroupHeld>>,
) -> (Vec<GcpStep>, Vec<String>) {
    let email = desired
        .member
        .strip_prefix("user:")
        .unwrap_or(&desired.member)
        .to_ascii_lowercase();
    let leave_rule = || {
        if desired.offboarded {
            rules::GCP_REMOVE_GROUP_MEMBERSHIPS.to_string()
        } else {
            crate::policy::rules::UNMANAGED.to_string()
        }
    };
    let mut steps = Vec::new();
    let mut notes = BTreeSet::new();
    for group in &desired.managed_groups {
        let want = desired.groups.get(group);
        let Some(held) = held else {
            notes.insert("google groups not read, so this lists every call that may apply".to_string());
            let (op, rule) = match want {
                Some(rule) => (
                    GcpIamOp::AddGroupMember {
                        group: group.clone(),
                        group_name: None,
                        member: email.clone(),
                    },
                    rule.clone(),
                ),
                None => (
                    GcpIamOp::RemoveGroupMember {
                        group: group.clone(),
                        membership: None,
                        member: email.clone(),
                    },
                    leave_rule(),
                ),
            };
            steps.push(GcpStep { op, rule });
            continue;
        };
        let Some(h) = held.get(group) else {
            notes.insert(format!("google group {group} was not found; skipped"));
            continue;
        };
        match (want, h.memberships.get(&email)) {
            (Some(rule), None) => steps.push(GcpStep {
                op: GcpIamOp::AddGroupMember {
                    group: group.clone(),
                    group_name: Some(h.name.clone()),
                    member: email.clone(),
                },
                rule: rule.clone(),
            }),
            (None, Some(m)) => steps.push(GcpStep {
                op: GcpIamOp::RemoveGroupMember {
                    group: group.clone(),
                    membership: Some(m.clone()),
                    member: email.clone(),
                },
                rule: leave_rule(),
            }),
            _ => {}
        }
        for old in desired.previous_emails.iter().filter(|p| **p != email) {
            if let Some(m) = h.memberships.get(old) {
                steps.push(GcpStep {
                    op: GcpIamOp::RemoveGroupMember {
                        group: group.clone(),
                        membership: Some(m.clone()),
                        member: old.clone(),
                    },
                    rule: rules::GCP_PREVIOUS_EMAIL.into(),
                });
            }
        }
    }
    (steps, notes.into_iter().collect())
}

/// The exact Cloud Identity call of a membership op (path below `https://cloudidentity.googleapis.com`).
/// Names not yet looked up (offline plan) are shown as `{group email}` / `{member email}`.
pub(super) fn http(op: &GcpIamOp) -> HttpCall {
    match op {
        GcpIamOp::AddGroupMember {
            group,
            group_name,
            member,
        } => HttpCall {
            method: Method::Post,
            path: format!(
                "/v1/{}/memberships",
                group_name
                    .clone()
                    .unwrap_or_else(|| format!("groups/{{{group}}}"))
            ),
            body: Some(membership_body(member)),
        },
        GcpIamOp::RemoveGroupMember {
            group,
            membership,
            member,
        } => HttpCall {
            method: Method::Delete,
            path: format!(
                "/v1/{}",
                membership
                    .clone()
                    .unwrap_or_else(|| format!("groups/{{{group}}}/memberships/{{{member}}}"))
            ),
            body: None,
        },
        GcpIamOp::AddMember { .. } | GcpIamOp::RemoveMember { .. } => HttpCall {
            method: Method::Post,
            path: String::new(),
            body: None,
        },
    }
}

/// The `Membership` a create sends: the member by email, role MEMBER.
pub fn membership_body(member: &str) -> serde_json::Value {
    serde_json::json!({
        "preferredMemberKey": { "id": member },
        "roles": [{ "name": "MEMBER" }],
    })
}

/// One line for `gatehouse plan`.
pub(super) fn render(op: &GcpIamOp) -> String {
    match op {
        GcpIamOp::AddGroupMember { group, member, .. } => {
            format!("gcp google group {group}: add {member} as MEMBER (memberships.create)")
        }
        GcpIamOp::RemoveGroupMember { group, member, .. } => {
            format!("gcp google group {group}: remove {member} (memberships.delete)")
        }
        GcpIamOp::AddMember { .. } | GcpIamOp::RemoveMember { .. } => op.render(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(groups: &[&str], managed: &[&str], offboarded: bool, previous: &[&str]) -> DesiredGcp {
        DesiredGcp {
            member: "user:pat@x.io".into(),
            offboarded,
            bindings: BTreeMap::new(),
            managed: BTreeSet::new(),
            former_members: Vec::new(),
            groups: groups
                .iter()
                .map(|g| (g.to_string(), "analysts".to_string()))
                .collect(),
            managed_groups: managed.iter().map(|g| g.to_string()).collect(),
            previous_emails: previous.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn held(members: &[(&str, &str)]) -> GroupHeld {
        GroupHeld {
            name: "groups/g1".into(),
            memberships: members
                .iter()
                .map(|(e, m)| (e.to_string(), m.to_string()))
                .collect(),
        }
    }

    #[test]
    fn group_emails_are_checked() {
        assert!(is_group_email("data-analysts@example.com"));
        for bad in [
            "",
            "x",
            "a@b",
            "a@@b.c",
            "a b@c.d",
            "groups/1@x.io",
            "a@b.c/d",
            "@b.c",
        ] {
            assert!(!is_group_email(bad), "{bad}");
        }
    }

    #[test]
    fn joins_leaves_and_follows_an_email_change() {
        let g = "da@x.io";
        let read = |h: GroupHeld| BTreeMap::from([(g.to_string(), h)]);
        // Join: the group's looked-up name is in the call.
        let (s, _) = diff_gcp_groups(&desired(&[g], &[g], false, &[]), Some(&read(held(&[]))));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].op.http().path, "/v1/groups/g1/memberships");
        assert_eq!(
            s[0].op.http().body.unwrap()["preferredMemberKey"]["id"],
            "pat@x.io"
        );
        // Held and wanted: nothing.
        let h = held(&[("pat@x.io", "groups/g1/memberships/m1")]);
        assert!(
            diff_gcp_groups(&desired(&[g], &[g], false, &[]), Some(&read(h.clone())))
                .0
                .is_empty()
        );
        // Offboarded: the membership read is deleted by name.
        let (s, _) = diff_gcp_groups(&desired(&[], &[g], true, &[]), Some(&read(h)));
        assert_eq!(s[0].rule, rules::GCP_REMOVE_GROUP_MEMBERSHIPS);
        assert_eq!(s[0].op.http().method, Method::Delete);
        assert_eq!(s[0].op.http().path, "/v1/groups/g1/memberships/m1");
        // Email changed: the old membership goes, the new one comes.
        let h = held(&[("old@x.io", "groups/g1/memberships/m0")]);
        let (s, _) = diff_gcp_groups(&desired(&[g], &[g], false, &["old@x.io"]), Some(&read(h)));
        let ops: Vec<_> = s.iter().map(|s| (s.op.is_revoking(), s.op.principal())).collect();
        assert_eq!(
            ops,
            vec![(false, "user:pat@x.io".into()), (true, "user:old@x.io".into())]
        );
        // A group that does not exist is skipped with a note.
        let (s, n) = diff_gcp_groups(&desired(&[g], &[g], false, &[]), Some(&BTreeMap::new()));
        assert!(s.is_empty());
        assert!(n[0].contains("not found"), "{n:?}");
        // Offline: every call that may apply.
        let (s, _) = diff_gcp_groups(&desired(&[g], &[g, "other@x.io"], false, &[]), None);
        assert_eq!(s.len(), 2);
    }
}

#[cfg(test)]
mod policy_tests {
    use crate::cloud::evaluate;
    use crate::identity::Identity;
    use crate::policy::Policy;

    fn policy(extra: &str) -> Policy {
        Policy::from_toml(&format!(
            r#"
            {extra}
            [[rule]]
            name = "analysts"
            when = "everyone"
            gcp_groups = ["Data-Analysts@example.com"]
            "#
        ))
        .unwrap()
    }

    fn person(email: &str, previous: &[&str]) -> Identity {
        let mut id = Identity::new("k");
        id.profile.insert(
            "email".into(),
            crate::identity::Stamped {
                value: email.into(),
                stamp: crate::identity::Stamp {
                    at: crate::clock::now(),
                    id: crate::envelope::EnvelopeId("e1".into()),
                },
                source: None,
            },
        );
        id.previous_emails = previous.iter().map(|p| p.to_string()).collect();
        id
    }

    #[test]
    fn a_rule_grants_group_membership_and_the_offboarding_switch_parses() {
        let p = policy("");
        let d = evaluate(
            &p,
            &person("Pat@X.io", &["old@x.io"]),
            None,
            true,
            crate::clock::now(),
        )
        .gcp
        .unwrap();
        assert_eq!(d.groups.keys().collect::<Vec<_>>(), ["data-analysts@example.com"]);
        assert_eq!(d.managed_groups.len(), 1);
        assert_eq!(d.previous_emails, ["old@x.io"]);
        assert!(d.managed.is_empty(), "no per-user binding");
        // Not a GCP target: nothing.
        assert!(
            evaluate(&p, &person("pat@x.io", &[]), None, false, crate::clock::now())
                .gcp
                .is_none()
        );
        let kept = policy("[gcp.offboarding]\nremove_group_memberships = false");
        assert!(!kept.gcp.offboarding.remove_group_memberships);
    }

    #[test]
    fn a_policy_without_groups_serializes_as_before() {
        let p = Policy::from_toml(
            r#"
            [[rule]]
            name = "v"
            when = "everyone"
            gcp_bindings = [{ resource = "projects/p1", role = "roles/viewer" }]
            "#,
        )
        .unwrap();
        let d = evaluate(
            &p,
            &person("pat@x.io", &["old@x.io"]),
            None,
            true,
            crate::clock::now(),
        )
        .gcp
        .unwrap();
        let json = serde_json::to_value(&d).unwrap();
        assert!(
            json.get("groups").is_none() && json.get("managed_groups").is_none(),
            "{json}"
        );
        assert!(json.get("previous_emails").is_none(), "{json}");
    }

    #[test]
    fn a_bad_group_is_refused_naming_the_rule() {
        let e = Policy::from_toml(
            r#"
            [[rule]]
            name = "analysts"
            when = "everyone"
            gcp_groups = ["groups/123"]
            "#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("analysts") && e.to_string().contains("groups/123"),
            "{e}"
        );
    }
}
