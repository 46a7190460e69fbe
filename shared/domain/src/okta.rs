//! Okta Event Hook bodies (`com.okta.event_hook`) → envelopes.
//!
//! Each `data.events[]` entry becomes one envelope keyed by the event's own `uuid`, namespaced by
//! the configured org: `okta:<org>:<uuid>` ([`envelope_id`]); the body's `eventId` only names the
//! delivery, so a redelivered body yields the same envelope ids, and the same event read from the
//! System Log API ([`parse_event`]) has the same id too.
//! Okta adds fields without versioning and sends `null` for many objects, so only the fields
//! Gatehouse needs are read and everything else is tolerated.

use crate::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// Why a body is not an Okta event hook delivery Gatehouse can accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OktaParseError {
    #[error("body is not valid json: {0}")]
    Json(String),
    #[error("not an okta event hook body: {0}")]
    NotAHook(String),
    #[error("data.events[{index}] is invalid: {reason}")]
    Event { index: usize, reason: String },
}

#[derive(Deserialize)]
struct HookBody {
    #[serde(rename = "eventType")]
    event_type: Option<String>,
    data: Option<HookData>,
}

#[derive(Deserialize)]
struct HookData {
    /// Only checked to be an array here: the events are read from the body's `Value`, each
    /// once (issue 13: no copy of the body per request).
    events: Option<Vec<serde::de::IgnoredAny>>,
}

#[derive(Deserialize)]
struct RawEvent {
    uuid: Option<String>,
    published: Option<String>,
    #[serde(rename = "eventType")]
    event_type: Option<String>,
    #[serde(default)]
    outcome: Option<RawOutcome>,
    #[serde(default)]
    actor: Option<RawActor>,
    #[serde(default)]
    target: Option<Vec<RawActor>>,
}

#[derive(Deserialize)]
struct RawOutcome {
    result: Option<String>,
}

#[derive(Deserialize, Clone)]
struct RawActor {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "alternateId")]
    alternate_id: Option<String>,
    #[serde(rename = "displayName")]
    display_name: Option<String>,
}

/// Parse a whole hook body. Either every event parses, or the body is rejected with the reason:
/// Okta does not retry 4xx answers, and a partially accepted body would lose events silently.
///
/// `org` names the Okta org whose hook secret authenticated the request (`okta.org`): it
/// namespaces the envelope ids, never a value from the body.
pub fn parse_hook_body(
    org: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Vec<Envelope>, OktaParseError> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| OktaParseError::Json(e.to_string()))?;
    let hook = HookBody::deserialize(&value).map_err(|e| OktaParseError::NotAHook(e.to_string()))?;
    match hook.event_type.as_deref() {
        Some("com.okta.event_hook") => {}
        Some(other) => {
            return Err(OktaParseError::NotAHook(format!(
                "top-level eventType is {other:?}, expected \"com.okta.event_hook\""
            )));
        }
        None => {
            return Err(OktaParseError::NotAHook(
                "missing top-level eventType \"com.okta.event_hook\"".into(),
            ));
        }
    }
    if hook.data.and_then(|d| d.events).is_none() {
        return Err(OktaParseError::NotAHook("missing data.events array".into()));
    }
    // Checked above to be an array: moved out of the body, not copied.
    let events = value
        .get_mut("data")
        .and_then(|d| d.get_mut("events"))
        .and_then(Value::as_array_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    events
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            parse_event(org, raw, received_at).map_err(|reason| OktaParseError::Event { index, reason })
        })
        .collect()
}

/// The envelope id of the Okta event `uuid` of `org`: `okta:<org>:<uuid>`, whichever way the event
/// arrived (event hook or System Log API). The uuid must be 1 to 256 visible ascii characters.
pub fn envelope_id(org: &str, uuid: &str) -> Result<EnvelopeId, String> {
    EnvelopeId::namespaced(Source::Okta, org, "uuid", uuid)
}

/// Parse one `data.events[]` element (an Okta System Log event object) of `org`; the event is
/// kept whole as the envelope's `raw`.
pub fn parse_event(org: &str, raw: Value, received_at: DateTime<Utc>) -> Result<Envelope, String> {
    let ev = RawEvent::deserialize(&raw).map_err(|e| format!("not an okta log event: {e}"))?;
    let uuid = ev.uuid.filter(|u| !u.is_empty()).ok_or("missing uuid")?;
    let id = envelope_id(org, &uuid)?;
    let event_type = ev
        .event_type
        .filter(|t| !t.is_empty())
        .ok_or("missing eventType")?;
    let published = ev.published.ok_or("missing published")?;
    let occurred_at = DateTime::parse_from_rfc3339(&published)
        .map_err(|e| format!("published {published:?} is not an RFC 3339 time: {e}"))?
        .with_timezone(&Utc);
    let targets = ev.target.unwrap_or_default();
    let user_target = targets
        .iter()
        .find(|t| t.kind.as_deref() == Some("User"))
        .cloned();
    let group_target = targets
        .iter()
        .find(|t| t.kind.as_deref() == Some("UserGroup"))
        .cloned();
    let succeeded = ev
        .outcome
        .and_then(|o| o.result)
        .map(|r| r.eq_ignore_ascii_case("success"))
        .unwrap_or(true);

    let mapped = map_event_type(&event_type, group_target.as_ref());
    let (subject, profile, event) = match (user_target, mapped) {
        (Some(user), Mapped::Act(event)) if succeeded => {
            let (subject, profile) = subject_from(&user)?;
            (subject, profile, event)
        }
        (user, mapped) => {
            // Not acted on: keep who it was about (the user target, else the actor) for audit.
            let why = match mapped {
                Mapped::Act(_) if !succeeded => format!("{event_type} (outcome not SUCCESS)"),
                Mapped::Act(_) => format!("{event_type} (no User target)"),
                Mapped::Ignore => event_type.clone(),
            };
            let who = user.or(ev.actor);
            let subject = who
                .as_ref()
                .and_then(|w| subject_from(w).ok())
                .map(|(s, _)| s)
                .unwrap_or_else(|| Subject {
                    key: "okta:unknown".into(),
                    email: None,
                    display_name: None,
                });
            (
                subject,
                Profile::new(),
                IdentityEvent::Ignored { event_type: why },
            )
        }
    };
    Ok(Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id,
        source: Source::Okta,
        subject,
        occurred_at,
        received_at,
        event,
        profile,
        source_event_type: event_type,
        raw,
    })
}

/// The System Log event types Gatehouse acts on: exactly those [`parse_event`] maps to an
/// identity event (the Event Hook intake's set). The System Log catch-up asks Okta for these
/// alone (`filter=eventType eq "…" or …`).
pub const ACTED_EVENT_TYPES: &[&str] = &[
    "user.lifecycle.create",
    "user.lifecycle.activate",
    "user.lifecycle.reactivate",
    "user.lifecycle.unsuspend",
    "user.lifecycle.deactivate",
    "user.lifecycle.suspend",
    "user.lifecycle.delete.initiated",
    "user.account.update_profile",
    "group.user_membership.add",
    "group.user_membership.remove",
];

enum Mapped {
    Act(IdentityEvent),
    Ignore,
}

fn map_event_type(event_type: &str, group: Option<&RawActor>) -> Mapped {
    let group_ref = || {
        group.and_then(|g| {
            Some(GroupRef {
                id: g.id.clone()?,
                name: g
                    .display_name
                    .clone()
                    .unwrap_or_else(|| g.id.clone().unwrap_or_default()),
            })
        })
    };
    let event = match event_type {
        "user.lifecycle.create" => IdentityEvent::UserCreated,
        "user.lifecycle.activate" | "user.lifecycle.reactivate" => IdentityEvent::UserActivated,
        "user.lifecycle.unsuspend" => IdentityEvent::UserUnsuspended,
        "user.lifecycle.deactivate" => IdentityEvent::UserDeactivated,
        "user.lifecycle.suspend" => IdentityEvent::UserSuspended,
        "user.lifecycle.delete.initiated" => IdentityEvent::UserDeleted,
        "user.account.update_profile" => IdentityEvent::ProfileUpdated,
        "group.user_membership.add" => match group_ref() {
            Some(group) => IdentityEvent::GroupMemberAdded { group },
            None => return Mapped::Ignore,
        },
        "group.user_membership.remove" => match group_ref() {
            Some(group) => IdentityEvent::GroupMemberRemoved { group },
            None => return Mapped::Ignore,
        },
        _ => return Mapped::Ignore,
    };
    Mapped::Act(event)
}

fn subject_from(user: &RawActor) -> Result<(Subject, Profile), String> {
    let id = user
        .id
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or("User target without id")?;
    let email = user.alternate_id.clone().filter(|a| a.contains('@'));
    let display_name = user.display_name.clone().filter(|d| !d.is_empty());
    let mut profile = Profile::new();
    if let Some(login) = &user.alternate_id {
        profile.insert("login".into(), login.clone());
    }
    if let Some(email) = &email {
        profile.insert("email".into(), email.clone());
    }
    if let Some(name) = &display_name {
        profile.insert("displayName".into(), name.clone());
        let mut parts = name.splitn(2, ' ');
        if let (Some(first), Some(last)) = (parts.next(), parts.next()) {
            profile.insert("firstName".into(), first.to_string());
            profile.insert("lastName".into(), last.trim().to_string());
        }
    }
    Ok((
        Subject {
            key: format!("okta:{id}"),
            email,
            display_name,
        },
        profile,
    ))
}

/// The answer to Okta's one-time verification `GET`: `{"verification": "<challenge>"}`.
pub fn verification_response(challenge: &str) -> Value {
    serde_json::json!({ "verification": challenge })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "acme";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn rejects_non_hook_bodies_with_reason() {
        let err = parse_hook_body(ORG, br#"{"uuid":"x"}"#, now()).unwrap_err();
        assert!(matches!(err, OktaParseError::NotAHook(_)), "{err}");
        let err = parse_hook_body(ORG, b"{nope", now()).unwrap_err();
        assert!(matches!(err, OktaParseError::Json(_)));
        let err = parse_hook_body(ORG, br#"{"eventType":"other"}"#, now()).unwrap_err();
        assert!(err.to_string().contains("com.okta.event_hook"));
    }

    #[test]
    fn bad_event_names_its_index() {
        let body = br#"{"eventType":"com.okta.event_hook","data":{"events":[
            {"uuid":"a","published":"2024-01-01T00:00:00Z","eventType":"x"},
            {"uuid":"b","eventType":"x"}]}}"#;
        let err = parse_hook_body(ORG, body, now()).unwrap_err();
        assert_eq!(
            err,
            OktaParseError::Event {
                index: 1,
                reason: "missing published".into()
            }
        );
    }

    #[test]
    fn failed_outcome_is_not_acted_on() {
        let body = br#"{"eventType":"com.okta.event_hook","data":{"events":[
            {"uuid":"a","published":"2024-01-01T00:00:00Z","eventType":"user.lifecycle.deactivate",
             "outcome":{"result":"FAILURE"},
             "target":[{"id":"00u1","type":"User","alternateId":"a@b.c","displayName":"A B"}]}]}}"#;
        let envs = parse_hook_body(ORG, body, now()).unwrap();
        assert!(!envs[0].event.is_actionable());
        assert_eq!(envs[0].subject.key, "okta:00u1");
        assert_eq!(envs[0].id.0, "okta:acme:a");
    }

    fn with_uuid(uuid: &str) -> Vec<u8> {
        serde_json::json!({"eventType": "com.okta.event_hook", "data": {"events": [
            {"uuid": uuid, "published": "2024-01-01T00:00:00Z", "eventType": "user.lifecycle.deactivate",
             "target": [{"id": "00u1", "type": "User", "alternateId": "a@b.c"}]}]}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn ids_are_namespaced_by_the_configured_org_not_the_payload() {
        // A uuid shaped like another source's id stays inside the okta namespace.
        let envs = parse_hook_body(ORG, &with_uuid("generic:msg_x"), now()).unwrap();
        assert_eq!(envs[0].id.0, "okta:acme:generic:msg_x");
        let other_org = parse_hook_body("globex", &with_uuid("generic:msg_x"), now()).unwrap();
        assert_ne!(envs[0].id, other_org[0].id);
    }

    #[test]
    fn malformed_uuids_are_refused_with_the_reason() {
        for (uuid, why) in [
            ("a\u{7}b", "only visible ascii"),
            ("a b", "only visible ascii"),
            ("é", "only visible ascii"),
        ] {
            let err = parse_hook_body(ORG, &with_uuid(uuid), now()).unwrap_err();
            assert!(err.to_string().contains(why), "{uuid:?}: {err}");
            assert!(
                err.to_string().starts_with("data.events[0] is invalid: uuid"),
                "{err}"
            );
        }
        let long = "a".repeat(257);
        let err = parse_hook_body(ORG, &with_uuid(&long), now()).unwrap_err();
        assert!(err.to_string().contains("at most 256"), "{err}");
        assert!(parse_hook_body(ORG, &with_uuid(&"a".repeat(256)), now()).is_ok());
    }

    #[test]
    fn acted_event_types_are_exactly_the_ones_mapped() {
        let group = RawActor {
            id: Some("00g1".into()),
            kind: Some("UserGroup".into()),
            alternate_id: None,
            display_name: Some("G".into()),
        };
        for t in ACTED_EVENT_TYPES {
            assert!(matches!(map_event_type(t, Some(&group)), Mapped::Act(_)), "{t}");
        }
        for t in [
            "user.session.start",
            "application.user_membership.add",
            "user.lifecycle.delete.completed",
        ] {
            assert!(matches!(map_event_type(t, Some(&group)), Mapped::Ignore), "{t}");
        }
    }
}
