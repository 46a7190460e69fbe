//! The GCP IAM adapter against the stateful fake (`gatehouse_testkit::gcp_iam_fake`).

use gatehouse_domain::cloud::{GcpIamOp, apply_gcp};
use gatehouse_domain::looker::ErrorKind;
use gatehouse_targets::client::gcp_iam::{GcpIam, GcpIamConfig, TokenSource};
use gatehouse_testkit::gcp_iam_fake::FakeGcpIam;
use secrecy::SecretString;
use serde_json::json;
use std::time::Duration;

fn client(fake: &FakeGcpIam, token: &str) -> GcpIam {
    GcpIam::new(GcpIamConfig {
        resource_manager_url: fake.base_url(),
        bigquery_url: fake.base_url(),
        iam_url: fake.base_url(),
        token: TokenSource::Static(SecretString::from(token.to_string())),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

const COND: &str = "request.time < timestamp('2030-01-01T00:00:00Z')";

#[tokio::test]
async fn read_modify_write_keeps_conditions_and_unmanaged_bindings() {
    let fake = FakeGcpIam::start().await;
    for r in [
        "projects/p1",
        "projects/p1/datasets/d1",
        "projects/p1/serviceAccounts/sa@p1.iam.gserviceaccount.com",
    ] {
        fake.add_resource(
            r,
            json!([
                { "role": "roles/viewer", "members": ["user:pat@x.io", "group:all@x.io"] },
                { "role": "roles/viewer", "members": ["user:pat@x.io"],
                  "condition": { "title": "until 2030", "expression": COND } },
                { "role": "roles/owner", "members": ["user:boss@x.io"] },
            ]),
        );
    }
    let gcp = client(&fake, &fake.token());
    for r in [
        "projects/p1",
        "projects/p1/datasets/d1",
        "projects/p1/serviceAccounts/sa@p1.iam.gserviceaccount.com",
    ] {
        let mut p = gcp.get_policy(r).await.unwrap();
        assert_eq!(p.version, 3, "asked for v3, conditions intact");
        let op = GcpIamOp::RemoveMember {
            resource: r.into(),
            role: "roles/viewer".into(),
            member: "user:pat@x.io".into(),
        };
        assert!(apply_gcp(&mut p, [&op]));
        gcp.set_policy(r, &p).await.unwrap();
        let after = fake.policy(r).unwrap();
        let bindings = after["bindings"].as_array().unwrap();
        assert_eq!(bindings.len(), 3, "{after}");
        assert_eq!(fake.members(r, "roles/viewer"), vec!["group:all@x.io"]);
        assert_eq!(fake.members(r, "roles/owner"), vec!["user:boss@x.io"]);
        assert!(
            bindings
                .iter()
                .any(|b| b["condition"]["expression"] == COND && b["members"] == json!(["user:pat@x.io"]))
        );
        assert!(after["auditConfigs"].is_array(), "unknown fields survive");
    }
    let bodies: Vec<_> = fake
        .calls()
        .iter()
        .filter(|c| c.verb() == "getIamPolicy")
        .filter_map(|c| c.json_body())
        .collect();
    assert!(bodies.iter().all(|b| b["options"]["requestedPolicyVersion"] == 3));
    let paths: Vec<_> = fake.calls().iter().map(|c| c.path.clone()).collect();
    assert!(
        paths.contains(&"/v3/projects/p1:setIamPolicy".to_string()),
        "{paths:?}"
    );
    assert!(paths.contains(&"/bigquery/v2/projects/p1/datasets/d1:setIamPolicy".to_string()));
    assert!(
        paths.contains(
            &"/v1/projects/p1/serviceAccounts/sa@p1.iam.gserviceaccount.com:setIamPolicy".to_string()
        )
    );
}

#[tokio::test]
async fn errors_are_classified_once() {
    let fake = FakeGcpIam::start().await;
    fake.add_resource("projects/p1", json!([]));
    let gcp = client(&fake, &fake.token());
    // Stale etag → Conflict (the caller re-reads).
    let p = gcp.get_policy("projects/p1").await.unwrap();
    fake.grant_by_hand("projects/p1", "roles/viewer", "user:other@x.io");
    let e = gcp.set_policy("projects/p1", &p).await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Conflict, Some(409)), "{e}");
    // 429 with Retry-After, 503.
    fake.set_retry_after_secs(7);
    fake.fail_next(429, 1);
    let e = gcp.get_policy("projects/p1").await.unwrap_err();
    assert_eq!(
        (e.kind, e.retry_after),
        (ErrorKind::Throttled, Some(Duration::from_secs(7)))
    );
    fake.fail_next(503, 1);
    assert_eq!(
        gcp.get_policy("projects/p1").await.unwrap_err().kind,
        ErrorKind::Transient
    );
    // Unknown resource, and a bad token (which never shows up in errors or Debug).
    assert_eq!(
        gcp.get_policy("projects/nope").await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    let bad = client(&fake, "wrong-t0ken-secret");
    let e = bad.get_policy("projects/p1").await.unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::Unauthorized, Some(401)));
    assert!(!format!("{e} {e:?} {bad:?}").contains("wrong-t0ken-secret"));
}
