//! Deleting without destroying (issue 19, item 6).
//!
//! Looker's `DELETE /users/{id}` moves the person's Looks and dashboards to Trash, breaks their
//! public URLs and deletes every schedule they own. Before a scheduled deletion the person's
//! content is handed over: Looks and dashboards of their personal folder are moved to the
//! policy's `[offboarding] handover.folder_id`, their scheduled plans and alerts are reassigned
//! to `handover.owner_id`. At offboarding itself, every schedule and alert of theirs that mails
//! an address outside `[identity] allowed_email_domains` is disabled the same day.
//!
//! Everything here is pure: [`LookerContent`] is what the client read, the functions return plan
//! steps that go through the one apply loop (so each is ledgered like any other call).

use crate::looker::{LookerOp, UserRef};
use crate::plan::{Plan, Step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The ledger's rule for the disabling of outside deliveries at offboarding.
pub const RULE_OUTSIDE_DELIVERIES: &str = "offboarding.outside_deliveries";
/// The ledger's rule for the hand-over steps before a deletion.
pub const RULE_HANDOVER: &str = "offboarding.handover";

pub use crate::policy::handover::Handover;

/// Which content reads a plan needs (each costs Looker admin-API calls, see
/// `docs/looker-budget.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentNeeds {
    /// Offboarding: scheduled plans and alerts (2 calls, +1 per further 500 alerts).
    Deliveries,
    /// Before a deletion: also the personal folder's Looks and dashboards (5 calls).
    Everything,
}

/// One scheduled plan of the person (`GET /scheduled_plans?user_id=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledPlanInfo {
    pub id: String,
    pub enabled: bool,
    /// `scheduled_plan_destination[].address` of the destinations of `type` `email`.
    pub emails: Vec<String>,
}

/// One alert owned by the person (`GET /alerts/search`, filtered on `owner_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInfo {
    pub id: String,
    pub is_disabled: bool,
    /// `destinations[].email_address` of the destinations of `destination_type` `EMAIL`.
    pub emails: Vec<String>,
}

/// What the person owns in Looker, as far as it was read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookerContent {
    /// `User.personal_folder_id`; `None` when not read (offboarding) or the user has none.
    pub personal_folder_id: Option<String>,
    /// Ids of the Looks directly in the personal folder (not read at offboarding).
    pub looks: Vec<String>,
    /// Ids of the dashboards directly in the personal folder (not read at offboarding).
    pub dashboards: Vec<String>,
    pub scheduled_plans: Vec<ScheduledPlanInfo>,
    pub alerts: Vec<AlertInfo>,
}

impl LookerContent {
    /// Nothing that a deletion would destroy.
    pub fn is_empty(&self) -> bool {
        self.looks.is_empty()
            && self.dashboards.is_empty()
            && self.scheduled_plans.is_empty()
            && self.alerts.is_empty()
    }
}

/// An address outside the allowed domains (same test as onboarding: the domain after the last
/// `@`, any case; a malformed address is outside).
fn outside(domains: &BTreeSet<String>, email: &str) -> bool {
    !email
        .trim()
        .rsplit_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && domains.contains(&domain.to_ascii_lowercase()))
}

/// At offboarding: disable every enabled scheduled plan and alert of the person that mails an
/// address outside `domains`. Disabled ones are left alone (the plan converges).
pub fn outside_delivery_steps(content: &LookerContent, domains: &BTreeSet<String>) -> Vec<Step> {
    let step = |op| Step {
        op,
        rule: RULE_OUTSIDE_DELIVERIES.to_string(),
    };
    let plans = content
        .scheduled_plans
        .iter()
        .filter(|p| p.enabled && p.emails.iter().any(|e| outside(domains, e)))
        .map(|p| {
            step(LookerOp::DisableScheduledPlan {
                plan_id: p.id.clone(),
            })
        });
    let alerts = content
        .alerts
        .iter()
        .filter(|a| !a.is_disabled && a.emails.iter().any(|e| outside(domains, e)))
        .map(|a| {
            step(LookerOp::DisableAlert {
                alert_id: a.id.clone(),
            })
        });
    plans.chain(alerts).collect()
}

/// Before a deletion: move the personal folder's Looks and dashboards to `folder_id`, reassign
/// every scheduled plan and alert to `owner_id`.
pub fn handover_steps(content: &LookerContent, folder_id: &str, owner_id: &str) -> Vec<Step> {
    let step = |op| Step {
        op,
        rule: RULE_HANDOVER.to_string(),
    };
    let looks = content.looks.iter().map(|id| {
        step(LookerOp::MoveLook {
            look_id: id.clone(),
            folder_id: folder_id.to_string(),
        })
    });
    let dashboards = content.dashboards.iter().map(|id| {
        step(LookerOp::MoveDashboard {
            dashboard_id: id.clone(),
            folder_id: folder_id.to_string(),
        })
    });
    let plans = content.scheduled_plans.iter().map(|p| {
        step(LookerOp::SetScheduledPlanOwner {
            plan_id: p.id.clone(),
            user_id: owner_id.to_string(),
        })
    });
    let alerts = content.alerts.iter().map(|a| {
        step(LookerOp::SetAlertOwner {
            alert_id: a.id.clone(),
            owner_id: owner_id.to_string(),
        })
    });
    looks.chain(dashboards).chain(plans).chain(alerts).collect()
}

/// What a due deletion does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Hand over (if anything) and then delete: `DeleteUser` is the plan's last step (the
    /// Looker target gives it `Order::Last`, after every hand-over step succeeded).
    Apply(Plan),
    /// Not deleted: the person owns content and no hand-over is configured.
    Withhold { reason: String },
}

/// Decide a due deletion of Looker user `user_id`. `content` is what was read (`None` when the
/// policy says `handover = "none"`, which reads nothing); `handover` is the policy's.
pub fn deletion(user_id: &str, handover: Option<&Handover>, content: Option<&LookerContent>) -> Deletion {
    let delete = Step {
        op: LookerOp::DeleteUser,
        rule: crate::rules::OFFBOARD_DELETE.to_string(),
    };
    let plan = |mut steps: Vec<Step>, notes: Vec<String>| {
        steps.push(delete.clone());
        Deletion::Apply(Plan {
            user: UserRef::Id(user_id.to_string()),
            steps,
            notes,
            resolution: Default::default(),
        })
    };
    let empty = LookerContent::default();
    let content = content.unwrap_or(&empty);
    match handover {
        Some(Handover::Nothing) => plan(
            Vec::new(),
            vec!["offboarding.handover = \"none\": Looker moves the user's content to Trash and deletes their schedules".into()],
        ),
        Some(Handover::To { folder_id, owner_id }) => plan(handover_steps(content, folder_id, owner_id), Vec::new()),
        None if content.is_empty() => plan(Vec::new(), vec!["the user owns no content: nothing to hand over".into()]),
        None => Deletion::Withhold {
            reason: format!(
                "no offboarding.handover is configured and the user owns {} looks, {} dashboards, \
                 {} scheduled plans and {} alerts that deleting would destroy; the user stays disabled",
                content.looks.len(),
                content.dashboards.len(),
                content.scheduled_plans.len(),
                content.alerts.len()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn content() -> LookerContent {
        LookerContent {
            personal_folder_id: Some("50".into()),
            looks: vec!["61".into(), "62".into()],
            dashboards: vec!["71".into()],
            scheduled_plans: vec![
                ScheduledPlanInfo {
                    id: "81".into(),
                    enabled: true,
                    emails: vec!["team@x.io".into()],
                },
                ScheduledPlanInfo {
                    id: "82".into(),
                    enabled: true,
                    emails: vec!["team@x.io".into(), "Me@Gmail.com".into()],
                },
            ],
            alerts: vec![AlertInfo {
                id: "91".into(),
                is_disabled: false,
                emails: vec!["me@gmail.com".into()],
            }],
        }
    }

    fn domains() -> BTreeSet<String> {
        ["x.io".to_string()].into()
    }

    #[test]
    fn outside_deliveries_are_disabled_and_inside_ones_kept() {
        let steps = outside_delivery_steps(&content(), &domains());
        let ops: Vec<_> = steps.iter().map(|s| s.op.clone()).collect();
        assert_eq!(
            ops,
            vec![
                LookerOp::DisableScheduledPlan { plan_id: "82".into() },
                LookerOp::DisableAlert {
                    alert_id: "91".into()
                },
            ]
        );
        assert!(steps.iter().all(|s| s.rule == RULE_OUTSIDE_DELIVERIES));
        // Converges: once disabled, nothing more to do.
        let mut after = content();
        after.scheduled_plans[1].enabled = false;
        after.alerts[0].is_disabled = true;
        assert!(outside_delivery_steps(&after, &domains()).is_empty());
    }

    #[test]
    fn a_lookalike_domain_is_outside() {
        let d = domains();
        assert!(outside(&d, "a@x.io.evil.com"));
        assert!(outside(&d, "a@evilx.io"));
        assert!(outside(&d, "@x.io"));
        assert!(outside(&d, "no-at-sign"));
        assert!(!outside(&d, "A@X.IO"));
    }

    #[test]
    fn deletion_hands_everything_over_before_the_delete() {
        let h = Handover::To {
            folder_id: "5".into(),
            owner_id: "6".into(),
        };
        let Deletion::Apply(plan) = deletion("42", Some(&h), Some(&content())) else {
            panic!("configured hand-over must delete");
        };
        let text = plan.render_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(
            lines[0].contains("PATCH /api/4.0/looks/61 {\"folder_id\":\"5\"}"),
            "{text}"
        );
        assert!(
            lines[1].contains("PATCH /api/4.0/looks/62 {\"folder_id\":\"5\"}"),
            "{text}"
        );
        assert!(
            lines[2].contains("PATCH /api/4.0/dashboards/71 {\"folder_id\":\"5\"}"),
            "{text}"
        );
        assert!(
            lines[3].contains("PATCH /api/4.0/scheduled_plans/81 {\"user_id\":\"6\"}"),
            "{text}"
        );
        assert!(
            lines[4].contains("PATCH /api/4.0/scheduled_plans/82 {\"user_id\":\"6\"}"),
            "{text}"
        );
        assert!(
            lines[5].contains("PATCH /api/4.0/alerts/91 {\"owner_id\":\"6\"}"),
            "{text}"
        );
        assert!(lines[6].contains("DELETE /api/4.0/users/42"), "{text}");
        assert!(
            lines[6].contains("# rule: offboarding.delete_after_days"),
            "{text}"
        );
    }

    #[test]
    fn without_a_handover_content_withholds_the_delete_and_nothing_owned_deletes() {
        match deletion("42", None, Some(&content())) {
            Deletion::Withhold { reason } => {
                assert!(
                    reason.contains("2 looks, 1 dashboards, 2 scheduled plans and 1 alerts"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        let Deletion::Apply(p) = deletion("42", None, Some(&LookerContent::default())) else {
            panic!("nothing to lose: delete");
        };
        assert_eq!(p.steps.len(), 1);
        let Deletion::Apply(p) = deletion("42", Some(&Handover::Nothing), None) else {
            panic!("explicit none: delete");
        };
        assert_eq!(
            p.steps.iter().map(|s| &s.op).collect::<Vec<_>>(),
            vec![&LookerOp::DeleteUser]
        );
    }

    #[test]
    fn the_policy_reads_and_validates_the_handover() {
        let p = Policy::from_toml("[offboarding]\nhandover = { folder_id = \"12\", owner_id = \"34\" }\n")
            .unwrap();
        assert_eq!(
            p.offboarding.handover,
            Some(Handover::To {
                folder_id: "12".into(),
                owner_id: "34".into()
            })
        );
        let p = Policy::from_toml("[offboarding]\nhandover = { folder_id = 12, owner_id = 34 }\n").unwrap();
        assert!(
            matches!(p.offboarding.handover, Some(Handover::To { ref folder_id, .. }) if folder_id == "12")
        );
        let p = Policy::from_toml("[offboarding]\nhandover = \"none\"\n").unwrap();
        assert_eq!(p.offboarding.handover, Some(Handover::Nothing));
        assert_eq!(Policy::from_toml("").unwrap().offboarding.handover, None);
        for (toml, field) in [
            (
                "handover = { owner_id = \"34\" }",
                "offboarding.handover.folder_id is missing",
            ),
            (
                "handover = { folder_id = \"12\" }",
                "offboarding.handover.owner_id is missing",
            ),
            (
                "handover = { folder_id = \"../1\", owner_id = \"34\" }",
                "offboarding.handover.folder_id must be a looker id",
            ),
            (
                "handover = { folder_id = \"1\", owner_id = \"34\", owner = \"x\" }",
                "offboarding.handover.owner is not a known field",
            ),
            ("handover = \"keep\"", "offboarding.handover must be \"none\""),
        ] {
            let e = Policy::from_toml(&format!("[offboarding]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{toml}: {e}");
        }
    }
}
