//! Google Workspace channel upkeep and catch-up (issue 18).
//!
//! - **Channels**: Gatehouse creates the Reports API `activities.watch` channel on the admin
//!   application and, before it expires (at most 6 hours), creates the next one first, keeps
//!   accepting the old one for `channel_overlap` (Google retries what it already sent on it), then
//!   stops it with `channels/stop`. A channel's token is `HMAC-SHA256(channel_secret, channel id)`,
//!   so no token is stored; `/hooks/google` accepts it only while the channel is in the state store,
//!   not stopped and not expired.
//! - **Catch-up**: on start and every `catchup_interval`, `activities.list` from the resume point
//!   (the newest event time seen, at most `catchup_overlap` before the end of the last pass) to now,
//!   every page. Each activity becomes the same envelopes a push notification of it would
//!   (`google:<time>:<uniqueQualifier>:<i>`), so an event seen both ways is applied once.
//!   `gatehouse_intake_catchup_lag_seconds{source="google_workspace"}` is how far behind a pass
//!   started: the time since the previous pass's end.

use super::google_reports::{ReportsClient, ReportsError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::envelope::Source;
use gatehouse_domain::google;
use gatehouse_domain::ports::{BackendError, QueueProducer, StateStore};
use gatehouse_platform::config::GoogleConfig;
use gatehouse_platform::events::{self, ChannelAction};
use gatehouse_platform::shutdown::Shutdown;
use gatehouse_store::catchup_state::{CatchupStore, Cursor, GoogleChannel};
use gatehouse_store::state::AnyState;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The cursor's key in `intake_catchup`, and the metrics' `source` label.
pub const SOURCE: &str = "google_workspace";
/// Envelopes published per queue transaction.
const PUBLISH_CHUNK: usize = 500;

/// Where "now" comes from (injected so tests move time).
pub type Clock = gatehouse_domain::clock::SharedClock;

#[derive(Debug, thiserror::Error)]
pub enum UpkeepError {
    #[error(transparent)]
    Reports(#[from] ReportsError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("google upkeep is not configured for this: {0}")]
    NotConfigured(&'static str),
    #[error("stored google cursor is unreadable: {0}")]
    BadCursor(String),
}

/// The token of channel `channel_id`: `HMAC-SHA256(secret, "gatehouse-google-channel:" + id)`,
/// base64url. 43 characters, within Google's 256.
pub fn channel_token(secret: &SecretString, channel_id: &str) -> SecretString {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("hmac accepts any key length");
    mac.update(b"gatehouse-google-channel:");
    mac.update(channel_id.as_bytes());
    SecretString::from(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Whether `given` is the token of `channel_id` (constant time) and the channel is live in the
/// store at `now` (made by Gatehouse, not stopped, not expired).
pub async fn channel_accepts<S: CatchupStore>(
    secret: &SecretString,
    store: &S,
    channel_id: &str,
    given: &[u8],
    now: DateTime<Utc>,
) -> Result<bool, BackendError> {
    if channel_id.is_empty() || given.is_empty() {
        return Ok(false);
    }
    let want = channel_token(secret, channel_id);
    if !bool::from(given.ct_eq(want.expose_secret().as_bytes())) {
        return Ok(false);
    }
    store.google_channel_accepts(channel_id, now).await
}

/// What one [`GoogleUpkeep::keep_channels`] pass did (channel ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelReport {
    pub created: Vec<String>,
    pub stopped: Vec<String>,
}

/// What one [`GoogleUpkeep::catch_up`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchupReport {
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub activities: usize,
    pub envelopes: usize,
    pub skipped: usize,
    /// Time since the previous pass's end (0 on the first pass).
    pub lag: Duration,
}

/// Channel upkeep and catch-up for one Workspace. Cheap to clone.
#[derive(Clone)]
pub struct GoogleUpkeep<Q, S> {
    client: Arc<ReportsClient>,
    store: S,
    queue: Q,
    cfg: Arc<GoogleConfig>,
    now: Clock,
}

impl<Q, S> std::fmt::Debug for GoogleUpkeep<Q, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleUpkeep")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl<Q: QueueProducer, S: CatchupStore + StateStore> GoogleUpkeep<Q, S> {
    pub fn new(client: ReportsClient, store: S, queue: Q, cfg: &GoogleConfig, now: Clock) -> Self {
        GoogleUpkeep {
            client: Arc::new(client),
            store,
            queue,
            cfg: Arc::new(cfg.clone()),
            now,
        }
    }

    pub fn config(&self) -> &GoogleConfig {
        &self.cfg
    }

    /// Make sure a channel is live beyond `renew_before`: create the next one first, then stop
    /// the ones it replaces once `channel_overlap` has passed (or they expired).
    pub async fn keep_channels(&self) -> Result<ChannelReport, UpkeepError> {
        let (Some(address), Some(secret)) = (&self.cfg.notification_url, &self.cfg.channel_secret) else {
            return Err(UpkeepError::NotConfigured(
                "channels need google.notification_url and google.channel_secret",
            ));
        };
        let now = self.now.now();
        let renew_before = chrono::Duration::from_std(self.cfg.renew_before).unwrap_or_default();
        let mut live = self.store.google_channels_live().await?;
        let mut report = ChannelReport::default();
        let newest_ok = live.last().is_some_and(|c| c.expires_at - now > renew_before);
        if !newest_ok {
            let id = uuid::Uuid::new_v4().to_string();
            let token = channel_token(secret, &id);
            let want = now + chrono::Duration::from_std(self.cfg.channel_lifetime).unwrap_or_default();
            let ch = self.client.watch(&id, &token, address, want).await?;
            let stored = GoogleChannel {
                channel_id: ch.id.clone(),
                resource_id: ch.resource_id,
                expires_at: ch.expires_at,
                created_at: now,
            };
            self.store.google_channel_put(&stored).await?;
            tracing::info!(channel_id = %stored.channel_id, expires_at = %stored.expires_at,
                "google watch channel created");
            events::google_channel(ChannelAction::Created);
            report.created.push(stored.channel_id.clone());
            live.push(stored);
        }
        let Some(newest) = live.last().cloned() else {
            return Ok(report);
        };
        let overlap = chrono::Duration::from_std(self.cfg.channel_overlap).unwrap_or_default();
        for old in &live[..live.len() - 1] {
            let expired = old.expires_at <= now;
            if !expired && now < newest.created_at + overlap {
                continue;
            }
            if !expired {
                self.client.stop(&old.channel_id, &old.resource_id).await?;
            }
            self.store.google_channel_stopped(&old.channel_id, now).await?;
            tracing::info!(channel_id = %old.channel_id, expired, "google watch channel stopped");
            events::google_channel(ChannelAction::Stopped);
            report.stopped.push(old.channel_id.clone());
        }
        Ok(report)
    }

    /// List the admin activities since the resume point, publish them, move the cursor.
    pub async fn catch_up(&self) -> Result<CatchupReport, UpkeepError> {
        let end = self.now.now();
        let overlap = chrono::Duration::from_std(self.cfg.catchup_overlap).unwrap_or_default();
        let cursor = self.store.catchup_get(SOURCE).await?;
        let (start, lag) = match &cursor {
            Some(c) => {
                let seen = DateTime::parse_from_rfc3339(&c.position)
                    .map_err(|e| UpkeepError::BadCursor(e.to_string()))?
                    .with_timezone(&Utc);
                let lag = (end - c.covered_until).to_std().unwrap_or_default();
                (seen, lag)
            }
            None => (
                end - chrono::Duration::from_std(self.cfg.catchup_start).unwrap_or_default(),
                Duration::ZERO,
            ),
        };
        events::catchup_lag(Source::GoogleWorkspace, lag.as_secs_f64());
        let mut report = CatchupReport {
            start: Some(start),
            end: Some(end),
            lag,
            ..Default::default()
        };
        let mut newest = start;
        let mut page_token: Option<String> = None;
        for page_no in 0.. {
            if page_no >= super::google_reports::MAX_PAGES {
                return Err(UpkeepError::NotConfigured(
                    "more pages than the loop guard allows",
                ));
            }
            let page = self.client.list_page(start, end, page_token.as_deref()).await?;
            let mut envs: Vec<Envelope> = Vec::new();
            for item in &page.items {
                report.activities += 1;
                let bytes = serde_json::to_vec(item).unwrap_or_default();
                match google::parse_activity(&bytes, end) {
                    Ok(mut e) => {
                        let bad_email = e.iter().any(|env| {
                            env.subject
                                .email
                                .as_deref()
                                .is_some_and(|m| gatehouse_domain::email::validate(m).is_err())
                        });
                        if bad_email {
                            report.skipped += 1;
                            tracing::warn!("google activity skipped: invalid subject email");
                            continue;
                        }
                        if let Some(t) = e.first().map(|env| env.occurred_at) {
                            newest = newest.max(t);
                        }
                        envs.append(&mut e);
                    }
                    Err(e) => {
                        report.skipped += 1;
                        tracing::warn!(error = %e, "google activity skipped: unreadable");
                    }
                }
            }
            // Renames as the push intake follows them (issue 16).
            super::google::follow_renames(&self.store, &mut envs).await?;
            for chunk in envs.chunks(PUBLISH_CHUNK) {
                self.queue.publish(chunk).await?;
                for env in chunk {
                    super::count_received(SOURCE, env);
                    tracing::info!(envelope_id = %env.id, subject = %env.subject.key,
                        event_type = %env.source_event_type, "google catch-up event enqueued");
                }
            }
            report.envelopes += envs.len();
            match page.next_page_token {
                Some(t) => page_token = Some(t),
                None => break,
            }
        }
        // Resume from the newest event seen, but never further back than the overlap before
        // this pass's end (late-indexed events of that window are listed again, deduplicated).
        let resume = newest.max(end - overlap).min(end);
        self.store
            .catchup_put(
                SOURCE,
                &Cursor {
                    position: resume.to_rfc3339_opts(SecondsFormat::Millis, true),
                    covered_until: end,
                },
            )
            .await?;
        events::catchup_events(Source::GoogleWorkspace, report.envelopes as u64);
        tracing::info!(start = %start, end = %end, activities = report.activities,
            envelopes = report.envelopes, skipped = report.skipped, lag_s = lag.as_secs(),
            "google catch-up pass done");
        Ok(report)
    }
}

/// The loop: on start and every `catchup_interval`, keep the channels (when managed) and catch
/// up. A failed pass is retried after `Retry-After` or a minute at most.
pub async fn run<Q: QueueProducer, S: CatchupStore + StateStore>(
    upkeep: GoogleUpkeep<Q, S>,
    shutdown: Shutdown,
) {
    let every = upkeep.config().catchup_interval;
    let manage = upkeep.config().manages_channels();
    while !shutdown.is_triggered() {
        let mut wait = every;
        if manage && let Err(e) = upkeep.keep_channels().await {
            tracing::warn!(error = %e, "google channel upkeep failed; will retry");
            wait = wait.min(retry_wait(&e));
        }
        if let Err(e) = upkeep.catch_up().await {
            tracing::warn!(error = %e, "google catch-up failed; will retry");
            wait = wait.min(retry_wait(&e));
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The upkeep task, when `[google]` has Reports API credentials (catch-up; channels too with
/// `notification_url` and `channel_secret`).
pub fn spawn_tasks<Q: QueueProducer + Clone + 'static>(
    deps: &super::Deps<Q>,
    shutdown: &Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(upkeep) = upkeep(deps) else {
        return Vec::new();
    };
    let s = shutdown.clone();
    vec![tokio::spawn(async move { run(upkeep, s).await })]
}

/// The upkeep `[google]` asks for, on the configured state store (`[state]`: channels and the
/// cursor shared by every replica); `None` without credentials.
pub fn upkeep<Q: QueueProducer + Clone>(deps: &super::Deps<Q>) -> Option<GoogleUpkeep<Q, AnyState>> {
    let cfg = &deps.config.google;
    if !cfg.has_credentials() {
        return None;
    }
    let client = match ReportsClient::from_config(cfg) {
        Ok(c) => c?,
        Err(e) => {
            tracing::error!(error = %e, "google reports client cannot be built; no channel upkeep or catch-up");
            return None;
        }
    };
    Some(GoogleUpkeep::new(
        client,
        deps.state.clone(),
        deps.queue.clone(),
        cfg,
        gatehouse_domain::clock::system(),
    ))
}

fn retry_wait(e: &UpkeepError) -> Duration {
    match e {
        UpkeepError::Reports(r) => r.retry_after().unwrap_or(Duration::from_secs(60)),
        _ => Duration::from_secs(60),
    }
    .clamp(Duration::from_secs(1), Duration::from_secs(600))
}

#[cfg(test)]
#[path = "google_upkeep_tests.rs"]
mod upkeep_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_tokens_are_per_channel_and_per_secret() {
        let a = SecretString::from("a-long-channel-secret-0001".to_string());
        let b = SecretString::from("a-long-channel-secret-0002".to_string());
        let t = channel_token(&a, "ch-1");
        assert_eq!(t.expose_secret(), channel_token(&a, "ch-1").expose_secret());
        assert_ne!(t.expose_secret(), channel_token(&a, "ch-2").expose_secret());
        assert_ne!(t.expose_secret(), channel_token(&b, "ch-1").expose_secret());
        assert!((16..=256).contains(&t.expose_secret().len()));
    }

    #[test]
    fn retry_waits_honour_retry_after_within_bounds() {
        let throttled = |s| {
            UpkeepError::Reports(ReportsError::Throttled {
                op: "x",
                retry_after: Some(Duration::from_secs(s)),
            })
        };
        assert_eq!(retry_wait(&throttled(7)), Duration::from_secs(7));
        assert_eq!(retry_wait(&throttled(0)), Duration::from_secs(1));
        assert_eq!(retry_wait(&throttled(99_999)), Duration::from_secs(600));
        assert_eq!(
            retry_wait(&UpkeepError::NotConfigured("x")),
            Duration::from_secs(60)
        );
    }
}
