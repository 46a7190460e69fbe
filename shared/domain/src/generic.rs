//! The generic intake: Standard Webhooks (<https://www.standardwebhooks.com>) carrying Gatehouse's
//! canonical event JSON, so any IdP without a native connector (Auth0 log streams, Keycloak event
//! listeners, JumpCloud, a script) can feed Gatehouse.
//!
//! This module is the pure half: the canonical event document (published as JSON Schema in
//! `schemas/canonical-event.schema.json`) → envelopes, and the parts of Standard Webhooks
//! verification that need no cryptography (headers, the signed content, the timestamp window, the
//! signature list). The HMAC itself lives in the runtime's HTTP intake.
//!
//! A body is one event or `{"events": [...]}`. Envelope ids derive from the delivery's
//! `webhook-id`: `generic:<webhook-id>` for a single event, `generic:<webhook-id>:<index>` for the
//! events of a batch, so a redelivery (same `webhook-id`) is a no-op downstream.

use crate::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Standard Webhooks header carrying the message id (the idempotency key).
pub const HEADER_ID: &str = "webhook-id";
/// Standard Webhooks header carrying the send time, integer seconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Standard Webhooks header carrying space-separated `v1,<base64 HMAC-SHA256>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// Prefix of a Standard Webhooks secret; the key is the base64 text after it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Longest `webhook-id` accepted (it becomes part of queue keys).
pub const MAX_WEBHOOK_ID_LEN: usize = 256;

/// Every canonical event `type`, in the order the schema lists them.
pub const EVENT_TYPES: &[&str] = &[
    "user.created",
    "user.activated",
    "user.updated",
    "user.suspended",
    "user.unsuspended",
    "user.deactivated",
    "user.deleted",
    "group.member_added",
    "group.member_removed",
];

/// Profile keys the named `user` fields fill; `user.attributes` may not use them.
pub const RESERVED_PROFILE_KEYS: &[&str] = &["email", "login", "firstName", "lastName", "displayName"];

/// One canonical event (see `docs/intake-generic.md` and the JSON Schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalEvent {
    /// One of [`EVENT_TYPES`].
    #[serde(rename = "type")]
    pub kind: String,
    /// RFC 3339; orders events per person (an older event never undoes a newer one).
    pub occurred_at: String,
    pub user: CanonicalUser,
    /// Required for `group.*` types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<CanonicalGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalUser {
    /// The IdP's stable user id; the subject key is `generic:<id>`.
    pub id: String,
    /// How the person is found in Looker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Further IdP attributes a policy may map (e.g. `department`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalGroup {
    /// The IdP's group id.
    pub id: String,
    /// The group's name (what policies match on).
    pub name: String,
}

/// Why a body is not a canonical event document Gatehouse can accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GenericParseError {
    #[error("body is not valid json: {0}")]
    Json(String),
    #[error("not a canonical event document: {0}")]
    NotAnEvent(String),
    #[error("events[{index}] is invalid: {reason}")]
    Event { index: usize, reason: String },
}

/// Parse a verified body into envelopes; `webhook_id` is the delivery's (already validated) id.
/// Either every event parses, or the body is rejected with the reason.
pub fn parse_body(
    webhook_id: &str,
    body: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Vec<Envelope>, GenericParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| GenericParseError::Json(e.to_string()))?;
    let Some(obj) = value.as_object() else {
        return Err(GenericParseError::NotAnEvent("body is not a json object".into()));
    };
    if let Some(events) = obj.get("events") {
        if obj.len() != 1 {
            return Err(GenericParseError::NotAnEvent(
                "a batch has only the \"events\" field".into(),
            ));
        }
        let Some(events) = events.as_array() else {
            return Err(GenericParseError::NotAnEvent("events is not an array".into()));
        };
        if events.is_empty() {
            return Err(GenericParseError::NotAnEvent("events array is empty".into()));
        }
        events
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                parse_event(&format!("generic:{webhook_id}:{index}"), raw, received_at)
                    .map_err(|reason| GenericParseError::Event { index, reason })
            })
            .collect()
    } else {
        parse_event(&format!("generic:{webhook_id}"), &value, received_at)
            .map(|e| vec![e])
            .map_err(GenericParseError::NotAnEvent)
    }
}

/// Parse one canonical event into an envelope with id `envelope_id`.
pub fn parse_event(envelope_id: &str, raw: &Value, received_at: DateTime<Utc>) -> Result<Envelope, String> {
    let ev: CanonicalEvent = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    let occurred_at = DateTime::parse_from_rfc3339(&ev.occurred_at)
        .map_err(|e| format!("occurred_at {:?} is not an RFC 3339 time: {e}", ev.occurred_at))?
        .with_timezone(&Utc);
    let group = || -> Result<GroupRef, String> {
        let g = ev
            .group
            .as_ref()
            .ok_or_else(|| format!("type {:?} needs a group", ev.kind))?;
        if g.id.trim().is_empty() || g.name.trim().is_empty() {
            return Err("group.id and group.name must not be empty".into());
        }
        Ok(GroupRef {
            id: g.id.clone(),
            name: g.name.clone(),
        })
    };
    let event = match ev.kind.as_str() {
        "user.created" => IdentityEvent::UserCreated,
        "user.activated" => IdentityEvent::UserActivated,
        "user.updated" => IdentityEvent::ProfileUpdated,
        "user.suspended" => IdentityEvent::UserSuspended,
        "user.unsuspended" => IdentityEvent::UserUnsuspended,
        "user.deactivated" => IdentityEvent::UserDeactivated,
        "user.deleted" => IdentityEvent::UserDeleted,
        "group.member_added" => IdentityEvent::GroupMemberAdded { group: group()? },
        "group.member_removed" => IdentityEvent::GroupMemberRemoved { group: group()? },
        other => {
            return Err(format!("type {other:?} is not one of {}", EVENT_TYPES.join(", ")));
        }
    };
    let user = &ev.user;
    if user.id.trim().is_empty() {
        return Err("user.id must not be empty".into());
    }
    let email = match user.email.as_deref().map(str::trim) {
        None => None,
        Some(e) if is_plausible_email(e) => Some(e.to_string()),
        Some(e) => return Err(format!("user.email {e:?} is not an email address")),
    };
    let mut profile = Profile::new();
    for (key, value) in &user.attributes {
        if RESERVED_PROFILE_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "user.attributes.{key} is reserved: use the user's own fields"
            ));
        }
        if key.is_empty() {
            return Err("user.attributes has an empty key".into());
        }
        profile.insert(key.clone(), value.clone());
    }
    let named = [
        ("email", &email),
        ("login", &user.login),
        ("firstName", &user.first_name),
        ("lastName", &user.last_name),
        ("displayName", &user.display_name),
    ];
    for (key, value) in named {
        if let Some(v) = value {
            profile.insert(key.to_string(), v.clone());
        }
    }
    Ok(Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(envelope_id.to_string()),
        source: Source::Generic,
        subject: Subject {
            key: format!("generic:{}", user.id),
            email,
            display_name: user.display_name.clone().filter(|d| !d.is_empty()),
        },
        occurred_at,
        received_at,
        event,
        profile,
        source_event_type: ev.kind.clone(),
        raw: raw.clone(),
    })
}

fn is_plausible_email(e: &str) -> bool {
    match e.split_once('@') {
        Some((local, domain)) => !local.is_empty() && !domain.is_empty() && !e.contains(char::is_whitespace),
        None => false,
    }
}

/// Why a Standard Webhooks delivery is refused before its signature is even looked at, or after.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("webhook-id must be 1 to {MAX_WEBHOOK_ID_LEN} visible ascii characters other than ':'")]
    InvalidId,
    #[error("webhook-timestamp must be integer seconds since the unix epoch")]
    MalformedTimestamp,
    #[error("webhook-timestamp is {age_secs} s in the past; the tolerance is {tolerance_secs} s")]
    TooOld { age_secs: i64, tolerance_secs: u64 },
    #[error("webhook-timestamp is {ahead_secs} s in the future; the tolerance is {tolerance_secs} s")]
    TooNew { ahead_secs: i64, tolerance_secs: u64 },
    #[error("webhook-signature has no v1 signature")]
    NoV1Signature,
}

/// A `webhook-id` Gatehouse accepts: visible ASCII, no spaces, bounded length, and no `:` — the
/// separator of envelope ids, so the single event `x:0` cannot take the id of batch `x`'s first
/// event (`generic:x:0`).
pub fn validate_webhook_id(id: &str) -> Result<(), WebhookError> {
    if id.is_empty()
        || id.len() > MAX_WEBHOOK_ID_LEN
        || !id.bytes().all(|b| b.is_ascii_graphic() && b != b':')
    {
        return Err(WebhookError::InvalidId);
    }
    Ok(())
}

/// Parse `webhook-timestamp` (integer seconds).
pub fn parse_timestamp(raw: &str) -> Result<i64, WebhookError> {
    if raw.is_empty() || raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::MalformedTimestamp);
    }
    raw.parse().map_err(|_| WebhookError::MalformedTimestamp)
}

/// Refuse a timestamp more than `tolerance` away from `now`, in either direction.
pub fn check_timestamp(ts: i64, now: DateTime<Utc>, tolerance: Duration) -> Result<(), WebhookError> {
    let tolerance_secs = tolerance.as_secs();
    // Saturating: any i64 is a valid argument (a timestamp at the end of the range is refused,
    // not an overflow).
    let delta = now.timestamp().saturating_sub(ts).max(-i64::MAX);
    let limit = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
    if delta > limit {
        Err(WebhookError::TooOld {
            age_secs: delta,
            tolerance_secs,
        })
    } else if -delta > limit {
        Err(WebhookError::TooNew {
            ahead_secs: -delta,
            tolerance_secs,
        })
    } else {
        Ok(())
    }
}

/// What is signed: `{webhook-id}.{webhook-timestamp}.{body}` (the timestamp exactly as sent).
pub fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    out.extend_from_slice(id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'.');
    out.extend_from_slice(body);
    out
}

/// The base64 signatures of every `v1,<base64>` entry of a `webhook-signature` header (entries
/// are space-separated; other versions, e.g. `v1a` asymmetric ones, are skipped).
pub fn v1_signatures(header: &str) -> Result<Vec<&str>, WebhookError> {
    let sigs: Vec<&str> = header
        .split_whitespace()
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, sig)| *version == "v1" && !sig.is_empty())
        .map(|(_, sig)| sig)
        .collect();
    if sigs.is_empty() {
        Err(WebhookError::NoV1Signature)
    } else {
        Ok(sigs)
    }
}

/// The base64 key text of a secret (`whsec_<base64>`; a bare base64 secret is taken as is).
pub fn secret_key_base64(secret: &str) -> &str {
    secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const SCHEMA: &str = include_str!("../../../schemas/canonical-event.schema.json");
    const DOC: &str = include_str!("../../../docs/intake-generic.md");

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn event_json(kind: &str) -> Value {
        serde_json::json!({
            "type": kind,
            "occurred_at": "2026-01-01T00:00:00Z",
            "user": {"id": "auth0|1", "email": "jo@example.com"},
            "group": {"id": "g1", "name": "Engineers"}
        })
    }

    #[test]
    fn single_event_maps_every_field() {
        let body = br#"{"type":"user.created","occurred_at":"2026-02-03T04:05:06+01:00",
            "user":{"id":"kc-42","email":"Jo@Example.com","login":"jo","first_name":"Jo","last_name":"Doe",
                    "display_name":"Jo Doe","attributes":{"department":"Finance"}}}"#;
        let envs = parse_body("msg_1", body, now()).unwrap();
        assert_eq!(envs.len(), 1);
        let e = &envs[0];
        assert_eq!(e.id.0, "generic:msg_1");
        assert_eq!(e.source, Source::Generic);
        assert_eq!(e.event, IdentityEvent::UserCreated);
        assert_eq!(e.subject.key, "generic:kc-42");
        assert_eq!(e.subject.email.as_deref(), Some("Jo@Example.com"));
        assert_eq!(e.subject.display_name.as_deref(), Some("Jo Doe"));
        assert_eq!(e.occurred_at.to_rfc3339(), "2026-02-03T03:05:06+00:00");
        assert_eq!(e.source_event_type, "user.created");
        let p: Vec<(&str, &str)> = e.profile.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            p,
            [
                ("department", "Finance"),
                ("displayName", "Jo Doe"),
                ("email", "Jo@Example.com"),
                ("firstName", "Jo"),
                ("lastName", "Doe"),
                ("login", "jo"),
            ]
        );
        assert_eq!(e.raw["user"]["id"], "kc-42");
    }

    #[test]
    fn batch_gets_indexed_ids() {
        let body =
            serde_json::json!({"events": [event_json("user.created"), event_json("group.member_added")]});
        let envs = parse_body("m", body.to_string().as_bytes(), now()).unwrap();
        let ids: Vec<_> = envs.iter().map(|e| e.id.0.as_str()).collect();
        assert_eq!(ids, ["generic:m:0", "generic:m:1"]);
        assert_eq!(
            envs[1].event,
            IdentityEvent::GroupMemberAdded {
                group: GroupRef {
                    id: "g1".into(),
                    name: "Engineers".into()
                }
            }
        );
    }

    #[test]
    fn bad_documents_are_rejected_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "not valid json"),
            ("[1]", "not a json object"),
            (r#"{"events":[]}"#, "empty"),
            (r#"{"events":{}}"#, "not an array"),
            (r#"{"events":[{}],"x":1}"#, "only the \"events\" field"),
            (
                r#"{"type":"user.created","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "missing field `user`",
            ),
            (
                r#"{"type":"user.created","user":{"id":"1"}}"#,
                "missing field `occurred_at`",
            ),
            (
                r#"{"type":"user.nuked","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"1"}}"#,
                "is not one of",
            ),
            (
                r#"{"type":"user.created","occurred_at":"today","user":{"id":"1"}}"#,
                "RFC 3339",
            ),
            (
                r#"{"type":"user.created","occurred_at":"2026-01-01T00:00:00Z","user":{"id":""}}"#,
                "user.id",
            ),
            (
                r#"{"type":"user.created","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"1","email":"nope"}}"#,
                "not an email",
            ),
            (
                r#"{"type":"user.created","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"1","mail":"a@b"}}"#,
                "unknown field `mail`",
            ),
            (
                r#"{"type":"user.created","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"1","attributes":{"email":"a@b"}}}"#,
                "reserved",
            ),
            (
                r#"{"type":"user.created","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"1","attributes":{"n":3}}}"#,
                "invalid type",
            ),
            (
                r#"{"type":"group.member_added","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"1"}}"#,
                "needs a group",
            ),
            (
                r#"{"events":[{"type":"user.created","occurred_at":"2026-01-01T00:00:00Z","user":{"id":"1"}},{"type":"x"}]}"#,
                "events[1] is invalid",
            ),
        ];
        for (body, want) in cases {
            let err = parse_body("m", body.as_bytes(), now()).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn webhook_id_rules() {
        assert!(validate_webhook_id("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W").is_ok());
        for bad in [
            "",
            "has space",
            "tab\t",
            "é",
            "msg_x:0",
            "x".repeat(MAX_WEBHOOK_ID_LEN + 1).as_str(),
        ] {
            assert_eq!(validate_webhook_id(bad), Err(WebhookError::InvalidId), "{bad:?}");
        }
    }

    #[test]
    fn timestamp_window_is_enforced_both_ways() {
        let tol = Duration::from_secs(300);
        let t = now().timestamp();
        assert_eq!(parse_timestamp(&t.to_string()), Ok(t));
        for bad in ["", "-5", "1.5", "12a", "99999999999999999999"] {
            assert_eq!(
                parse_timestamp(bad),
                Err(WebhookError::MalformedTimestamp),
                "{bad:?}"
            );
        }
        assert!(check_timestamp(t, now(), tol).is_ok());
        assert!(check_timestamp(t - 300, now(), tol).is_ok());
        assert!(check_timestamp(t + 300, now(), tol).is_ok());
        assert_eq!(
            check_timestamp(t - 301, now(), tol),
            Err(WebhookError::TooOld {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        let e = check_timestamp(t + 600, now(), tol).unwrap_err();
        assert_eq!(
            e.to_string(),
            "webhook-timestamp is 600 s in the future; the tolerance is 300 s"
        );
    }

    #[test]
    fn signature_header_lists_every_v1_entry() {
        assert_eq!(
            v1_signatures("v1,abc= v1a,zzz v2,q v1,def").unwrap(),
            ["abc=", "def"]
        );
        assert_eq!(v1_signatures("v1a,xyz"), Err(WebhookError::NoV1Signature));
        assert_eq!(v1_signatures(""), Err(WebhookError::NoV1Signature));
        assert_eq!(v1_signatures("v1,"), Err(WebhookError::NoV1Signature));
        assert_eq!(signed_content("id", "17", b"{}"), b"id.17.{}");
        assert_eq!(secret_key_base64("whsec_QUJD"), "QUJD");
        assert_eq!(secret_key_base64("QUJD"), "QUJD");
    }

    // --- The published schema and the documented examples cannot drift from the parser. ---

    fn schema() -> Value {
        serde_json::from_str(SCHEMA).expect("the schema is json")
    }

    fn schema_types(schema: &Value) -> Vec<String> {
        schema["$defs"]["event"]["properties"]["type"]["enum"]
            .as_array()
            .expect("the schema lists the event types as an enum")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// Every ```json block of the user-facing doc.
    fn doc_examples() -> Vec<Value> {
        let mut out = Vec::new();
        let mut block: Option<String> = None;
        for line in DOC.lines() {
            match (&mut block, line.trim()) {
                (None, "```json") => block = Some(String::new()),
                (Some(text), "```") => {
                    out.push(
                        serde_json::from_str(text).unwrap_or_else(|e| panic!("doc example: {e}\n{text}")),
                    );
                    block = None;
                }
                (Some(text), _) => {
                    text.push_str(line);
                    text.push('\n');
                }
                (None, _) => {}
            }
        }
        out
    }

    #[test]
    fn schema_types_and_parser_types_are_the_same_set() {
        let s = schema();
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
        let listed: BTreeSet<String> = schema_types(&s).into_iter().collect();
        let handled: BTreeSet<String> = EVENT_TYPES.iter().map(|t| t.to_string()).collect();
        assert_eq!(listed, handled);
        for kind in schema_types(&s) {
            let raw = event_json(&kind);
            assert!(validate(&s, &s, &raw).is_ok(), "{kind}");
            let env = parse_event("x", &raw, now()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert!(env.event.is_actionable(), "{kind} is acted on");
            assert_eq!(env.source_event_type, kind);
        }
    }

    #[test]
    fn reserved_attribute_names_match_the_schema() {
        let s = schema();
        let listed: BTreeSet<&str> =
            s["$defs"]["user"]["properties"]["attributes"]["propertyNames"]["not"]["enum"]
                .as_array()
                .expect("the schema lists the reserved attribute names")
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
        assert_eq!(listed, RESERVED_PROFILE_KEYS.iter().copied().collect());
    }

    #[test]
    fn documented_examples_validate_and_parse() {
        let s = schema();
        let examples = doc_examples();
        assert!(examples.len() >= 3, "the doc shows examples");
        let mut seen = BTreeSet::new();
        for ex in &examples {
            if let Err(e) = validate(&s, &s, ex) {
                panic!("doc example does not match the schema: {e}\n{ex:#}");
            }
            let envs = parse_body("doc", ex.to_string().as_bytes(), now())
                .unwrap_or_else(|e| panic!("doc example does not parse: {e}\n{ex:#}"));
            seen.extend(envs.iter().map(|e| e.source_event_type.clone()));
        }
        assert!(seen.contains("user.deactivated") && seen.contains("group.member_added"));
    }

    #[test]
    fn schema_and_parser_agree_on_bad_documents() {
        let s = schema();
        let bad = [
            serde_json::json!({"type": "user.created", "occurred_at": "2026-01-01T00:00:00Z"}),
            serde_json::json!({"type": "user.nuked", "occurred_at": "2026-01-01T00:00:00Z", "user": {"id": "1"}}),
            serde_json::json!({"type": "user.created", "occurred_at": "soon", "user": {"id": "1"}}),
            serde_json::json!({"type": "user.created", "occurred_at": "2026-01-01T00:00:00Z", "user": {"id": "1", "x": 1}}),
            serde_json::json!({"type": "user.created", "occurred_at": "2026-01-01T00:00:00Z", "user": {"id": ""}}),
            serde_json::json!({"type": "group.member_removed", "occurred_at": "2026-01-01T00:00:00Z", "user": {"id": "1"}}),
            serde_json::json!({"type": "user.created", "occurred_at": "2026-01-01T00:00:00Z",
                               "user": {"id": "1", "attributes": {"firstName": "x"}}}),
            serde_json::json!({"events": []}),
            serde_json::json!({"events": [{"type": "user.created"}]}),
        ];
        for doc in bad {
            assert!(validate(&s, &s, &doc).is_err(), "schema accepts {doc}");
            assert!(
                parse_body("m", doc.to_string().as_bytes(), now()).is_err(),
                "parser accepts {doc}"
            );
        }
    }

    /// A structural check of the subset of JSON Schema 2020-12 the published schema uses. An
    /// unknown keyword fails the test, so the schema cannot grow rules this check ignores.
    fn validate(root: &Value, schema: &Value, v: &Value) -> Result<(), String> {
        let Some(obj) = schema.as_object() else {
            return match schema {
                Value::Bool(true) => Ok(()),
                Value::Bool(false) => Err(format!("{v} is not allowed")),
                _ => panic!("schema node is not an object: {schema}"),
            };
        };
        for (key, rule) in obj {
            match key.as_str() {
                "$schema" | "$id" | "title" | "description" | "$comment" | "examples" | "$defs" | "then" => {}
                "$ref" => {
                    let name = rule
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/$defs/"))
                        .expect("local $defs refs only");
                    validate(root, &root["$defs"][name], v)?;
                }
                "type" => {
                    let ok = match rule.as_str().expect("single type") {
                        "object" => v.is_object(),
                        "array" => v.is_array(),
                        "string" => v.is_string(),
                        other => panic!("type {other} is not checked"),
                    };
                    if !ok {
                        return Err(format!("{v} is not of type {rule}"));
                    }
                }
                "enum" => {
                    if !rule.as_array().unwrap().contains(v) {
                        return Err(format!("{v} is not one of {rule}"));
                    }
                }
                "minLength" => {
                    if let Some(s) = v.as_str()
                        && (s.chars().count() as u64) < rule.as_u64().unwrap()
                    {
                        return Err(format!("{v} is shorter than {rule}"));
                    }
                }
                "minItems" => {
                    if let Some(a) = v.as_array()
                        && (a.len() as u64) < rule.as_u64().unwrap()
                    {
                        return Err(format!("fewer than {rule} items"));
                    }
                }
                "format" => {
                    if let Some(s) = v.as_str() {
                        let ok = match rule.as_str().unwrap() {
                            "date-time" => DateTime::parse_from_rfc3339(s).is_ok(),
                            "email" => is_plausible_email(s),
                            other => panic!("format {other} is not checked"),
                        };
                        if !ok {
                            return Err(format!("{v} is not a {rule}"));
                        }
                    }
                }
                "required" => {
                    if let Some(o) = v.as_object() {
                        for field in rule.as_array().unwrap() {
                            if !o.contains_key(field.as_str().unwrap()) {
                                return Err(format!("missing required {field}"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Some(o) = v.as_object() {
                        for (name, sub) in rule.as_object().unwrap() {
                            if let Some(x) = o.get(name) {
                                validate(root, sub, x).map_err(|e| format!("{name}: {e}"))?;
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Some(o) = v.as_object() {
                        let known = obj.get("properties").and_then(Value::as_object);
                        for (name, x) in o {
                            if !known.is_some_and(|k| k.contains_key(name)) {
                                validate(root, rule, x).map_err(|e| format!("{name}: {e}"))?;
                            }
                        }
                    }
                }
                "propertyNames" => {
                    if let Some(o) = v.as_object() {
                        for name in o.keys() {
                            validate(root, rule, &Value::String(name.clone()))?;
                        }
                    }
                }
                "not" => {
                    if validate(root, rule, v).is_ok() {
                        return Err(format!("{v} matches a forbidden schema"));
                    }
                }
                "items" => {
                    if let Some(a) = v.as_array() {
                        for (i, x) in a.iter().enumerate() {
                            validate(root, rule, x).map_err(|e| format!("[{i}]: {e}"))?;
                        }
                    }
                }
                "oneOf" => {
                    let matching = rule
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|sub| validate(root, sub, v).is_ok())
                        .count();
                    if matching != 1 {
                        return Err(format!("{v} matches {matching} of oneOf, not exactly one"));
                    }
                }
                "if" => {
                    if validate(root, rule, v).is_ok()
                        && let Some(then) = obj.get("then")
                    {
                        validate(root, then, v)?;
                    }
                }
                other => panic!("schema keyword {other} is not checked by this test"),
            }
        }
        Ok(())
    }
}
