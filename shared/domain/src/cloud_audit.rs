//! Cloud audit events → envelopes: AWS CloudTrail events delivered by EventBridge (to SQS) and GCP
//! Cloud Audit Log entries delivered by a log sink (to Pub/Sub), plus Secret Manager notifications.
//!
//! Routing (see `docs/cloud-audit.md`):
//! - an IAM change made outside Gatehouse → [`IdentityEvent::CloudDrift`] for the changed identity;
//! - a key created outside Gatehouse, a failed Secrets Manager rotation or a GCP `SECRET_ROTATE`
//!   notification → [`IdentityEvent::RotationRequested`];
//! - anything else (calls made by a Gatehouse principal, failed calls, read-only calls, events
//!   Gatehouse does not act on) → [`IdentityEvent::Ignored`], so it is still counted.
//!
//! A body that is not one of the accepted delivery shapes is an [`AuditParseError`] naming the
//! shape it looks like instead; the translator dead-letters it with that reason.
//!
//! Audit envelopes carry no profile facts: drift is a signal to read and converge, never a fact
//! about the person, so it cannot overwrite what the IdP said.

use crate::envelope::{Envelope, EnvelopeId, IdentityEvent, Profile, Source, Subject, check_id_part};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Which cloud a raw audit delivery comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An SQS message body holding an EventBridge event (CloudTrail via EventBridge).
    Aws,
    /// A Pub/Sub message (log sink or Secret Manager notification).
    Gcp,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Aws => "aws",
            Kind::Gcp => "gcp",
        }
    }

    pub fn source(self) -> Source {
        match self {
            Kind::Aws => Source::AwsCloudTrail,
            Kind::Gcp => Source::GcpAudit,
        }
    }
}

/// Why a body is not a cloud audit delivery Gatehouse can accept. Never retried: the translator
/// dead-letters the message with this text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuditParseError {
    #[error("body is not valid json: {0}")]
    Json(String),
    #[error("not an accepted delivery shape: {0}")]
    NotADelivery(String),
    #[error("invalid event: {0}")]
    Invalid(String),
}

/// Parse one raw delivery of the given kind.
pub fn parse(
    kind: Kind,
    body: &[u8],
    received_at: DateTime<Utc>,
    gatehouse_principals: &[String],
) -> Result<Vec<Envelope>, AuditParseError> {
    match kind {
        Kind::Aws => parse_eventbridge(body, received_at, gatehouse_principals),
        Kind::Gcp => parse_gcp(body, received_at, gatehouse_principals),
    }
}

// ---------------------------------------------------------------------------------------------
// AWS
// ---------------------------------------------------------------------------------------------

/// EventBridge `detail-type` of CloudTrail-recorded API calls.
pub const API_CALL_VIA_CLOUDTRAIL: &str = "AWS API Call via CloudTrail";
/// EventBridge `detail-type` of CloudTrail-recorded service events (Secrets Manager rotations).
pub const SERVICE_EVENT_VIA_CLOUDTRAIL: &str = "AWS Service Event via CloudTrail";

/// IAM calls that change what a user can do (subject `aws:iam-user:<userName>`).
const IAM_USER_DRIFT: &[&str] = &[
    "CreateUser",
    "DeleteUser",
    "AddUserToGroup",
    "RemoveUserFromGroup",
    "AttachUserPolicy",
    "DetachUserPolicy",
    "PutUserPolicy",
    "DeleteUserPolicy",
];
/// IAM calls that change what a role can do (subject `aws:iam-role:<roleName>`).
const IAM_ROLE_DRIFT: &[&str] = &[
    "AttachRolePolicy",
    "DetachRolePolicy",
    "PutRolePolicy",
    "DeleteRolePolicy",
];

/// Parse an SQS message body that is an EventBridge event whose `detail` is a CloudTrail record
/// (`detail-type` "AWS API Call via CloudTrail" or "AWS Service Event via CloudTrail").
///
/// `gatehouse_principals` are the identities Gatehouse itself calls AWS as. A call is "made by
/// Gatehouse" when one of them equals, exactly, the caller's `userIdentity.arn` (an IAM user ARN
/// or an assumed-role session ARN `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`),
/// `userIdentity.principalId` (`AIDA…` or `AROA…:SESSION`) or
/// `userIdentity.sessionContext.sessionIssuer.arn` (the role ARN: covers every session of the
/// role). A bare session name is never matched on its own: any caller chooses its session name.
pub fn parse_eventbridge(
    body: &[u8],
    received_at: DateTime<Utc>,
    gatehouse_principals: &[String],
) -> Result<Vec<Envelope>, AuditParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| AuditParseError::Json(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| AuditParseError::NotADelivery("top-level json is not an object".into()))?;
    if !obj.contains_key("detail-type") {
        return Err(AuditParseError::NotADelivery(describe_aws_shape(obj)));
    }
    let detail_type = str_of(obj, "detail-type")
        .ok_or_else(|| AuditParseError::Invalid("detail-type is not a string".into()))?;
    let detail = obj
        .get("detail")
        .and_then(Value::as_object)
        .ok_or_else(|| AuditParseError::Invalid("eventbridge event without a detail object".into()))?;
    let env = if detail_type == API_CALL_VIA_CLOUDTRAIL || detail_type == SERVICE_EVENT_VIA_CLOUDTRAIL {
        cloudtrail_envelope(detail, &value, received_at, gatehouse_principals)?
    } else {
        other_eventbridge_envelope(obj, detail_type, &value, received_at)?
    };
    Ok(vec![env])
}

/// Name the shape a body without `detail-type` looks like, so the dead letter says what went wrong.
fn describe_aws_shape(obj: &Map<String, Value>) -> String {
    if let Some(records) = obj.get("Records").and_then(Value::as_array) {
        let from_sqs = records.iter().any(|r| {
            r.get("eventSource").and_then(Value::as_str) == Some("aws:sqs") || r.get("body").is_some()
        });
        return if from_sqs {
            "a lambda sqs trigger event (Records[].body); gatehouse reads the sqs queue itself and takes \
             one message body, the eventbridge event, at a time"
                .into()
        } else {
            "a cloudtrail log file (Records[]); expected an eventbridge event with detail-type \
             \"AWS API Call via CloudTrail\""
                .into()
        };
    }
    if obj.contains_key("Messages") {
        return "an sqs ReceiveMessage response; each Messages[].Body is one delivery".into();
    }
    if obj.contains_key("Step") && obj.contains_key("SecretId") {
        return "a secrets manager rotation lambda invocation (Step, SecretId), not an audit event".into();
    }
    if obj.contains_key("eventID") && obj.contains_key("eventName") {
        return "a bare cloudtrail record; expected the eventbridge event that carries it in detail \
                (the rule must not use an input transformer)"
            .into();
    }
    "missing detail-type: not an eventbridge event".into()
}

fn cloudtrail_envelope(
    detail: &Map<String, Value>,
    raw: &Value,
    received_at: DateTime<Utc>,
    gatehouse_principals: &[String],
) -> Result<Envelope, AuditParseError> {
    if let Some(version) = str_of(detail, "eventVersion")
        && version.split('.').next() != Some("1")
    {
        return Err(AuditParseError::Invalid(format!(
            "detail.eventVersion {version:?} is not supported (major version 1 is)"
        )));
    }
    let event_id = required(detail, "eventID", "detail.eventID")?;
    check_id_part("detail.eventID", event_id).map_err(AuditParseError::Invalid)?;
    let event_name = required(detail, "eventName", "detail.eventName")?.to_string();
    let occurred_at = time_of(detail, "eventTime", "detail.eventTime")?;
    let event_source = str_of(detail, "eventSource").unwrap_or_default();

    let user = aws_user(detail, &event_name);
    let role = obj_at(detail, "requestParameters").and_then(|p| str_of(p, "roleName"));
    let secret = aws_secret(detail);

    let error_code = str_of(detail, "errorCode").filter(|c| !c.is_empty());
    let event = if let Some(code) = error_code {
        ignored(format!("{event_name} (failed: {code})"))
    } else if made_by_gatehouse_aws(detail, gatehouse_principals) {
        ignored(format!("{event_name} (made by gatehouse)"))
    } else {
        match event_source {
            "iam.amazonaws.com" => aws_iam_event(&event_name, user.is_some(), role.is_some()),
            "secretsmanager.amazonaws.com" if event_name == "RotationFailed" => {
                let why = str_of(detail, "errorMessage").filter(|m| !m.is_empty());
                IdentityEvent::RotationRequested {
                    provider: "aws".into(),
                    reason: match why {
                        Some(m) => format!("secrets manager rotation failed: {m}"),
                        None => "secrets manager rotation failed".into(),
                    },
                    secret: secret.map(str::to_string),
                }
            }
            _ => ignored(event_name.clone()),
        }
    };
    let account = || {
        str_of(detail, "recipientAccountId")
            .or_else(|| obj_at(detail, "userIdentity").and_then(|u| str_of(u, "accountId")))
            .unwrap_or("unknown")
    };
    let subject = match (user, role, secret) {
        (_, Some(role), _) if IAM_ROLE_DRIFT.contains(&event_name.as_str()) => {
            subject(format!("aws:iam-role:{role}"), None)
        }
        (Some(user), _, _) => subject(format!("aws:iam-user:{user}"), user.contains('@').then_some(user)),
        (None, Some(role), _) => subject(format!("aws:iam-role:{role}"), None),
        (None, None, Some(secret)) => subject(format!("aws:secret:{secret}"), None),
        (None, None, None) => subject(format!("aws:account:{}", account()), None),
    };
    Ok(Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        // The log's own id, whichever way the record arrives (EventBridge now, a CloudTrail
        // lookup later): `aws:cloudtrail:<eventID>`.
        id: EnvelopeId(format!("aws:cloudtrail:{event_id}")),
        source: Source::AwsCloudTrail,
        subject,
        occurred_at,
        received_at,
        event,
        profile: Profile::new(),
        source_event_type: event_name,
        raw: raw.clone(),
    })
}

fn aws_iam_event(event_name: &str, has_user: bool, has_role: bool) -> IdentityEvent {
    let drift = (IAM_USER_DRIFT.contains(&event_name) && has_user)
        || (IAM_ROLE_DRIFT.contains(&event_name) && has_role);
    if drift {
        IdentityEvent::CloudDrift {
            provider: "aws".into(),
            action: event_name.to_string(),
        }
    } else if event_name == "CreateAccessKey" && has_user {
        IdentityEvent::RotationRequested {
            provider: "aws".into(),
            reason: "access key created outside gatehouse".into(),
            secret: None,
        }
    } else {
        ignored(event_name.to_string())
    }
}

/// The IAM user a call is about: `requestParameters.userName`; for `CreateAccessKey` without one
/// (a user creating its own key) the response's `accessKey.userName`, else the caller's name.
fn aws_user<'a>(detail: &'a Map<String, Value>, event_name: &str) -> Option<&'a str> {
    let from_request = obj_at(detail, "requestParameters").and_then(|p| str_of(p, "userName"));
    let from_key = || {
        obj_at(detail, "responseElements")
            .and_then(|r| obj_at(r, "accessKey"))
            .and_then(|k| str_of(k, "userName"))
            .or_else(|| obj_at(detail, "userIdentity").and_then(|u| str_of(u, "userName")))
    };
    match from_request {
        Some(u) => Some(u),
        None if event_name == "CreateAccessKey" => from_key(),
        None => None,
    }
    .filter(|u| !u.is_empty())
}

/// The secret a Secrets Manager event is about, preferring the ARN so that an API call and the
/// rotation events it causes share one subject.
fn aws_secret(detail: &Map<String, Value>) -> Option<&str> {
    let additional = obj_at(detail, "additionalEventData");
    let response = obj_at(detail, "responseElements");
    let request = obj_at(detail, "requestParameters");
    additional
        .and_then(|a| str_of(a, "SecretId"))
        .or_else(|| response.and_then(|r| str_of(r, "arn").or_else(|| str_of(r, "aRN"))))
        .or_else(|| request.and_then(|r| str_of(r, "secretId")))
        .filter(|s| !s.is_empty())
}

fn made_by_gatehouse_aws(detail: &Map<String, Value>, principals: &[String]) -> bool {
    let Some(who) = obj_at(detail, "userIdentity") else {
        return false;
    };
    let issuer = obj_at(who, "sessionContext")
        .and_then(|c| obj_at(c, "sessionIssuer"))
        .and_then(|i| str_of(i, "arn"));
    let ids = [str_of(who, "arn"), str_of(who, "principalId"), issuer];
    ids.iter()
        .flatten()
        .any(|id| !id.is_empty() && principals.iter().any(|p| p == id))
}

/// An EventBridge event that is not CloudTrail (e.g. an EC2 state change): accepted and ignored.
fn other_eventbridge_envelope(
    obj: &Map<String, Value>,
    detail_type: &str,
    raw: &Value,
    received_at: DateTime<Utc>,
) -> Result<Envelope, AuditParseError> {
    let id = required(obj, "id", "id")?;
    check_id_part("id", id).map_err(AuditParseError::Invalid)?;
    let occurred_at = time_of(obj, "time", "time")?;
    let account = str_of(obj, "account").unwrap_or("unknown");
    Ok(Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("aws:eventbridge:{id}")),
        source: Source::AwsCloudTrail,
        subject: subject(format!("aws:account:{account}"), None),
        occurred_at,
        received_at,
        event: ignored(detail_type.to_string()),
        profile: Profile::new(),
        source_event_type: detail_type.to_string(),
        raw: raw.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// GCP
// ---------------------------------------------------------------------------------------------

/// Parse a GCP audit delivery. Accepted bodies:
/// - a push-subscription POST body `{"message": {"data": base64, "attributes": {...},
///   "messageId", "publishTime"}, "subscription"}`;
/// - a bare Pub/Sub message `{"data": base64, "attributes": {...}, "messageId", ...}` (what an
///   adapter that keeps the attributes should put in a delivery's body);
/// - the message data alone: a Cloud Audit `LogEntry` (log sink), or a Secret Manager `Secret`
///   resource (a notification whose attributes were lost, see [`parse_gcp_message`]).
///
/// A call is "made by Gatehouse" when `protoPayload.authenticationInfo.principalEmail` equals one
/// of `gatehouse_principals` (ASCII case-insensitively), or `principalSubject` equals one exactly.
pub fn parse_gcp(
    body: &[u8],
    received_at: DateTime<Utc>,
    gatehouse_principals: &[String],
) -> Result<Vec<Envelope>, AuditParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| AuditParseError::Json(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| AuditParseError::NotADelivery("top-level json is not an object".into()))?;
    if let Some(message) = obj.get("message") {
        let message = message
            .as_object()
            .ok_or_else(|| AuditParseError::Invalid("push body's message is not an object".into()))?;
        return pubsub_message(message, received_at, gatehouse_principals);
    }
    if obj.contains_key("receivedMessages") {
        return Err(AuditParseError::NotADelivery(
            "a pub/sub pull response; each receivedMessages[].message is one delivery".into(),
        ));
    }
    if obj.contains_key("protoPayload") {
        return log_entry(obj, &value, received_at, gatehouse_principals);
    }
    if ["data", "attributes", "messageId", "message_id"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        return pubsub_message(obj, received_at, gatehouse_principals);
    }
    if secret_name(obj).is_some() {
        return parse_gcp_message(body, &BTreeMap::new(), received_at, gatehouse_principals);
    }
    Err(AuditParseError::NotADelivery(
        "neither a pub/sub message, a log entry (protoPayload) nor a secret manager resource".into(),
    ))
}

/// Parse one Pub/Sub message given its data and attributes (the pull API and the client library
/// hand them over separately).
///
/// A Secret Manager notification is recognised by its `eventType` attribute: `SECRET_ROTATE` →
/// [`IdentityEvent::RotationRequested`] for the `secretId` attribute; every other event type
/// (`SECRET_UPDATE`, `TOPIC_CONFIGURED`, ...) → Ignored. Without attributes, a data that is a
/// `Secret` resource with a `rotation` schedule is read as `SECRET_ROTATE` (the limitation: a
/// `SECRET_UPDATE` of such a secret looks the same and would request a rotation too); one without
/// a schedule, or a `SecretVersion`, is Ignored.
pub fn parse_gcp_message(
    data: &[u8],
    attributes: &BTreeMap<String, String>,
    received_at: DateTime<Utc>,
    gatehouse_principals: &[String],
) -> Result<Vec<Envelope>, AuditParseError> {
    gcp_message(
        data,
        attributes,
        &MessageMeta::default(),
        received_at,
        gatehouse_principals,
    )
}

#[derive(Default)]
struct MessageMeta {
    message_id: Option<String>,
    publish_time: Option<DateTime<Utc>>,
}

fn pubsub_message(
    message: &Map<String, Value>,
    received_at: DateTime<Utc>,
    gatehouse_principals: &[String],
) -> Result<Vec<Envelope>, AuditParseError> {
    let attributes: BTreeMap<String, String> = obj_at(message, "attributes")
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let data = match message.get("data") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => decode_base64(s)
            .ok_or_else(|| AuditParseError::Invalid("message.data is not valid base64".into()))?,
        Some(_) => return Err(AuditParseError::Invalid("message.data is not a string".into())),
    };
    let publish_time = str_of(message, "publishTime")
        .or_else(|| str_of(message, "publish_time"))
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc));
    let meta = MessageMeta {
        message_id: str_of(message, "messageId")
            .or_else(|| str_of(message, "message_id"))
            .filter(|m| !m.is_empty())
            .map(str::to_string),
        publish_time,
    };
    gcp_message(&data, &attributes, &meta, received_at, gatehouse_principals)
}

fn gcp_message(
    data: &[u8],
    attributes: &BTreeMap<String, String>,
    meta: &MessageMeta,
    received_at: DateTime<Utc>,
    gatehouse_principals: &[String],
) -> Result<Vec<Envelope>, AuditParseError> {
    if let Some(event_type) = attributes.get("eventType") {
        return Ok(vec![secret_notification(
            event_type,
            attributes.get("secretId").map(String::as_str),
            data,
            meta,
            received_at,
        )?]);
    }
    if data.is_empty() {
        return Err(AuditParseError::Invalid(
            "message has no data and no secret manager eventType attribute".into(),
        ));
    }
    let value: Value = serde_json::from_slice(data)
        .map_err(|e| AuditParseError::NotADelivery(format!("message.data is not json: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| AuditParseError::NotADelivery("message.data is not a json object".into()))?;
    if obj.contains_key("protoPayload") {
        return log_entry(obj, &value, received_at, gatehouse_principals);
    }
    if let Some(name) = secret_name(obj) {
        // Attributes lost: see `parse_gcp_message` for what this can and cannot tell apart.
        let rotating = !name.contains("/versions/") && obj.get("rotation").is_some_and(Value::is_object);
        let event_type = if rotating {
            "SECRET_ROTATE"
        } else {
            "SECRET_UPDATE"
        };
        return Ok(vec![secret_notification(
            event_type,
            None,
            data,
            meta,
            received_at,
        )?]);
    }
    Err(AuditParseError::NotADelivery(
        "message.data is neither a log entry (protoPayload) nor a secret manager resource".into(),
    ))
}

/// `name` of a Secret Manager `Secret` (`projects/P/secrets/S`) or `SecretVersion` resource.
fn secret_name(obj: &Map<String, Value>) -> Option<&str> {
    let name = str_of(obj, "name")?;
    let parts: Vec<&str> = name.split('/').collect();
    let shaped = parts.len() >= 4 && parts[0] == "projects" && parts[2] == "secrets" && !parts[3].is_empty();
    (shaped && !obj.contains_key("protoPayload")).then_some(name)
}

fn secret_notification(
    event_type: &str,
    secret_id: Option<&str>,
    data: &[u8],
    meta: &MessageMeta,
    received_at: DateTime<Utc>,
) -> Result<Envelope, AuditParseError> {
    let resource: Option<Value> = if data.is_empty() {
        None
    } else {
        Some(serde_json::from_slice(data).map_err(|e| {
            AuditParseError::Invalid(format!("secret manager notification data is not json: {e}"))
        })?)
    };
    let from_data = resource
        .as_ref()
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .map(|n| n.split("/versions/").next().unwrap_or(n));
    let secret = secret_id.or(from_data).filter(|s| !s.is_empty());
    let event = if event_type == "SECRET_ROTATE" {
        let secret = secret.ok_or_else(|| {
            AuditParseError::Invalid("SECRET_ROTATE without a secretId attribute or secret name".into())
        })?;
        IdentityEvent::RotationRequested {
            provider: "gcp".into(),
            reason: "SECRET_ROTATE".into(),
            secret: Some(secret.to_string()),
        }
    } else {
        ignored(event_type.to_string())
    };
    let id = match &meta.message_id {
        Some(m) => {
            check_id_part("messageId", m).map_err(AuditParseError::Invalid)?;
            format!("gcp:pubsub:{m}")
        }
        None => {
            let mut h = Sha256::new();
            h.update(event_type.as_bytes());
            h.update([0]);
            h.update(secret.unwrap_or_default().as_bytes());
            h.update([0]);
            h.update(data);
            format!("gcp:sm:{}", hex(&h.finalize()[..16]))
        }
    };
    let subject_key = match secret {
        Some(s) => format!("gcp:secret:{s}"),
        None => "gcp:secret:unknown".into(),
    };
    let mut raw = Map::new();
    raw.insert("eventType".into(), Value::String(event_type.to_string()));
    if let Some(s) = secret_id {
        raw.insert("secretId".into(), Value::String(s.to_string()));
    }
    raw.insert("data".into(), resource.unwrap_or(Value::Null));
    Ok(Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(id),
        source: Source::GcpAudit,
        subject: subject(subject_key, None),
        occurred_at: meta.publish_time.unwrap_or(received_at),
        received_at,
        event,
        profile: Profile::new(),
        source_event_type: event_type.to_string(),
        raw: Value::Object(raw),
    })
}

fn log_entry(
    entry: &Map<String, Value>,
    raw: &Value,
    received_at: DateTime<Utc>,
    gatehouse_principals: &[String],
) -> Result<Vec<Envelope>, AuditParseError> {
    let insert_id = required(entry, "insertId", "insertId")?;
    check_id_part("insertId", insert_id).map_err(AuditParseError::Invalid)?;
    let occurred_at = time_of(entry, "timestamp", "timestamp")?;
    let payload = obj_at(entry, "protoPayload")
        .ok_or_else(|| AuditParseError::Invalid("protoPayload is not an object".into()))?;
    let method = required(payload, "methodName", "protoPayload.methodName")?.to_string();
    let short = method.rsplit('.').next().unwrap_or(&method);
    let resource_name = str_of(payload, "resourceName").unwrap_or("unknown");
    let envelope = |id: String, subject: Subject, event: IdentityEvent| Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(id),
        source: Source::GcpAudit,
        subject,
        occurred_at,
        received_at,
        event,
        profile: Profile::new(),
        source_event_type: method.clone(),
        raw: raw.clone(),
    };
    let base_id = format!("gcp:log:{insert_id}");
    let sa = service_account_email(entry, payload);
    let default_subject = || match &sa {
        Some(sa) => subject(format!("gcp:sa:{sa}"), None),
        None => subject(format!("gcp:resource:{resource_name}"), None),
    };

    let status_code = obj_at(payload, "status")
        .and_then(|s| s.get("code"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if status_code != 0 {
        let event = ignored(format!("{method} (failed: code {status_code})"));
        return Ok(vec![envelope(base_id, default_subject(), event)]);
    }
    if made_by_gatehouse_gcp(payload, gatehouse_principals) {
        let event = ignored(format!("{method} (made by gatehouse)"));
        return Ok(vec![envelope(base_id, default_subject(), event)]);
    }

    if short.eq_ignore_ascii_case("SetIamPolicy") {
        let mut members: Vec<&str> = Vec::new();
        let deltas = obj_at(payload, "serviceData")
            .and_then(|s| obj_at(s, "policyDelta"))
            .and_then(|p| p.get("bindingDeltas"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for delta in deltas {
            if let Some(m) = delta.get("member").and_then(Value::as_str)
                && member_subject(m).is_some()
                && !members.contains(&m)
            {
                members.push(m);
            }
        }
        if members.is_empty() {
            let event = ignored(format!("{method} (no user or service account binding changed)"));
            return Ok(vec![envelope(
                base_id,
                subject(format!("gcp:resource:{resource_name}"), None),
                event,
            )]);
        }
        return Ok(members
            .into_iter()
            .filter_map(|m| {
                let subject = member_subject(m)?;
                let event = IdentityEvent::CloudDrift {
                    provider: "gcp".into(),
                    action: method.clone(),
                };
                Some(envelope(format!("{base_id}:{m}"), subject, event))
            })
            .collect());
    }
    let event = match short {
        "CreateServiceAccountKey" if sa.is_some() => IdentityEvent::RotationRequested {
            provider: "gcp".into(),
            reason: "service account key created outside gatehouse".into(),
            secret: None,
        },
        _ => ignored(method.clone()),
    };
    Ok(vec![envelope(base_id, default_subject(), event)])
}

/// `user:x` → `gcp:user:x` (email x); `serviceAccount:y` → `gcp:sa:y`. Groups, domains, deleted
/// principals and `allUsers` are not subjects Gatehouse manages.
fn member_subject(member: &str) -> Option<Subject> {
    let (kind, email) = member.split_once(':')?;
    if email.is_empty() || email.contains('?') {
        return None;
    }
    match kind {
        "user" => Some(subject(format!("gcp:user:{email}"), Some(email))),
        "serviceAccount" => Some(subject(format!("gcp:sa:{email}"), None)),
        _ => None,
    }
}

/// The service account a log entry is about: the `service_account` resource's `email_id` label,
/// else the first `serviceAccounts/<email>` segment of the request or resource name.
fn service_account_email(entry: &Map<String, Value>, payload: &Map<String, Value>) -> Option<String> {
    let label = obj_at(entry, "resource")
        .and_then(|r| obj_at(r, "labels"))
        .and_then(|l| str_of(l, "email_id"))
        .filter(|e| e.contains('@'));
    if let Some(label) = label {
        return Some(label.to_string());
    }
    let names = [
        obj_at(payload, "request").and_then(|r| str_of(r, "name")),
        str_of(payload, "resourceName"),
        obj_at(payload, "response").and_then(|r| str_of(r, "name")),
    ];
    names.into_iter().flatten().find_map(|name| {
        let mut parts = name.split('/');
        parts.find(|p| *p == "serviceAccounts")?;
        parts.next().filter(|e| e.contains('@')).map(str::to_string)
    })
}

fn made_by_gatehouse_gcp(payload: &Map<String, Value>, principals: &[String]) -> bool {
    let Some(auth) = obj_at(payload, "authenticationInfo") else {
        return false;
    };
    let email = str_of(auth, "principalEmail").filter(|e| !e.is_empty());
    let subject = str_of(auth, "principalSubject").filter(|s| !s.is_empty());
    principals
        .iter()
        .any(|p| email.is_some_and(|e| e.eq_ignore_ascii_case(p)) || subject == Some(p.as_str()))
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn ignored(event_type: String) -> IdentityEvent {
    IdentityEvent::Ignored { event_type }
}

fn subject(key: String, email: Option<&str>) -> Subject {
    Subject {
        key,
        email: email.map(str::to_string),
        display_name: None,
    }
}

fn str_of<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn obj_at<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    obj.get(key).and_then(Value::as_object)
}

fn required<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a str, AuditParseError> {
    str_of(obj, key)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuditParseError::Invalid(format!("missing {path}")))
}

fn time_of(obj: &Map<String, Value>, key: &str, path: &str) -> Result<DateTime<Utc>, AuditParseError> {
    let raw = required(obj, key, path)?;
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| AuditParseError::Invalid(format!("{path} {raw:?} is not an rfc 3339 time: {e}")))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Base64 (standard or URL-safe alphabet, padding optional) as Pub/Sub's JSON carries `data`.
/// The domain crate has no base64 dependency, and this is the only place it needs one.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let trimmed = s.trim_end_matches('=');
    if s.len() - trimmed.len() > 2 {
        return None;
    }
    let bytes = trimmed.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
    }

    macro_rules! aws {
        ($name:literal) => {
            (
                $name,
                include_bytes!(concat!("../../../../shared/fixtures/aws/", $name)).as_slice(),
            )
        };
    }
    macro_rules! gcp {
        ($name:literal) => {
            (
                $name,
                include_bytes!(concat!("../../../../shared/fixtures/gcp/", $name)).as_slice(),
            )
        };
    }

    const SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/payments/db-AbC123";
    const SA: &str = "gcp:sa:ci-deployer@acme-prod-42.iam.gserviceaccount.com";

    /// A fixture's file name and bytes.
    type Fixture = (&'static str, &'static [u8]);
    /// (envelope id, subject key, event kind)
    type Expected = (String, String, &'static str);

    fn aws_accepted() -> Vec<(Fixture, Vec<Expected>)> {
        let one =
            |id: &str, subject: &str, kind: &'static str| vec![(id.to_string(), subject.to_string(), kind)];
        vec![
            (
                aws!("eventbridge.iam.CreateUser.constructed.json"),
                one(
                    "aws:cloudtrail:e1d2c3b4-0000-4a5b-8c9d-222222220000",
                    "aws:iam-user:alice",
                    "cloud_drift",
                ),
            ),
            (
                aws!("eventbridge.iam.AddUserToGroup.constructed.json"),
                one(
                    "aws:cloudtrail:e1d2c3b4-0001-4a5b-8c9d-222222220001",
                    "aws:iam-user:alice",
                    "cloud_drift",
                ),
            ),
            (
                aws!("eventbridge.iam.CreateAccessKey.constructed.json"),
                one(
                    "aws:cloudtrail:e1d2c3b4-0002-4a5b-8c9d-222222220002",
                    "aws:iam-user:alice",
                    "rotation_requested",
                ),
            ),
            (
                aws!("eventbridge.iam.AttachRolePolicy.constructed.json"),
                one(
                    "aws:cloudtrail:e1d2c3b4-0003-4a5b-8c9d-222222220003",
                    "aws:iam-role:app-deployer",
                    "cloud_drift",
                ),
            ),
            (
                aws!("eventbridge.iam.RemoveUserFromGroup.constructed.json"),
                one(
                    "aws:cloudtrail:e1d2c3b4-0004-4a5b-8c9d-222222220004",
                    "aws:iam-user:alice",
                    "cloud_drift",
                ),
            ),
            (
                aws!("eventbridge.iam.DeleteUser.constructed.json"),
                one(
                    "aws:cloudtrail:e1d2c3b4-0005-4a5b-8c9d-222222220005",
                    "aws:iam-user:alice",
                    "cloud_drift",
                ),
            ),
            (
                aws!("eventbridge.secretsmanager.RotateSecret.constructed.json"),
                one(
                    "aws:cloudtrail:7b8c9d0e-0000-4f1a-b2c3-444444440001",
                    &format!("aws:secret:{SECRET_ARN}"),
                    "ignored",
                ),
            ),
            (
                aws!("eventbridge.secretsmanager.GetSecretValue.constructed.json"),
                one(
                    "aws:cloudtrail:7b8c9d0e-0000-4f1a-b2c3-444444440002",
                    &format!("aws:secret:{SECRET_ARN}"),
                    "ignored",
                ),
            ),
            (
                aws!("eventbridge.secretsmanager.RotationSucceeded.constructed.json"),
                one(
                    "aws:cloudtrail:8c9d0e1f-0000-4a2b-c3d4-555555550001",
                    &format!("aws:secret:{SECRET_ARN}"),
                    "ignored",
                ),
            ),
            (
                aws!("eventbridge.secretsmanager.RotationFailed.docs-detail.json"),
                one(
                    "aws:cloudtrail:EXAMPLE3-90ab-cdef-fedc-ba987EXAMPLE",
                    "aws:secret:arn:aws:secretsmanager:us-east-2:123456789012:secret:MyDatabaseSecret-a1b2c3",
                    "rotation_requested",
                ),
            ),
            (
                aws!("eventbridge.envelope.ec2-example.docs.json"),
                one(
                    "aws:eventbridge:6a7e8feb-b491-4cf7-a9f1-bf3703467718",
                    "aws:account:111122223333",
                    "ignored",
                ),
            ),
        ]
    }

    /// (fixture, a phrase the rejection reason must contain)
    fn aws_rejected() -> Vec<(Fixture, &'static str)> {
        vec![
            (
                aws!("cloudtrail.record.RotationFailed.docs.json"),
                "a bare cloudtrail record",
            ),
            (
                aws!("cloudtrail.records.AddUserToGroup.docs.json"),
                "a cloudtrail log file",
            ),
            (
                aws!("cloudtrail.records.CreateUser.docs.json"),
                "a cloudtrail log file",
            ),
            (
                aws!("lambda.sqs-event.eventbridge-iam.constructed.json"),
                "a lambda sqs trigger event",
            ),
            (
                aws!("lambda.sqs-event.powertools.json"),
                "a lambda sqs trigger event",
            ),
            (
                aws!("secretsmanager.rotation-lambda.createSecret.powertools.json"),
                "rotation lambda invocation",
            ),
            (
                aws!("secretsmanager.rotation-lambda.finishSecret.constructed.json"),
                "rotation lambda invocation",
            ),
            (
                aws!("secretsmanager.rotation-lambda.request-shape.docs.json"),
                "rotation lambda invocation",
            ),
            (
                aws!("secretsmanager.rotation-lambda.setSecret.constructed.json"),
                "rotation lambda invocation",
            ),
            (
                aws!("secretsmanager.rotation-lambda.testSecret.constructed.json"),
                "rotation lambda invocation",
            ),
            (
                aws!("sqs.receive-message.response.constructed.json"),
                "an sqs ReceiveMessage response",
            ),
        ]
    }

    fn gcp_accepted() -> Vec<(Fixture, Vec<Expected>)> {
        let one =
            |id: &str, subject: &str, kind: &'static str| vec![(id.to_string(), subject.to_string(), kind)];
        let set_iam = || {
            one(
                "gcp:log:-x1y2z3e4abcd:user:bob@example.com",
                "gcp:user:bob@example.com",
                "cloud_drift",
            )
        };
        let rotate = || {
            one(
                "gcp:pubsub:9876543210123",
                "gcp:secret:projects/123456789012/secrets/payments-db-password",
                "rotation_requested",
            )
        };
        vec![
            (gcp!("logentry.SetIamPolicy.constructed.json"), set_iam()),
            (
                gcp!("pubsub.push.logsink.SetIamPolicy.constructed.json"),
                set_iam(),
            ),
            (
                gcp!("logentry.CreateServiceAccountKey.constructed.json"),
                one("gcp:log:1a2b3c4d5e6f7", SA, "rotation_requested"),
            ),
            (
                gcp!("pubsub.push.logsink.CreateServiceAccountKey.constructed.json"),
                one("gcp:log:1a2b3c4d5e6f7", SA, "rotation_requested"),
            ),
            (
                gcp!("logentry.DeleteServiceAccountKey.constructed.json"),
                one("gcp:log:9z8y7x6w5v4u", SA, "ignored"),
            ),
            (
                gcp!("pubsub.push.logsink.DeleteServiceAccountKey.constructed.json"),
                one("gcp:log:9z8y7x6w5v4u", SA, "ignored"),
            ),
            (
                gcp!("logentry.pubsub.CreateTopic.google-cloudevents.json"),
                one(
                    "gcp:log:9frck8cf9j",
                    "gcp:resource:projects/test-project/topics/test-auditlogs-source",
                    "ignored",
                ),
            ),
            (
                gcp!("pubsub.push.secretmanager.SECRET_ROTATE.constructed.json"),
                rotate(),
            ),
            (
                gcp!("pubsub.push.secretmanager.TOPIC_CONFIGURED.constructed.json"),
                one("gcp:pubsub:9876543210000", "gcp:secret:unknown", "ignored"),
            ),
        ]
    }

    fn gcp_rejected() -> Vec<(Fixture, &'static str)> {
        vec![
            (
                gcp!("pubsub.pull.logsink.CreateServiceAccountKey.constructed.json"),
                "a pub/sub pull response",
            ),
            (
                gcp!("pubsub.push.MessagePublishedData-simple.google-cloudevents.json"),
                "message.data is not json",
            ),
            (
                gcp!("pubsub.push.MessagePublishedData-complex.google-cloudevents.json"),
                "message.data is not json",
            ),
        ]
    }

    fn summary(envs: &[Envelope]) -> Vec<(String, String, &str)> {
        envs.iter()
            .map(|e| (e.id.0.clone(), e.subject.key.clone(), e.event.kind()))
            .collect()
    }

    #[test]
    fn every_aws_fixture_parses_or_is_rejected_with_its_reason() {
        for ((name, body), want) in aws_accepted() {
            let envs = parse_eventbridge(body, now(), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(summary(&envs), want, "{name}");
            for e in &envs {
                assert_eq!(e.source, Source::AwsCloudTrail, "{name}");
                assert!(
                    e.profile.is_empty(),
                    "{name}: audit envelopes carry no profile facts"
                );
                assert_eq!(e.received_at, now());
                // The envelope survives the queue.
                assert_eq!(Envelope::from_json(&e.to_json()).unwrap(), *e, "{name}");
            }
        }
        for ((name, body), phrase) in aws_rejected() {
            match parse_eventbridge(body, now(), &[]) {
                Err(e @ AuditParseError::NotADelivery(_)) => {
                    assert!(e.to_string().contains(phrase), "{name}: {e}")
                }
                other => panic!("{name}: expected a rejection containing {phrase:?}, got {other:?}"),
            }
        }
        // Both tables together name every file in shared/fixtures/aws.
        assert_eq!(aws_accepted().len() + aws_rejected().len(), 22);
    }

    #[test]
    fn every_gcp_fixture_parses_or_is_rejected_with_its_reason() {
        for ((name, body), want) in gcp_accepted() {
            let envs = parse_gcp(body, now(), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(summary(&envs), want, "{name}");
            for e in &envs {
                assert_eq!(e.source, Source::GcpAudit, "{name}");
                assert!(e.profile.is_empty(), "{name}");
                assert_eq!(Envelope::from_json(&e.to_json()).unwrap(), *e, "{name}");
            }
        }
        for ((name, body), phrase) in gcp_rejected() {
            match parse_gcp(body, now(), &[]) {
                Err(e @ AuditParseError::NotADelivery(_)) => {
                    assert!(e.to_string().contains(phrase), "{name}: {e}")
                }
                other => panic!("{name}: expected a rejection containing {phrase:?}, got {other:?}"),
            }
        }
        // The remaining file is the decoded data of the SECRET_ROTATE push: see
        // `secret_resource_without_attributes_is_read_as_a_rotation`.
        assert_eq!(gcp_accepted().len() + gcp_rejected().len() + 1, 13);
    }

    #[test]
    fn events_carry_times_actions_and_reasons() {
        let (_, body) = aws!("eventbridge.iam.AttachRolePolicy.constructed.json");
        let env = &parse_eventbridge(body, now(), &[]).unwrap()[0];
        assert_eq!(
            env.occurred_at,
            Utc.with_ymd_and_hms(2024, 5, 1, 10, 3, 0).unwrap()
        );
        assert_eq!(env.source_event_type, "AttachRolePolicy");
        assert_eq!(
            env.event,
            IdentityEvent::CloudDrift {
                provider: "aws".into(),
                action: "AttachRolePolicy".into()
            }
        );
        assert_eq!(
            env.raw["detail"]["eventID"],
            "e1d2c3b4-0003-4a5b-8c9d-222222220003"
        );

        let (_, body) = aws!("eventbridge.iam.CreateAccessKey.constructed.json");
        let env = &parse_eventbridge(body, now(), &[]).unwrap()[0];
        assert_eq!(
            env.event,
            IdentityEvent::RotationRequested {
                provider: "aws".into(),
                reason: "access key created outside gatehouse".into(),
                secret: None
            }
        );

        let (_, body) = aws!("eventbridge.secretsmanager.RotationFailed.docs-detail.json");
        let env = &parse_eventbridge(body, now(), &[]).unwrap()[0];
        match &env.event {
            IdentityEvent::RotationRequested {
                provider,
                reason,
                secret,
            } => {
                assert_eq!(provider, "aws");
                assert!(reason.starts_with("secrets manager rotation failed: Error when executing lambda"));
                assert_eq!(
                    secret.as_deref(),
                    Some("arn:aws:secretsmanager:us-east-2:123456789012:secret:MyDatabaseSecret-a1b2c3")
                );
            }
            other => panic!("{other:?}"),
        }

        let (_, body) = gcp!("pubsub.push.secretmanager.SECRET_ROTATE.constructed.json");
        let env = &parse_gcp(body, now(), &[]).unwrap()[0];
        assert_eq!(
            env.event,
            IdentityEvent::RotationRequested {
                provider: "gcp".into(),
                reason: "SECRET_ROTATE".into(),
                secret: Some("projects/123456789012/secrets/payments-db-password".into())
            }
        );
        assert_eq!(env.occurred_at.to_rfc3339(), "2024-05-01T00:00:03.512+00:00");

        let (_, body) = gcp!("logentry.SetIamPolicy.constructed.json");
        let env = &parse_gcp(body, now(), &[]).unwrap()[0];
        assert_eq!(env.subject.email.as_deref(), Some("bob@example.com"));
        assert_eq!(env.occurred_at.to_rfc3339(), "2024-05-01T12:00:00.118265+00:00");
        assert_eq!(
            env.event,
            IdentityEvent::CloudDrift {
                provider: "gcp".into(),
                action: "SetIamPolicy".into()
            }
        );
    }

    #[test]
    fn the_sqs_body_inside_transport_wrappers_is_the_eventbridge_event() {
        // The body an SQS consumer hands over is exactly what the wrappers carry as a string.
        let (_, body) = aws!("sqs.receive-message.response.constructed.json");
        let v: Value = serde_json::from_slice(body).unwrap();
        let inner = v["Messages"][0]["Body"].as_str().unwrap();
        let env = &parse_eventbridge(inner.as_bytes(), now(), &[]).unwrap()[0];
        assert_eq!(env.id.0, "aws:cloudtrail:e1d2c3b4-0000-4a5b-8c9d-222222220000");
        assert_eq!(env.source_event_type, "CreateUser");

        let (_, body) = aws!("lambda.sqs-event.eventbridge-iam.constructed.json");
        let v: Value = serde_json::from_slice(body).unwrap();
        let ids: Vec<String> = v["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let body = r["body"].as_str().unwrap();
                parse_eventbridge(body.as_bytes(), now(), &[]).unwrap()[0]
                    .id
                    .0
                    .clone()
            })
            .collect();
        assert_eq!(
            ids,
            [
                "aws:cloudtrail:e1d2c3b4-0001-4a5b-8c9d-222222220001",
                "aws:cloudtrail:e1d2c3b4-0004-4a5b-8c9d-222222220004"
            ]
        );

        // A pull-API message, taken out of its response, is one delivery.
        let (_, body) = gcp!("pubsub.pull.logsink.CreateServiceAccountKey.constructed.json");
        let v: Value = serde_json::from_slice(body).unwrap();
        let message = serde_json::to_vec(&v["receivedMessages"][0]["message"]).unwrap();
        let envs = parse_gcp(&message, now(), &[]).unwrap();
        assert_eq!(
            summary(&envs),
            [("gcp:log:1a2b3c4d5e6f7".into(), SA.into(), "rotation_requested")]
        );
    }

    fn with_detail(name: &str, body: &[u8], edit: impl FnOnce(&mut Map<String, Value>)) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{name}: {e}"));
        edit(v["detail"].as_object_mut().unwrap());
        serde_json::to_vec(&v).unwrap()
    }

    fn ignored_reason(envs: &[Envelope]) -> &str {
        match &envs[0].event {
            IdentityEvent::Ignored { event_type } => event_type,
            other => panic!("expected ignored, got {other:?}"),
        }
    }

    #[test]
    fn aws_calls_made_by_a_gatehouse_principal_are_ignored() {
        let (_, create_user) = aws!("eventbridge.iam.CreateUser.constructed.json");
        let (_, create_key) = aws!("eventbridge.iam.CreateAccessKey.constructed.json");
        let session = "arn:aws:sts::111122223333:assumed-role/AWSReservedSSO_AdministratorAccess_0123456789abcdef/admin@example.com";
        let role = "arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_AdministratorAccess_0123456789abcdef";
        for principal in [session, role, "AROAEXAMPLEROLEID123:admin@example.com"] {
            let envs = parse_eventbridge(create_user, now(), &[principal.to_string()]).unwrap();
            assert_eq!(
                ignored_reason(&envs),
                "CreateUser (made by gatehouse)",
                "{principal}"
            );
            assert_eq!(envs[0].subject.key, "aws:iam-user:alice");
        }
        let envs = parse_eventbridge(
            create_key,
            now(),
            &["arn:aws:iam::111122223333:user/ops-automation".into()],
        )
        .unwrap();
        assert_eq!(ignored_reason(&envs), "CreateAccessKey (made by gatehouse)");
        // A bare session name is chosen by the caller: it never identifies Gatehouse.
        let envs = parse_eventbridge(create_user, now(), &["admin@example.com".into()]).unwrap();
        assert_eq!(envs[0].event.kind(), "cloud_drift");
        // Another principal does not match.
        let envs = parse_eventbridge(create_key, now(), &[role.into()]).unwrap();
        assert_eq!(envs[0].event.kind(), "rotation_requested");
    }

    #[test]
    fn gcp_calls_made_by_a_gatehouse_principal_are_ignored() {
        let (_, body) = gcp!("logentry.CreateServiceAccountKey.constructed.json");
        let envs = parse_gcp(body, now(), &["Admin@Example.com".into()]).unwrap();
        assert_eq!(
            ignored_reason(&envs),
            "google.iam.admin.v1.CreateServiceAccountKey (made by gatehouse)"
        );
        assert_eq!(envs[0].subject.key, SA);
        let (_, body) = gcp!("pubsub.push.logsink.SetIamPolicy.constructed.json");
        let envs = parse_gcp(body, now(), &["user:admin@example.com".into()]).unwrap();
        assert_eq!(
            summary(&envs),
            [("gcp:log:-x1y2z3e4abcd".into(), PROJECT.into(), "ignored")]
        );
        let envs = parse_gcp(body, now(), &["gatehouse@acme.iam.gserviceaccount.com".into()]).unwrap();
        assert_eq!(envs[0].event.kind(), "cloud_drift");
    }

    const PROJECT: &str = "gcp:resource:projects/acme-prod-42";

    #[test]
    fn failed_calls_are_ignored() {
        for (name, body) in [
            aws!("eventbridge.iam.CreateUser.constructed.json"),
            aws!("eventbridge.iam.CreateAccessKey.constructed.json"),
            aws!("eventbridge.iam.AttachRolePolicy.constructed.json"),
        ] {
            let failed = with_detail(name, body, |d| {
                d.insert("errorCode".into(), "AccessDenied".into());
                d.insert("errorMessage".into(), "User: x is not authorized".into());
            });
            let envs = parse_eventbridge(&failed, now(), &[]).unwrap();
            assert!(
                ignored_reason(&envs).ends_with("(failed: AccessDenied)"),
                "{name}"
            );
        }
        let (_, body) = gcp!("logentry.CreateServiceAccountKey.constructed.json");
        let mut v: Value = serde_json::from_slice(body).unwrap();
        v["protoPayload"]["status"] = serde_json::json!({"code": 7, "message": "PERMISSION_DENIED"});
        let envs = parse_gcp(&serde_json::to_vec(&v).unwrap(), now(), &[]).unwrap();
        assert_eq!(
            ignored_reason(&envs),
            "google.iam.admin.v1.CreateServiceAccountKey (failed: code 7)"
        );
    }

    #[test]
    fn unknown_events_are_ignored_and_counted_by_kind() {
        let (_, body) = aws!("eventbridge.iam.CreateUser.constructed.json");
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut types = Vec::new();
        for name in ["UpdateAccountPasswordPolicy", "CreateRole", "TagUser"] {
            let renamed = with_detail(name, body, |d| {
                d.insert("eventName".into(), name.into());
            });
            for e in parse_eventbridge(&renamed, now(), &[]).unwrap() {
                *counts.entry(e.event.kind().to_string()).or_default() += 1;
                types.push(e.source_event_type.clone());
                assert_eq!(
                    e.event,
                    IdentityEvent::Ignored {
                        event_type: name.into()
                    }
                );
            }
        }
        let other_source = with_detail("s3", body, |d| {
            d.insert("eventSource".into(), "s3.amazonaws.com".into());
        });
        for e in parse_eventbridge(&other_source, now(), &[]).unwrap() {
            *counts.entry(e.event.kind().to_string()).or_default() += 1;
        }
        let (_, topic) = gcp!("logentry.pubsub.CreateTopic.google-cloudevents.json");
        for e in parse_gcp(topic, now(), &[]).unwrap() {
            *counts.entry(e.event.kind().to_string()).or_default() += 1;
        }
        assert_eq!(counts, BTreeMap::from([("ignored".to_string(), 5)]));
        assert_eq!(types, ["UpdateAccountPasswordPolicy", "CreateRole", "TagUser"]);
    }

    #[test]
    fn gcp_message_attributes_decide_secret_manager_notifications() {
        let (_, data) = gcp!("secretmanager.secret.SECRET_ROTATE.data.constructed.json");
        let attrs = |t: &str| {
            BTreeMap::from([
                ("eventType".to_string(), t.to_string()),
                (
                    "secretId".to_string(),
                    "projects/123456789012/secrets/payments-db-password".to_string(),
                ),
            ])
        };
        let envs = parse_gcp_message(data, &attrs("SECRET_ROTATE"), now(), &[]).unwrap();
        assert_eq!(envs[0].event.kind(), "rotation_requested");
        assert_eq!(envs[0].occurred_at, now(), "no publish time: the receive time");
        let envs = parse_gcp_message(data, &attrs("SECRET_VERSION_ADD"), now(), &[]).unwrap();
        assert_eq!(ignored_reason(&envs), "SECRET_VERSION_ADD");
        // A log entry handed over as data alone.
        let (_, entry) = gcp!("logentry.DeleteServiceAccountKey.constructed.json");
        let envs = parse_gcp_message(entry, &BTreeMap::new(), now(), &[]).unwrap();
        assert_eq!(
            summary(&envs),
            [("gcp:log:9z8y7x6w5v4u".into(), SA.into(), "ignored")]
        );
        // SECRET_ROTATE naming no secret cannot be acted on.
        let err = parse_gcp_message(
            b"",
            &attrs("SECRET_ROTATE").into_iter().take(1).collect(),
            now(),
            &[],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("SECRET_ROTATE without a secretId"),
            "{err}"
        );
    }

    #[test]
    fn secret_resource_without_attributes_is_read_as_a_rotation() {
        let (_, data) = gcp!("secretmanager.secret.SECRET_ROTATE.data.constructed.json");
        let first = parse_gcp(data, now(), &[]).unwrap();
        let again = parse_gcp(data, now(), &[]).unwrap();
        assert_eq!(first[0].id, again[0].id, "a redelivery has the same id");
        assert!(first[0].id.0.starts_with("gcp:sm:"), "{}", first[0].id);
        assert_eq!(
            first[0].subject.key,
            "gcp:secret:projects/123456789012/secrets/payments-db-password"
        );
        assert_eq!(
            first[0].event,
            IdentityEvent::RotationRequested {
                provider: "gcp".into(),
                reason: "SECRET_ROTATE".into(),
                secret: Some("projects/123456789012/secrets/payments-db-password".into())
            }
        );
        // Without a rotation schedule it cannot be a rotation.
        let mut v: Value = serde_json::from_slice(data).unwrap();
        v.as_object_mut().unwrap().remove("rotation");
        let envs = parse_gcp(&serde_json::to_vec(&v).unwrap(), now(), &[]).unwrap();
        assert_eq!(ignored_reason(&envs), "SECRET_UPDATE");
        assert_ne!(envs[0].id, first[0].id);
    }

    #[test]
    fn set_iam_policy_yields_one_drift_per_changed_user_or_service_account() {
        let (_, body) = gcp!("logentry.SetIamPolicy.constructed.json");
        let mut v: Value = serde_json::from_slice(body).unwrap();
        v["protoPayload"]["methodName"] = "google.iam.admin.v1.SetIAMPolicy".into();
        v["protoPayload"]["serviceData"]["policyDelta"]["bindingDeltas"] = serde_json::json!([
            {"action": "ADD", "role": "roles/iam.serviceAccountUser", "member": "serviceAccount:ci@p.iam.gserviceaccount.com"},
            {"action": "ADD", "role": "roles/viewer", "member": "group:eng@example.com"},
            {"action": "REMOVE", "role": "roles/viewer", "member": "user:carol@example.com"},
            {"action": "REMOVE", "role": "roles/editor", "member": "serviceAccount:ci@p.iam.gserviceaccount.com"},
            {"action": "REMOVE", "role": "roles/editor", "member": "deleted:user:dan@example.com?uid=123"},
        ]);
        let envs = parse_gcp(&serde_json::to_vec(&v).unwrap(), now(), &[]).unwrap();
        assert_eq!(
            summary(&envs),
            [
                (
                    "gcp:log:-x1y2z3e4abcd:serviceAccount:ci@p.iam.gserviceaccount.com".into(),
                    "gcp:sa:ci@p.iam.gserviceaccount.com".into(),
                    "cloud_drift"
                ),
                (
                    "gcp:log:-x1y2z3e4abcd:user:carol@example.com".into(),
                    "gcp:user:carol@example.com".into(),
                    "cloud_drift"
                ),
            ]
        );
        // Only groups changed: nothing Gatehouse manages, one ignored envelope.
        v["protoPayload"]["serviceData"]["policyDelta"]["bindingDeltas"] =
            serde_json::json!([{"action": "ADD", "role": "roles/viewer", "member": "group:eng@example.com"}]);
        let envs = parse_gcp(&serde_json::to_vec(&v).unwrap(), now(), &[]).unwrap();
        assert_eq!(
            summary(&envs),
            [("gcp:log:-x1y2z3e4abcd".into(), PROJECT.into(), "ignored")]
        );
    }

    #[test]
    fn malformed_bodies_are_rejected_with_the_reason() {
        let err = parse_eventbridge(b"not json", now(), &[]).unwrap_err();
        assert!(matches!(err, AuditParseError::Json(_)), "{err}");
        let err = parse_eventbridge(b"[1]", now(), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not an accepted delivery shape: top-level json is not an object"
        );
        let (name, body) = aws!("eventbridge.iam.CreateUser.constructed.json");
        let v2 = with_detail(name, body, |d| {
            d.insert("eventVersion".into(), "2.0".into());
        });
        let err = parse_eventbridge(&v2, now(), &[]).unwrap_err();
        assert!(
            err.to_string().contains("eventVersion \"2.0\" is not supported"),
            "{err}"
        );
        let no_id = with_detail(name, body, |d| {
            d.remove("eventID");
        });
        assert_eq!(
            parse_eventbridge(&no_id, now(), &[]).unwrap_err(),
            AuditParseError::Invalid("missing detail.eventID".into())
        );
        let bad_time = with_detail(name, body, |d| {
            d.insert("eventTime".into(), "May 1, 2024".into());
        });
        let err = parse_eventbridge(&bad_time, now(), &[]).unwrap_err();
        assert!(err.to_string().contains("not an rfc 3339 time"), "{err}");
        let err = parse_gcp(br#"{"message": {"data": "***"}}"#, now(), &[]).unwrap_err();
        assert_eq!(
            err,
            AuditParseError::Invalid("message.data is not valid base64".into())
        );
        let err = parse_gcp(br#"{"hello": "world"}"#, now(), &[]).unwrap_err();
        assert!(matches!(err, AuditParseError::NotADelivery(_)), "{err}");
        let err = parse_gcp(br#"{"message": {"messageId": "1"}}"#, now(), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("no data and no secret manager eventType"),
            "{err}"
        );
    }

    #[test]
    fn base64_decodes_standard_and_url_safe_with_or_without_padding() {
        assert_eq!(decode_base64("AQIDBA==").unwrap(), [1, 2, 3, 4]);
        assert_eq!(decode_base64("AQIDBA").unwrap(), [1, 2, 3, 4]);
        assert_eq!(decode_base64("dGVzdCBtZXNzYWdlIDM=").unwrap(), b"test message 3");
        assert_eq!(decode_base64("-_8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode_base64("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(decode_base64("").unwrap(), Vec::<u8>::new());
        assert!(decode_base64("A").is_none());
        assert!(decode_base64("AB=C").is_none());
        assert!(decode_base64("AA===").is_none());
    }
}
