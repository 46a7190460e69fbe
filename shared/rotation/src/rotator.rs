//! The rotator: receives rotation requests from the rotation queue into its own inbox, drains
//! them, fires schedules, and drives each rotation through its
//! persisted steps. Every step is idempotent and saved before the next one starts, so a crash
//! anywhere resumes; readers always get a credential that works (the old one stays current until
//! the new one is tested and promoted, and is revoked only after the grace period).

use crate::clock::Clock;
use crate::credential::Credential;
use crate::error::{ErrorKind, RotationError};
use crate::kinds::{Kind, Res};
use crate::requests::RequestQueue;
use crate::state::{Phase, Rotation, RotationStore, Started};
use crate::stores::SecretStore;
use chrono::{DateTime, Utc};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{LedgerEntry, RotationRequest};
use gatehouse_platform::config::{KindConfig, OutOfBand, SecretConfig, StoreConfig};
use gatehouse_platform::events::{self, RotationOutcome};
use gatehouse_platform::retry::RetryPolicy;
use secrecy::SecretString;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Seconds since the current credential of a declared secret came to be (label `secret`).
pub const METRIC_SECRET_AGE: &str = events::SECRET_AGE.name;

/// One declared secret with its kind and store.
pub struct Declared {
    pub config: SecretConfig,
    pub kind: Arc<dyn Kind>,
    pub store: Arc<dyn SecretStore>,
    schedule: Option<croner::Cron>,
}

impl Declared {
    /// Pairs a declaration with its kind and store (the schedule was validated with the config).
    pub fn new(config: SecretConfig, kind: Arc<dyn Kind>, store: Arc<dyn SecretStore>) -> Self {
        let schedule = config
            .schedule
            .as_deref()
            .and_then(|s| croner::Cron::from_str(s).ok());
        Declared {
            config,
            kind,
            store,
            schedule,
        }
    }

    fn parse(&self) -> impl Fn(SecretString) -> Res<Credential> + Send + Sync + '_ {
        move |v| self.kind.parse(v)
    }
}

/// Timing of the rotator.
#[derive(Debug, Clone)]
pub struct Settings {
    pub poll_interval: Duration,
    pub lease: Duration,
    pub retry_min_delay: Duration,
    pub retry_max_delay: Duration,
    /// Tries of the test step before it counts as failed (new keys may take a moment).
    pub test_attempts: usize,
    pub test_delay: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll_interval: Duration::from_secs(30),
            lease: Duration::from_secs(300),
            retry_min_delay: Duration::from_secs(60),
            retry_max_delay: Duration::from_secs(3600),
            test_attempts: 3,
            test_delay: Duration::from_millis(200),
        }
    }
}

/// Errors of the rotator itself.
#[derive(Debug, thiserror::Error)]
pub enum RotatorError {
    #[error("no secret named {0:?} is declared")]
    UnknownSecret(String),
    #[error("another instance holds rotation {0}")]
    Busy(String),
    #[error(transparent)]
    Step(#[from] RotationError),
}

impl From<gatehouse_domain::ports::BackendError> for RotatorError {
    fn from(e: gatehouse_domain::ports::BackendError) -> Self {
        RotatorError::Step(e.into())
    }
}

/// What one [`Rotator::tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Rotations started (secret, trigger).
    pub started: Vec<(String, String)>,
    /// Requests that matched no declared secret.
    pub unmatched: usize,
    /// Requests received from the rotation queue, recorded in the inbox and acked (a redelivery
    /// counts again; the inbox keeps one).
    pub received: usize,
    /// Deliveries of the rotation queue that were not rotation requests (dead-lettered).
    pub poison: usize,
    /// Out-of-band keys only alerted on (secret).
    pub alerted: Vec<String>,
    /// Steps executed.
    pub steps: usize,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// Moved to this phase.
    Advanced(Phase),
    /// Failed for now; retried at `due_at`.
    Deferred,
    /// Not due yet (grace period or backoff).
    NotDue,
}

/// The rotator over a [`RotationStore`].
pub struct Rotator<S> {
    secrets: BTreeMap<String, Declared>,
    db: S,
    clock: Arc<dyn Clock>,
    owner: String,
    settings: Settings,
    /// New credentials created by this process and not yet readable from their store. Lost in a
    /// crash: the key is then deleted and created again.
    fresh: Mutex<HashMap<String, Credential>>,
    /// Never-rotated secrets: when their current credential was created (the provider's key
    /// creation time), or when this process first looked if that cannot be read. Read once.
    unrotated_since: Mutex<HashMap<String, DateTime<Utc>>>,
    /// The rotation queue the processor publishes requests to (none: requests only from the
    /// inbox, e.g. `gatehouse rotate`).
    requests: Option<Arc<dyn RequestQueue>>,
}

/// Deliveries taken from the rotation queue per receive, and receives per tick at most.
const REQUEST_BATCH: usize = 10;
const REQUEST_BATCHES_PER_TICK: usize = 10;
/// How long a received request stays invisible to other rotators while it is recorded.
const REQUEST_VISIBILITY: Duration = Duration::from_secs(60);

fn ledger_call(secret: &str, step: &str, method: Method, r: &Rotation) -> HttpCall {
    HttpCall {
        method,
        path: format!("/rotation/{secret}/{step}"),
        body: Some(serde_json::json!({
            "old_key_id": r.old_key_id, "old_version": r.old_version,
            "new_key_id": r.new_key_id, "new_version": r.new_version,
        })),
    }
}

impl<S: RotationStore> Rotator<S> {
    /// A rotator instance; `owner` names it in leases (unique per process).
    pub fn new(secrets: Vec<Declared>, db: S, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        Rotator {
            secrets: secrets.into_iter().map(|d| (d.config.name.clone(), d)).collect(),
            db,
            clock,
            owner: format!("rotator-{}", uuid::Uuid::new_v4()),
            settings,
            fresh: Mutex::new(HashMap::new()),
            unrotated_since: Mutex::new(HashMap::new()),
            requests: None,
        }
    }

    /// Take rotation requests from `queue` (the rotation queue the processors publish to) on
    /// every tick.
    pub fn with_requests(mut self, queue: Arc<dyn RequestQueue>) -> Self {
        self.requests = Some(queue);
        self
    }

    pub fn store(&self) -> &S {
        &self.db
    }

    /// Adjust timing after construction (tests shorten the test-step retry delay).
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// The meters of the Looker calls the declared kinds make (for the admin-API budget).
    pub fn looker_meters(&self) -> Vec<gatehouse_targets::client::looker::CallMeter> {
        self.secrets
            .values()
            .filter_map(|d| d.kind.call_meter())
            .collect()
    }

    pub fn declared(&self, name: &str) -> Option<&Declared> {
        self.secrets.get(name)
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The delay after `failures` failures (at least `retry_after`): the one retry policy's
    /// schedule from `[rotator] retry_min_delay` to `retry_max_delay`.
    fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        RetryPolicy {
            retries: 0,
            min_delay: self.settings.retry_min_delay,
            max_delay: self.settings.retry_max_delay,
        }
        .delay(failures.saturating_sub(1), retry_after)
    }

    async fn ledger(&self, r: &Rotation, step: &str, method: Method, status: &str) {
        let entry = LedgerEntry {
            at: self.now(),
            envelope_id: r.id.clone(),
            subject: format!("secret:{}", r.secret),
            event: "rotation".into(),
            rule: r.trigger.clone(),
            call: ledger_call(&r.secret, step, method, r),
            status: status.to_string(),
            target: "rotator".into(),
            policy_digest: None,
            actor: Some(gatehouse_domain::actor::ROTATOR.into()),
        };
        if let Err(e) = self.db.append_ledger(&[entry]).await {
            tracing::error!(secret = %r.secret, rotation = %r.id, error = %e, "cannot write the ledger");
        }
    }

    /// Start a rotation of `secret` now. `respect_backoff` = false for `gatehouse rotate`.
    pub async fn start(
        &self,
        secret: &str,
        trigger: &str,
        respect_backoff: bool,
    ) -> Result<Option<Started>, RotatorError> {
        if !self.secrets.contains_key(secret) {
            return Err(RotatorError::UnknownSecret(secret.to_string()));
        }
        self.start_rotation(Rotation::new(secret, trigger, self.now()), respect_backoff)
            .await
    }

    /// Start `r` (unless its secret is backing off and `respect_backoff`).
    async fn start_rotation(
        &self,
        r: Rotation,
        respect_backoff: bool,
    ) -> Result<Option<Started>, RotatorError> {
        if respect_backoff
            && let Some(at) = self.db.secret_state(&r.secret).await?.retry_at
            && at > r.started_at
        {
            return Ok(None);
        }
        let started = self.db.start(&r).await?;
        if let Started::New(id) = &started {
            events::rotation_started(&r.secret, &r.trigger, id);
        }
        Ok(Some(started))
    }

    /// Look at requests, schedules and retries, then run every due step.
    pub async fn tick(&self) -> Result<TickReport, RotatorError> {
        let mut report = TickReport::default();
        // A queue that fails now is tried again next tick; schedules and due steps go on.
        if let Err(e) = self.receive_requests(&mut report).await {
            tracing::warn!(error = %crate::error::chain(&e), "cannot receive rotation requests");
        }
        self.drain_requests(&mut report).await?;
        self.fire_schedules(&mut report).await?;
        for r in self.db.due(self.now()).await? {
            match self.drive(&r.id).await {
                Ok(n) => report.steps += n,
                Err(RotatorError::Busy(_)) => {}
                Err(e) => {
                    tracing::warn!(secret = %r.secret, rotation = %r.id, error = %crate::error::chain(&e), "rotation step failed")
                }
            }
        }
        self.report_ages().await;
        Ok(report)
    }

    /// When the credential `secret`'s readers get now came to be:
    /// * rotated: the start of the last rotation that promoted its credential (create, set,
    ///   test and finish run back to back, so this is when the key was created, at most the
    ///   rotation's own duration before it was promoted; it never makes a credential look
    ///   younger than it is);
    /// * never rotated by Gatehouse: the creation time the provider lists for the key the store
    ///   holds; if the store is empty, the key is not listed or the lookup fails, when this
    ///   process first looked. Either is read once per process.
    pub async fn current_since(&self, secret: &str) -> Result<DateTime<Utc>, RotatorError> {
        let d = self
            .secrets
            .get(secret)
            .ok_or_else(|| RotatorError::UnknownSecret(secret.to_string()))?;
        let history = self.db.history(secret).await?;
        if let Some(r) = history
            .iter()
            .rev()
            .find(|r| matches!(r.phase, Phase::Finished | Phase::Revoked | Phase::Done))
        {
            return Ok(r.started_at);
        }
        if let Some(t) = self.unrotated_since_of(secret) {
            return Ok(t);
        }
        let now = self.now();
        let since = match self.key_created(d).await {
            Ok(Some(t)) => t,
            Ok(None) => now,
            Err(e) => {
                tracing::warn!(%secret, error = %e,
                    "cannot read when the current key was created; its age counts from now");
                now
            }
        };
        Ok(*self
            .unrotated_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(secret.to_string())
            .or_insert(since))
    }

    fn unrotated_since_of(&self, secret: &str) -> Option<DateTime<Utc>> {
        self.unrotated_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(secret)
            .copied()
    }

    /// The provider's creation time of the key the store holds now (RFC 3339), if any.
    async fn key_created(&self, d: &Declared) -> Res<Option<DateTime<Utc>>> {
        let parse = d.parse();
        let Some(current) = d.store.current(&parse).await? else {
            return Ok(None);
        };
        let keys = d.kind.list().await?;
        Ok(keys
            .iter()
            .find(|k| k.id == current.credential.key_id)
            .and_then(|k| DateTime::parse_from_rfc3339(&k.created).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    /// Set `gatehouse_secret_age_seconds{secret}` for every declared secret (see
    /// [`Rotator::current_since`]) and return the ages set, in seconds.
    pub async fn report_ages(&self) -> BTreeMap<String, f64> {
        let mut ages = BTreeMap::new();
        for name in self.secrets.keys() {
            match self.current_since(name).await {
                Ok(since) => {
                    let age = (self.now() - since).num_milliseconds().max(0) as f64 / 1000.0;
                    events::secret_age(name, age);
                    ages.insert(name.clone(), age);
                }
                Err(e) => tracing::warn!(secret = %name, error = %e, "cannot tell the secret's age"),
            }
        }
        ages
    }

    /// Take what the rotation queue holds into the inbox now, without acting on it (what
    /// [`Rotator::tick`] does first): `received` and `poison` of the report are set.
    pub async fn take_requests(&self) -> Result<TickReport, RotatorError> {
        let mut report = TickReport::default();
        self.receive_requests(&mut report).await?;
        Ok(report)
    }

    /// Move what the rotation queue holds into the inbox: each request is recorded (once per
    /// envelope id) before its delivery is acked, so a crash in between redelivers it and the
    /// inbox deduplicates; poison is dead-lettered with the reason at once.
    async fn receive_requests(&self, report: &mut TickReport) -> Result<(), RotatorError> {
        let Some(queue) = &self.requests else {
            return Ok(());
        };
        for _ in 0..REQUEST_BATCHES_PER_TICK {
            let batch = queue.receive(REQUEST_BATCH, REQUEST_VISIBILITY).await?;
            for d in &batch {
                match crate::requests::request_of(&d.body) {
                    Err(reason) => {
                        events::rotation_request_poison(d.attempt, &reason);
                        queue.dead_letter(d, &reason).await?;
                        report.poison += 1;
                    }
                    Ok(req) => {
                        if let Err(e) = self.db.record_request(&req, self.now()).await {
                            // Not acked: it comes back once released (or after its visibility).
                            let _ = queue.release(d, Duration::ZERO).await;
                            return Err(e.into());
                        }
                        // Recorded: a lost ack only redelivers a request the inbox already has.
                        queue.ack(d).await?;
                        report.received += 1;
                    }
                }
            }
            if batch.len() < REQUEST_BATCH {
                break;
            }
        }
        Ok(())
    }

    /// Match requests to declared secrets and start (or alert on) them.
    async fn drain_requests(&self, report: &mut TickReport) -> Result<(), RotatorError> {
        for req in self.db.pending_requests().await? {
            let matched = self.match_request(&req);
            if matched.is_empty() {
                report.unmatched += 1;
                events::rotation_request_unmatched(&req.provider);
                tracing::warn!(subject = %req.subject, provider = %req.provider, reason = %req.reason,
                    "rotation request matches no declared secret");
                self.db.mark_handled(&req.envelope_id, self.now()).await?;
                continue;
            }
            let mut deferred = false;
            for (name, trigger) in matched {
                let d = &self.secrets[&name];
                if trigger == "out_of_band" && d.config.on_out_of_band == OutOfBand::Alert {
                    report.alerted.push(name.clone());
                    events::rotation_alert(&name, &req.subject);
                    let mut r = Rotation::new(&name, "out_of_band", self.now());
                    r.id = req.envelope_id.clone();
                    self.ledger(&r, "out_of_band_key", Method::Post, "alert").await;
                    continue;
                }
                // The rotation id comes from the request: another rotator that read the same
                // request before it was marked handled asks for the same rotation, which the
                // store starts once, even if it has finished since.
                let r = Rotation::for_request(&name, &trigger, &req.envelope_id, self.now());
                match self.start_rotation(r, true).await? {
                    Some(Started::New(_)) => report.started.push((name.clone(), trigger)),
                    Some(Started::AlreadyActive(_) | Started::Existed(_)) => {}
                    None => deferred = true,
                }
            }
            if !deferred {
                self.db.mark_handled(&req.envelope_id, self.now()).await?;
            }
        }
        Ok(())
    }

    /// Declared secrets a request is about, with the trigger it stands for.
    fn match_request(&self, req: &RotationRequest) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, d) in &self.secrets {
            let trigger = match (&req.secret, req.provider.as_str()) {
                (Some(s), "offboarding") => (s == name).then_some("holder_offboarded"),
                (Some(s), _) => {
                    let hit = s == name
                        || match &d.config.store {
                            StoreConfig::GcpSecretManager { name } => s == name,
                            StoreConfig::AwsSecretsManager { secret_id } => {
                                s == secret_id
                                    || s.ends_with(&format!(":secret:{secret_id}"))
                                    || s.contains(&format!(":secret:{secret_id}-"))
                            }
                        };
                    let why = if req.reason == "SECRET_ROTATE" {
                        "secret_rotate"
                    } else {
                        "secret_event"
                    };
                    hit.then_some(why)
                }
                (None, _) => {
                    let hit = match &d.config.kind {
                        KindConfig::AwsAccessKey { user_name } => {
                            req.subject == format!("aws:iam-user:{user_name}")
                        }
                        KindConfig::GcpServiceAccountKey { email } => {
                            req.subject == format!("gcp:sa:{email}")
                        }
                        KindConfig::LookerApi3 { .. } => false,
                    };
                    hit.then_some("out_of_band")
                }
            };
            if let Some(t) = trigger {
                out.push((name.clone(), t.to_string()));
            }
        }
        out
    }

    /// Start rotations whose cron occurrence has come, and retries whose backoff is over.
    async fn fire_schedules(&self, report: &mut TickReport) -> Result<(), RotatorError> {
        let now = self.now();
        for (name, d) in &self.secrets {
            let state = self.db.secret_state(name).await?;
            if state.failures > 0 && state.retry_at.is_some_and(|t| t <= now) {
                if let Some(Started::New(_)) = self.start(name, "retry", true).await? {
                    report.started.push((name.clone(), "retry".into()));
                }
                continue;
            }
            let Some(cron) = &d.schedule else { continue };
            let Some(last) = state.last_fire else {
                // First sight of this schedule: count from now, do not catch up on the past.
                self.db.claim_fire(name, None, now).await?;
                continue;
            };
            let Ok(next) = cron.find_next_occurrence(&last, false) else {
                continue;
            };
            if next <= now && self.db.claim_fire(name, Some(last), next).await? {
                // Skip occurrences missed while down: one rotation, counted from the latest.
                let mut latest = next;
                while let Ok(n) = cron.find_next_occurrence(&latest, false) {
                    if n > now {
                        break;
                    }
                    latest = n;
                }
                if latest != next {
                    self.db.claim_fire(name, Some(next), latest).await?;
                }
                if let Some(Started::New(_)) = self.start(name, "schedule", true).await? {
                    report.started.push((name.clone(), "schedule".into()));
                }
            }
        }
        Ok(())
    }

    /// When the next schedule occurrence, retry or due step is.
    pub async fn next_wakeup(&self) -> Result<Option<DateTime<Utc>>, RotatorError> {
        let mut next = self.db.next_due().await?;
        let mut consider = |t: DateTime<Utc>| next = Some(next.map_or(t, |n| n.min(t)));
        for (name, d) in &self.secrets {
            let state = self.db.secret_state(name).await?;
            if let Some(t) = state.retry_at.filter(|_| state.failures > 0) {
                consider(t);
            }
            if let (Some(cron), Some(last)) = (&d.schedule, state.last_fire)
                && let Ok(t) = cron.find_next_occurrence(&last, false)
            {
                consider(t);
            }
        }
        Ok(next)
    }

    /// Run until `stop` resolves: tick, then sleep until the next thing is due (at most
    /// `poll_interval`, so requests from the processor are seen).
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if let Err(e) = self.tick().await {
                tracing::error!(error = %e, "rotator tick failed");
            }
            let now = self.now();
            let mut wait = self.settings.poll_interval;
            if let Ok(Some(t)) = self.next_wakeup().await {
                let until = (t - now).to_std().unwrap_or(Duration::ZERO);
                wait = wait.min(until.max(Duration::from_millis(1)));
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Drive one rotation as far as it can go now. Returns the number of steps taken.
    pub async fn drive(&self, id: &str) -> Result<usize, RotatorError> {
        let mut steps = 0;
        let result = loop {
            match self.step(id).await {
                Ok(StepOutcome::Advanced(_)) => steps += 1,
                Ok(StepOutcome::Deferred | StepOutcome::NotDue) => break Ok(steps),
                Err(e) => break Err(e),
            }
        };
        self.db.release(id, &self.owner).await?;
        result
    }

    /// Run exactly one step of a rotation, holding its lease (not released: a crash right after
    /// leaves the lease to expire, as a real crash would).
    pub async fn step(&self, id: &str) -> Result<StepOutcome, RotatorError> {
        let now = self.now();
        let lease_until =
            now + chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::MAX);
        if !self.db.claim(id, &self.owner, lease_until, now).await? {
            return Err(RotatorError::Busy(id.to_string()));
        }
        let Some(mut r) = self.db.get(id).await? else {
            return Err(RotatorError::Step(RotationError::permanent(format!(
                "no rotation {id}"
            ))));
        };
        if r.phase.is_terminal() || r.due_at > now {
            return Ok(StepOutcome::NotDue);
        }
        let d = self
            .secrets
            .get(&r.secret)
            .ok_or_else(|| RotatorError::UnknownSecret(r.secret.clone()))?;
        let before = r.phase;
        let outcome = self.advance(d, &mut r).await;
        let outcome = match outcome {
            Ok(()) => {
                r.attempts = 0;
                r.error = None;
                StepOutcome::Advanced(r.phase)
            }
            Err(e) => self.failed(d, &mut r, before, e).await,
        };
        if !self.db.save(&r, &self.owner).await? {
            return Err(RotatorError::Busy(id.to_string()));
        }
        if let StepOutcome::Advanced(p) = outcome {
            let method = if matches!(p, Phase::Revoked | Phase::Done | Phase::RolledBack) {
                Method::Delete
            } else {
                Method::Post
            };
            // A step that only recorded the snapshot stays `started`.
            let step = if p == before { "snapshot" } else { p.as_str() };
            self.ledger(&r, step, method, "ok").await;
            tracing::info!(secret = %r.secret, rotation = %r.id, phase = p.as_str(),
                new_key = r.new_key_id.as_deref().unwrap_or(""), new_version = r.new_version.as_deref().unwrap_or(""),
                "rotation step done");
            if p == Phase::Finished {
                self.db.set_backoff(&r.secret, 0, None).await?;
                events::rotation_finished(&r.secret, RotationOutcome::Rotated);
                let age = (self.now() - r.started_at).num_milliseconds().max(0) as f64 / 1000.0;
                events::secret_age(&r.secret, age);
            }
        }
        Ok(outcome)
    }

    /// A step failed: retry later, or roll back if the new credential is bad.
    async fn failed(&self, d: &Declared, r: &mut Rotation, before: Phase, e: RotationError) -> StepOutcome {
        let now = self.now();
        // Before promotion, an error retrying cannot fix (a failed test above all) rolls back.
        let bad_credential = before.is_active() && !e.is_retryable();
        tracing::warn!(secret = %r.secret, rotation = %r.id, phase = before.as_str(), error = %crate::error::chain(&e), "rotation step failed");
        events::rotation_failed(&r.secret, self.next_action(d, before).name());
        if bad_credential {
            self.ledger(
                r,
                self.next_action(d, before).name(),
                Method::Post,
                &format!("error: {}", crate::error::chain(&e)),
            )
            .await;
            if let Err(cleanup) = self.roll_back(d, r).await {
                r.attempts += 1;
                r.error = Some(format!("rollback: {cleanup}"));
                r.due_at = now + to_chrono(self.backoff(r.attempts, None));
                return StepOutcome::Deferred;
            }
            let failures = self
                .db
                .secret_state(&r.secret)
                .await
                .map(|s| s.failures)
                .unwrap_or(0)
                + 1;
            let retry_at = now + to_chrono(self.backoff(failures, None));
            if let Err(e) = self.db.set_backoff(&r.secret, failures, Some(retry_at)).await {
                tracing::error!(secret = %r.secret, error = %e, "cannot record the backoff");
            }
            r.phase = Phase::RolledBack;
            r.error = Some(e.message.clone());
            self.ledger(r, "rolled_back", Method::Delete, "rolled_back").await;
            events::rotation_finished(&r.secret, RotationOutcome::RolledBack);
            return StepOutcome::Advanced(Phase::RolledBack);
        }
        r.attempts += 1;
        r.error = Some(e.message.clone());
        let delay = self.backoff(r.attempts, e.retry_after());
        r.due_at = now + to_chrono(delay);
        self.ledger(
            r,
            self.next_action(d, before).name(),
            Method::Post,
            &format!("error: {}", crate::error::chain(&e)),
        )
        .await;
        StepOutcome::Deferred
    }

    /// Remove everything new: the pending version, then the new key. The old stays current.
    async fn roll_back(&self, d: &Declared, r: &mut Rotation) -> Res<()> {
        if let Some(v) = &r.new_version {
            d.store.discard(v).await?;
        }
        if let Some(k) = &r.new_key_id {
            d.kind.delete(k).await?;
        }
        self.fresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&r.id);
        Ok(())
    }

    fn next_action(&self, d: &Declared, phase: Phase) -> Action {
        let stages = d.store.stages();
        match phase {
            Phase::Started => Action::Create,
            Phase::Created if stages => Action::Set,
            Phase::Created => Action::Test,
            Phase::Set if stages => Action::Test,
            Phase::Set => Action::Finish,
            Phase::Tested if stages => Action::Finish,
            Phase::Tested => Action::Set,
            Phase::Finished => Action::Revoke,
            Phase::Revoked => Action::Destroy,
            Phase::Done | Phase::RolledBack => Action::Nothing,
        }
    }

    /// The credential created by this rotation: from memory, else from the store (a crashed
    /// `put`). `None`: its secret was lost in a crash.
    async fn new_credential(&self, d: &Declared, r: &mut Rotation) -> Res<Option<Credential>> {
        if let Some(c) = self
            .fresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&r.id)
        {
            return Ok(Some(c.clone()));
        }
        let Some(key) = r.new_key_id.clone() else {
            return Ok(None);
        };
        let parse = d.parse();
        match d.store.find(&r.id, &key, &parse).await? {
            Some(v) => {
                if r.new_version.is_none() {
                    r.new_version = Some(v.version.clone());
                }
                Ok(Some(v.credential))
            }
            None => Ok(None),
        }
    }

    /// Old keys of earlier rotations of `r`'s secret that are still in their grace period
    /// (promoted away from, not yet revoked), with the end of each grace period.
    async fn keys_in_grace(&self, r: &Rotation) -> Res<BTreeMap<String, DateTime<Utc>>> {
        Ok(self
            .db
            .history(&r.secret)
            .await?
            .into_iter()
            .filter(|p| p.id != r.id && p.phase == Phase::Finished)
            .filter_map(|p| p.old_key_id.map(|k| (k, p.due_at)))
            .collect())
    }

    /// The new key's secret is gone (crash before it reached the store): delete the key and
    /// start over from create.
    async fn abandon(&self, d: &Declared, r: &mut Rotation) -> Res<()> {
        if let Some(k) = r.new_key_id.take() {
            d.kind.delete(&k).await?;
            self.ledger(
                r,
                "abandon_key",
                Method::Delete,
                &format!("deleted key {k}: its secret was lost in a crash"),
            )
            .await;
        }
        r.phase = Phase::Started;
        Ok(())
    }

    /// One transition of `r` (mutated in place; the caller saves it).
    async fn advance(&self, d: &Declared, r: &mut Rotation) -> Res<()> {
        let now = self.now();
        match self.next_action(d, r.phase) {
            Action::Nothing => Ok(()),
            Action::Create => {
                let parse = d.parse();
                let Some(before) = r.keys_before.clone() else {
                    // Snapshot first (saved before anything is created).
                    let keys = d.kind.list().await?;
                    let current = d.store.current(&parse).await?;
                    r.old_key_id = current.as_ref().map(|c| c.credential.key_id.clone());
                    r.old_version = current.map(|c| c.version);
                    r.keys_before = Some(keys.into_iter().map(|k| k.id).collect());
                    return Ok(());
                };
                let keys = d.kind.list().await?;
                // Orphans of a crash during create: keys that appeared since the snapshot.
                for k in keys.iter().filter(|k| !before.contains(&k.id)) {
                    d.kind.delete(&k.id).await?;
                    self.ledger(
                        r,
                        "delete_orphan",
                        Method::Delete,
                        &format!("deleted orphan key {}", k.id),
                    )
                    .await;
                }
                let mut keys: Vec<_> = keys.into_iter().filter(|k| before.contains(&k.id)).collect();
                if let Some(max) = d.kind.max_keys()
                    && keys.len() >= max
                {
                    let in_grace = self.keys_in_grace(r).await?;
                    while keys.len() >= max {
                        // Never the current key, never one still in its grace period (readers
                        // may hold it until then): an inactive one first, else the oldest.
                        let victim = keys
                            .iter()
                            .filter(|k| Some(&k.id) != r.old_key_id.as_ref() && !in_grace.contains_key(&k.id))
                            .min_by_key(|k| (k.active, k.created.clone()))
                            .cloned();
                        let Some(victim) = victim else {
                            return Err(no_room(&keys, &in_grace, now));
                        };
                        d.kind.delete(&victim.id).await?;
                        self.ledger(
                            r,
                            "make_room",
                            Method::Delete,
                            &format!("deleted non-current key {}", victim.id),
                        )
                        .await;
                        keys.retain(|k| k.id != victim.id);
                    }
                }
                let cred = d.kind.create().await?;
                r.new_key_id = Some(cred.key_id.clone());
                self.fresh
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(r.id.clone(), cred);
                r.phase = Phase::Created;
                Ok(())
            }
            Action::Set => {
                let Some(cred) = self.new_credential(d, r).await? else {
                    return self.abandon(d, r).await;
                };
                if r.new_version.is_none() {
                    r.new_version = Some(d.store.put(&r.id, &cred).await?);
                }
                r.phase = Phase::Set;
                Ok(())
            }
            Action::Test => {
                let Some(cred) = self.new_credential(d, r).await? else {
                    return self.abandon(d, r).await;
                };
                let mut last = None;
                for i in 0..self.settings.test_attempts.max(1) {
                    if i > 0 {
                        tokio::time::sleep(self.settings.test_delay * i as u32).await;
                    }
                    match d.kind.test(&cred).await {
                        Ok(()) => {
                            last = None;
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if let Some(e) = last {
                    // A test that keeps failing means the credential is bad, whatever the cause.
                    return Err(match e.kind {
                        ErrorKind::Throttled { .. } | ErrorKind::Transient => e,
                        _ => {
                            RotationError::new(ErrorKind::Unauthorized, format!("test failed: {}", e.message))
                        }
                    });
                }
                r.phase = Phase::Tested;
                Ok(())
            }
            Action::Finish => {
                let new = r
                    .new_version
                    .clone()
                    .ok_or_else(|| RotationError::permanent("finish without a new version"))?;
                d.store.promote(&new, r.old_version.as_deref()).await?;
                self.fresh
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&r.id);
                r.phase = Phase::Finished;
                r.due_at = now + to_chrono(d.config.grace);
                Ok(())
            }
            Action::Revoke => {
                if let Some(k) = &r.old_key_id {
                    d.kind.disable(k).await?;
                }
                if let Some(v) = &r.old_version {
                    d.store.retire(v).await?;
                }
                r.phase = Phase::Revoked;
                r.due_at = now + to_chrono(d.config.destroy_after);
                Ok(())
            }
            Action::Destroy => {
                if let Some(k) = &r.old_key_id {
                    d.kind.delete(k).await?;
                }
                if let Some(v) = &r.old_version {
                    d.store.destroy(v).await?;
                }
                r.phase = Phase::Done;
                Ok(())
            }
        }
    }

    /// The steps a rotation of `secret` would take now, reading only (`gatehouse rotate --dry-run`).
    pub async fn plan(&self, secret: &str) -> Result<Vec<String>, RotatorError> {
        let d = self
            .secrets
            .get(secret)
            .ok_or_else(|| RotatorError::UnknownSecret(secret.to_string()))?;
        let parse = d.parse();
        let current = d.store.current(&parse).await?;
        let keys = d.kind.list().await?;
        let (kind, store) = (d.kind.name(), d.store.name());
        let principal = d.kind.principal();
        let old = current.as_ref().map(|c| c.credential.key_id.clone());
        let mut out = vec![format!(
            "rotate {secret}: {kind} of {principal} in {store}; current version {}, key {}; {} key(s) exist",
            current.as_ref().map(|c| c.version.as_str()).unwrap_or("none"),
            old.as_deref().unwrap_or("none"),
            keys.len()
        )];
        if let Some(max) = d.kind.max_keys()
            && keys.len() >= max
        {
            let probe = Rotation::new(secret, "plan", self.now());
            let in_grace = self.keys_in_grace(&probe).await?;
            let victim = keys
                .iter()
                .filter(|k| Some(&k.id) != old.as_ref() && !in_grace.contains_key(&k.id))
                .min_by_key(|k| (k.active, k.created.clone()));
            out.push(match victim {
                Some(k) => format!("make room: delete non-current key {}", k.id),
                None => format!("make room: none yet: {}", no_room(&keys, &in_grace, self.now())),
            });
        }
        let mut steps = vec![format!("create: a new {kind} for {principal}")];
        let set = if d.store.stages() {
            "set: write the new version as AWSPENDING (ClientRequestToken = rotation id)".to_string()
        } else {
            format!("set: add a version to {store} (it becomes latest)")
        };
        let test = "test: use the new credential; on failure roll back (old stays current)".to_string();
        if d.store.stages() {
            steps.extend([
                set,
                test,
                "finish: move AWSCURRENT to the new version (old → AWSPREVIOUS)".into(),
            ]);
        } else {
            steps.extend([test, set, "finish: nothing left to move".into()]);
        }
        let g = humantime_like(d.config.grace);
        match &old {
            Some(k) => {
                steps.push(format!(
                    "after {g}: disable key {k}{}",
                    if store == "gcp_secret_manager" {
                        " and its version"
                    } else {
                        ""
                    }
                ));
                steps.push(format!(
                    "{} later: delete key {k}",
                    humantime_like(d.config.destroy_after)
                ));
            }
            None => steps.push("no old credential to revoke".into()),
        }
        out.extend(
            steps
                .into_iter()
                .enumerate()
                .map(|(i, s)| format!("  {}. {s}", i + 1)),
        );
        Ok(out)
    }
}

/// Why no key can make room: only the current key and keys in their grace period are left. While
/// a grace period runs, the step waits for its end (retryable); otherwise nothing can change.
fn no_room(
    keys: &[crate::credential::KeyInfo],
    in_grace: &BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> RotationError {
    match keys
        .iter()
        .filter_map(|k| in_grace.get(&k.id).map(|t| (&k.id, *t)))
        .min_by_key(|(_, t)| *t)
    {
        Some((key, until)) => RotationError::new(
            ErrorKind::Throttled {
                retry_after: Some(
                    (until - now)
                        .to_std()
                        .unwrap_or_default()
                        .max(Duration::from_secs(1)),
                ),
            },
            format!(
                "no room for a new key until {}: key {key} of the previous rotation is in its grace period",
                until.to_rfc3339()
            ),
        ),
        None => RotationError::permanent("every key is the current one: no room for a new key"),
    }
}

fn humantime_like(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Set,
    Test,
    Finish,
    Revoke,
    Destroy,
    Nothing,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Set => "set",
            Action::Test => "test",
            Action::Finish => "finish",
            Action::Revoke => "revoke",
            Action::Destroy => "destroy",
            Action::Nothing => "nothing",
        }
    }
}
