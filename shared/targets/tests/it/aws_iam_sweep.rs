//! The complete AWS leaver sweep (issue 20.3) against moto: a user holding every kind of
//! policy and credential is offboarded through the plan (`diff_aws`) and the adapter; every
//! one is gone or deactivated, the deny policy carries the offboarding time, a disabled step
//! is left alone, and a second offboarding plans nothing. (moto has no service-specific
//! credentials, so that step is off here; it is covered by the plan's property test.)

use super::aws_iam::client;
use aws_sdk_iam::Client;
use aws_sdk_iam::types::StatusType;
use chrono::{DateTime, Utc};
use gatehouse_domain::cloud::sweep::{self, AwsSweep, DENY_POLICY_NAME};
use gatehouse_domain::cloud::{AwsActual, AwsIamOp, AwsPlan, AwsUserKey, DesiredAws, KeyAction, diff_aws};
use gatehouse_domain::policy::AwsOffboarding;
use gatehouse_targets::client::aws_iam::AwsIam;
use std::collections::{BTreeMap, BTreeSet};

const CERT: &str = include_str!("signing-cert.pem");
const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM0Kda1A5NPUjUPUjd+aFBrHpLRqdmc2gUU/QbHOLD5T test";
const HAND_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:ListBucket","Resource":"*"}]}"#;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// An IAM user holding a managed policy, an inline policy, an SSH key, a signing certificate
/// and a virtual MFA device. Returns (user, managed policy ARN, MFA serial).
async fn leaver(c: &Client) -> (String, String, String) {
    let user = unique("leaver");
    c.create_user().user_name(&user).send().await.unwrap();
    let arn = c
        .create_policy()
        .policy_name(unique("managed"))
        .policy_document(HAND_POLICY)
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap()
        .arn()
        .unwrap()
        .to_string();
    c.attach_user_policy()
        .user_name(&user)
        .policy_arn(&arn)
        .send()
        .await
        .unwrap();
    c.put_user_policy()
        .user_name(&user)
        .policy_name("hand-made")
        .policy_document(HAND_POLICY)
        .send()
        .await
        .unwrap();
    c.upload_ssh_public_key()
        .user_name(&user)
        .ssh_public_key_body(SSH_KEY)
        .send()
        .await
        .unwrap();
    c.upload_signing_certificate()
        .user_name(&user)
        .certificate_body(CERT)
        .send()
        .await
        .unwrap();
    let serial = c
        .create_virtual_mfa_device()
        .virtual_mfa_device_name(unique("mfa"))
        .send()
        .await
        .unwrap()
        .virtual_mfa_device()
        .unwrap()
        .serial_number()
        .to_string();
    c.enable_mfa_device()
        .user_name(&user)
        .serial_number(&serial)
        .authentication_code1("123456")
        .authentication_code2("654321")
        .send()
        .await
        .unwrap();
    (user, arn, serial)
}

fn offboarded(user: &str, o: &AwsOffboarding, at: DateTime<Utc>) -> DesiredAws {
    DesiredAws {
        user: AwsUserKey::Name(user.to_string()),
        offboarded: true,
        groups: BTreeMap::new(),
        managed_groups: BTreeSet::new(),
        tags: BTreeMap::new(),
        managed_tags: BTreeSet::new(),
        keys: KeyAction::Keep,
        delete_login_profile: false,
        sweep: AwsSweep::from_policy(o, Some(at)),
    }
}

/// Read, plan and apply once, as the AWS target does.
async fn offboard(iam: &AwsIam, d: &DesiredAws, user: &str) -> AwsPlan {
    let u = iam
        .read_user(user, d.needs())
        .await
        .unwrap()
        .expect("user exists");
    let plan = diff_aws(d, &AwsActual::Present(u));
    for s in &plan.steps {
        iam.execute(user, &s.op)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", s.op.render(user)));
    }
    plan
}

#[tokio::test]
async fn offboarding_sweeps_every_policy_and_credential_and_denies_older_sessions() {
    let c = client();
    let (user, arn, serial) = leaver(&c).await;
    let iam = AwsIam::from_client(client());
    let at = DateTime::parse_from_rfc3339("2026-12-06T10:00:00.5Z")
        .unwrap()
        .with_timezone(&Utc);
    let policy = AwsOffboarding {
        delete_inline_policies: true,
        ssh_public_keys: KeyAction::Delete,
        service_specific_credentials: KeyAction::Keep,
        ..AwsOffboarding::default()
    };
    let d = offboarded(&user, &policy, at);
    let plan = offboard(&iam, &d, &user).await;
    let lines: Vec<String> = plan.steps.iter().map(|s| s.op.render(&user)).collect();
    for action in [
        "DetachUserPolicy",
        "DeleteUserPolicy",
        "DeleteSSHPublicKey",
        "UpdateSigningCertificate",
        "DeactivateMFADevice",
        "PutUserPolicy",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("aws iam {action} "))),
            "{action} not planned: {lines:#?}"
        );
    }

    // Every one is gone or deactivated.
    let attached = c
        .list_attached_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert!(attached.attached_policies().is_empty(), "{arn} still attached");
    let inline = c.list_user_policies().user_name(&user).send().await.unwrap();
    assert_eq!(
        inline.policy_names(),
        [DENY_POLICY_NAME.to_string()],
        "only the deny policy is left"
    );
    let ssh = c.list_ssh_public_keys().user_name(&user).send().await.unwrap();
    assert!(ssh.ssh_public_keys().is_empty(), "ssh key not deleted");
    let certs = c
        .list_signing_certificates()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(
        certs.certificates().len(),
        1,
        "certificate deactivated, not deleted"
    );
    assert_eq!(*certs.certificates()[0].status(), StatusType::Inactive);
    let mfa = c.list_mfa_devices().user_name(&user).send().await.unwrap();
    assert!(mfa.mfa_devices().is_empty(), "{serial} still enabled");

    // The deny policy: everything, for tokens issued before the offboarding (rounded up).
    let doc = c
        .get_user_policy()
        .user_name(&user)
        .policy_name(DENY_POLICY_NAME)
        .send()
        .await
        .unwrap()
        .policy_document()
        .to_string();
    let decoded = percent_encoding::percent_decode_str(&doc).decode_utf8().unwrap();
    let v: serde_json::Value = serde_json::from_str(&decoded).unwrap();
    let st = &v["Statement"][0];
    assert_eq!(
        (
            st["Effect"].as_str(),
            st["Action"].as_str(),
            st["Resource"].as_str()
        ),
        (Some("Deny"), Some("*"), Some("*"))
    );
    assert_eq!(
        st["Condition"]["DateLessThan"]["aws:TokenIssueTime"].as_str(),
        Some("2026-12-06T10:00:01Z"),
        "{decoded}"
    );
    assert_eq!(
        sweep::deny_time(&doc),
        Some(
            DateTime::parse_from_rfc3339("2026-12-06T10:00:01Z")
                .unwrap()
                .with_timezone(&Utc)
        )
    );

    // A second offboarding (same event, read again) makes no change.
    let again = offboard(&iam, &d, &user).await;
    assert!(again.steps.is_empty(), "not idempotent: {:#?}", again.steps);
}

#[tokio::test]
async fn a_disabled_step_is_left_alone() {
    let c = client();
    let (user, arn, serial) = leaver(&c).await;
    let iam = AwsIam::from_client(client());
    let policy = AwsOffboarding {
        detach_user_policies: false,
        deactivate_mfa_devices: false,
        ssh_public_keys: KeyAction::Keep,
        revoke_sessions: false,
        service_specific_credentials: KeyAction::Keep,
        ..AwsOffboarding::default()
    };
    let plan = offboard(
        &iam,
        &offboarded(&user, &policy, gatehouse_domain::clock::now()),
        &user,
    )
    .await;
    // Only the signing certificate is deactivated (the default); inline deletion is off by default.
    assert_eq!(plan.steps.len(), 1, "{:#?}", plan.steps);
    assert!(matches!(plan.steps[0].op, AwsIamOp::DeactivateCredential { .. }));
    let attached = c
        .list_attached_user_policies()
        .user_name(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(attached.attached_policies()[0].policy_arn(), Some(arn.as_str()));
    let inline = c.list_user_policies().user_name(&user).send().await.unwrap();
    assert_eq!(
        inline.policy_names(),
        ["hand-made".to_string()],
        "no deny policy, hand-made kept"
    );
    let ssh = c.list_ssh_public_keys().user_name(&user).send().await.unwrap();
    assert_eq!(*ssh.ssh_public_keys()[0].status(), StatusType::Active);
    let mfa = c.list_mfa_devices().user_name(&user).send().await.unwrap();
    assert_eq!(mfa.mfa_devices()[0].serial_number(), serial);
}
