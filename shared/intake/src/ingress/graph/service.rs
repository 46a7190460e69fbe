//! The background half of the Graph intake: act on stored notifications (read the changed user
//! or group from Graph, publish envelopes, finish the inbox row) and keep the subscriptions alive.

use super::client::{GraphClient, GraphClientConfig, GraphError};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::envelope::Source;
use gatehouse_domain::graph::{
    GraphUser, LifecycleEvent, Notification, Target, member_envelope, reconcile_envelope, user_envelope,
};
use gatehouse_domain::ports::{BackendError, QueueProducer};
use gatehouse_platform::config::GraphConfig;
use gatehouse_platform::events::{self, GraphOutcome};
use gatehouse_platform::retry::RetryPolicy;
use gatehouse_store::graph_state::{GroupMembers, InboxItem, StoredSubscription};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_store::state::AnyState;
use secrecy::SecretString;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Notifications taken from the inbox per pass.
const BATCH: usize = 50;
/// Envelopes published per queue transaction during a full reconcile.
const PUBLISH_CHUNK: usize = 500;
/// Longest wait between attempts at one notification.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum GraphServiceError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("graph intake is not configured for this: {0}")]
    NotConfigured(&'static str),
}

/// What one [`GraphService::renew_due`] pass did (subscription ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewReport {
    pub created: Vec<String>,
    pub renewed: Vec<String>,
}

/// Acts on the Graph inbox and manages subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct GraphService<Q> {
    client: Arc<GraphClient>,
    store: Sqlite,
    /// Where the deltaLinks live: the configured state store (`[state]`), so every replica
    /// resumes from the same ones; the local SQLite file unless [`GraphService::with_catchup_store`].
    catchup: AnyState,
    queue: Q,
    cfg: Arc<GraphConfig>,
}

impl<Q> std::fmt::Debug for GraphService<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphService")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Done(Option<(String, String, Vec<String>)>),
}

impl<Q: QueueProducer> GraphService<Q> {
    /// `None` when `[graph]` has no credentials (nothing could be read from Graph).
    pub fn new(store: Sqlite, queue: Q, cfg: &GraphConfig) -> Result<Option<Self>, GraphError> {
        let Ok(Some(creds)) = cfg.credentials() else {
            return Ok(None);
        };
        let client = GraphClient::new(GraphClientConfig {
            graph_url: cfg.graph_url.clone(),
            authority_url: cfg.authority_url.clone(),
            tenant_id: creds.tenant_id,
            client_id: creds.client_id,
            client_secret: creds.client_secret,
            timeout: cfg.timeout,
        })?;
        Ok(Some(GraphService {
            client: Arc::new(client),
            catchup: AnyState::Sqlite(store.clone()),
            store,
            queue,
            cfg: Arc::new(cfg.clone()),
        }))
    }

    /// Act on every notification due at `now` (one batch). Returns how many were looked at.
    pub async fn process_inbox(&self, now: DateTime<Utc>) -> Result<usize, BackendError> {
        let items = self.store.graph_inbox_due(now, BATCH).await?;
        for item in &items {
            self.process_item(item).await?;
        }
        Ok(items.len())
    }

    async fn process_item(&self, item: &InboxItem) -> Result<(), BackendError> {
        let parsed = serde_json::from_str(&item.body)
            .map_err(|e| e.to_string())
            .and_then(Notification::from_value);
        let n = match parsed {
            Ok(n) => n,
            Err(reason) => {
                tracing::error!(key = %item.key, %reason, "stored graph notification is unreadable");
                return self.store.graph_inbox_fail(item.seq, &reason).await;
            }
        };
        match self.act(&n).await {
            Ok(Outcome::Done(members)) => {
                let members = members.as_ref().map(|(id, name, ids)| GroupMembers {
                    group_id: id,
                    group_name: name,
                    member_ids: ids,
                });
                self.store.graph_inbox_done(item.seq, members).await?;
                events::graph_notification(GraphOutcome::Done);
                Ok(())
            }
            Err(GraphServiceError::Backend(e)) => {
                tracing::warn!(key = %item.key, error = %e, "graph notification not finished; will retry");
                let next = gatehouse_domain::clock::now() + backoff(item.attempts, None);
                self.store.graph_inbox_retry(item.seq, next, &e.to_string()).await
            }
            Err(e) => {
                let retryable = match &e {
                    GraphServiceError::Graph(g) => g.is_retryable(),
                    _ => false,
                };
                let reason = e.to_string();
                if retryable && item.attempts + 1 < self.cfg.max_attempts {
                    let retry_after = match &e {
                        GraphServiceError::Graph(g) => g.retry_after(),
                        _ => None,
                    };
                    let delay = backoff(item.attempts, retry_after);
                    tracing::warn!(key = %item.key, error = %reason, delay_ms = delay.as_millis() as u64,
                        "graph read failed; notification will be retried");
                    self.store
                        .graph_inbox_retry(item.seq, gatehouse_domain::clock::now() + delay, &reason)
                        .await
                } else {
                    tracing::error!(key = %item.key, error = %reason, attempts = item.attempts + 1,
                        "graph notification given up");
                    events::graph_notification(GraphOutcome::Failed);
                    self.store.graph_inbox_fail(item.seq, &reason).await
                }
            }
        }
    }

    async fn act(&self, n: &Notification) -> Result<Outcome, GraphServiceError> {
        if let Some(event) = &n.lifecycle_event {
            self.lifecycle(n, event).await?;
            return Ok(Outcome::Done(None));
        }
        match &n.target {
            Some(Target::User(id)) => {
                // Always read: a `deleted` is believed only when Graph no longer has the user
                // (a forged or replayed one would otherwise offboard a person who is there).
                let user = self.client.get_user(id).await?;
                if n.change_type.as_deref() == Some("deleted") && user.is_some() {
                    tracing::warn!(user_id = %id, subscription_id = %n.subscription_id,
                        "graph notification says deleted but graph still has the user; acting on what graph reads");
                }
                let env = user_envelope(n, id, user.as_ref(), gatehouse_domain::clock::now());
                self.publish(&[env]).await?;
                Ok(Outcome::Done(None))
            }
            Some(Target::Group(id)) => self.group(n, id).await,
            _ => Ok(Outcome::Done(None)),
        }
    }

    async fn publish(&self, envs: &[Envelope]) -> Result<(), GraphServiceError> {
        for chunk in envs.chunks(PUBLISH_CHUNK) {
            self.queue.publish(chunk).await?;
            for env in chunk {
                events::event_received(Source::Graph, &env.event, env.event.is_actionable());
                tracing::debug!(envelope_id = %env.id, subject = %env.subject.key,
                    event = env.event.kind(), "graph event enqueued");
            }
        }
        Ok(())
    }

    /// A group changed: membership changes from `members@delta` when the notification has it,
    /// else from the member listing compared with the one stored last time.
    async fn group(&self, n: &Notification, id: &str) -> Result<Outcome, GraphServiceError> {
        let (before, stored_name) = self.store.graph_group_members(id).await?;
        let before: BTreeSet<String> = before.into_iter().collect();
        // Always read: a `deleted` is believed only when Graph no longer has the group.
        let group = self.client.get_group(id).await?;
        if n.change_type.as_deref() == Some("deleted") && group.is_some() {
            tracing::warn!(group_id = %id, subscription_id = %n.subscription_id,
                "graph notification says deleted but graph still has the group; acting on what graph reads");
        }
        let now = gatehouse_domain::clock::now();
        let Some(group) = group else {
            // Gone: everyone we knew as a member is no longer one.
            let name = stored_name.unwrap_or_else(|| id.to_string());
            let gref = gatehouse_domain::envelope::GroupRef {
                id: id.to_string(),
                name: name.clone(),
            };
            let envs: Vec<Envelope> = before
                .iter()
                .map(|m| member_envelope(n, &gref, m, None, false, now))
                .collect();
            self.publish(&envs).await?;
            return Ok(Outcome::Done(Some((id.to_string(), name, Vec::new()))));
        };
        let gref = group.group_ref();
        let mut envs = Vec::new();
        let after: BTreeSet<String>;
        if !n.members_delta.is_empty() {
            // Each entry is confirmed by the member listing before it is acted on: an added
            // member must be in it, a removed one must not.
            let listed = self.client.group_members(id).await?.unwrap_or_default();
            let mut set = before.clone();
            for d in &n.members_delta {
                let current = listed.iter().find(|m| m.id == d.id);
                if current.is_some() == d.removed {
                    tracing::warn!(group_id = %id, member_id = %d.id, removed = d.removed,
                        "members@delta entry not confirmed by graph; ignored");
                    continue;
                }
                let member = match current {
                    Some(m) => Some(m.clone()),
                    None => self.client.get_user(&d.id).await?,
                };
                envs.push(member_envelope(n, &gref, &d.id, member.as_ref(), !d.removed, now));
                if d.removed {
                    set.remove(&d.id);
                } else {
                    set.insert(d.id.clone());
                }
            }
            after = set;
        } else {
            let members = self.client.group_members(id).await?.unwrap_or_default();
            let renamed = stored_name.as_deref().is_some_and(|s| s != gref.name);
            for m in &members {
                if renamed || !before.contains(&m.id) {
                    envs.push(member_envelope(n, &gref, &m.id, Some(m), true, now));
                }
            }
            after = members.iter().map(|m| m.id.clone()).collect();
            for gone in before.difference(&after) {
                let member = self.client.get_user(gone).await?;
                envs.push(member_envelope(n, &gref, gone, member.as_ref(), false, now));
            }
        }
        self.publish(&envs).await?;
        Ok(Outcome::Done(Some((
            id.to_string(),
            gref.name,
            after.into_iter().collect(),
        ))))
    }

    async fn lifecycle(&self, n: &Notification, event: &LifecycleEvent) -> Result<(), GraphServiceError> {
        tracing::info!(subscription_id = %n.subscription_id, lifecycle_event = event.as_str(),
            "graph lifecycle notification");
        match event {
            LifecycleEvent::ReauthorizationRequired => {
                self.renew_one(&n.subscription_id, gatehouse_domain::clock::now())
                    .await?;
            }
            LifecycleEvent::SubscriptionRemoved => {
                if let Some(sub) = self.store.graph_subscription_by_id(&n.subscription_id).await? {
                    self.create(&sub.resource, gatehouse_domain::clock::now()).await?;
                } else {
                    tracing::warn!(subscription_id = %n.subscription_id,
                        "subscriptionRemoved for a subscription gatehouse does not manage");
                }
            }
            LifecycleEvent::Missed => {
                // Delta queries from the stored deltaLinks; a full listing only without one.
                let delta = self.delta_catch_up(gatehouse_domain::clock::now(), true).await?;
                if !delta.baselined.is_empty() {
                    let n_users = self.reconcile(&n.key()).await?;
                    tracing::info!(
                        users = n_users,
                        "full reconcile after missed notifications (no deltaLink)"
                    );
                } else {
                    tracing::info!(resumed = ?delta.resumed, "delta catch-up after missed notifications");
                }
            }
            LifecycleEvent::Other(_) => {}
        }
        Ok(())
    }

    /// Read every user of the tenant and publish one envelope per user. `run` names this
    /// reconcile; the same `run` yields the same envelope ids. Returns the number of users.
    pub async fn reconcile(&self, run: &str) -> Result<usize, GraphServiceError> {
        let users: Vec<GraphUser> = self.client.list_users().await?;
        let now = gatehouse_domain::clock::now();
        let envs: Vec<Envelope> = users.iter().map(|u| reconcile_envelope(run, u, now)).collect();
        self.publish(&envs).await?;
        Ok(users.len())
    }

    fn client_state(&self) -> Result<(&str, &SecretString), GraphServiceError> {
        match (&self.cfg.notification_url, &self.cfg.client_state) {
            (Some(u), Some(c)) => Ok((u, c)),
            _ => Err(GraphServiceError::NotConfigured(
                "managed subscriptions need graph.notification_url and graph.client_state",
            )),
        }
    }

    async fn create(&self, resource: &str, now: DateTime<Utc>) -> Result<String, GraphServiceError> {
        let (url, cs) = self.client_state()?;
        let expires = now + self.cfg.subscription_lifetime;
        let sub = self
            .client
            .create_subscription(
                &format!("/{}", resource.trim_start_matches('/')),
                &self.cfg.change_types,
                url,
                cs,
                expires,
            )
            .await?;
        self.store
            .graph_subscription_put(&StoredSubscription {
                resource: resource.to_string(),
                subscription_id: sub.id.clone(),
                expires_at: sub.expiration_date_time,
            })
            .await?;
        tracing::info!(resource, subscription_id = %sub.id, expires_at = %sub.expiration_date_time,
            "graph subscription created");
        self.ensure_delta_baseline(resource, now).await;
        Ok(sub.id)
    }

    /// Renew one stored subscription; a subscription Graph no longer has is created again.
    /// Returns the id now in force.
    async fn renew_one(
        &self,
        subscription_id: &str,
        now: DateTime<Utc>,
    ) -> Result<String, GraphServiceError> {
        let stored = self.store.graph_subscription_by_id(subscription_id).await?;
        let expires = now + self.cfg.subscription_lifetime;
        match self.client.renew_subscription(subscription_id, expires).await? {
            Some(sub) => {
                let resource = stored
                    .map(|s| s.resource)
                    .unwrap_or_else(|| sub.resource.trim_start_matches('/').to_string());
                self.store
                    .graph_subscription_put(&StoredSubscription {
                        resource,
                        subscription_id: sub.id.clone(),
                        expires_at: sub.expiration_date_time,
                    })
                    .await?;
                tracing::info!(subscription_id = %sub.id, expires_at = %sub.expiration_date_time,
                    "graph subscription renewed");
                Ok(sub.id)
            }
            None => match stored {
                Some(s) => self.create(&s.resource, now).await,
                None => Err(GraphServiceError::NotConfigured(
                    "renewal of an unknown subscription",
                )),
            },
        }
    }

    /// Make sure every configured resource has a subscription, and renew those that expire within
    /// `renew_before` of `now` (also those already expired: Graph answers 404 and they are created
    /// again). The periodic task calls this; tests call it with a `now` of their choosing.
    pub async fn renew_due(&self, now: DateTime<Utc>) -> Result<RenewReport, GraphServiceError> {
        self.client_state()?;
        let stored = self.store.graph_subscriptions().await?;
        let mut report = RenewReport::default();
        for resource in &self.cfg.resources {
            let resource = resource.trim_start_matches('/');
            match stored.iter().find(|s| s.resource == resource) {
                None => report.created.push(self.create(resource, now).await?),
                Some(s)
                    if s.expires_at - now
                        <= chrono::Duration::from_std(self.cfg.renew_before).unwrap_or_default() =>
                {
                    let id = self.renew_one(&s.subscription_id, now).await?;
                    if id == s.subscription_id {
                        report.renewed.push(id);
                    } else {
                        report.created.push(id);
                    }
                }
                Some(_) => {}
            }
        }
        Ok(report)
    }

    pub(crate) fn config(&self) -> &GraphConfig {
        &self.cfg
    }

    pub(crate) fn store(&self) -> &Sqlite {
        &self.store
    }

    /// Keep the delta catch-up's deltaLinks in `state` (the configured state store).
    pub fn with_catchup_store(mut self, state: AnyState) -> Self {
        self.catchup = state;
        self
    }

    pub(crate) fn catchup_store(&self) -> &AnyState {
        &self.catchup
    }

    pub(crate) fn client(&self) -> &GraphClient {
        &self.client
    }
}

/// Exponential from 1 s, capped: the one retry policy's schedule; Graph's `Retry-After`, when
/// given, is waited for (up to 4 × the cap).
fn backoff(attempts: u32, retry_after: Option<Duration>) -> Duration {
    const INBOX: RetryPolicy = RetryPolicy {
        retries: 0,
        min_delay: Duration::from_secs(1),
        max_delay: MAX_BACKOFF,
    };
    INBOX.delay(attempts, retry_after)
}

/// Whether a notification is one Gatehouse stores and acts on.
pub fn is_stored(n: &Notification) -> bool {
    n.is_actionable() && !matches!(n.target, Some(Target::Other(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        assert_eq!(backoff(0, None), Duration::from_secs(1));
        assert_eq!(backoff(3, None), Duration::from_secs(8));
        assert_eq!(backoff(30, None), MAX_BACKOFF);
        assert_eq!(backoff(0, Some(Duration::from_secs(7))), Duration::from_secs(7));
    }
}
