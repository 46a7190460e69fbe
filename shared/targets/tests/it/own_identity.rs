//! Issue 19: the safety screen learns the IAM user Gatehouse runs as from AWS itself
//! (`sts:GetCallerIdentity`, moto) and withholds every step on it — nothing to configure. Its
//! own Looker user is read once per process (issue 14: every call counts against the quota).

use aws_sdk_iam::Client;
use aws_sdk_iam::config::{Builder, Credentials, Region};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::target::{Screen, Screened, TargetName};
use gatehouse_platform::config::Config;
use gatehouse_targets::client::aws_iam::AwsIam;
use gatehouse_targets::safety::Safety;
use gatehouse_testkit::FakeLooker;
use std::time::Duration;

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

/// The call that disables Looker user `p`.
fn disable_call(p: &str) -> HttpCall {
    HttpCall {
        method: Method::Patch,
        path: format!("/users/{p}"),
        body: Some(serde_json::json!({ "is_disabled": true })),
    }
}

/// Disabling Looker user `p`, as the screen sees it (the call leaked: tests only).
fn disable_step(p: &str) -> Screened<'static> {
    let call: &'static HttpCall = Box::leak(Box::new(disable_call(p)));
    Screened {
        target: TargetName::LOOKER,
        call,
        rule: "offboarding.disable",
        email: None,
        principal: Some(Box::leak(p.to_string().into_boxed_str())),
        revokes: true,
    }
}

/// Whether the screen withholds disabling Looker user `p`, and why.
fn disable(screen: &Safety, p: &str) -> Option<String> {
    screen.withhold(&disable_step(p))
}

/// `(GET /user calls, GET /groups/{id}/users calls)` the fake saw.
fn own_and_holder_reads(fake: &FakeLooker) -> (usize, usize) {
    let calls = fake.calls();
    let count = |f: &dyn Fn(&str) -> bool| calls.iter().filter(|c| c.method == "GET" && f(&c.path)).count();
    (
        count(&|p| p == "/user"),
        count(&|p| p.starts_with("/groups/") && p.ends_with("/users")),
    )
}

/// Issue 14: `GET /user` was made again every five minutes an event came in (up to 8,640 calls a
/// month for one process). The owner of the API3 key Gatehouse logs in with does not change, so
/// it is read once. The holders of protected groups change, so they are read again once the
/// refresh interval has passed (zero here), but only before a plan that revokes in Looker: an
/// event that only grants never reads them.
#[tokio::test]
async fn its_own_looker_user_is_read_once_and_protected_holders_only_before_revocations() {
    let fake = FakeLooker::start().await;
    let me = fake.admin_user_id().to_string();
    let admins = fake.add_group("Admins");
    let admin = fake.add_user("admin@example.com", "Ad", "Min");
    fake.add_user_to_group(&admin, &admins);
    let cfg = |extra: &str| -> Config {
        toml::from_str(&format!(
            "[looker]\nurl = \"{}\"\nclient_id = \"id\"\nclient_secret = \"secret\"\n{extra}",
            fake.base_url()
        ))
        .unwrap()
    };
    // No protected groups or roles: one GET /user, however many events, revoking or not.
    let plain = Safety::from_config(&cfg(""))
        .with_looker(Some(crate::looker::client(&fake)))
        .with_looker_refresh(Duration::ZERO);
    fake.reset_calls();
    for _ in 0..3 {
        plain.prepare().await;
        plain.prepare_revocations(TargetName::LOOKER).await;
    }
    assert_eq!(own_and_holder_reads(&fake), (1, 0));
    assert!(
        disable(&plain, &me).is_some_and(|w| w.contains("own looker user")),
        "its own user is still known and withheld"
    );

    // A protected group: GET /user still once; the group's members never for plans that only
    // grant, and at every refresh before a revocation.
    let guarded = Safety::from_config(&cfg("[safety]\nprotected = [\"looker:group:Admins\"]\n"))
        .with_looker(Some(crate::looker::client(&fake)))
        .with_looker_refresh(Duration::ZERO);
    fake.reset_calls();
    for _ in 0..3 {
        guarded.prepare().await;
        guarded.prepare_revocations(TargetName::AWS).await;
    }
    assert_eq!(
        own_and_holder_reads(&fake),
        (1, 0),
        "no Looker revocation, no member read"
    );
    assert!(
        guarded
            .not_ready(&disable_step(&admin))
            .is_some_and(|w| w.contains("holders")),
        "a Looker revocation waits while the holders were never read"
    );
    for _ in 0..3 {
        guarded.prepare().await;
        guarded.prepare_revocations(TargetName::LOOKER).await;
    }
    assert_eq!(own_and_holder_reads(&fake), (1, 3));
    assert_eq!(guarded.not_ready(&disable_step(&admin)), None);
    assert!(disable(&guarded, &admin).is_some_and(|w| w.contains("member of looker group Admins")));
    let newcomer = fake.add_user("new-admin@example.com", "New", "Admin");
    fake.add_user_to_group(&newcomer, &admins);
    assert_eq!(disable(&guarded, &newcomer), None, "not read yet");
    guarded.prepare_revocations(TargetName::LOOKER).await;
    assert!(
        disable(&guarded, &newcomer).is_some_and(|w| w.contains("member of looker group Admins")),
        "a holder added since is protected after the next refresh"
    );

    // Within the refresh interval the holders read before are trusted: no read per revocation.
    let cached = Safety::from_config(&cfg("[safety]\nprotected = [\"looker:group:Admins\"]\n"))
        .with_looker(Some(crate::looker::client(&fake)));
    fake.reset_calls();
    for _ in 0..3 {
        cached.prepare().await;
        cached.prepare_revocations(TargetName::LOOKER).await;
    }
    assert_eq!(own_and_holder_reads(&fake), (1, 1));
}
