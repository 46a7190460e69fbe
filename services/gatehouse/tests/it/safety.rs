//! `gatehouse plan` shows which steps the safety rails withhold and why (issue 19).

use super::{bin, fixture, text};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::ports::{DeletionChange, Outcome, StateStore};
use gatehouse_testkit::FakeLooker;

const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";

/// A protected admin: Looker user holding the `Admin` role, config `looker:role:Admin`.
fn setup(fake: &FakeLooker, dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let admin_role = fake
        .user(fake.admin_user_id())
        .unwrap()
        .direct_role_ids
        .into_iter()
        .next()
        .unwrap();
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    fake.set_direct_roles(&uid, &[&admin_role]);
    fake.add_session(&uid);
    let cfg = dir.join("gatehouse.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\n[looker]\nurl = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n\
             [reconcile]\nmode = {{ looker = \"report\" }}\n\
             [safety]\nprotected = [\"looker:role:Admin\"]\n",
            dir.join("data"),
            fake.base_url(),
            fake.client_id(),
            fake.client_secret()
        ),
    )
    .unwrap();
    (uid, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_why_a_step_is_withheld() {
    let fake = FakeLooker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (uid, cfg) = setup(&fake, dir.path());
    let o = tokio::process::Command::from(bin())
        .args(["--config", cfg.to_str().unwrap(), "plan", "--event"])
        .arg(fixture(DEACTIVATE))
        .output()
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let why = format!("protected principal: looker user {uid}, holder of looker role Admin");
    assert!(
        out.contains(&format!(
            "withheld (not sent): looker PATCH /api/4.0/users/{uid} {{\"is_disabled\":true}} — {why}"
        )),
        "{out}"
    );
    assert_eq!(
        out.matches("withheld (not sent)").count(),
        2,
        "disable and the session: {out}"
    );
    assert_eq!(fake.write_calls(), 0, "plan changes nothing");
}

/// `plan --all`: what the first reconcile would do for everyone in the directory, per mode,
/// with the withheld steps and their reasons; nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_all_shows_the_first_reconcile_and_what_is_withheld() {
    let fake = FakeLooker::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (uid, cfg) = setup(&fake, dir.path());
    // John is offboarded in the directory, as after an Okta deactivate.
    let body = std::fs::read(fixture(DEACTIVATE)).unwrap();
    let envs =
        gatehouse_domain::okta::parse_hook_body("default", &body, gatehouse_domain::clock::now()).unwrap();
    let store = gatehouse_store::sqlite::Sqlite::open(&dir.path().join("data"))
        .await
        .unwrap();
    for env in &envs {
        let mut id = Identity::new(&env.subject.key);
        id.fold(env);
        store
            .commit(Outcome {
                envelope_id: env.id.clone(),
                identity: Some(id),
                converged: None,
                deletion: DeletionChange::Keep,
                base_version: None,
                offboarding: None,
            })
            .await
            .unwrap();
    }
    store.close().await;
    let o = tokio::process::Command::from(bin())
        .args(["--config", cfg.to_str().unwrap(), "plan", "--all"])
        .output()
        .await
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("modes: looker Report"), "{out}");
    assert!(out.contains(&format!("PATCH /api/4.0/users/{uid}")), "{out}");
    assert!(
        out.contains("holder of looker role Admin") && out.contains("2 withheld by the safety rails"),
        "{out}"
    );
    assert_eq!(fake.write_calls(), 0, "plan --all changes nothing");
}
