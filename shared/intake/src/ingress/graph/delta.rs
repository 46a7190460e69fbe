//! Graph delta catch-up (issue 18): after downtime or a `missed` lifecycle notification, ask
//! `GET /users/delta` and `GET /groups/delta` from the stored `@odata.deltaLink` (following
//! `@odata.nextLink`) instead of listing the tenant.
//!
//! Each changed user or group becomes an inbox row, exactly like a change notification of it,
//! and the inbox worker acts on it the usual way (reads the object from Graph, compares a group's
//! members with the stored listing, publishes, retries with backoff). A row's key is derived
//! from the deltaLink the round started from and the item as Graph returned it, so a round
//! replayed after a crash (its rows written, its new deltaLink not yet) adds nothing twice. The
//! new deltaLink is stored only after the round's rows are.
//!
//! Without a stored deltaLink there is nothing to resume: the first round asks
//! `$deltatoken=latest` (a deltaLink for "now", no listing), and a `missed` falls back to the full
//! listing. A deltaLink Graph no longer honours (400 `syncStateNotFound` once past its 7-day
//! lifetime for directory objects, or 410 Gone) is dropped the same way.

use super::client::{GraphClient, GraphError};
use super::service::{GraphService, GraphServiceError};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Source;
use gatehouse_domain::ports::QueueProducer;
use gatehouse_platform::events;
use gatehouse_store::catchup_state::{CatchupStore, Cursor};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Pages followed at most in one round (a loop guard).
const MAX_PAGES: usize = 100_000;
/// The resources delta catch-up covers (when subscribed to).
pub const DELTA_RESOURCES: [&str; 2] = ["users", "groups"];

/// One delta page.
#[derive(Debug, Default)]
pub struct DeltaPage {
    pub items: Vec<Value>,
    pub next_link: Option<String>,
    pub delta_link: Option<String>,
}

/// What one round did, per resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaReport {
    /// Resources resumed from a stored deltaLink, with the number of changed objects.
    pub resumed: Vec<(String, usize)>,
    /// Resources without a usable deltaLink (none stored, or Graph answered 410): a baseline
    /// was taken, and whatever changed before it is only found by a full listing.
    pub baselined: Vec<String>,
}

impl GraphClient {
    /// One page of a delta round: `url` is a nextLink/deltaLink, or (`first`) the resource's
    /// `/delta` with `$select` and, for a baseline, `$deltatoken=latest`.
    pub async fn delta_page(&self, url: &str, baseline: bool) -> Result<DeltaPage, GraphError> {
        let op = "delta";
        if !url.starts_with(&format!("{}/", self.graph_url())) {
            return Err(GraphError::Permanent {
                op,
                status: 0,
                detail: "delta link points outside the configured graph_url".into(),
            });
        }
        let query: &[(&str, &str)] = if baseline {
            &[("$select", "id"), ("$deltatoken", "latest")]
        } else {
            &[]
        };
        let v = self
            .call(op, Method::GET, url, query, None)
            .await?
            .unwrap_or(Value::Null);
        let items = match v.get("value") {
            Some(Value::Array(a)) => a.clone(),
            _ => {
                return Err(GraphError::Permanent {
                    op,
                    status: 200,
                    detail: "delta answer has no value array".into(),
                });
            }
        };
        let link = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(DeltaPage {
            items,
            next_link: link("@odata.nextLink"),
            delta_link: link("@odata.deltaLink"),
        })
    }
}

/// Graph's answer to a deltaLink past its lifetime (7 days for directory objects): 400
/// `syncStateNotFound`, or 410 Gone when the service asks for a full resync.
fn is_expired_link(e: &GraphError) -> bool {
    match e {
        GraphError::Permanent { status: 410, .. } => true,
        GraphError::Permanent {
            status: 400, detail, ..
        } => detail.to_ascii_lowercase().starts_with("syncstatenotfound"),
        _ => false,
    }
}

fn cursor_key(resource: &str) -> String {
    format!("graph:{resource}")
}

/// The inbox row (key, notification JSON) for one changed object of a round started at `from`.
fn row_for(resource: &str, from: &str, item: &Value) -> Option<(String, String)> {
    let id = item.get("id").and_then(Value::as_str)?;
    if !gatehouse_domain::graph::is_safe_id(id) {
        return None;
    }
    let mut h = Sha256::new();
    h.update(from.as_bytes());
    h.update([0u8]);
    h.update(item.to_string().as_bytes());
    let digest: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
    let removed = item.get("@removed").is_some();
    let n = json!({
        "id": format!("delta:{digest}"),
        "subscriptionId": format!("delta:{resource}"),
        "changeType": if removed { "deleted" } else { "updated" },
        "resource": format!("{resource}/{id}"),
    });
    let parsed = gatehouse_domain::graph::Notification::from_value(n.clone()).ok()?;
    Some((parsed.key(), n.to_string()))
}

impl<Q: QueueProducer> GraphService<Q> {
    /// One delta round over every subscribed resource among `users` and `groups`. A resource
    /// without a stored deltaLink gets a baseline only with `take_baselines` (a `missed`); on
    /// start it is left alone (its baseline is taken when its subscription is created).
    pub async fn delta_catch_up(
        &self,
        now: DateTime<Utc>,
        take_baselines: bool,
    ) -> Result<DeltaReport, GraphServiceError> {
        let mut report = DeltaReport::default();
        let resources: Vec<&str> = DELTA_RESOURCES
            .into_iter()
            .filter(|r| {
                self.config()
                    .resources
                    .iter()
                    .any(|c| c.trim_start_matches('/').eq_ignore_ascii_case(r))
            })
            .collect();
        for resource in resources {
            let key = cursor_key(resource);
            let stored = self.catchup_store().catchup_get(&key).await?;
            if stored.is_none() && !take_baselines {
                continue;
            }
            let resumed = match &stored {
                Some(c) => match self.resume(resource, c, now).await {
                    Ok(n) => Some(n),
                    Err(GraphServiceError::Graph(e)) if is_expired_link(&e) => {
                        tracing::warn!(resource, error = %e, "graph deltaLink no longer honoured; taking a new baseline");
                        None
                    }
                    Err(e) => return Err(e),
                },
                None => None,
            };
            match resumed {
                Some(n) => report.resumed.push((resource.to_string(), n)),
                None => {
                    self.baseline(resource, now).await?;
                    report.baselined.push(resource.to_string());
                }
            }
        }
        Ok(report)
    }

    /// Follow the stored deltaLink to the next one; every changed object goes to the inbox.
    async fn resume(
        &self,
        resource: &str,
        c: &Cursor,
        now: DateTime<Utc>,
    ) -> Result<usize, GraphServiceError> {
        let lag = (now - c.covered_until).to_std().unwrap_or_default();
        events::catchup_lag(Source::Graph, lag.as_secs_f64());
        let mut url = c.position.clone();
        let mut changed = 0;
        for _ in 0..MAX_PAGES {
            let page = self.client().delta_page(&url, false).await?;
            let rows: Vec<(String, String)> = page
                .items
                .iter()
                .filter_map(|item| row_for(resource, &c.position, item))
                .collect();
            changed += rows.len();
            if !rows.is_empty() {
                self.store().graph_inbox_put(&rows, now).await?;
            }
            match (page.next_link, page.delta_link) {
                (Some(next), _) => url = next,
                (None, Some(delta)) => {
                    self.catchup_store()
                        .catchup_put(
                            &cursor_key(resource),
                            &Cursor {
                                position: delta,
                                covered_until: now,
                            },
                        )
                        .await?;
                    events::catchup_events(Source::Graph, changed as u64);
                    tracing::info!(resource, changed, lag_s = lag.as_secs(), "graph delta round done");
                    return Ok(changed);
                }
                (None, None) => {
                    return Err(GraphError::Permanent {
                        op: "delta",
                        status: 200,
                        detail: "delta page has neither nextLink nor deltaLink".into(),
                    }
                    .into());
                }
            }
        }
        Err(GraphError::Permanent {
            op: "delta",
            status: 200,
            detail: format!("more than {MAX_PAGES} pages"),
        }
        .into())
    }

    /// Take a baseline for `resource` unless a deltaLink is stored (called when its
    /// subscription is created: from then on, what Graph fails to deliver is in the delta).
    pub(crate) async fn ensure_delta_baseline(&self, resource: &str, now: DateTime<Utc>) {
        let resource = resource.trim_start_matches('/').to_ascii_lowercase();
        let Some(r) = DELTA_RESOURCES.into_iter().find(|r| *r == resource) else {
            return;
        };
        let result = match self.catchup_store().catchup_get(&cursor_key(r)).await {
            Ok(Some(_)) => return,
            Ok(None) => self.baseline(r, now).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = result {
            tracing::warn!(resource = r, error = %e, "graph delta baseline failed; a missed will list the tenant");
        }
    }

    /// A deltaLink for "now" without listing (`$deltatoken=latest`).
    async fn baseline(&self, resource: &str, now: DateTime<Utc>) -> Result<(), GraphServiceError> {
        let mut url = format!("{}/{resource}/delta", self.client().graph_url());
        let mut first = true;
        for _ in 0..MAX_PAGES {
            let page = self.client().delta_page(&url, first).await?;
            first = false;
            match (page.next_link, page.delta_link) {
                (Some(next), _) => url = next,
                (None, Some(delta)) => {
                    self.catchup_store()
                        .catchup_put(
                            &cursor_key(resource),
                            &Cursor {
                                position: delta,
                                covered_until: now,
                            },
                        )
                        .await?;
                    events::catchup_lag(Source::Graph, 0.0);
                    tracing::info!(resource, "graph delta baseline taken");
                    return Ok(());
                }
                (None, None) => {
                    return Err(GraphError::Permanent {
                        op: "delta",
                        status: 200,
                        detail: "delta page has neither nextLink nor deltaLink".into(),
                    }
                    .into());
                }
            }
        }
        Err(GraphError::Permanent {
            op: "delta",
            status: 200,
            detail: format!("more than {MAX_PAGES} pages"),
        }
        .into())
    }
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
