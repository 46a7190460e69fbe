//! The IAM adapter against a real IAM API (moto on loopback; `GATEHOUSE_TEST_MOTO_URL`). Each
//! test uses its own user and group names.

use aws_sdk_iam::Client;
use aws_sdk_iam::config::{Builder, Credentials, Region};
use gatehouse_domain::cloud::{AwsIamOp, AwsReadNeeds, AwsUserKey};
use gatehouse_domain::looker::ErrorKind;
use gatehouse_targets::client::aws_iam::AwsIam;
use std::collections::BTreeMap;

const SECRET: &str = "testing-secret-iam-d0-not-leak";

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: the IAM tests need moto. Run `make test` \
             (it starts moto with scripts/moto.sh), or scripts/with-servers.sh cargo test ..."
        )
    })
}

/// An IAM client on moto with the given (fake) access key id; moto answers every key alike.
pub fn client() -> Client {
    let conf = Builder::new()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", SECRET, None, None, "test"))
        .build();
    Client::from_conf(conf)
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[tokio::test]
async fn reads_a_user_and_applies_every_write() {
    let c = client();
    let user = unique("pat");
    let (eng, hand) = (unique("eng"), unique("hand"));
    c.create_user().user_name(&user).send().await.unwrap();
    for g in [&eng, &hand] {
        c.create_group().group_name(g).send().await.unwrap();
    }
    c.add_user_to_group()
        .user_name(&user)
        .group_name(&hand)
        .send()
        .await
        .unwrap();
    c.create_login_profile()
        .user_name(&user)
        .password("Passw0rd!xyz")
        .send()
        .await
        .unwrap();
    let key = c.create_access_key().user_name(&user).send().await.unwrap();
    let key_id = key.access_key().unwrap().access_key_id().to_string();

    let iam = AwsIam::from_client(client());
    let needs = AwsReadNeeds {
        tags: true,
        credentials: true,
        ..Default::default()
    };
    let u = iam.read_user(&user, needs).await.unwrap().expect("user exists");
    assert_eq!(u.groups, [hand.clone()].into());
    assert!(u.login_profile);
    assert_eq!(u.access_keys.len(), 1);
    assert!(u.access_keys[0].active);

    for op in [
        AwsIamOp::AddUserToGroup { group: eng.clone() },
        AwsIamOp::TagUser {
            tags: BTreeMap::from([("team".to_string(), "eng".to_string())]),
        },
        AwsIamOp::DeactivateAccessKey {
            key_id: key_id.clone(),
        },
        AwsIamOp::DeleteLoginProfile,
    ] {
        iam.execute(&user, &op)
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    let u = iam.read_user(&user, needs).await.unwrap().unwrap();
    assert_eq!(u.groups, [eng.clone(), hand.clone()].into());
    assert_eq!(u.tags.get("team").map(String::as_str), Some("eng"));
    assert!(!u.access_keys[0].active, "key deactivated, not deleted");
    assert!(!u.login_profile);

    for op in [
        AwsIamOp::RemoveUserFromGroup { group: eng.clone() },
        AwsIamOp::UntagUser {
            keys: vec!["team".into()],
        },
        AwsIamOp::DeleteAccessKey {
            key_id: key_id.clone(),
        },
    ] {
        iam.execute(&user, &op)
            .await
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
    let u = iam.read_user(&user, needs).await.unwrap().unwrap();
    assert_eq!(u.groups, [hand].into(), "the unmanaged group stays");
    assert!(u.tags.is_empty() && u.access_keys.is_empty());

    // Revocations of what is already gone: NoSuchEntity, classified NotFound (= done).
    let e = iam
        .execute(&user, &AwsIamOp::DeleteLoginProfile)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    let e = iam
        .execute(&user, &AwsIamOp::DeleteAccessKey { key_id })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(iam.read_user(&unique("nobody"), needs).await.unwrap().is_none());
    assert!(!format!("{e} {e:?} {iam:?}").contains(SECRET), "secret leaked");
}

#[tokio::test]
async fn listings_paginate_and_tag_mapping_resolves() {
    let c = client();
    let group = unique("big");
    c.create_group().group_name(&group).send().await.unwrap();
    let tag_key = unique("idp-email");
    let mut names = Vec::new();
    for i in 0..3 {
        let name = unique(&format!("u{i}"));
        c.create_user()
            .user_name(&name)
            .tags(
                aws_sdk_iam::types::Tag::builder()
                    .key(&tag_key)
                    .value(format!("p{i}@x.io"))
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        c.add_user_to_group()
            .user_name(&name)
            .group_name(&group)
            .send()
            .await
            .unwrap();
        names.push(name);
    }
    let iam = AwsIam::from_client(client());
    let members = iam.group_members(&group).await.unwrap().unwrap();
    for n in &names {
        assert!(members.contains(n), "{n} missing from {members:?}");
    }
    assert_eq!(iam.group_members(&unique("nogroup")).await.unwrap(), None);
    let all = iam.list_users().await.unwrap();
    assert!(names.iter().all(|n| all.contains(n)));
    let key = AwsUserKey::Tag {
        key: tag_key.clone(),
        value: "p1@x.io".into(),
    };
    assert_eq!(iam.resolve(&key).await.unwrap(), Some(names[1].clone()));
    let before = iam.read_calls();
    assert_eq!(iam.resolve(&key).await.unwrap(), Some(names[1].clone()));
    assert_eq!(
        iam.read_calls(),
        before,
        "a resolved tag is served from the index"
    );
    let missing = AwsUserKey::Tag {
        key: tag_key,
        value: "nobody@x.io".into(),
    };
    assert_eq!(iam.resolve(&missing).await.unwrap(), None);
}

#[tokio::test]
async fn refusals_from_iam_are_never_retried() {
    // A write to a user that does not exist: NoSuchEntity → NotFound; a malformed request →
    // Permanent. (AccessDenied and throttling are classified in the adapter's unit tests.)
    let iam = AwsIam::from_client(client());
    let e = iam
        .execute(&unique("ghost"), &AwsIamOp::AddUserToGroup { group: unique("g") })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert!(!e.is_retryable());
    let e = iam
        .execute("bad name with spaces!", &AwsIamOp::UntagUser { keys: vec![] })
        .await
        .unwrap_err();
    assert!(!e.is_retryable(), "{e:?}");
}

/// An STS client on moto signing with `key_id` (moto answers GetCallerIdentity with the IAM user
/// that owns the key, as AWS does).
pub fn sts_as(key_id: &str, secret: &str) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::config::Builder::new()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            key_id, secret, None, None, "test",
        ))
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

/// Issue 19: Gatehouse learns which IAM user it runs as (`sts:GetCallerIdentity`) so the safety
/// screen never offboards it; the answer names the user that owns the signing key.
#[tokio::test]
async fn caller_arn_names_the_iam_user_whose_key_signs() {
    let c = client();
    let user = unique("gatehouse-svc");
    c.create_user().user_name(&user).send().await.unwrap();
    let key = c.create_access_key().user_name(&user).send().await.unwrap();
    let key = key.access_key().unwrap();
    let iam = AwsIam::from_clients(client(), sts_as(key.access_key_id(), key.secret_access_key()));
    let arn = iam.caller_arn().await.unwrap().expect("an sts client answers");
    assert!(
        arn.starts_with("arn:aws:iam::") && arn.ends_with(&format!(":user/{user}")),
        "{arn}"
    );
    // Without an STS client there is nothing to ask.
    assert_eq!(AwsIam::from_client(client()).caller_arn().await.unwrap(), None);
}
