//! Directory change → envelopes for the outbox. Pure.
//!
//! - User create → `UserCreated` (or `UserDeactivated` when created inactive) with the profile.
//! - User replace/patch → `UserDeactivated` / `UserActivated` when `active` flips, else
//!   `ProfileUpdated` when the profile changed, else nothing.
//! - User delete → `UserDeleted`.
//! - Group membership change → one `GroupMemberAdded`/`GroupMemberRemoved` per affected member;
//!   a rename → `GroupMemberAdded` with the new name for every member; a group delete →
//!   `GroupMemberRemoved` for every member.

use super::schema::ENTERPRISE_SCHEMA;
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// `active` as stored (absent means active).
pub fn is_active(user: &Value) -> bool {
    user.get("active").and_then(Value::as_bool).unwrap_or(true)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// The Looker email: the primary email, else the work email, else the first, else userName.
pub fn email(user: &Value) -> Option<String> {
    let emails: Vec<&Value> = user
        .get("emails")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|e| str_at(e, &["value"]).is_some()).collect())
        .unwrap_or_default();
    emails
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .or_else(|| {
            emails
                .iter()
                .find(|e| str_at(e, &["type"]).is_some_and(|t| t.eq_ignore_ascii_case("work")))
        })
        .or_else(|| emails.first())
        .and_then(|e| str_at(e, &["value"]))
        .or_else(|| str_at(user, &["userName"]))
        .map(str::to_string)
}

/// IdP profile attributes a policy can use (keys of `Envelope::profile`).
pub fn profile(user: &Value) -> Profile {
    let mut p = Profile::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            p.insert(k.to_string(), v.to_string());
        }
    };
    put("email", email(user).as_deref());
    put("login", str_at(user, &["userName"]));
    put("firstName", str_at(user, &["name", "givenName"]));
    put("lastName", str_at(user, &["name", "familyName"]));
    put("displayName", str_at(user, &["displayName"]));
    for k in [
        "externalId",
        "nickName",
        "title",
        "userType",
        "locale",
        "preferredLanguage",
        "timezone",
    ] {
        put(k, str_at(user, &[k]));
    }
    for k in [
        "employeeNumber",
        "costCenter",
        "organization",
        "division",
        "department",
    ] {
        put(k, str_at(user, &[ENTERPRISE_SCHEMA, k]));
    }
    put("manager", str_at(user, &[ENTERPRISE_SCHEMA, "manager", "value"]));
    p
}

fn subject(user_id: &str, user: &Value) -> Subject {
    Subject {
        key: format!("scim:{user_id}"),
        email: email(user),
        display_name: str_at(user, &["displayName"]).map(str::to_string),
    }
}

fn envelope(
    at: DateTime<Utc>,
    subject: Subject,
    event: IdentityEvent,
    profile: Profile,
    source_event_type: &str,
    raw: Value,
) -> Envelope {
    Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        // Made by Gatehouse, never by the client: `scim:<uuid>` (see `EnvelopeId`). A version 7
        // UUID (time first): each new id lands after the others in the unique indexes it is
        // written to (the outbox, the queue, the processed envelopes), one page for a whole
        // group commit rather than a page of its own each, as a random one does (issue 13).
        id: EnvelopeId(format!("scim:{}", uuid::Uuid::now_v7())),
        source: Source::Scim,
        subject,
        occurred_at: at,
        received_at: gatehouse_domain::clock::now(),
        event,
        profile,
        source_event_type: source_event_type.to_string(),
        raw,
    }
}

/// What a user write means for Looker. `old`/`new` are the stored resources (None = absent).
pub fn user_change(
    at: DateTime<Utc>,
    user_id: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    source_event_type: &str,
) -> Option<Envelope> {
    let (event, user) = match (old, new) {
        (None, Some(new)) if is_active(new) => (IdentityEvent::UserCreated, new),
        (None, Some(new)) => (IdentityEvent::UserDeactivated, new),
        (Some(old), None) => (IdentityEvent::UserDeleted, old),
        (Some(old), Some(new)) => match (is_active(old), is_active(new)) {
            (true, false) => (IdentityEvent::UserDeactivated, new),
            (false, true) => (IdentityEvent::UserActivated, new),
            _ if profile(old) != profile(new) => (IdentityEvent::ProfileUpdated, new),
            _ => return None,
        },
        (None, None) => return None,
    };
    let mut raw = user.clone();
    if let Some(o) = raw.as_object_mut() {
        o.insert("id".into(), Value::String(user_id.to_string()));
    }
    Some(envelope(
        at,
        subject(user_id, user),
        event,
        profile(user),
        source_event_type,
        raw,
    ))
}

/// The ids of a group's members, as stored.
pub fn member_ids(group: &Value) -> BTreeSet<String> {
    group
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("value").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

pub fn display_name(group: &Value) -> String {
    str_at(group, &["displayName"]).unwrap_or_default().to_string()
}

/// What a group write means for Looker: one envelope per affected member. `user` looks a member
/// up (id → stored user); members that are not known users make no envelope.
pub fn group_change(
    at: DateTime<Utc>,
    group_id: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    source_event_type: &str,
    user: &dyn Fn(&str) -> Option<Value>,
) -> Vec<Envelope> {
    let before = old.map(member_ids).unwrap_or_default();
    let after = new.map(member_ids).unwrap_or_default();
    let old_name = old.map(display_name);
    let new_name = new.map(display_name);
    let renamed = old_name.is_some() && new_name.is_some() && old_name != new_name;
    let mut out = Vec::new();
    let mut emit = |member: &str, added: bool, name: &str| {
        let Some(u) = user(member) else { return };
        let group = GroupRef {
            id: group_id.to_string(),
            name: name.to_string(),
        };
        let event = if added {
            IdentityEvent::GroupMemberAdded { group }
        } else {
            IdentityEvent::GroupMemberRemoved { group }
        };
        let raw =
            json!({ "group": { "id": group_id, "displayName": name }, "member": member, "added": added });
        out.push(envelope(
            at,
            subject(member, &u),
            event,
            Profile::new(),
            source_event_type,
            raw,
        ));
    };
    for m in before.difference(&after) {
        emit(m, false, old_name.as_deref().unwrap_or_default());
    }
    for m in &after {
        if !before.contains(m) || renamed {
            emit(m, true, new_name.as_deref().unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        gatehouse_domain::clock::now()
    }

    fn user(active: bool) -> Value {
        json!({
            "userName": "jdoe",
            "active": active,
            "name": {"givenName": "J", "familyName": "Doe"},
            "emails": [{"value": "home@x", "type": "home"}, {"value": "work@x", "type": "work"}],
            ENTERPRISE_SCHEMA: {"department": "Eng", "manager": {"value": "m1"}},
        })
    }

    #[test]
    fn profile_maps_the_policy_keys() {
        let p = profile(&user(true));
        assert_eq!(p["email"], "work@x", "work beats others when none is primary");
        assert_eq!(p["login"], "jdoe");
        assert_eq!(p["firstName"], "J");
        assert_eq!(p["lastName"], "Doe");
        assert_eq!(p["department"], "Eng");
        assert_eq!(p["manager"], "m1");
        assert_eq!(email(&json!({"userName": "u@x"})).as_deref(), Some("u@x"));
        let primary =
            json!({"emails": [{"value": "w@x", "type": "work"}, {"value": "p@x", "primary": true}]});
        assert_eq!(email(&primary).as_deref(), Some("p@x"));
    }

    #[test]
    fn user_events() {
        let kind = |o: Option<&Value>, n: Option<&Value>| {
            user_change(at(), "u1", o, n, "t").map(|e| e.event.kind().to_string())
        };
        assert_eq!(kind(None, Some(&user(true))).as_deref(), Some("user_created"));
        assert_eq!(
            kind(None, Some(&user(false))).as_deref(),
            Some("user_deactivated")
        );
        assert_eq!(
            kind(Some(&user(true)), Some(&user(false))).as_deref(),
            Some("user_deactivated")
        );
        assert_eq!(
            kind(Some(&user(false)), Some(&user(true))).as_deref(),
            Some("user_activated")
        );
        assert_eq!(kind(Some(&user(true)), None).as_deref(), Some("user_deleted"));
        assert_eq!(
            kind(Some(&user(true)), Some(&user(true))),
            None,
            "no change, no event"
        );
        let mut renamed = user(true);
        renamed["name"]["familyName"] = json!("Roe");
        let e = user_change(at(), "u1", Some(&user(true)), Some(&renamed), "t").unwrap();
        assert_eq!(e.event, IdentityEvent::ProfileUpdated);
        assert_eq!(e.subject.key, "scim:u1");
        assert_eq!(e.subject.email.as_deref(), Some("work@x"));
        assert_eq!(e.profile["lastName"], "Roe");
        assert_eq!(e.source, Source::Scim);
    }

    #[test]
    fn group_events_per_member() {
        let lookup = |id: &str| (id != "ghost").then(|| json!({"userName": format!("{id}@x")}));
        let g = |name: &str, members: &[&str]| json!({"displayName": name, "members": members.iter().map(|m| json!({"value": m})).collect::<Vec<_>>()});
        let evs = group_change(
            at(),
            "g1",
            Some(&g("Eng", &["a", "b"])),
            Some(&g("Eng", &["b", "c", "ghost"])),
            "t",
            &lookup,
        );
        let got: Vec<(String, String)> = evs
            .iter()
            .map(|e| (e.subject.key.clone(), e.event.kind().to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("scim:a".into(), "group_member_removed".into()),
                ("scim:c".into(), "group_member_added".into()),
            ]
        );
        let evs = group_change(
            at(),
            "g1",
            Some(&g("Eng", &["a"])),
            Some(&g("Engineering", &["a"])),
            "t",
            &lookup,
        );
        assert_eq!(evs.len(), 1);
        assert_eq!(
            evs[0].event,
            IdentityEvent::GroupMemberAdded {
                group: GroupRef {
                    id: "g1".into(),
                    name: "Engineering".into()
                }
            }
        );
        assert!(
            group_change(
                at(),
                "g1",
                Some(&g("Eng", &["a"])),
                Some(&g("Eng", &["a"])),
                "t",
                &lookup
            )
            .is_empty()
        );
        assert_eq!(
            group_change(at(), "g1", Some(&g("Eng", &["a", "b"])), None, "t", &lookup).len(),
            2
        );
    }
}
