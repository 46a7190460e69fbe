//! Issue 19: the safety screen learns the IAM user Gatehouse runs as from AWS itself
//! (`sts:GetCallerIdentity`, moto) and withholds every step on it — nothing to configure.

use aws_sdk_iam::Client;
use aws_sdk_iam::config::{Builder, Credentials, Region};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::target::{Screen, Screened, TargetName};
use gatehouse_platform::config::Config;
use gatehouse_targets::client::aws_iam::AwsIam;
use gatehouse_targets::safety::Safety;

fn moto_url() -> String {
    std::env::var("GATEHOUSE_TEST_MOTO_URL").unwrap_or_else(|_| {
        panic!(
            "GATEHOUSE_TEST_MOTO_URL is not set: this test needs moto. Run \
             scripts/with-servers.sh cargo test -p gatehouse-targets --test it"
        )
    })
}

fn iam_as(key_id: &str, secret: &str) -> Client {
    let conf = Builder::new()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
        .endpoint_url(moto_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key_id, secret, None, None, "test"))
        .build();
    Client::from_conf(conf)
}

fn sts_as(key_id: &str, secret: &str) -> aws_sdk_sts::Client {
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

fn deactivate_key() -> HttpCall {
    HttpCall {
        method: Method::Post,
        path: "/".into(),
        body: Some(serde_json::json!({ "Action": "UpdateAccessKey", "Status": "Inactive" })),
    }
}

#[tokio::test]
async fn the_iam_user_gatehouse_runs_as_is_learned_from_sts_and_never_offboarded() {
    let admin = iam_as("testing", "testing");
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let (me, other) = (format!("gatehouse-{run}"), format!("leaver-{run}"));
    for u in [&me, &other] {
        admin.create_user().user_name(u).send().await.unwrap();
    }
    let key = admin.create_access_key().user_name(&me).send().await.unwrap();
    let key = key.access_key().unwrap();
    let (id, secret) = (key.access_key_id(), key.secret_access_key());

    let cfg: Config = toml::from_str("").unwrap();
    let safety = Safety::from_config(&cfg)
        .with_aws(Some(AwsIam::from_clients(iam_as(id, secret), sts_as(id, secret))));
    let call = deactivate_key();
    let step = |p: &str| {
        safety.withhold(&Screened {
            target: TargetName::AWS,
            call: &call,
            rule: "offboarding.aws",
            email: None,
            principal: Some(p),
            revokes: true,
        })
    };
    assert_eq!(step(&me), None, "nothing is known before the screen prepares");
    safety.prepare().await;
    let why = step(&me).expect("its own iam user is withheld");
    assert!(why.contains("own aws identity") && why.contains(&me), "{why}");
    assert_eq!(step(&other), None, "another person is offboarded as usual");
}
