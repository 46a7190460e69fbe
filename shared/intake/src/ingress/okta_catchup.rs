//! Okta System Log catch-up: what the Event Hook missed (Gatehouse down, Okta's single retry
//! spent, its daily hook limit reached) is read back from `GET /api/v1/logs` and enqueued as the
//! very envelopes the hook would have produced (same `okta:<org>:<uuid>` ids, so an event that
//! arrives both ways is applied once).
//!
//! A polling request (`since`, no `until`, ascending) filtered on [`okta::ACTED_EVENT_TYPES`];
//! then Okta's `rel="next"` links, page after page, until a page is empty. The last link and the
//! instant covered are saved in the state store after each page's envelopes are enqueued, so a
//! restart resumes there (at-least-once; duplicates are harmless). Runs at start, then every
//! `okta.api.poll_interval`. Gauge `gatehouse_intake_catchup_lag_seconds{source="okta"}`: now
//! minus the instant up to which the log has been read.

use super::okta_api::{OktaApi, OktaApiError};
use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_domain::envelope::Source;
use gatehouse_domain::okta;
use gatehouse_domain::okta_log::{LogCursor, LogCursors};
use gatehouse_domain::ports::{BackendError, QueueProducer};
use gatehouse_platform::config::{Config, OKTA_LOG_RETENTION};
use gatehouse_platform::events;
use gatehouse_platform::shutdown::Shutdown;
use std::time::Duration;
use tokio::task::JoinHandle;

const LOGS: &str = "/api/v1/logs";

#[derive(Debug, thiserror::Error)]
pub enum CatchupError {
    #[error("okta system log: {0}")]
    Api(#[from] OktaApiError),
    #[error("okta catch-up cursor: {0}")]
    Store(#[from] BackendError),
    #[error("okta catch-up could not enqueue: {0}")]
    Enqueue(String),
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    pub pages: usize,
    pub events: usize,
    pub enqueued: usize,
    pub skipped: usize,
}

/// The `filter` asking for the event types Gatehouse acts on.
pub fn filter() -> String {
    okta::ACTED_EVENT_TYPES
        .iter()
        .map(|t| format!("eventType eq \"{t}\""))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Settings of the poller (from `[okta]` / `[okta.api]`).
#[derive(Debug, Clone)]
pub struct CatchupConfig {
    pub org: String,
    pub page_size: u32,
    pub poll_interval: Duration,
    pub initial_lookback: Duration,
}

pub struct Catchup<Q, S> {
    api: OktaApi,
    queue: Q,
    store: S,
    cfg: CatchupConfig,
    filter: String,
}

impl<Q: QueueProducer, S: LogCursors> Catchup<Q, S> {
    pub fn new(api: OktaApi, queue: Q, store: S, cfg: CatchupConfig) -> Self {
        Catchup {
            api,
            queue,
            store,
            cfg,
            filter: filter(),
        }
    }

    fn since_url(&self, since: DateTime<Utc>) -> String {
        let since = since.to_rfc3339_opts(SecondsFormat::Millis, true);
        let limit = self.cfg.page_size.to_string();
        self.api.url(
            LOGS,
            &[
                ("since", since.as_str()),
                ("sortOrder", "ASCENDING"),
                ("limit", limit.as_str()),
                ("filter", self.filter.as_str()),
            ],
        )
    }

    /// Where to start: the stored next link (same filter, same org), else `since` the instant
    /// covered (bounded by Okta's 90-day retention), else `initial_lookback` ago.
    fn start(&self, cursor: Option<LogCursor>, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
        let oldest = now - OKTA_LOG_RETENTION;
        match cursor {
            Some(c) if c.filter == self.filter && c.next_url.as_deref().is_some_and(|u| self.api.owns(u)) => {
                (c.next_url.unwrap_or_default(), c.covered_until)
            }
            Some(c) => {
                tracing::info!(covered_until = %c.covered_until, "okta catch-up filter or org changed; reading again since the instant covered");
                (self.since_url(c.covered_until.max(oldest)), c.covered_until)
            }
            None => {
                let since = now - self.cfg.initial_lookback.min(OKTA_LOG_RETENTION);
                (self.since_url(since), since)
            }
        }
    }

    /// Read the log from the stored position to its end, enqueueing every event.
    pub async fn poll_once(&self) -> Result<PollReport, CatchupError> {
        let org = &self.cfg.org;
        let cursor = self.store.load_okta_cursor(org).await?;
        let (mut url, mut covered) = self.start(cursor, gatehouse_domain::clock::now());
        set_lag(covered);
        let mut report = PollReport::default();
        loop {
            let asked_at = gatehouse_domain::clock::now();
            let page = self.api.get_page(&url).await?;
            report.pages += 1;
            report.events += page.items.len();
            let mut envelopes = Vec::with_capacity(page.items.len());
            for event in &page.items {
                match okta::parse_event(org, event.clone(), gatehouse_domain::clock::now()) {
                    Ok(env) => {
                        if let Some(email) = &env.subject.email
                            && let Err(e) = gatehouse_domain::email::validate(email)
                        {
                            report.skipped += 1;
                            skipped("invalid_email");
                            tracing::warn!(envelope_id = %env.id, reason = e.0, "okta log event skipped: invalid subject email");
                            continue;
                        }
                        envelopes.push(env);
                    }
                    Err(reason) => {
                        report.skipped += 1;
                        skipped("malformed");
                        tracing::warn!(reason, "okta log event skipped: not an event gatehouse can read");
                    }
                }
            }
            if !envelopes.is_empty() {
                self.queue
                    .publish(&envelopes)
                    .await
                    .map_err(|e| CatchupError::Enqueue(e.to_string()))?;
                report.enqueued += envelopes.len();
                events::catchup_events(Source::Okta, envelopes.len() as u64);
                for env in &envelopes {
                    tracing::info!(envelope_id = %env.id, subject = %env.subject.key, event_type = %env.source_event_type, "okta log event enqueued");
                }
            }
            let done = page.items.is_empty() || page.next.is_none();
            if page.items.is_empty() {
                covered = asked_at;
            }
            if let Some(next) = page.next {
                url = next;
            }
            self.store
                .save_okta_cursor(
                    org,
                    &LogCursor {
                        next_url: Some(url.clone()),
                        filter: self.filter.clone(),
                        covered_until: covered,
                    },
                )
                .await?;
            if done {
                break;
            }
        }
        set_lag(covered);
        Ok(report)
    }

    /// Poll now, then every `poll_interval`, until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                r = self.poll_once() => match r {
                    Ok(r) => tracing::info!(org = %self.cfg.org, pages = r.pages, events = r.events, enqueued = r.enqueued, skipped = r.skipped, "okta system log read"),
                    Err(e) => {
                        events::catchup_failed(Source::Okta);
                        tracing::error!(org = %self.cfg.org, error = %e, "okta catch-up failed; trying again at the next interval");
                    }
                },
                _ = shutdown.wait() => return,
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(self.cfg.poll_interval) => {}
            }
        }
    }
}

fn set_lag(covered: DateTime<Utc>) {
    let lag = (gatehouse_domain::clock::now() - covered)
        .num_milliseconds()
        .max(0) as f64
        / 1000.0;
    events::catchup_lag(Source::Okta, lag);
}

fn skipped(reason: &'static str) {
    events::catchup_skipped(Source::Okta, reason);
}

/// Start the poller when `[okta.api]` is configured.
pub fn spawn<Q, S>(cfg: &Config, queue: Q, store: S, shutdown: &Shutdown) -> Option<JoinHandle<()>>
where
    Q: QueueProducer + 'static,
    S: LogCursors + 'static,
{
    // `Config::load` validated the settings; a config built otherwise without them means "off".
    let api = match OktaApi::from_config(&cfg.okta.api) {
        Ok(Some(api)) => api,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, "okta catch-up not started");
            return None;
        }
    };
    let c = CatchupConfig {
        org: cfg.okta.org.clone(),
        page_size: cfg.okta.api.page_size,
        poll_interval: cfg.okta.api.poll_interval,
        initial_lookback: cfg.okta.api.initial_lookback,
    };
    tracing::info!(org = %c.org, url = %api.base_url(), poll_interval_s = c.poll_interval.as_secs_f64(), "okta system log catch-up on");
    let catchup = Catchup::new(api, queue, store, c);
    Some(tokio::spawn(catchup.run(shutdown.clone())))
}
