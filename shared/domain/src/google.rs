//! Google Workspace Admin SDK Reports API push notifications (`activities.watch`) → envelopes.
//!
//! A push notification's body is one Reports API `activity` (`admin#reports#activity`): an `id`
//! (`time`, `uniqueQualifier`, `applicationName`, `customerId`), an `actor` and `events[]`, each
//! with a `type`, a `name` (e.g. `SUSPEND_USER`) and `parameters[]` (`{name, value | boolValue |
//! intValue | multiValue}`). The user an admin event is about is its `USER_EMAIL` parameter; the
//! group of a membership event is its `GROUP_EMAIL` parameter.
//!
//! Each `events[i]` becomes one envelope with id `google:<id.time>:<id.uniqueQualifier>:<i>`.
//! Google documents `uniqueQualifier` as "unique qualifier if multiple events have the same time",
//! so the pair (time, uniqueQualifier) names the activity; a redelivered notification yields the
//! same ids and is a no-op downstream. The subject is `google:<user email, lowercased>`: the Reports
//! API does not carry the target user's immutable id (an admin event's `actor.profileId` is the
//! admin who acted, never the user acted on, so it cannot key the person).
//!
//! `RENAME_USER` (`USER_EMAIL` = the old address, `NEW_VALUE` = the new one) is an email change of
//! the person the old address names (issue 16): its envelope keeps that subject's key and carries
//! the new email, so the directory keeps the old one in `previous_emails` and every target renames
//! the account linked to the person instead of making a new one. [`renamed_to`] names the new
//! address, so the intake can send that address's later events to the same subject
//! (`gatehouse_intake::ingress::google`, an alias kept in the intake's store).
//!
//! Sync messages (`X-Goog-Resource-State: sync`) have no body; the HTTP intake answers them
//! without calling this parser ([`is_sync`]).

use crate::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// The `kind` of a Reports API activity.
pub const ACTIVITY_KIND: &str = "admin#reports#activity";

/// Admin event names Gatehouse acts on (besides `CHANGE_USER_*`, which all map to a profile
/// update). Everything else is accepted and counted as ignored.
pub const HANDLED_EVENTS: &[&str] = &[
    "CREATE_USER",
    "SUSPEND_USER",
    "UNSUSPEND_USER",
    "DELETE_USER",
    "ADD_GROUP_MEMBER",
    "REMOVE_GROUP_MEMBER",
    "CHANGE_FIRST_NAME",
    "CHANGE_LAST_NAME",
    "RENAME_USER",
];

/// Why a body is not a Reports API activity Gatehouse can accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoogleParseError {
    #[error("body is not valid json: {0}")]
    Json(String),
    #[error("not a reports api activity: {0}")]
    NotAnActivity(String),
    #[error("events[{index}] is invalid: {reason}")]
    Event { index: usize, reason: String },
}

/// Whether an `X-Goog-Resource-State` value is the channel's initial `sync` message.
pub fn is_sync(resource_state: &str) -> bool {
    resource_state.trim().eq_ignore_ascii_case("sync")
}

#[derive(Deserialize)]
struct RawActivity {
    kind: Option<String>,
    id: Option<RawId>,
    actor: Option<RawActor>,
    events: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct RawId {
    time: Option<String>,
    #[serde(rename = "uniqueQualifier")]
    unique_qualifier: Option<Value>,
    #[serde(rename = "applicationName")]
    application_name: Option<String>,
}

#[derive(Deserialize)]
struct RawActor {
    email: Option<String>,
}

#[derive(Deserialize)]
struct RawEvent {
    name: Option<String>,
    #[serde(default)]
    parameters: Option<Vec<RawParameter>>,
}

#[derive(Deserialize)]
struct RawParameter {
    name: Option<String>,
    value: Option<String>,
}

/// Parse one push notification body (a Reports API activity). Either every event parses, or the
/// body is rejected with the reason.
pub fn parse_activity(body: &[u8], received_at: DateTime<Utc>) -> Result<Vec<Envelope>, GoogleParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| GoogleParseError::Json(e.to_string()))?;
    if !value.is_object() {
        return Err(GoogleParseError::NotAnActivity(
            "body is not a json object".into(),
        ));
    }
    let activity: RawActivity =
        serde_json::from_value(value.clone()).map_err(|e| GoogleParseError::NotAnActivity(e.to_string()))?;
    if let Some(kind) = activity.kind.as_deref()
        && kind != ACTIVITY_KIND
    {
        return Err(GoogleParseError::NotAnActivity(format!(
            "kind is {kind:?}, expected {ACTIVITY_KIND:?}"
        )));
    }
    let id = activity
        .id
        .ok_or_else(|| GoogleParseError::NotAnActivity("missing id".into()))?;
    let time = id
        .time
        .filter(|t| !t.is_empty())
        .ok_or_else(|| GoogleParseError::NotAnActivity("missing id.time".into()))?;
    let occurred_at = DateTime::parse_from_rfc3339(&time)
        .map_err(|e| {
            GoogleParseError::NotAnActivity(format!("id.time {time:?} is not an RFC 3339 time: {e}"))
        })?
        .with_timezone(&Utc);
    let qualifier = match id.unique_qualifier {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(GoogleParseError::NotAnActivity(
                "missing id.uniqueQualifier".into(),
            ));
        }
    };
    crate::envelope::check_id_part("id.uniqueQualifier", &qualifier)
        .map_err(GoogleParseError::NotAnActivity)?;
    let application = id.application_name.unwrap_or_else(|| "admin".into());
    let actor_email = activity
        .actor
        .and_then(|a| a.email)
        .filter(|e| e.contains('@'))
        .map(|e| e.to_lowercase());
    let events = activity
        .events
        .ok_or_else(|| GoogleParseError::NotAnActivity("missing events array".into()))?;
    if events.is_empty() {
        return Err(GoogleParseError::NotAnActivity("events array is empty".into()));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(index, event)| {
            let ctx = EventContext {
                envelope_id: format!("google:{time}:{qualifier}:{index}"),
                application: &application,
                actor_email: actor_email.as_deref(),
                occurred_at,
                received_at,
                raw: &value,
            };
            parse_event(event, &ctx).map_err(|reason| GoogleParseError::Event { index, reason })
        })
        .collect()
}

struct EventContext<'a> {
    envelope_id: String,
    application: &'a str,
    actor_email: Option<&'a str>,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    raw: &'a Value,
}

fn parse_event(event: Value, ctx: &EventContext<'_>) -> Result<Envelope, String> {
    let ev: RawEvent = serde_json::from_value(event).map_err(|e| format!("not an activity event: {e}"))?;
    let name = ev.name.filter(|n| !n.is_empty()).ok_or("missing name")?;
    let params = ev.parameters.unwrap_or_default();
    let param = |wanted: &str| {
        params
            .iter()
            .find(|p| p.name.as_deref() == Some(wanted))
            .and_then(|p| p.value.clone())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let user_email = param("USER_EMAIL")
        .filter(|e| e.contains('@'))
        .map(|e| e.to_lowercase());
    let group_email = param("GROUP_EMAIL").map(|e| e.to_lowercase());

    let mut profile = Profile::new();
    let mapped = if ctx.application != "admin" {
        Err(format!("{}:{name}", ctx.application))
    } else {
        map_admin_event(&name, group_email, |attr| param(attr), &mut profile)
    };
    let (subject, event, profile) = match (user_email, mapped) {
        (Some(old), Ok(event)) if name == "RENAME_USER" => {
            // The person the old address names, now with the new one (checked in the mapping).
            let new = profile.remove("email").unwrap_or_else(|| old.clone());
            profile.insert("login".into(), new.clone());
            profile.insert("email".into(), new.clone());
            let mut subject = subject_for(&old);
            subject.email = Some(new);
            (subject, event, profile)
        }
        (Some(email), Ok(event)) => {
            profile.insert("email".into(), email.clone());
            profile.insert("login".into(), email.clone());
            (subject_for(&email), event, profile)
        }
        (user, mapped) => {
            let why = match mapped {
                Ok(_) => format!("{name} (no USER_EMAIL parameter)"),
                Err(why) => why,
            };
            // Not acted on: keep who it was about (the user, else the admin who acted) for audit.
            let subject = user
                .as_deref()
                .or(ctx.actor_email)
                .map(subject_for)
                .unwrap_or_else(|| Subject {
                    key: "google:unknown".into(),
                    email: None,
                    display_name: None,
                });
            (
                subject,
                IdentityEvent::Ignored { event_type: why },
                Profile::new(),
            )
        }
    };
    Ok(Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(ctx.envelope_id.clone()),
        source: Source::GoogleWorkspace,
        subject,
        occurred_at: ctx.occurred_at,
        received_at: ctx.received_at,
        event,
        profile,
        source_event_type: name,
        raw: ctx.raw.clone(),
    })
}

/// An admin event → what Gatehouse does with it; `Err` is the reason it is ignored.
fn map_admin_event(
    name: &str,
    group_email: Option<String>,
    param: impl Fn(&str) -> Option<String>,
    profile: &mut Profile,
) -> Result<IdentityEvent, String> {
    let group = || {
        group_email.clone().map(|g| GroupRef {
            id: g.clone(),
            name: g,
        })
    };
    let event = match name {
        "CREATE_USER" => IdentityEvent::UserCreated,
        "SUSPEND_USER" => IdentityEvent::UserSuspended,
        "UNSUSPEND_USER" => IdentityEvent::UserUnsuspended,
        "DELETE_USER" => IdentityEvent::UserDeleted,
        "ADD_GROUP_MEMBER" => IdentityEvent::GroupMemberAdded {
            group: group().ok_or_else(|| format!("{name} (no GROUP_EMAIL parameter)"))?,
        },
        "REMOVE_GROUP_MEMBER" => IdentityEvent::GroupMemberRemoved {
            group: group().ok_or_else(|| format!("{name} (no GROUP_EMAIL parameter)"))?,
        },
        "CHANGE_FIRST_NAME" | "CHANGE_LAST_NAME" => {
            let key = if name == "CHANGE_FIRST_NAME" {
                "firstName"
            } else {
                "lastName"
            };
            if let Some(v) = param("NEW_VALUE") {
                profile.insert(key.into(), v);
            }
            IdentityEvent::ProfileUpdated
        }
        "RENAME_USER" => {
            let new = param("NEW_VALUE")
                .filter(|v| v.contains('@'))
                .ok_or_else(|| format!("{name} (no NEW_VALUE email)"))?;
            profile.insert("email".into(), new.to_lowercase());
            IdentityEvent::ProfileUpdated
        }
        n if n.starts_with("CHANGE_USER_") => IdentityEvent::ProfileUpdated,
        _ => return Err(name.to_string()),
    };
    Ok(event)
}

/// The subject key an address names before any rename: `google:<email, lowercased>`.
pub fn subject_key(email: &str) -> String {
    format!("google:{}", email.to_lowercase())
}

/// The new address of a `RENAME_USER` envelope (its subject is the person the old address
/// named): later events about the new address are about the same person.
pub fn renamed_to(env: &Envelope) -> Option<&str> {
    (env.source == Source::GoogleWorkspace
        && env.source_event_type == "RENAME_USER"
        && env.event == IdentityEvent::ProfileUpdated)
        .then_some(env.subject.email.as_deref())
        .flatten()
}

fn subject_for(email: &str) -> Subject {
    Subject {
        key: subject_key(email),
        email: Some(email.to_string()),
        display_name: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The handbook's verbatim documentation example (embedded at compile time: no I/O here).
    fn fixture_body() -> &'static [u8] {
        include_bytes!(
            "../../../../shared/fixtures/google-workspace/reports.push.admin.CREATE_USER.body.docs.json"
        )
    }

    fn activity(events: &str) -> Vec<u8> {
        format!(
            r#"{{"kind":"admin#reports#activity",
                "id":{{"time":"2026-03-01T10:00:00.123Z","uniqueQualifier":"-42","applicationName":"admin"}},
                "actor":{{"callerType":"USER","email":"Admin@Example.com"}},
                "events":[{events}]}}"#
        )
        .into_bytes()
    }

    fn one(name: &str, params: &str) -> Envelope {
        let body = activity(&format!(
            r#"{{"type":"X","name":"{name}","parameters":[{params}]}}"#
        ));
        let mut envs = parse_activity(&body, now()).unwrap();
        assert_eq!(envs.len(), 1);
        envs.remove(0)
    }

    /// Issue 16: a rename is an email change of the person the old address names, not a new
    /// person; without a usable new address it is not acted on.
    #[test]
    fn rename_user_is_an_email_change_of_the_old_address_subject() {
        let e = one(
            "RENAME_USER",
            r#"{"name":"USER_EMAIL","value":"Liz@Example.com"},{"name":"NEW_VALUE","value":"Liz.Lemon@Example.com"}"#,
        );
        assert_eq!(e.event, IdentityEvent::ProfileUpdated);
        assert_eq!(e.subject.key, "google:liz@example.com", "the same person");
        assert_eq!(e.subject.email.as_deref(), Some("liz.lemon@example.com"));
        assert_eq!(
            e.profile.get("email").map(String::as_str),
            Some("liz.lemon@example.com")
        );
        assert_eq!(renamed_to(&e), Some("liz.lemon@example.com"));
        let mut id = crate::identity::Identity::new(&e.subject.key);
        let mut created = one(
            "CREATE_USER",
            r#"{"name":"USER_EMAIL","value":"liz@example.com"}"#,
        );
        created.occurred_at -= chrono::Duration::days(1);
        created.id = EnvelopeId("google:earlier".into());
        id.fold(&created);
        id.fold(&e);
        assert_eq!(id.email(), Some("liz.lemon@example.com"));
        assert_eq!(id.previous_emails, vec!["liz@example.com"]);

        let no_new = one(
            "RENAME_USER",
            r#"{"name":"USER_EMAIL","value":"liz@example.com"}"#,
        );
        assert!(!no_new.event.is_actionable(), "{:?}", no_new.event);
        assert_eq!(renamed_to(&no_new), None);
        let other = one(
            "SUSPEND_USER",
            r#"{"name":"USER_EMAIL","value":"liz@example.com"}"#,
        );
        assert_eq!(renamed_to(&other), None);
    }

    #[test]
    fn documented_create_user_fixture_becomes_user_created() {
        let envs = parse_activity(fixture_body(), now()).unwrap();
        assert_eq!(envs.len(), 1);
        let e = &envs[0];
        assert_eq!(e.id.0, "google:2013-09-10T18:23:35.808Z:-0987654321:0");
        assert_eq!(e.source, Source::GoogleWorkspace);
        assert_eq!(e.event, IdentityEvent::UserCreated);
        assert_eq!(e.subject.key, "google:liz@example.com");
        assert_eq!(e.subject.email.as_deref(), Some("liz@example.com"));
        assert_eq!(
            e.profile.get("email").map(String::as_str),
            Some("liz@example.com")
        );
        assert_eq!(e.source_event_type, "CREATE_USER");
        assert_eq!(e.occurred_at.to_rfc3339(), "2013-09-10T18:23:35.808+00:00");
        assert_eq!(e.received_at, now());
        assert_eq!(e.raw["id"]["customerId"], "ABCD012345");
    }

    #[test]
    fn a_redelivery_yields_the_same_ids() {
        let a = parse_activity(fixture_body(), now()).unwrap();
        let b = parse_activity(fixture_body(), now() + chrono::Duration::hours(1)).unwrap();
        assert_eq!(a[0].id, b[0].id);
    }

    #[test]
    fn lifecycle_events_map_and_lowercase_the_email() {
        let cases = [
            ("CREATE_USER", IdentityEvent::UserCreated),
            ("SUSPEND_USER", IdentityEvent::UserSuspended),
            ("UNSUSPEND_USER", IdentityEvent::UserUnsuspended),
            ("DELETE_USER", IdentityEvent::UserDeleted),
            ("CHANGE_USER_ORGANIZATION", IdentityEvent::ProfileUpdated),
            ("CHANGE_USER_PHONE_NUMBER", IdentityEvent::ProfileUpdated),
        ];
        for (name, want) in cases {
            let e = one(name, r#"{"name":"USER_EMAIL","value":"Jo.Doe@Example.COM"}"#);
            assert_eq!(e.event, want, "{name}");
            assert_eq!(e.subject.key, "google:jo.doe@example.com", "{name}");
            assert_eq!(e.subject.email.as_deref(), Some("jo.doe@example.com"));
            assert_eq!(
                e.profile.get("login").map(String::as_str),
                Some("jo.doe@example.com")
            );
            assert_eq!(e.source_event_type, name);
        }
    }

    #[test]
    fn name_changes_carry_the_new_value() {
        let e = one(
            "CHANGE_FIRST_NAME",
            r#"{"name":"USER_EMAIL","value":"jo@example.com"},{"name":"OLD_VALUE","value":"Jo"},
               {"name":"NEW_VALUE","value":"Joanna"}"#,
        );
        assert_eq!(e.event, IdentityEvent::ProfileUpdated);
        assert_eq!(e.profile.get("firstName").map(String::as_str), Some("Joanna"));
        let e = one(
            "CHANGE_LAST_NAME",
            r#"{"name":"USER_EMAIL","value":"jo@example.com"},{"name":"NEW_VALUE","value":"Roe"}"#,
        );
        assert_eq!(e.profile.get("lastName").map(String::as_str), Some("Roe"));
        assert!(!e.profile.contains_key("firstName"));
    }

    #[test]
    fn group_membership_uses_the_group_email_as_id_and_name() {
        let e = one(
            "ADD_GROUP_MEMBER",
            r#"{"name":"USER_EMAIL","value":"jo@example.com"},{"name":"GROUP_EMAIL","value":"Eng@Example.com"}"#,
        );
        let group = GroupRef {
            id: "eng@example.com".into(),
            name: "eng@example.com".into(),
        };
        assert_eq!(e.event, IdentityEvent::GroupMemberAdded { group: group.clone() });
        let e = one(
            "REMOVE_GROUP_MEMBER",
            r#"{"name":"USER_EMAIL","value":"jo@example.com"},{"name":"GROUP_EMAIL","value":"eng@example.com"}"#,
        );
        assert_eq!(e.event, IdentityEvent::GroupMemberRemoved { group });
    }

    #[test]
    fn other_events_and_events_without_a_user_are_ignored_but_accepted() {
        let e = one(
            "CREATE_GROUP",
            r#"{"name":"GROUP_EMAIL","value":"g@example.com"}"#,
        );
        assert_eq!(
            e.event,
            IdentityEvent::Ignored {
                event_type: "CREATE_GROUP".into()
            }
        );
        assert_eq!(
            e.subject.key, "google:admin@example.com",
            "falls back to the actor"
        );
        assert!(e.profile.is_empty());

        let e = one("SUSPEND_USER", "");
        assert!(!e.event.is_actionable());
        assert!(e.event.kind() == "ignored");
        assert_eq!(
            e.event,
            IdentityEvent::Ignored {
                event_type: "SUSPEND_USER (no USER_EMAIL parameter)".into()
            }
        );

        let e = one(
            "ADD_GROUP_MEMBER",
            r#"{"name":"USER_EMAIL","value":"jo@example.com"}"#,
        );
        assert!(!e.event.is_actionable(), "a membership without GROUP_EMAIL");
        assert_eq!(e.subject.key, "google:jo@example.com");
    }

    #[test]
    fn events_of_other_applications_are_ignored() {
        let body = br#"{"id":{"time":"2026-03-01T10:00:00Z","uniqueQualifier":"7","applicationName":"login"},
            "events":[{"name":"SUSPEND_USER","parameters":[{"name":"USER_EMAIL","value":"a@b.c"}]}]}"#;
        let envs = parse_activity(body, now()).unwrap();
        assert_eq!(
            envs[0].event,
            IdentityEvent::Ignored {
                event_type: "login:SUSPEND_USER".into()
            }
        );
    }

    #[test]
    fn several_events_get_one_envelope_each_in_order() {
        let body = activity(
            r#"{"name":"CREATE_USER","parameters":[{"name":"USER_EMAIL","value":"a@example.com"}]},
               {"name":"ADD_GROUP_MEMBER","parameters":[{"name":"USER_EMAIL","value":"a@example.com"},
                                                         {"name":"GROUP_EMAIL","value":"g@example.com"}]}"#,
        );
        let envs = parse_activity(&body, now()).unwrap();
        let ids: Vec<_> = envs.iter().map(|e| e.id.0.as_str()).collect();
        assert_eq!(
            ids,
            [
                "google:2026-03-01T10:00:00.123Z:-42:0",
                "google:2026-03-01T10:00:00.123Z:-42:1"
            ]
        );
    }

    #[test]
    fn numeric_unique_qualifier_is_accepted() {
        let body = br#"{"id":{"time":"2026-03-01T10:00:00Z","uniqueQualifier":123},
            "events":[{"name":"DELETE_USER","parameters":[{"name":"USER_EMAIL","value":"a@b.c"}]}]}"#;
        assert_eq!(
            parse_activity(body, now()).unwrap()[0].id.0,
            "google:2026-03-01T10:00:00Z:123:0"
        );
    }

    #[test]
    fn malformed_bodies_are_rejected_with_the_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "not valid json"),
            (b"{nope", "not valid json"),
            (b"[]", "not a json object"),
            (br#"{"kind":"drive#change","id":{"time":"2026-01-01T00:00:00Z","uniqueQualifier":"1"},"events":[{"name":"X"}]}"#, "kind"),
            (br#"{"events":[{"name":"X"}]}"#, "missing id"),
            (br#"{"id":{"uniqueQualifier":"1"},"events":[{"name":"X"}]}"#, "missing id.time"),
            (br#"{"id":{"time":"yesterday","uniqueQualifier":"1"},"events":[{"name":"X"}]}"#, "RFC 3339"),
            (br#"{"id":{"time":"2026-01-01T00:00:00Z"},"events":[{"name":"X"}]}"#, "uniqueQualifier"),
            (br#"{"id":{"time":"2026-01-01T00:00:00Z","uniqueQualifier":"1"}}"#, "missing events"),
            (br#"{"id":{"time":"2026-01-01T00:00:00Z","uniqueQualifier":"1"},"events":[]}"#, "empty"),
            (br#"{"id":{"time":"2026-01-01T00:00:00Z","uniqueQualifier":"1"},"events":[{"name":"X"},{"type":"Y"}]}"#, "events[1] is invalid: missing name"),
            (br#"{"id":{"time":"2026-01-01T00:00:00Z","uniqueQualifier":"1"},"events":[7]}"#, "events[0] is invalid"),
        ];
        for (body, want) in cases {
            let err = parse_activity(body, now()).unwrap_err().to_string();
            assert!(err.contains(want), "{:?}: {err}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn sync_is_recognised() {
        assert!(is_sync("sync"));
        assert!(is_sync("SYNC"));
        assert!(!is_sync("SUSPEND_USER"));
    }
}
