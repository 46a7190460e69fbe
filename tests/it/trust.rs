//! Trust boundary (issue 11): row-level security fails closed in Looker's own settings, and a
//! source may only assert what the policy lets it assert.

use gatehouse_app::{self as app, AppError, Components};
use gatehouse_e2e::{Options, seed_catalog, spawn_app};
use gatehouse_platform::config::Config;
use gatehouse_testkit::FakeLooker;

const POLICY: &str = "[[rule]]\nname = \"emea\"\nwhen = { idp_group = \"Sales EMEA\" }\n\
                      looker_attributes = { region = \"EMEA\" }\n\
                      [attributes.region]\ndeny_value = \"__none__\"\n";

/// Start ingress + processor against `fake` with `policy` (and `extra` config) in `dir`.
async fn start(
    dir: &std::path::Path,
    fake: &FakeLooker,
    policy: &str,
    extra: &str,
) -> Result<app::Running, AppError> {
    let policy_path = dir.join("policy.toml");
    std::fs::write(&policy_path, policy).unwrap();
    let cfg_path = dir.join("gatehouse.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\npolicy = {:?}\n\
             [looker]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n{extra}\n",
            dir.join("data"),
            policy_path,
            fake.base_url(),
            fake.client_id(),
            fake.client_secret(),
        ),
    )
    .unwrap();
    let cfg = Config::load(Some(&cfg_path), |_| None).unwrap();
    app::start(
        &cfg,
        Components {
            ingress: true,
            processor: true,
        },
    )
    .await
}

/// Issue 11, finding 11: Looker's own settings of a managed attribute could undo the deny value
/// (a user editing their own value, or a permissive default). The processor refuses to start
/// (or warns, when configured), checking `GET /user_attributes` against the policy.
#[tokio::test]
async fn start_refuses_a_managed_attribute_that_fails_open_in_looker() {
    let fake = FakeLooker::start().await;
    let region = fake.add_user_attribute("region");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    fake.set_user_attribute_access(&region, true, true);
    let e = start(dir, &fake, POLICY, "")
        .await
        .err()
        .expect("user-editable attribute refused");
    assert!(matches!(e, AppError::UnsafeAttributes(_)), "{e}");
    assert!(
        e.to_string().contains("\"region\"") && e.to_string().contains("user_can_edit"),
        "{e}"
    );

    fake.set_user_attribute_access(&region, true, false);
    fake.set_user_attribute_default(&region, Some("ALL"));
    let e = start(dir, &fake, POLICY, "")
        .await
        .err()
        .expect("permissive default refused");
    assert!(e.to_string().contains("\"ALL\""), "{e}");

    // warn: starts anyway (logged as an error)
    let running = start(dir, &fake, POLICY, "attribute_check = \"warn\"\n")
        .await
        .unwrap();
    running.stop().await;

    // safe: default = the deny value, or empty
    for default in [Some("__none__"), None] {
        fake.set_user_attribute_default(&region, default);
        let running = start(dir, &fake, POLICY, "").await.unwrap();
        running.stop().await;
    }
}

/// The default of spawn_app (example policy, seeded catalog) is safe: attributes are view-only
/// and have no default.
#[tokio::test]
async fn the_seeded_catalog_passes_the_attribute_check() {
    let fake = FakeLooker::start().await;
    seed_catalog(&fake);
    let app = spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(gatehouse_e2e::example_policy()),
        ..Options::default()
    })
    .await;
    app.stop().await;
}
