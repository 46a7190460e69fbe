//! Issue 19, item 6 — deleting without destroying, end to end against the fake Looker: outside
//! deliveries stop at offboarding; before the scheduled deletion the content is handed over, and
//! `DELETE /users/{id}` comes last.

use gatehouse_e2e::{Options, TestApp, example_policy, okta_fixture, seed_catalog, spawn_app, wait_until};
use gatehouse_testkit::FakeLooker;

const DEACTIVATE: &str = "event-hook.user.lifecycle.deactivate.constructed.json";
const DOMAINS: &str = "[identity]\nallowed_email_domains = [\"example.com\"]\n";

/// John (the fixture's person): personal folder with 2 Looks and 1 dashboard, 2 scheduled plans
/// (the second also mails a personal address) and 1 alert mailing a personal address.
struct John {
    id: String,
    folder: String,
    looks: [String; 2],
    dashboard: String,
    plans: [String; 2],
    alert: String,
}

fn john(fake: &FakeLooker) -> John {
    seed_catalog(fake);
    let id = fake.add_user("john.doe@example.com", "John", "Doe");
    let folder = fake.personal_folder(&id);
    let looks = [
        fake.add_look(&id, &folder, "Pipeline"),
        fake.add_look(&id, &folder, "Churn"),
    ];
    let dashboard = fake.add_dashboard(&id, &folder, "Weekly");
    let plans = [
        fake.add_scheduled_plan(&id, &looks[0], &["sales@example.com"]),
        fake.add_scheduled_plan(&id, &looks[1], &["sales@example.com", "john.doe@gmail.com"]),
    ];
    let alert = fake.add_alert(&id, &["john.doe@gmail.com"]);
    John {
        id,
        folder,
        looks,
        dashboard,
        plans,
        alert,
    }
}

async fn app(fake: &FakeLooker, policy: String, extra_toml: &str) -> TestApp {
    spawn_app(Options {
        looker: Some(fake.clone()),
        policy: Some(policy),
        extra_toml: extra_toml.into(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn offboarding_disables_the_schedule_and_alert_that_mail_outside_the_allowed_domains() {
    let fake = FakeLooker::start().await;
    let j = john(&fake);
    let app = app(&fake, example_policy(), DOMAINS).await;
    app.deliver(&okta_fixture(DEACTIVATE)).await;

    assert!(fake.user(&j.id).unwrap().is_disabled);
    assert!(
        fake.scheduled_plan(&j.plans[0]).unwrap().enabled,
        "inside the domains: kept"
    );
    assert!(
        !fake.scheduled_plan(&j.plans[1]).unwrap().enabled,
        "mails gmail.com: disabled"
    );
    assert!(
        !fake.alert(&j.alert).unwrap().enabled,
        "mails gmail.com: disabled"
    );
    // Nothing is moved or deleted at offboarding (deletion is 30 days later).
    assert_eq!(fake.look(&j.looks[0]).unwrap().folder_id, j.folder);

    let rows = app.ledger().await;
    let outside: Vec<String> = rows
        .iter()
        .filter(|r| r.entry.rule == "offboarding.outside_deliveries")
        .map(|r| format!("{} -> {}", r.entry.call, r.entry.status))
        .collect();
    assert_eq!(outside.len(), 2, "{outside:#?}");
    assert!(
        outside.iter().any(|r| r.starts_with(&format!(
            "PATCH /api/4.0/scheduled_plans/{} {{\"enabled\":false}}",
            j.plans[1]
        ))),
        "{outside:#?}"
    );
    assert!(
        outside
            .iter()
            .any(|r| r.starts_with(&format!("PATCH /api/4.0/alerts/{} ", j.alert))),
        "{outside:#?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn without_allowed_domains_offboarding_reads_no_content() {
    let fake = FakeLooker::start().await;
    let j = john(&fake);
    let app = app(&fake, example_policy(), "").await;
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    assert!(fake.user(&j.id).unwrap().is_disabled);
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| c.path.contains("scheduled_plans") || c.path.contains("alerts")),
        "no budget spent on reads nobody needs"
    );
    app.stop().await;
}

#[tokio::test]
async fn before_the_deletion_everything_is_handed_over_and_nothing_lands_in_trash() {
    let fake = FakeLooker::start().await;
    let j = john(&fake);
    let team = fake.add_folder("Sales team");
    let owner = fake.add_user("sales-bot@example.com", "Sales", "Bot");
    let policy = format!(
        "[offboarding]\ndelete_after_days = 0\nhandover = {{ folder_id = \"{team}\", owner_id = \"{owner}\" }}\n"
    );
    let app = app(&fake, policy, DOMAINS).await;
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    wait_until("john deleted", || async { fake.user(&j.id).is_none() }).await;

    for l in &j.looks {
        let look = fake.look(l).unwrap();
        assert_eq!(
            (look.folder_id.as_str(), look.deleted),
            (team.as_str(), false),
            "look {l}"
        );
    }
    let d = fake.dashboard(&j.dashboard).unwrap();
    assert_eq!((d.folder_id.as_str(), d.deleted), (team.as_str(), false));
    for p in &j.plans {
        let plan = fake
            .scheduled_plan(p)
            .unwrap_or_else(|| panic!("schedule {p} was deleted"));
        assert_eq!(plan.owner_id, owner);
    }
    // The outside-mailing schedule stays disabled under its new owner.
    assert!(fake.scheduled_plan(&j.plans[0]).unwrap().enabled);
    assert!(!fake.scheduled_plan(&j.plans[1]).unwrap().enabled);
    assert_eq!(fake.alert(&j.alert).unwrap().owner_id, owner);

    // Order: every hand-over write finished before DELETE /users/{id} started.
    let calls = fake.calls();
    let delete = calls
        .iter()
        .find(|c| c.method == "DELETE" && c.path == format!("/users/{}", j.id))
        .expect("delete sent");
    let handover: Vec<_> = calls
        .iter()
        .filter(|c| {
            c.method == "PATCH"
                && ["/looks/", "/dashboards/", "/scheduled_plans/", "/alerts/"]
                    .iter()
                    .any(|p| c.path.contains(p))
                && c.json_body().is_some_and(|b| {
                    b.get("folder_id").is_some() || b.get("user_id").is_some() || b.get("owner_id").is_some()
                })
        })
        .collect();
    assert_eq!(
        handover.len(),
        6,
        "2 looks + 1 dashboard + 2 schedules + 1 alert: {handover:#?}"
    );
    assert!(
        handover.iter().all(|h| h.finished_at <= delete.started_at),
        "a hand-over call overlapped the delete"
    );

    wait_until("hand-over ledgered", || async {
        app.ledger()
            .await
            .iter()
            .filter(|r| r.entry.rule == "offboarding.handover")
            .count()
            == 6
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn without_a_configured_handover_the_deletion_is_withheld_and_nothing_is_lost() {
    let fake = FakeLooker::start().await;
    let j = john(&fake);
    let app = app(&fake, "[offboarding]\ndelete_after_days = 0\n".into(), "").await;
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    wait_until("deletion withheld", || async {
        app.ledger().await.iter().any(|r| {
            r.entry.rule == "offboarding.delete_after_days"
                && r.entry.status.starts_with("withheld: no offboarding.handover")
        })
    })
    .await;
    assert!(fake.user(&j.id).is_some_and(|u| u.is_disabled), "kept, disabled");
    assert!(!fake.look(&j.looks[0]).unwrap().deleted);
    assert!(fake.scheduled_plan(&j.plans[0]).is_some());
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| c.method == "DELETE" && c.path == format!("/users/{}", j.id))
    );
    app.stop().await;
}

#[tokio::test]
async fn handover_none_deletes_and_looker_destroys_the_content() {
    let fake = FakeLooker::start().await;
    let j = john(&fake);
    let app = app(
        &fake,
        "[offboarding]\ndelete_after_days = 0\nhandover = \"none\"\n".into(),
        "",
    )
    .await;
    app.deliver(&okta_fixture(DEACTIVATE)).await;
    wait_until("john deleted", || async { fake.user(&j.id).is_none() }).await;
    // What the hand-over prevents: Looks and dashboards in Trash, schedules gone.
    assert!(j.looks.iter().all(|l| fake.look(l).unwrap().deleted));
    assert!(fake.dashboard(&j.dashboard).unwrap().deleted);
    assert!(j.plans.iter().all(|p| fake.scheduled_plan(p).is_none()));
    app.stop().await;
}
