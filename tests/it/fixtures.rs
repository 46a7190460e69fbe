//! Every file in ../shared/fixtures/okta parses into envelopes, or is rejected with a clear reason.

use gatehouse_domain::envelope::IdentityEvent;
use gatehouse_domain::okta::{OktaParseError, parse_hook_body};
use gatehouse_e2e::fixtures_dir;

#[test]
fn every_okta_fixture_parses_or_is_rejected_with_reason() {
    let dir = fixtures_dir().join("okta");
    let mut seen = 0;
    let mut parsed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        seen += 1;
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let body = std::fs::read(&path).unwrap();
        let received = "2026-01-01T00:00:00Z".parse().unwrap();
        match parse_hook_body("acme", &body, received) {
            Ok(envs) => {
                parsed += 1;
                assert!(
                    name.starts_with("event-hook."),
                    "{name} parsed but is not a hook body"
                );
                assert!(!envs.is_empty(), "{name}: no events");
                let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let uuids: Vec<&str> = raw["data"]["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["uuid"].as_str().unwrap())
                    .collect();
                let ids: Vec<&str> = envs.iter().map(|e| e.id.0.as_str()).collect();
                let want: Vec<String> = uuids.iter().map(|u| format!("okta:acme:{u}")).collect();
                assert_eq!(
                    ids, want,
                    "{name}: envelopes are keyed by the org and each event's uuid"
                );
                for e in &envs {
                    let uuid = e.id.0.strip_prefix("okta:acme:");
                    assert_eq!(e.raw["uuid"].as_str(), uuid, "raw payload kept");
                }
            }
            Err(e) => {
                assert!(
                    !name.starts_with("event-hook."),
                    "{name} is a hook body but was rejected: {e}"
                );
                assert!(matches!(e, OktaParseError::NotAHook(_)), "{name}: {e}");
                assert!(
                    e.to_string().starts_with("not an okta event hook body: "),
                    "{name}: {e}"
                );
            }
        }
    }
    assert!(seen >= 15, "expected the whole okta fixture folder, saw {seen}");
    assert!(parsed >= 12, "parsed {parsed}");
}

#[test]
fn fixture_event_types_map_to_the_right_events() {
    let cases = [
        (
            "event-hook.user.lifecycle.deactivate.constructed.json",
            "user_deactivated",
            "okta:00u3m90rxKjGQ0G6L1d6",
        ),
        (
            "event-hook.user.lifecycle.suspend.constructed.json",
            "user_suspended",
            "okta:00ub0oNGTSWTBKOLGLNR",
        ),
        (
            "event-hook.user.lifecycle.delete.initiated.constructed.json",
            "user_deleted",
            "okta:00ub0oNGTSWTBKOLGLNR",
        ),
        (
            "event-hook.user.lifecycle.create.constructed.json",
            "user_created",
            "okta:00ub0oNGTSWTBKOLGLNR",
        ),
        (
            "event-hook.user.lifecycle.activate.constructed.json",
            "user_activated",
            "okta:00ub0oNGTSWTBKOLGLNR",
        ),
        (
            "event-hook.user.account.update_profile.constructed.json",
            "profile_updated",
            "okta:00ub0oNGTSWTBKOLGLNR",
        ),
        (
            "event-hook.group.user_membership.add.constructed.json",
            "group_member_added",
            "okta:00ub0oNGTSWTBKOLGLNR",
        ),
        (
            "event-hook.group.user_membership.remove.constructed.json",
            "group_member_removed",
            "okta:00ub0oNGTSWTBKOLGLNR",
        ),
        // verbatim preview deliveries with `target: null`: accepted, not acted on
        (
            "event-hook.group.user_membership.add.aws-sample.json",
            "ignored",
            "okta:unknown",
        ),
        (
            "event-hook.user.session.start.docs.json",
            "ignored",
            "okta:00uz9fj5aT69fHVro1d6",
        ),
    ];
    for (file, kind, subject) in cases {
        let envs = parse_hook_body(
            "acme",
            &gatehouse_e2e::okta_fixture(file),
            "2026-01-01T00:00:00Z".parse().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(envs.len(), 1, "{file}");
        assert_eq!(envs[0].event.kind(), kind, "{file}");
        assert_eq!(envs[0].subject.key, subject, "{file}");
    }
    let envs = parse_hook_body(
        "acme",
        &gatehouse_e2e::okta_fixture("event-hook.group.user_membership.add.constructed.json"),
        "2026-01-01T00:00:00Z".parse().unwrap(),
    )
    .unwrap();
    match &envs[0].event {
        IdentityEvent::GroupMemberAdded { group } => assert_eq!(group.name, "Engineering"),
        other => panic!("{other:?}"),
    }
    assert_eq!(envs[0].subject.email.as_deref(), Some("isaac.brock@example.com"));
}
