//! Property-based fuzzing of every parser here that reads outside input: Okta hook bodies, Google
//! Reports notifications, Standard Webhooks headers and canonical bodies, Graph notifications,
//! CloudTrail/EventBridge and GCP audit deliveries with Pub/Sub attributes, SCIM filters and PATCH
//! paths, queue envelopes. Inputs: arbitrary bytes, arbitrary JSON, nesting past `serde_json`'s
//! limit, and the handbook's real payloads (`../shared/fixtures`) with mutations
//! (`gatehouse_testkit::fuzz`). Properties: no panic; an accepted input gives envelopes whose ids
//! stay in their source's namespace. Inputs are bounded by construction, so every case finishes.
//!
//! `make test` runs [`CASES`] cases per property; `make fuzz` sets `PROPTEST_CASES` high.
//! Failing inputs are kept in `proptest-regressions/fuzz.txt` and replayed first.

use crate::cloud_audit::{self, Kind};
use crate::envelope::{Envelope, check_id_part};
use crate::scim_filter::{Rfc7643CaseExact, matches, parse_filter, parse_path};
use crate::{generic, google, graph, okta};
use chrono::{DateTime, Utc};
use gatehouse_testkit::fuzz::{self as fz, config};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

/// Cases per property in `make test` (each property runs in about a second on a busy machine).
const CASES: u32 = 64;

fn now() -> DateTime<Utc> {
    "2026-03-01T09:30:00Z".parse().unwrap()
}

/// Every object of a handbook fixtures folder (`gatehouse_testkit::fuzz::fixture_objects`).
fn fixtures(dir: &str) -> Vec<Value> {
    gatehouse_testkit::fuzz::fixture_objects(dir)
}

macro_rules! samples {
    ($name:ident, $init:expr) => {
        fn $name() -> Vec<Value> {
            static S: OnceLock<Vec<Value>> = OnceLock::new();
            S.get_or_init(|| $init).clone()
        }
    };
}

samples!(okta_samples, fixtures("okta"));
samples!(google_samples, fixtures("google-workspace"));
samples!(graph_samples, fixtures("entra"));
samples!(aws_samples, fixtures("aws"));
samples!(gcp_samples, fixtures("gcp"));
samples!(generic_samples, {
    let user = json!({"id": "auth0|6543", "email": "jo.doe@example.com", "login": "jo",
        "first_name": "Jo", "last_name": "Doe", "display_name": "Jo Doe",
        "attributes": {"department": "Finance", "region": "EMEA"}});
    let one = |kind: &str| json!({"type": kind, "occurred_at": "2026-03-01T09:30:00Z", "user": user});
    let mut out: Vec<Value> = generic::EVENT_TYPES.iter().map(|k| one(k)).collect();
    for v in out
        .iter_mut()
        .filter(|v| v["type"].as_str().unwrap().starts_with("group."))
    {
        v["group"] = json!({"id": "00g1", "name": "Finance Analysts"});
    }
    out.push(json!({"events": out.clone()}));
    out
});

/// Envelope ids a source makes start with its own prefix and are visible ascii.
fn ids_are_namespaced(envs: &[Envelope], prefix: &str) -> Result<(), TestCaseError> {
    for e in envs {
        prop_assert!(
            e.id.0.starts_with(prefix),
            "{} does not start with {prefix}",
            e.id
        );
        // The part the payload supplied is an id, not free text.
        let own = e.id.0[prefix.len()..].split(':').next().unwrap_or_default();
        prop_assert!(check_id_part("id", own).is_ok(), "{:?}", e.id);
        prop_assert!(!e.subject.key.is_empty());
    }
    Ok(())
}

/// SCIM filter text: tokens of the grammar (and near misses) in any order, deep parentheses,
/// long `and` chains, or arbitrary text.
fn filter_text() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "userName",
        "emails",
        "emails.value",
        "name.givenName",
        "meta.lastModified",
        "members",
        "urn:ietf:params:scim:schemas:core:2.0:User:userName",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        "$ref",
        "id",
        "eq",
        "ne",
        "co",
        "sw",
        "ew",
        "pr",
        "gt",
        "ge",
        "lt",
        "le",
        "EQ",
        "and",
        "or",
        "not",
        "AND",
        "(",
        ")",
        "[",
        "]",
        ".",
        ":",
        "\"",
        "\"x\"",
        "\"a\\\"b\"",
        "\"\\u0000\"",
        "\"\\ud800\"",
        "\"2011-05-13T04:42:34Z\"",
        "true",
        "false",
        "null",
        "1",
        "-1.5e3",
        "1e999",
        "0x1",
        " ",
        "\t",
        "type eq \"work\"",
        "value co \"@example.com\"",
    ]);
    prop_oneof![
        4 => prop::collection::vec(token.clone(), 1..40).prop_map(|t| t.join(" ")),
        2 => prop::collection::vec(token, 1..40).prop_map(|t| t.concat()),
        1 => (1usize..5000).prop_map(|n| format!("{}userName eq \"a\"{}", "(".repeat(n), ")".repeat(n))),
        1 => (1usize..5000).prop_map(|n| format!("{}userName pr", "not (".repeat(n))),
        1 => (1usize..3000).prop_map(|n| vec!["userName eq \"a\""; n].join(" and ")),
        1 => (1usize..3000).prop_map(|n| vec!["emails[type eq \"w\"]"; n].join(" or ")),
        2 => fz::nasty_string(),
    ]
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn okta_hook_bodies(body in fz::body(okta_samples())) {
        if let Ok(envs) = okta::parse_hook_body("acme", &body, now()) {
            ids_are_namespaced(&envs, "okta:acme:")?;
        }
    }

    #[test]
    fn google_reports_notifications(body in fz::body(google_samples())) {
        if let Ok(envs) = google::parse_activity(&body, now()) {
            ids_are_namespaced(&envs, "google:")?;
        }
    }

    #[test]
    fn standard_webhooks_bodies(body in fz::body(generic_samples()), id in "[!-9;-~]{1,40}") {
        // The intake parses only bodies whose webhook-id it accepted (visible ascii but ':').
        prop_assert!(generic::validate_webhook_id(&id).is_ok());
        if let Ok(envs) = generic::parse_body(&id, &body, now()) {
            ids_are_namespaced(&envs, "generic:")?;
        }
    }

    #[test]
    fn standard_webhooks_headers(
        id in fz::nasty_string(),
        timestamp in prop_oneof![fz::nasty_string(), any::<i64>().prop_map(|t| t.to_string()), "[0-9]{1,20}"],
        signature in prop_oneof![
            fz::nasty_string(),
            prop::collection::vec(prop_oneof!["v1,[A-Za-z0-9+/=]{0,50}", "v1a,[ -~]{0,10}", "[ -~]{0,12}"], 0..6)
                .prop_map(|v| v.join(" ")),
        ],
        secret in fz::nasty_string(),
        any_ts in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0)],
        tolerance in any::<u64>(),
        body in fz::bytes(),
    ) {
        let _ = generic::validate_webhook_id(&id);
        let tolerance = Duration::from_secs(tolerance);
        if let Ok(ts) = generic::parse_timestamp(&timestamp) {
            let _ = generic::check_timestamp(ts, now(), tolerance);
        }
        let _ = generic::check_timestamp(any_ts, now(), tolerance);
        if let Ok(sigs) = generic::v1_signatures(&signature) {
            prop_assert!(sigs.iter().all(|s| !s.is_empty() && signature.contains(s)));
        }
        let _ = generic::secret_key_base64(&secret);
        let content = generic::signed_content(&id, &timestamp, &body);
        prop_assert_eq!(content.len(), id.len() + timestamp.len() + body.len() + 2);
    }

    #[test]
    fn graph_notifications(body in fz::body(graph_samples())) {
        if let Ok(notifications) = graph::parse_collection(&body) {
            for n in &notifications {
                let _ = (n.key(), n.kind(), n.is_actionable());
                prop_assert_eq!(graph::Notification::from_value(n.raw.clone()).map(|m| m.key()), Ok(n.key()));
            }
        }
    }

    #[test]
    fn graph_users_as_read_back(user in fz::mutated(graph_samples()), fetched in fz::json()) {
        // What a Graph read returns for a user (or a member listing entry).
        if let Ok(u) = serde_json::from_value::<graph::GraphUser>(user.clone()) {
            let _ = (u.is_user(), u.email());
            let _ = graph::reconcile_envelope("run", &u, now());
        }
        if let Ok(g) = serde_json::from_value::<graph::GraphGroup>(user.clone()) {
            let _ = g.group_ref();
        }
        if let Ok(notifications) = graph::parse_collection(&serde_json::to_vec(&json!({"value": [fetched]})).unwrap()) {
            for n in &notifications {
                let u = serde_json::from_value::<graph::GraphUser>(user.clone()).ok();
                let _ = graph::user_envelope(n, "00000000-0000-0000-0000-000000000001", u.as_ref(), now());
            }
        }
    }

    #[test]
    fn cloudtrail_deliveries(body in fz::body(aws_samples()), principals in prop::collection::vec(fz::nasty_string(), 0..3)) {
        if let Ok(envs) = cloud_audit::parse(Kind::Aws, &body, now(), &principals) {
            ids_are_namespaced(&envs, "aws:")?;
        }
    }

    #[test]
    fn gcp_audit_deliveries(body in fz::body(gcp_samples()), principals in prop::collection::vec(fz::nasty_string(), 0..3)) {
        if let Ok(envs) = cloud_audit::parse(Kind::Gcp, &body, now(), &principals) {
            ids_are_namespaced(&envs, "gcp:")?;
        }
    }

    #[test]
    fn pubsub_messages_with_attributes(
        data in fz::body(gcp_samples()),
        attributes in prop::collection::btree_map(
            prop_oneof![
                prop::sample::select(vec!["eventType", "secretId", "dataFormat", "timestamp", "versionId",
                    "logging.googleapis.com/timestamp"]).prop_map(str::to_string),
                fz::nasty_string(),
            ],
            prop_oneof![
                prop::sample::select(vec!["SECRET_ROTATE", "SECRET_VERSION_ADD", "TOPIC_CONFIGURED",
                    "JSON_API_V1", "projects/1/secrets/s"]).prop_map(str::to_string),
                fz::nasty_string(),
            ],
            0..6,
        ),
    ) {
        let attributes: BTreeMap<String, String> = attributes;
        if let Ok(envs) = cloud_audit::parse_gcp_message(&data, &attributes, now(), &[]) {
            ids_are_namespaced(&envs, "gcp:")?;
        }
    }

    #[test]
    fn scim_filters(text in filter_text(), resource in prop_oneof![fz::json(), fz::mutated(fixtures_scim())]) {
        if let Ok(filter) = parse_filter(&text) {
            let _ = matches(&filter, &resource, &Rfc7643CaseExact);
            // What the parser accepted, it prints back as the same filter.
            let printed = filter.to_string();
            let reparsed = parse_filter(&printed);
            prop_assert_eq!(reparsed.as_ref(), Ok(&filter), "printed as {}", printed);
        }
    }

    #[test]
    fn scim_patch_paths(text in prop_oneof![
        filter_text(),
        (filter_text(), filter_text()).prop_map(|(a, f)| format!("emails[{f}].{a}")),
        (filter_text(), "[a-zA-Z$.]{0,12}").prop_map(|(f, s)| format!("members[{f}]{s}")),
    ]) {
        let _ = parse_path(&text);
    }

    #[test]
    fn queue_envelopes(body in prop_oneof![
        fz::bytes(),
        fz::mutated(vec![serde_json::from_str(&sample_envelope()).unwrap()])
            .prop_map(|v| serde_json::to_string(&v).unwrap()).prop_map(String::into_bytes),
    ]) {
        if let Ok(text) = std::str::from_utf8(&body) {
            let _ = Envelope::from_json(text);
        }
    }
}

samples!(fixtures_scim, fixtures("scim"));

fn sample_envelope() -> String {
    okta::parse_hook_body("acme", &serde_json::to_vec(&okta_samples()[0]).unwrap(), now())
        .ok()
        .and_then(|e| e.into_iter().next())
        .map(|e| e.to_json())
        .unwrap_or_else(|| {
            let body = br#"{"eventType":"com.okta.event_hook","data":{"events":[{"uuid":"u1",
                "published":"2024-01-01T00:00:00Z","eventType":"user.lifecycle.deactivate",
                "target":[{"id":"00u1","type":"User","alternateId":"a@b.c"}]}]}}"#;
            okta::parse_hook_body("acme", body, now()).unwrap()[0].to_json()
        })
}

#[test]
fn the_samples_are_the_real_payloads_and_they_parse() {
    // The structure-aware inputs start from payloads each parser accepts.
    let accepted = |samples: Vec<Value>, parse: &dyn Fn(&[u8]) -> bool| {
        samples
            .iter()
            .filter(|s| parse(&serde_json::to_vec(s).unwrap()))
            .count()
    };
    assert!(
        accepted(okta_samples(), &|b| okta::parse_hook_body("acme", b, now())
            .is_ok())
            >= 5
    );
    assert!(accepted(google_samples(), &|b| google::parse_activity(b, now()).is_ok()) >= 1);
    assert!(accepted(generic_samples(), &|b| generic::parse_body("m", b, now()).is_ok()) >= 10);
    assert!(accepted(graph_samples(), &|b| graph::parse_collection(b).is_ok()) >= 4);
    assert!(
        accepted(aws_samples(), &|b| cloud_audit::parse(Kind::Aws, b, now(), &[])
            .is_ok())
            >= 5
    );
    assert!(
        accepted(gcp_samples(), &|b| cloud_audit::parse(Kind::Gcp, b, now(), &[])
            .is_ok())
            >= 5
    );
}
