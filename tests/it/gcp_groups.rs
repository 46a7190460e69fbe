//! Google groups end to end (issue 20): an offboarding event removes the person from every
//! managed Google group through the processor (and from no other group), and reconcile lists the
//! managed groups page by page, finds a membership added by hand and removes it (enforce).

use gatehouse_e2e::{Options, okta_fixture, spawn_app};
use gatehouse_engine::reconcile::{self, LogProgress};
use gatehouse_platform::config::Config;
use gatehouse_testkit::cloud_identity_fake::FakeCloudIdentity;
use gatehouse_testkit::gcp_iam_fake::FakeGcpIam;

const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";
const JOHN: &str = "john.doe@example.com";
const DA: &str = "data-analysts@example.com";
const ALL: &str = "everyone@example.com";

#[tokio::test]
async fn offboarding_and_reconcile_keep_managed_google_groups_only() {
    let iam = FakeGcpIam::start().await;
    let groups = FakeCloudIdentity::start().await;
    groups.set_token(&iam.token());
    groups.add_group(DA);
    groups.add_group(ALL);
    for m in [JOHN, "ann@example.com", "bob@example.com"] {
        groups.add_member(DA, m);
        groups.add_member(ALL, m);
    }
    let b = iam.base_url();
    let policy = format!(
        "[[rule]]\nname = \"analysts\"\nwhen = {{ idp_group = \"Engineering\" }}\ngcp_groups = [{DA:?}]\n"
    );
    let toml = format!(
        "[gcp]\nenabled = true\nresource_manager_url = {b:?}\nbigquery_url = {b:?}\niam_url = {b:?}\n\
         cloud_identity_url = {:?}\ngroups_page_size = 1\n[gcp.token]\nsource = \"static\"\ntoken = {:?}\n",
        groups.base_url(),
        iam.token()
    );
    let app = spawn_app(Options {
        policy: Some(policy),
        extra_toml: toml,
        ..Default::default()
    })
    .await;

    app.deliver(&okta_fixture(DEACTIVATE)).await;
    assert_eq!(groups.members(DA), ["ann@example.com", "bob@example.com"]);
    assert_eq!(
        groups.members(ALL).len(),
        3,
        "a group no rule names is never touched"
    );
    let ledger = app.ledger().await;
    let gcp: Vec<_> = ledger.iter().filter(|r| r.entry.target == "gcp").collect();
    assert_eq!(gcp.len(), 1, "{ledger:#?}");
    assert_eq!(gcp[0].entry.rule, "gcp.offboarding.remove_group_memberships");
    assert_eq!(gcp[0].entry.call.method.to_string(), "DELETE");

    // Someone adds John back by hand: reconcile lists the group (pages of one) and removes him.
    groups.add_member(DA, JOHN);
    groups.reset_calls();
    let cfg = Config::load(Some(&app.dir.path().join("gatehouse.toml")), |_| None).unwrap();
    let state = gatehouse_store::state::AnyState::Sqlite(app.store.clone());
    let engine = gatehouse_app::engine_with_cloud(&cfg, state).await.unwrap();
    let report = reconcile::run(&engine, &app.store, true, &LogProgress)
        .await
        .unwrap();
    assert!(groups.count("memberships.list") >= 3, "{:?}", groups.calls());
    assert!(report.reads.gcp >= 3, "{:?}", report.reads);
    assert_eq!(groups.members(DA), ["ann@example.com", "bob@example.com"]);
    app.stop().await;
}
