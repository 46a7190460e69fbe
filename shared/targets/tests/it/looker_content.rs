//! The client's content reads and hand-over writes (issue 19) against the fake's spec-shaped JSON.

use gatehouse_domain::handover::{AlertInfo, ContentNeeds, ScheduledPlanInfo};
use gatehouse_domain::looker::{ErrorKind, LookerOp, UserRef};
use gatehouse_domain::ports::LookerPort;
use gatehouse_testkit::FakeLooker;

use crate::looker::client;

/// A leaver with a personal folder (2 Looks, 1 dashboard), 2 scheduled plans (one mailing an
/// outside address) and 1 alert mailing outside; plus someone else's schedule and alert.
struct Seed {
    user: String,
    folder: String,
    looks: [String; 2],
    dashboard: String,
    plans: [String; 2],
    alert: String,
}

fn seed(fake: &FakeLooker) -> Seed {
    let user = fake.add_user("leaver@x.io", "Lea", "Ver");
    let other = fake.add_user("stays@x.io", "Sta", "Ys");
    let folder = fake.personal_folder(&user);
    let looks = [
        fake.add_look(&user, &folder, "l1"),
        fake.add_look(&user, &folder, "l2"),
    ];
    let dashboard = fake.add_dashboard(&user, &folder, "d1");
    let plans = [
        fake.add_scheduled_plan(&user, &looks[0], &["team@x.io"]),
        fake.add_scheduled_plan(&user, &looks[1], &["team@x.io", "leaver@gmail.com"]),
    ];
    let alert = fake.add_alert(&user, &["leaver@gmail.com"]);
    fake.add_scheduled_plan(&other, &looks[0], &["x@gmail.com"]);
    fake.add_alert(&other, &["x@gmail.com"]);
    Seed {
        user,
        folder,
        looks,
        dashboard,
        plans,
        alert,
    }
}

#[tokio::test]
async fn content_reads_only_what_is_needed_and_only_the_persons() {
    let fake = FakeLooker::start().await;
    let s = seed(&fake);
    let c = client(&fake);

    let all = c.content(&s.user, ContentNeeds::Everything).await.unwrap();
    assert_eq!(all.personal_folder_id.as_deref(), Some(s.folder.as_str()));
    assert_eq!(all.looks, s.looks.to_vec());
    assert_eq!(all.dashboards, vec![s.dashboard.clone()]);
    assert_eq!(
        all.scheduled_plans,
        vec![
            ScheduledPlanInfo {
                id: s.plans[0].clone(),
                enabled: true,
                emails: vec!["team@x.io".into()]
            },
            ScheduledPlanInfo {
                id: s.plans[1].clone(),
                enabled: true,
                emails: vec!["team@x.io".into(), "leaver@gmail.com".into()]
            },
        ]
    );
    assert_eq!(
        all.alerts,
        vec![AlertInfo {
            id: s.alert.clone(),
            is_disabled: false,
            emails: vec!["leaver@gmail.com".into()]
        }]
    );

    fake.reset_calls();
    let d = c.content(&s.user, ContentNeeds::Deliveries).await.unwrap();
    assert!(d.looks.is_empty() && d.dashboards.is_empty() && d.personal_folder_id.is_none());
    assert_eq!((d.scheduled_plans.len(), d.alerts.len()), (2, 1));
    let paths: Vec<String> = fake
        .calls()
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(paths.len(), 2, "offboarding costs two reads: {paths:?}");
    assert!(paths.iter().any(|p| p == "GET /scheduled_plans"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "GET /alerts/search"), "{paths:?}");
    let plans = fake
        .calls()
        .into_iter()
        .find(|c| c.path.ends_with("/scheduled_plans"))
        .unwrap();
    assert_eq!(plans.query_param("user_id").as_deref(), Some(s.user.as_str()));
    let alerts = fake
        .calls()
        .into_iter()
        .find(|c| c.path.ends_with("/alerts/search"))
        .unwrap();
    assert_eq!(alerts.query_param("all_owners").as_deref(), Some("true"));
}

#[tokio::test]
async fn hand_over_writes_are_the_rendered_calls_and_change_the_fake() {
    let fake = FakeLooker::start().await;
    let s = seed(&fake);
    let team = fake.add_folder("Team");
    let owner = fake.add_user("svc@x.io", "Team", "Service");
    let c = client(&fake);
    let u = UserRef::Id(s.user.clone());
    // Logged in before the calls are counted.
    c.content(&s.user, ContentNeeds::Deliveries).await.unwrap();
    let ops = [
        LookerOp::MoveLook {
            look_id: s.looks[0].clone(),
            folder_id: team.clone(),
        },
        LookerOp::MoveDashboard {
            dashboard_id: s.dashboard.clone(),
            folder_id: team.clone(),
        },
        LookerOp::SetScheduledPlanOwner {
            plan_id: s.plans[0].clone(),
            user_id: owner.clone(),
        },
        LookerOp::DisableScheduledPlan {
            plan_id: s.plans[1].clone(),
        },
        LookerOp::SetAlertOwner {
            alert_id: s.alert.clone(),
            owner_id: owner.clone(),
        },
        LookerOp::DisableAlert {
            alert_id: s.alert.clone(),
        },
    ];
    for op in &ops {
        fake.reset_calls();
        c.execute(&u, op).await.unwrap_or_else(|e| panic!("{op:?}: {e}"));
        let calls = fake.calls();
        assert_eq!(calls.len(), 1, "{op:?}");
        let want = op.http(&u);
        assert_eq!(calls[0].method, want.method.to_string());
        assert_eq!(calls[0].path, want.path);
        assert_eq!(calls[0].json_body(), want.body);
        assert!(
            (200..300).contains(&calls[0].status),
            "{op:?}: {}",
            calls[0].status
        );
    }
    assert_eq!(fake.look(&s.looks[0]).unwrap().folder_id, team);
    assert_eq!(fake.look(&s.looks[1]).unwrap().folder_id, s.folder, "not moved");
    assert_eq!(fake.dashboard(&s.dashboard).unwrap().folder_id, team);
    assert_eq!(fake.scheduled_plan(&s.plans[0]).unwrap().owner_id, owner);
    assert!(!fake.scheduled_plan(&s.plans[1]).unwrap().enabled);
    let a = fake.alert(&s.alert).unwrap();
    assert_eq!((a.owner_id.as_str(), a.enabled), (owner.as_str(), false));

    // A folder or owner Looker does not have is refused (422), and an unknown id is a 404.
    let bad = LookerOp::MoveLook {
        look_id: s.looks[1].clone(),
        folder_id: "999999".into(),
    };
    assert_eq!(c.execute(&u, &bad).await.unwrap_err().status, Some(422));
    let gone = LookerOp::DisableAlert {
        alert_id: "999999".into(),
    };
    assert_eq!(c.execute(&u, &gone).await.unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn deleting_the_user_trashes_the_personal_folder_and_deletes_the_schedules() {
    let fake = FakeLooker::start().await;
    let s = seed(&fake);
    let c = client(&fake);
    c.execute(&UserRef::Id(s.user.clone()), &LookerOp::DeleteUser)
        .await
        .unwrap();
    assert!(fake.look(&s.looks[0]).unwrap().deleted && fake.look(&s.looks[1]).unwrap().deleted);
    assert!(fake.dashboard(&s.dashboard).unwrap().deleted);
    assert!(fake.scheduled_plan(&s.plans[0]).is_none() && fake.scheduled_plan(&s.plans[1]).is_none());
    assert!(fake.alert(&s.alert).is_some(), "alerts keep running (4.0 spec)");
}

#[tokio::test]
async fn content_reads_retry_nothing_themselves_and_classify_429() {
    let fake = FakeLooker::start().await;
    let s = seed(&fake);
    let c = client(&fake);
    c.content(&s.user, ContentNeeds::Deliveries).await.unwrap();
    fake.fail_next(429, 1);
    let e = c.content(&s.user, ContentNeeds::Deliveries).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Throttled);
    let e = c.content("../1", ContentNeeds::Everything).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Permanent);
}
