//! The Looker client's content reads (issue 19: deleting without destroying): what a person owns,
//! read only when a plan needs it (offboarding: 2 calls; before a deletion: 5 calls; each further
//! page of 500 alerts one more). Every id read is checked before it can become a path segment.

use crate::client::looker::{LookerClient, bad_body, check_segment, permanent};
use gatehouse_domain::handover::{AlertInfo, ContentNeeds, LookerContent, ScheduledPlanInfo};
use gatehouse_domain::looker::LookerError;
use serde::Deserialize;

/// `GET /alerts/search` page size (`limit`); a shorter page is the last.
pub const ALERT_PAGE: usize = 500;
/// The `fields` of `GET /scheduled_plans`.
pub const PLAN_FIELDS: &str = "id,user_id,enabled,scheduled_plan_destination(type,address)";
/// The `fields` of `GET /alerts/search`.
pub const ALERT_FIELDS: &str = "id,owner_id,is_disabled,destinations(destination_type,email_address)";

#[derive(Deserialize)]
struct Id {
    id: String,
}

#[derive(Deserialize)]
struct UserFolder {
    #[serde(default)]
    personal_folder_id: Option<String>,
}

#[derive(Deserialize)]
struct PlanDestination {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    address: Option<String>,
}

#[derive(Deserialize)]
struct Plan {
    id: String,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    scheduled_plan_destination: Option<Vec<PlanDestination>>,
}

#[derive(Deserialize)]
struct AlertDestination {
    #[serde(default)]
    destination_type: Option<String>,
    #[serde(default)]
    email_address: Option<String>,
}

#[derive(Deserialize)]
struct Alert {
    id: String,
    #[serde(default)]
    owner_id: Option<String>,
    #[serde(default)]
    is_disabled: Option<bool>,
    #[serde(default)]
    destinations: Option<Vec<AlertDestination>>,
}

fn checked(endpoint: &str, id: String) -> Result<String, LookerError> {
    check_segment(&id).map_err(|m| bad_body(endpoint, m))?;
    Ok(id)
}

impl LookerClient {
    /// Ids of the Looks or dashboards directly in a folder.
    async fn folder_items(&self, folder_id: &str, kind: &str) -> Result<Vec<String>, LookerError> {
        let path = format!("/folders/{folder_id}/{kind}");
        let items: Vec<Id> = self.get_json(&path, &[("fields", "id")]).await?;
        let endpoint = format!("/folders/{{id}}/{kind}");
        items.into_iter().map(|i| checked(&endpoint, i.id)).collect()
    }

    async fn scheduled_plans(&self, user_id: &str) -> Result<Vec<ScheduledPlanInfo>, LookerError> {
        let plans: Vec<Plan> = self
            .get_json(
                "/scheduled_plans",
                &[("user_id", user_id), ("fields", PLAN_FIELDS)],
            )
            .await?;
        plans
            .into_iter()
            // The filter is Looker's; a plan of someone else is never handed over or disabled.
            .filter(|p| p.user_id.as_deref().is_none_or(|u| u == user_id))
            .map(|p| {
                Ok(ScheduledPlanInfo {
                    id: checked("/scheduled_plans", p.id)?,
                    enabled: p.enabled.unwrap_or(true),
                    emails: p
                        .scheduled_plan_destination
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|d| d.kind.as_deref().is_some_and(|k| k.eq_ignore_ascii_case("email")))
                        .filter_map(|d| d.address)
                        .collect(),
                })
            })
            .collect()
    }

    /// `GET /alerts/search` has no owner filter in the 4.0 spec: every owner's alerts
    /// (`all_owners=true`), paged, kept when `owner_id` is the person's.
    async fn alerts(&self, user_id: &str) -> Result<Vec<AlertInfo>, LookerError> {
        let mut out = Vec::new();
        let limit = ALERT_PAGE.to_string();
        for page in 0usize.. {
            let offset = (page * ALERT_PAGE).to_string();
            let alerts: Vec<Alert> = self
                .get_json(
                    "/alerts/search",
                    &[
                        ("all_owners", "true"),
                        ("fields", ALERT_FIELDS),
                        ("limit", &limit),
                        ("offset", &offset),
                    ],
                )
                .await?;
            let last = alerts.len() < ALERT_PAGE;
            for a in alerts
                .into_iter()
                .filter(|a| a.owner_id.as_deref() == Some(user_id))
            {
                out.push(AlertInfo {
                    id: checked("/alerts/search", a.id)?,
                    is_disabled: a.is_disabled.unwrap_or(false),
                    emails: a
                        .destinations
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|d| {
                            d.destination_type
                                .as_deref()
                                .is_some_and(|t| t.eq_ignore_ascii_case("email"))
                        })
                        .filter_map(|d| d.email_address)
                        .collect(),
                });
            }
            if last {
                break;
            }
        }
        Ok(out)
    }

    /// See [`gatehouse_domain::ports::LookerPort::content`].
    pub(crate) async fn read_content(
        &self,
        user_id: &str,
        needs: ContentNeeds,
    ) -> Result<LookerContent, LookerError> {
        check_segment(user_id).map_err(permanent)?;
        let folder = async {
            if needs != ContentNeeds::Everything {
                return Ok((None, Vec::new(), Vec::new()));
            }
            let path = format!("/users/{user_id}");
            let u: UserFolder = self.get_json(&path, &[("fields", "personal_folder_id")]).await?;
            let Some(fid) = u.personal_folder_id else {
                return Ok((None, Vec::new(), Vec::new()));
            };
            let fid = checked("/users/{id}", fid)?;
            let (looks, dashboards) = tokio::try_join!(
                self.folder_items(&fid, "looks"),
                self.folder_items(&fid, "dashboards")
            )?;
            Ok::<_, LookerError>((Some(fid), looks, dashboards))
        };
        let ((personal_folder_id, looks, dashboards), scheduled_plans, alerts) =
            tokio::try_join!(folder, self.scheduled_plans(user_id), self.alerts(user_id))?;
        Ok(LookerContent {
            personal_folder_id,
            looks,
            dashboards,
            scheduled_plans,
            alerts,
        })
    }
}
