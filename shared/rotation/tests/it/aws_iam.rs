//! AWS IAM access keys (moto) stored in AWS Secrets Manager: the two-keys limit and the
//! out-of-band trigger.

use crate::support::{self, clock, config, moto_url, run_to_done, unique};
use aws_sdk_iam::Client as Iam;
use aws_sdk_secretsmanager::Client as Sm;
use gatehouse_domain::ports::RotationRequest;
use gatehouse_rotation::{Phase, RotationStore, Started};
use std::time::Duration;

async fn keys(iam: &Iam, user: &str) -> Vec<(String, bool)> {
    let mut k: Vec<(String, bool)> = iam
        .list_access_keys()
        .user_name(user)
        .send()
        .await
        .unwrap()
        .access_key_metadata()
        .iter()
        .map(|k| {
            (
                k.access_key_id().unwrap().to_string(),
                k.status() == Some(&aws_sdk_iam::types::StatusType::Active),
            )
        })
        .collect();
    k.sort();
    k
}

/// The stored AWSCURRENT key authenticates as the user (moto maps known keys to their user).
async fn assert_current_works(sdk: &aws_config::SdkConfig, sm: &Sm, secret_id: &str, user: &str) {
    let v = sm
        .get_secret_value()
        .secret_id(secret_id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
    let creds = aws_sdk_sts::config::Credentials::new(
        doc["access_key_id"].as_str().unwrap(),
        doc["secret_access_key"].as_str().unwrap(),
        None,
        None,
        "check",
    );
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(sdk)
            .credentials_provider(creds)
            .build(),
    );
    let arn = sts
        .get_caller_identity()
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    assert!(arn.ends_with(&format!(":user/{user}")), "{arn}");
}

#[tokio::test]
async fn aws_key_rotation_makes_room_without_touching_the_current_key() {
    let _ = moto_url();
    let sdk = support::sdk().await;
    let (iam, sm) = (Iam::new(&sdk), Sm::new(&sdk));
    let user = unique("svc-ci");
    iam.create_user().user_name(&user).send().await.unwrap();
    // The current key is the OLDEST one; a second, newer key was made by hand.
    let current = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    let extra = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    let secret_id = unique("gatehouse/ci");
    let doc = serde_json::json!({ "access_key_id": current.access_key_id(), "secret_access_key": current.secret_access_key() });
    sm.create_secret()
        .name(&secret_id)
        .secret_string(doc.to_string())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[[rotator.secrets]]\nname = \"ci\"\non_out_of_band = \"rotate\"\n\
             kind = {{ type = \"aws_access_key\", user_name = {user:?} }}\n\
             store = {{ type = \"aws_secrets_manager\", secret_id = {secret_id:?} }}\n"
        ),
    );
    let clock = clock();
    let r = support::rotator(&cfg, &clock, Some(sdk.clone())).await;
    // The out-of-band key's audit event is the trigger (rotate per config).
    support::publish_request(
        r.store().db(),
        &RotationRequest {
            envelope_id: unique("aws:evt"),
            subject: format!("aws:iam-user:{user}"),
            provider: "aws".into(),
            reason: "access key created outside gatehouse".into(),
            secret: None,
        },
    )
    .await
    .unwrap();
    let report = r.tick().await.unwrap();
    assert_eq!(
        report.started,
        vec![("ci".to_string(), "out_of_band".to_string())]
    );
    assert!(
        r.store().pending_requests().await.unwrap().is_empty(),
        "the request is handled"
    );
    let row = r.store().history("ci").await.unwrap().pop().unwrap();
    assert_eq!(row.phase, Phase::Finished);
    let new_key = row.new_key_id.clone().unwrap();
    let now = keys(&iam, &user).await;
    let ids: Vec<&str> = now.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        ids.contains(&current.access_key_id()),
        "the current key is never removed: {now:?}"
    );
    assert!(
        !ids.contains(&extra.access_key_id()),
        "the non-current key made room: {now:?}"
    );
    assert!(ids.contains(&new_key.as_str()));
    assert_current_works(&sdk, &sm, &secret_id, &user).await;
    let v = sm
        .get_secret_value()
        .secret_id(&secret_id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    assert!(v.secret_string().unwrap().contains(&new_key));

    run_to_done(&r, &row.id, &clock, || {
        assert_current_works(&sdk, &sm, &secret_id, &user)
    })
    .await;
    assert_eq!(keys(&iam, &user).await, vec![(new_key.clone(), true)]);
    let ledger = r.store().ledger().await.unwrap();
    assert!(
        ledger
            .iter()
            .any(|e| e.call.path.ends_with("/make_room") && e.status.contains(extra.access_key_id()))
    );
}

#[tokio::test]
async fn after_the_grace_period_the_old_aws_key_is_inactive_then_deleted() {
    let _ = moto_url();
    let sdk = support::sdk().await;
    let (iam, sm) = (Iam::new(&sdk), Sm::new(&sdk));
    let user = unique("svc-app");
    iam.create_user().user_name(&user).send().await.unwrap();
    let current = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    let secret_id = unique("gatehouse/app");
    let doc = serde_json::json!({ "access_key_id": current.access_key_id(), "secret_access_key": current.secret_access_key() });
    sm.create_secret()
        .name(&secret_id)
        .secret_string(doc.to_string())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[[rotator.secrets]]\nname = \"app\"\ngrace = \"2h\"\ndestroy_after = \"1d\"\n\
             kind = {{ type = \"aws_access_key\", user_name = {user:?} }}\n\
             store = {{ type = \"aws_secrets_manager\", secret_id = {secret_id:?} }}\n"
        ),
    );
    let clock = clock();
    let r = support::rotator(&cfg, &clock, Some(sdk.clone())).await;
    let Some(Started::New(id)) = r.start("app", "manual", false).await.unwrap() else {
        panic!()
    };
    r.drive(&id).await.unwrap();
    let new_key = r.store().get(&id).await.unwrap().unwrap().new_key_id.unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    r.drive(&id).await.unwrap();
    let mut expect = vec![
        (current.access_key_id().to_string(), false),
        (new_key.clone(), true),
    ];
    expect.sort();
    assert_eq!(keys(&iam, &user).await, expect, "old key inactive after grace");
    clock.advance(Duration::from_secs(86_400));
    r.drive(&id).await.unwrap();
    assert_eq!(keys(&iam, &user).await, vec![(new_key, true)]);
}

/// Issue 11, finding 12: a rotation that starts while the previous one's old key is still in its
/// grace period must not delete that key to make room (AWS allows two keys): it waits for the
/// grace period to end, then makes room with the (now inactive) old key.
#[tokio::test]
async fn a_new_rotation_never_deletes_a_key_still_in_its_grace_period() {
    let _ = moto_url();
    let sdk = support::sdk().await;
    let (iam, sm) = (Iam::new(&sdk), Sm::new(&sdk));
    let user = unique("svc-grace");
    iam.create_user().user_name(&user).send().await.unwrap();
    let first = iam
        .create_access_key()
        .user_name(&user)
        .send()
        .await
        .unwrap()
        .access_key
        .unwrap();
    let k0 = first.access_key_id().to_string();
    let secret_id = unique("gatehouse/grace");
    let doc = serde_json::json!({ "access_key_id": k0, "secret_access_key": first.secret_access_key() });
    sm.create_secret()
        .name(&secret_id)
        .secret_string(doc.to_string())
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[[rotator.secrets]]\nname = \"app\"\ngrace = \"2h\"\ndestroy_after = \"1d\"\n\
             kind = {{ type = \"aws_access_key\", user_name = {user:?} }}\n\
             store = {{ type = \"aws_secrets_manager\", secret_id = {secret_id:?} }}\n"
        ),
    );
    let clock = clock();
    let r = support::rotator(&cfg, &clock, Some(sdk.clone())).await;
    let Some(Started::New(id1)) = r.start("app", "manual", false).await.unwrap() else {
        panic!("first rotation did not start")
    };
    r.drive(&id1).await.unwrap();
    let first_row = r.store().get(&id1).await.unwrap().unwrap();
    assert_eq!(first_row.phase, Phase::Finished);
    let k1 = first_row.new_key_id.clone().unwrap();
    let grace_end = first_row.due_at;

    // A second rotation inside the first one's grace period: K0 (in grace) and K1 (current)
    // fill AWS's two slots, and neither may go.
    clock.advance(Duration::from_secs(600));
    let Some(Started::New(id2)) = r.start("app", "manual", false).await.unwrap() else {
        panic!("second rotation did not start")
    };
    r.drive(&id2).await.unwrap();
    let mut both = vec![(k0.clone(), true), (k1.clone(), true)];
    both.sort();
    assert_eq!(
        keys(&iam, &user).await,
        both,
        "the key in grace was removed early"
    );
    let second_row = r.store().get(&id2).await.unwrap().unwrap();
    assert_eq!(
        second_row.phase,
        Phase::Started,
        "it waits without creating a key"
    );
    assert_eq!(
        second_row.due_at, grace_end,
        "it waits exactly until the grace period ends"
    );
    assert!(
        second_row.error.as_deref().unwrap_or("").contains("grace period"),
        "{:?}",
        second_row.error
    );
    let plan = r.plan("app").await.unwrap().join("\n");
    assert!(
        plan.contains("grace period") && !plan.contains(&format!("delete non-current key {k0}")),
        "{plan}"
    );
    assert_current_works(&sdk, &sm, &secret_id, &user).await;

    // Grace over: the first rotation disables K0, the second makes room with it.
    clock.advance(
        (grace_end - gatehouse_rotation::Clock::now(&clock))
            .to_std()
            .unwrap(),
    );
    r.drive(&id1).await.unwrap();
    assert_eq!(support::phase(&r, &id1).await, Phase::Revoked);
    r.drive(&id2).await.unwrap();
    let second_row = r.store().get(&id2).await.unwrap().unwrap();
    assert_eq!(second_row.phase, Phase::Finished, "{:?}", second_row.error);
    let k2 = second_row.new_key_id.clone().unwrap();
    let mut now = vec![(k1.clone(), true), (k2.clone(), true)];
    now.sort();
    assert_eq!(keys(&iam, &user).await, now, "the revoked key made room");
    assert_current_works(&sdk, &sm, &secret_id, &user).await;
}
