//! `gatehouse audit export --format ocsf`: the ledger as OCSF 1.1.0 events (one JSON object a
//! line) for a SIEM (Amazon Security Lake, Splunk, Chronicle).
//!
//! Each ledger row (one write call to Looker, AWS IAM or GCP IAM, or a planned one in dry run)
//! becomes one event of the Identity & Access Management category:
//! - **Account Change** (3001) when the call changes the account itself: created, enabled,
//!   disabled, deleted, a policy attached to or detached from the IAM user;
//! - **Entity Management** (3004) for everything else it manages about the person: group
//!   memberships, roles, attributes, sessions, keys, IAM bindings (Create / Update / Delete).
//!
//! `metadata.sequence` and `unmapped.ledger` carry the row's sequence number and chain hashes, so
//! an event in the SIEM can be checked against `gatehouse audit verify`.
//! `tools/conformance/ocsf_validate.py` validates the output against the OCSF 1.1.0 JSON schema
//! (services/gatehouse/tests/it/conformance.rs).

use gatehouse_domain::looker::Method;
use gatehouse_domain::ports::{LedgerRow, StateStore};
use gatehouse_platform::config::Config;
use serde_json::{Value, json};
use std::io::Write;

/// `gatehouse audit export --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Ledger rows as they are stored, hashes included (JSON lines).
    Json,
    /// OCSF 1.1.0 Account Change / Entity Management events (JSON lines).
    Ocsf,
}

/// `gatehouse audit export [--since] [--format json|ocsf]`.
pub async fn audit_export(
    cfg: &Config,
    since: Option<chrono::DateTime<chrono::Utc>>,
    format: ExportFormat,
) -> anyhow::Result<()> {
    if format == ExportFormat::Json {
        return crate::ops::audit_export(cfg, since).await;
    }
    let store = crate::ops::state(cfg).await?;
    let rows = store.ledger_since(since).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for row in &rows {
        writeln!(out, "{}", serde_json::to_string(&event(row))?)?;
    }
    out.flush()?;
    store.close().await;
    Ok(())
}

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";

const CATEGORY_IAM: u32 = 3;
const ACCOUNT_CHANGE: u32 = 3001;
const ENTITY_MANAGEMENT: u32 = 3004;

/// OCSF Account Change activities (1.1.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccountActivity {
    Create = 1,
    Enable = 2,
    Disable = 5,
    Delete = 6,
    AttachPolicy = 7,
    DetachPolicy = 8,
}

impl AccountActivity {
    fn name(self) -> &'static str {
        match self {
            AccountActivity::Create => "Create",
            AccountActivity::Enable => "Enable",
            AccountActivity::Disable => "Disable",
            AccountActivity::Delete => "Delete",
            AccountActivity::AttachPolicy => "Attach Policy",
            AccountActivity::DetachPolicy => "Detach Policy",
        }
    }
}

/// OCSF Entity Management activities (1.1.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntityActivity {
    Create = 1,
    Update = 3,
    Delete = 4,
}

impl EntityActivity {
    fn name(self) -> &'static str {
        match self {
            EntityActivity::Create => "Create",
            EntityActivity::Update => "Update",
            EntityActivity::Delete => "Delete",
        }
    }
}

/// What a ledger row did, in OCSF terms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mapped {
    Account(AccountActivity),
    /// The activity and the managed entity's type (`group_membership`, `iam_binding`, ...).
    Entity(EntityActivity, &'static str),
}

fn by_method(method: Method) -> EntityActivity {
    match method {
        Method::Post => EntityActivity::Create,
        Method::Delete => EntityActivity::Delete,
        Method::Get | Method::Put | Method::Patch => EntityActivity::Update,
    }
}

/// The Looker API path's shape (`/users/7/roles` → `["users", "7", "roles"]`).
fn segments(path: &str) -> Vec<&str> {
    path.split('?')
        .next()
        .unwrap_or_default()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

fn map_looker(row: &LedgerRow) -> Mapped {
    let call = &row.entry.call;
    let seg = segments(&call.path);
    match (call.method, seg.as_slice()) {
        (Method::Post, ["users"]) => Mapped::Account(AccountActivity::Create),
        (Method::Delete, ["users", _]) => Mapped::Account(AccountActivity::Delete),
        (Method::Patch, ["users", _]) => {
            match call
                .body
                .as_ref()
                .and_then(|b| b.get("is_disabled"))
                .and_then(Value::as_bool)
            {
                Some(true) => Mapped::Account(AccountActivity::Disable),
                Some(false) => Mapped::Account(AccountActivity::Enable),
                None => Mapped::Entity(EntityActivity::Update, "user"),
            }
        }
        (m, ["groups", _, "users", ..]) => Mapped::Entity(by_method(m), "group_membership"),
        (m, ["users", _, "roles"]) => Mapped::Entity(by_method(m), "role_assignment"),
        (m, ["users", _, "attribute_values", ..]) => Mapped::Entity(by_method(m), "user_attribute"),
        (m, ["users", _, "sessions", ..]) => Mapped::Entity(by_method(m), "session"),
        (m, ["users", _, kind, ..]) if kind.starts_with("credentials") => {
            Mapped::Entity(by_method(m), "credential")
        }
        (m, _) => Mapped::Entity(by_method(m), "looker_object"),
    }
}

/// AWS IAM Query API: the `Action` form parameter decides.
fn map_aws(row: &LedgerRow) -> Mapped {
    let body = row.entry.call.body.as_ref();
    let action = body
        .and_then(|b| b.get("Action"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match action {
        "CreateUser" => Mapped::Account(AccountActivity::Create),
        "DeleteUser" => Mapped::Account(AccountActivity::Delete),
        "AttachUserPolicy" => Mapped::Account(AccountActivity::AttachPolicy),
        "DetachUserPolicy" => Mapped::Account(AccountActivity::DetachPolicy),
        "AddUserToGroup" => Mapped::Entity(EntityActivity::Create, "group_membership"),
        "RemoveUserFromGroup" => Mapped::Entity(EntityActivity::Delete, "group_membership"),
        "DeleteLoginProfile" => Mapped::Entity(EntityActivity::Delete, "login_profile"),
        "CreateAccessKey" => Mapped::Entity(EntityActivity::Create, "access_key"),
        "DeleteAccessKey" => Mapped::Entity(EntityActivity::Delete, "access_key"),
        "UpdateAccessKey" => Mapped::Entity(EntityActivity::Update, "access_key"),
        "TagUser" => Mapped::Entity(EntityActivity::Update, "user_tag"),
        "UntagUser" => Mapped::Entity(EntityActivity::Delete, "user_tag"),
        a if a.starts_with("Create") || a.starts_with("Add") || a.starts_with("Attach") => {
            Mapped::Entity(EntityActivity::Create, "iam_object")
        }
        a if a.starts_with("Delete") || a.starts_with("Remove") || a.starts_with("Detach") => {
            Mapped::Entity(EntityActivity::Delete, "iam_object")
        }
        _ => Mapped::Entity(EntityActivity::Update, "iam_object"),
    }
}

/// GCP `setIamPolicy` carrying one `add` or `remove` of a member in a role.
fn map_gcp(row: &LedgerRow) -> Mapped {
    let body = row.entry.call.body.as_ref();
    if body.is_some_and(|b| b.get("remove").is_some()) {
        Mapped::Entity(EntityActivity::Delete, "iam_binding")
    } else if body.is_some_and(|b| b.get("add").is_some()) {
        Mapped::Entity(EntityActivity::Create, "iam_binding")
    } else {
        Mapped::Entity(EntityActivity::Update, "iam_policy")
    }
}

fn map(row: &LedgerRow) -> Mapped {
    match row.entry.target.as_str() {
        "aws" => map_aws(row),
        "gcp" => map_gcp(row),
        _ => map_looker(row),
    }
}

/// OCSF `status_id`: 1 Success, 2 Failure, 99 Other (not sent: dry run, report mode, withheld).
fn status_id(status: &str) -> u32 {
    let s = status.trim();
    if s == "ok" || s.starts_with("404") || (s.starts_with('2') && s.len() >= 3) {
        1
    } else if s.starts_with("error") || s.starts_with('4') || s.starts_with('5') {
        2
    } else {
        99
    }
}

/// `metadata.labels`: the row's policy digest and actor (issue 15), in every class.
fn labels(e: &gatehouse_domain::ports::LedgerEntry) -> Vec<String> {
    let mut l = Vec::new();
    if let Some(d) = &e.policy_digest {
        l.push(format!("policy_digest:{d}"));
    }
    if let Some(a) = &e.actor {
        l.push(format!("actor:{a}"));
    }
    l
}

/// OCSF `actor` of an Account Change: the operator who ran a command as a user, else Gatehouse
/// (the service) invoked by the event or the reconcile named in `invoked_by`.
fn actor(row_actor: Option<&str>) -> Value {
    match row_actor {
        Some(a) if a.starts_with("operator:") => json!({
            "invoked_by": "gatehouse",
            "user": {"name": &a["operator:".len()..], "type_id": 1, "type": "User"},
        }),
        other => json!({
            "invoked_by": other.unwrap_or("gatehouse"),
            "user": {"name": "gatehouse", "type_id": 99, "type": "Service"},
        }),
    }
}

/// One ledger row as one OCSF event.
pub fn event(row: &LedgerRow) -> Value {
    let e = &row.entry;
    let (class_uid, class_name, activity_id, activity_name) = match map(row) {
        Mapped::Account(a) => (ACCOUNT_CHANGE, "Account Change", a as u32, a.name()),
        Mapped::Entity(a, _) => (ENTITY_MANAGEMENT, "Entity Management", a as u32, a.name()),
    };
    let status_id = status_id(&e.status);
    let mut ev = json!({
        "category_uid": CATEGORY_IAM,
        "category_name": "Identity & Access Management",
        "class_uid": class_uid,
        "class_name": class_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{class_name}: {activity_name}"),
        "time": e.at.timestamp_millis(),
        "severity_id": 1,
        "severity": "Informational",
        "status_id": status_id,
        "status": match status_id { 1 => "Success", 2 => "Failure", _ => "Other" },
        "status_code": e.status,
        "message": format!("{} {} {}", e.target, e.call.method, e.call.path),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "Gatehouse",
                "vendor_name": "Gatehouse",
                "version": env!("CARGO_PKG_VERSION"),
                "feature": {"name": e.target},
            },
            "uid": row.hash,
            "sequence": row.seq,
            "correlation_uid": e.envelope_id,
            "event_code": e.event,
            "log_name": "ledger",
            "log_provider": "gatehouse",
            "labels": labels(e),
        },
        "unmapped": {
            "rule": e.rule,
            "target": e.target,
            "ledger": {"seq": row.seq, "prev_hash": row.prev_hash, "hash": row.hash},
            "policy_digest": e.policy_digest,
            "actor": e.actor,
        },
    });
    let user = json!({"uid": e.subject, "name": e.subject});
    match map(row) {
        Mapped::Account(_) => {
            ev["user"] = user;
            // Entity Management (1.1.0) has no `actor`: there `metadata.labels` and
            // `unmapped.actor` carry who caused the row.
            ev["actor"] = actor(e.actor.as_deref());
        }
        Mapped::Entity(_, kind) => {
            let mut entity = json!({"type": kind, "uid": e.call.path, "name": e.call.path});
            if let Some(b) = &e.call.body {
                entity["data"] = b.clone();
            }
            ev["entity"] = entity;
            ev["unmapped"]["user"] = user;
        }
    }
    if status_id == 99 {
        ev["status_detail"] = Value::String(format!("not sent: {}", e.status));
    } else if status_id == 2 {
        ev["status_detail"] = Value::String(e.status.clone());
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use gatehouse_domain::looker::HttpCall;
    use gatehouse_domain::ports::LedgerEntry;

    fn row(target: &str, method: Method, path: &str, body: Option<Value>, status: &str) -> LedgerRow {
        LedgerRow {
            seq: 7,
            entry: LedgerEntry {
                at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
                envelope_id: "okta:e1".into(),
                subject: "okta:00u1".into(),
                event: "user_deactivated".into(),
                rule: "offboarding.disable".into(),
                target: target.into(),
                call: HttpCall {
                    method,
                    path: path.into(),
                    body,
                },
                status: status.into(),
                policy_digest: Some("d".repeat(64)),
                actor: Some("event:okta:e1".into()),
            },
            prev_hash: "p".repeat(64),
            hash: "h".repeat(64),
        }
    }

    fn class_and_activity(r: &LedgerRow) -> (u64, u64) {
        let e = event(r);
        (
            e["class_uid"].as_u64().unwrap(),
            e["activity_id"].as_u64().unwrap(),
        )
    }

    #[test]
    fn account_lifecycle_calls_are_account_changes_and_the_rest_entity_management() {
        let aws = |action: &str| Some(json!({"Action": action, "UserName": "pat"}));
        for (r, want) in [
            (row("looker", Method::Post, "/users", None, "ok"), (3001, 1)),
            (
                row(
                    "looker",
                    Method::Patch,
                    "/users/7",
                    Some(json!({"is_disabled": true})),
                    "ok",
                ),
                (3001, 5),
            ),
            (
                row(
                    "looker",
                    Method::Patch,
                    "/users/7",
                    Some(json!({"is_disabled": false})),
                    "ok",
                ),
                (3001, 2),
            ),
            (row("looker", Method::Delete, "/users/7", None, "ok"), (3001, 6)),
            (
                row(
                    "looker",
                    Method::Patch,
                    "/users/7",
                    Some(json!({"first_name": "A"})),
                    "ok",
                ),
                (3004, 3),
            ),
            (
                row("looker", Method::Delete, "/groups/3/users/7", None, "ok"),
                (3004, 4),
            ),
            (
                row("looker", Method::Post, "/groups/3/users", None, "ok"),
                (3004, 1),
            ),
            (
                row("looker", Method::Put, "/users/7/roles", None, "ok"),
                (3004, 3),
            ),
            (
                row("looker", Method::Delete, "/users/7/sessions/9", None, "ok"),
                (3004, 4),
            ),
            (row("aws", Method::Post, "/", aws("DeleteUser"), "200"), (3001, 6)),
            (
                row("aws", Method::Post, "/", aws("AttachUserPolicy"), "200"),
                (3001, 7),
            ),
            (
                row("aws", Method::Post, "/", aws("DetachUserPolicy"), "200"),
                (3001, 8),
            ),
            (
                row("aws", Method::Post, "/", aws("RemoveUserFromGroup"), "200"),
                (3004, 4),
            ),
            (
                row("aws", Method::Post, "/", aws("UpdateAccessKey"), "200"),
                (3004, 3),
            ),
            (
                row(
                    "gcp",
                    Method::Post,
                    "/v1/projects/p:setIamPolicy",
                    Some(json!({"remove": {"role": "roles/viewer", "member": "user:a@b.c"}})),
                    "200",
                ),
                (3004, 4),
            ),
        ] {
            assert_eq!(
                class_and_activity(&r),
                want,
                "{} {}",
                r.entry.call.method,
                r.entry.call.path
            );
            let e = event(&r);
            assert_eq!(e["type_uid"], want.0 * 100 + want.1);
            // Account Change requires `user`, Entity Management requires `entity`.
            let required = if want.0 == 3001 { "user" } else { "entity" };
            assert!(e.get(required).is_some(), "{e}");
        }
    }

    #[test]
    fn ledger_position_status_and_time_are_carried() {
        let e = event(&row("looker", Method::Delete, "/users/7", None, "dry_run"));
        assert_eq!(e["time"], 1_700_000_000_123i64);
        assert_eq!(e["metadata"]["sequence"], 7);
        assert_eq!(e["metadata"]["uid"], "h".repeat(64));
        assert_eq!(e["unmapped"]["ledger"]["prev_hash"], "p".repeat(64));
        assert_eq!(e["metadata"]["version"], OCSF_VERSION);
        assert_eq!(e["status_id"], 99);
        assert_eq!(e["user"]["uid"], "okta:00u1");
        for (status, want) in [
            ("ok", 1),
            ("200", 1),
            ("404 already gone", 1),
            ("error: boom", 2),
            ("429", 2),
            ("report", 99),
        ] {
            assert_eq!(status_id(status), want, "{status}");
        }
    }

    #[test]
    fn the_policy_digest_and_the_actor_are_carried() {
        let e = event(&row("looker", Method::Delete, "/users/7", None, "ok"));
        let labels = e["metadata"]["labels"].as_array().unwrap();
        assert!(
            labels.contains(&json!(format!("policy_digest:{}", "d".repeat(64)))),
            "{e}"
        );
        assert!(labels.contains(&json!("actor:event:okta:e1")), "{e}");
        assert_eq!(e["unmapped"]["policy_digest"], "d".repeat(64));
        assert_eq!(e["unmapped"]["actor"], "event:okta:e1");
        assert_eq!(e["actor"]["invoked_by"], "event:okta:e1");
        let mut r = row("looker", Method::Delete, "/users/7", None, "ok");
        r.entry.actor = Some("operator:alice".into());
        let e = event(&r);
        assert_eq!(e["actor"]["user"]["name"], "alice");
        assert_eq!(e["actor"]["user"]["type"], "User");
        // An old row without them: no labels, no actor beyond the service.
        r.entry.actor = None;
        r.entry.policy_digest = None;
        let e = event(&r);
        assert_eq!(e["metadata"]["labels"], json!([]));
        assert_eq!(e["actor"]["invoked_by"], "gatehouse");
    }
}
