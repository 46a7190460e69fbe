//! The processor's decision and effect for one envelope:
//! dedupe → fold into the directory → policy → (skip if already converged) → read Looker → plan
//! → apply → ledger → commit. Only after `commit` may the queue message be acked.

use crate::cloud::{CloudTargets, Ctx};
use chrono::{DateTime, Utc};
use gatehouse_domain::cloud::{CloudError, CloudPlan, DesiredCloud};
use gatehouse_domain::envelope::{Envelope, IdentityEvent};
use gatehouse_domain::identity::{FoldOutcome, Identity};
use gatehouse_domain::looker::{Catalog, ErrorKind, LookerError, LookerOp, LookerUser, ReadNeeds, UserRef};
use gatehouse_domain::plan::{Plan, Step};
use gatehouse_domain::policy::{self, DesiredLooker, Policy, Presence};
use gatehouse_domain::ports::{
    BackendError, DeletionChange, LookerPort, OffboardingTimes, Outcome, QueueProducer, ScheduledDeletion,
    StateStore,
};
use gatehouse_domain::target::{CallOutcome, Order, Screen, SendAll, Target as _, TargetName};
use gatehouse_platform::config::Mode as ConfigMode;
use gatehouse_platform::events;
use gatehouse_targets::lease::Lease;
use gatehouse_targets::looker::LookerTarget;
use gatehouse_targets::vouched::Vouched;
use gatehouse_targets::{self as targets, Applied, ApplyError, Mode, Registered, Run};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub use gatehouse_targets::RetryPolicy;

/// What handling one envelope came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Already processed (a redelivery or replay): nothing done, no call made.
    Duplicate,
    /// An event type Gatehouse does not act on.
    Ignored,
    /// The desired state is the one already converged: no call made.
    NoOp { stale: bool },
    /// Calls were made (possibly zero writes, if Looker was already right).
    Applied { writes: usize },
    /// No Looker configured: the plan was recorded in the ledger, nothing sent.
    DryRun { planned: usize },
    /// Published to the rotation queue for the rotator.
    RotationRequested,
    /// Held by the mass-change breaker until a person releases or discards it (nothing applied,
    /// the envelope kept in the state store).
    Held,
}

/// Who hands the engine an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The queue: the mass-change breaker may hold it.
    Queue,
    /// `gatehouse safety release`: a held envelope a person let through.
    Released,
    /// An operator's own command (`gatehouse offboard`): never held, and Looker and the clouds
    /// are read even when the desired state is the one last converged.
    Operator,
}

pub use crate::error::ProcessError;

impl From<ApplyError<LookerError>> for ProcessError {
    fn from(e: ApplyError<LookerError>) -> Self {
        match e {
            // Looker answered 409 to creating the user: another handler created it meanwhile.
            ApplyError::Target {
                error,
                order: Order::Create,
            } if error.kind == ErrorKind::Conflict => ProcessError::CreateRaced(error),
            ApplyError::Target { error, .. } => ProcessError::Looker(error),
            ApplyError::Ledger(e) => ProcessError::Backend(e),
            ApplyError::NotReady(reason) => ProcessError::Backend(targets::not_ready_error(reason)),
            ApplyError::LeaseLost(e) => ProcessError::LeaseLost(e),
        }
    }
}

#[cfg(test)]
mod not_ready_tests {
    use super::*;

    /// A screen that is not ready makes the event transient: released and tried again, never
    /// dead-lettered at once nor acked without its revocations.
    #[test]
    fn a_screen_that_is_not_ready_is_a_transient_failure() {
        for e in [
            ProcessError::from(ApplyError::<LookerError>::NotReady("own user unknown".into())),
            ProcessError::from(ApplyError::<CloudError>::NotReady("own user unknown".into())),
        ] {
            assert!(!e.is_permanent(), "{e}");
            assert!(
                gatehouse_domain::error::chain(&e).contains("own user unknown"),
                "the reason reaches the log and the dead-letter reason: {e}"
            );
        }
    }
}

impl From<ApplyError<CloudError>> for ProcessError {
    fn from(e: ApplyError<CloudError>) -> Self {
        match e {
            ApplyError::Target { error, .. } => ProcessError::Cloud(error),
            ApplyError::Ledger(e) => ProcessError::Backend(e),
            ApplyError::NotReady(reason) => ProcessError::Backend(targets::not_ready_error(reason)),
            ApplyError::LeaseLost(e) => ProcessError::LeaseLost(e),
        }
    }
}

/// A plan together with what it was computed from (for `gatehouse plan`).
#[derive(Debug, Clone)]
pub struct PlanReport {
    pub identity: Identity,
    pub desired: DesiredLooker,
    pub plan: Plan,
    /// The AWS and GCP calls (empty when no cloud target is configured).
    pub cloud: CloudPlan,
    /// The calls of the registered targets (AWS IAM Identity Center, ...), screened.
    pub registered: Vec<gatehouse_targets::PlannedCall>,
    pub stale: bool,
}

pub struct Engine<S, L> {
    store: S,
    looker: LookerTarget<L>,
    policy: Arc<Policy>,
    /// Write retries of the apply loop, for every target.
    retry: RetryPolicy,
    cloud: Option<Arc<CloudTargets>>,
    /// Sees every step before it is sent (withholds none by default).
    screen: Arc<dyn Screen>,
    /// Targets registered beside Looker, AWS and GCP ([`Engine::with_target`]).
    registered: Vec<Arc<dyn Registered<S>>>,
    /// Each registered target's reconcile mode (`Apply`: enforce; `Report`), index for index.
    registered_modes: Vec<Mode>,
    subjects: SubjectLocks,
    /// Holder email (lowercase) → declared secrets they hold (rotated when they are offboarded).
    held_secrets: Arc<std::collections::HashMap<String, Vec<String>>>,
    /// How far an event's own time may be ahead of its receipt (`processor.max_clock_skew`).
    max_clock_skew: Duration,
    /// The mass-change circuit breaker (`[safety.breaker]`); off when `None`.
    breaker: Option<Arc<crate::breaker::Breaker>>,
    /// The rotation queue the rotator consumes (issue 12, item 4): rotation requests leave the
    /// processor only as envelopes published here, never as rows of a table the rotator reads.
    rotation_queue: Option<Arc<dyn RotationPublisher>>,
}

/// The producer side of the rotation queue, object-safe (any [`QueueProducer`]: the embedded
/// SQLite rotation queue, SQS, Pub/Sub). `publish` returns once the envelopes are durable.
pub trait RotationPublisher: Send + Sync {
    fn publish<'a>(
        &'a self,
        batch: &'a [Envelope],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BackendError>> + Send + 'a>>;
}

impl<Q: QueueProducer> RotationPublisher for Q {
    fn publish<'a>(
        &'a self,
        batch: &'a [Envelope],
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BackendError>> + Send + 'a>> {
        Box::pin(QueueProducer::publish(self, batch))
    }
}

/// The rotation request for `secret` when its holder `person` is offboarded by `env`: one per
/// secret and offboarding event (the id is keyed by the status stamp's envelope id, so
/// redeliveries and later events publish the same request again, which the rotator dedupes).
fn holder_offboarded(env: &Envelope, person: &str, stamp: &str, secret: &str) -> Envelope {
    Envelope {
        version: Envelope::VERSION,
        id: gatehouse_domain::envelope::EnvelopeId(format!("offboarding:{stamp}:{secret}")),
        source: env.source,
        subject: gatehouse_domain::envelope::Subject {
            key: person.to_string(),
            email: None,
            display_name: None,
        },
        occurred_at: env.occurred_at,
        received_at: env.received_at,
        event: IdentityEvent::RotationRequested {
            provider: "offboarding".into(),
            reason: "holder offboarded".into(),
            secret: Some(secret.to_string()),
        },
        profile: Default::default(),
        source_event_type: "holder_offboarded".into(),
        raw: serde_json::Value::Null,
        trace_parent: env.trace_parent.clone(),
    }
}

/// The ledger rule of issue 16's resolution alerts.
pub const RESOLUTION_RULE: &str = "identity.resolution";

/// How often one delivery is handled again after losing a commit race before it is released.
const COMMIT_ATTEMPTS: u32 = 8;

/// One async lock per subject being handled in this process; entries live only while held.
#[derive(Default)]
struct SubjectLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// Holds a subject's turn; the map entry goes when the last holder or waiter is done.
struct SubjectTurn<'a> {
    locks: &'a SubjectLocks,
    key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SubjectLocks {
    async fn lock(&self, key: &str) -> SubjectTurn<'_> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        SubjectTurn {
            locks: self,
            key: key.to_string(),
            guard: Some(guard),
        }
    }
}

impl Drop for SubjectTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.0.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it: nobody holds or waits for this subject any more.
        if map.get(&self.key).is_some_and(|l| Arc::strong_count(l) == 1) {
            map.remove(&self.key);
        }
    }
}

impl<S: StateStore, L: LookerPort> Engine<S, L> {
    pub fn new(store: S, looker: Option<L>, policy: Arc<Policy>, retry: RetryPolicy) -> Self {
        Engine {
            store,
            looker: LookerTarget::new(looker, retry.clone())
                .with_delivery_domains(policy.allowed_email_domains.clone())
                .with_sso(policy.looker_sso.clone())
                .with_login_times(policy.inactivity.is_some())
                .with_platform(policy.looker_platform()),
            policy,
            retry,
            cloud: None,
            screen: Arc::new(SendAll),
            registered: Vec::new(),
            registered_modes: Vec::new(),
            subjects: SubjectLocks::default(),
            held_secrets: Arc::default(),
            max_clock_skew: gatehouse_domain::envelope::DEFAULT_MAX_CLOCK_SKEW,
            breaker: None,
            rotation_queue: None,
        }
    }

    /// Publish rotation requests (`RotationRequested` envelopes, offboarded holders of declared
    /// secrets) to the rotation queue the rotator consumes. Without one, a request is logged and
    /// counted as unmatched: no rotator can be reached to act on it.
    pub fn with_rotation_queue(mut self, queue: Arc<dyn RotationPublisher>) -> Self {
        self.rotation_queue = Some(queue);
        self
    }

    /// Publish rotation requests durably before the envelope that caused them is committed
    /// (and so before its delivery is acked). A redelivery publishes them again under the same
    /// envelope ids; the rotator's inbox keeps one of each.
    async fn publish_rotations(&self, requests: &[Envelope]) -> Result<(), BackendError> {
        if requests.is_empty() {
            return Ok(());
        }
        match &self.rotation_queue {
            Some(q) => q.publish(requests).await,
            None => {
                for r in requests {
                    if let IdentityEvent::RotationRequested { provider, .. } = &r.event {
                        events::rotation_request_unmatched(provider);
                    }
                    tracing::warn!(envelope_id = %r.id, subject = %r.subject.key,
                        "no rotation queue is configured: the rotation request reaches no rotator");
                }
                Ok(())
            }
        }
    }

    /// Count mass changes and hold them past the configured limits (`[safety.breaker]`).
    pub fn with_breaker(mut self, breaker: crate::breaker::Breaker) -> Self {
        self.breaker = Some(Arc::new(breaker));
        self
    }

    /// Offboard fully whatever the policy says (`gatehouse offboard`): disable, and revoke
    /// every session and API key.
    pub fn with_full_offboarding(mut self) -> Self {
        let mut policy = (*self.policy).clone();
        policy.offboarding.disable = true;
        policy.offboarding.revoke_sessions = true;
        policy.offboarding.revoke_api_keys = true;
        self.policy = Arc::new(policy);
        self
    }

    /// How far an event's own time may run ahead of its receipt before it is clamped.
    pub fn with_max_clock_skew(mut self, skew: Duration) -> Self {
        self.max_clock_skew = skew;
        self
    }

    /// The envelope as it is folded: its claimed time bounded by its receipt (one place every
    /// source passes through). A clamp is logged and counted.
    fn bounded<'a>(&self, env: &'a Envelope) -> std::borrow::Cow<'a, Envelope> {
        let at = env.bounded_time(self.max_clock_skew);
        if at == env.occurred_at {
            return std::borrow::Cow::Borrowed(env);
        }
        events::event_time_clamped(env, self.max_clock_skew);
        let mut bounded = env.clone();
        bounded.occurred_at = at;
        std::borrow::Cow::Owned(bounded)
    }

    /// Add the cloud targets (AWS IAM, GCP IAM) to every plan.
    pub fn with_cloud(mut self, cloud: CloudTargets) -> Self {
        self.cloud = (!cloud.is_empty()).then(|| Arc::new(cloud));
        self
    }

    /// Add a target: every event reads, plans and applies it beside Looker, AWS and GCP, through
    /// the same loop (ledger, screen, retries). Reconcile converges it per person, enforcing.
    pub fn with_target(self, target: impl Registered<S> + 'static) -> Self {
        self.with_target_in(target, Mode::Apply)
    }

    /// [`Engine::with_target`] with the reconcile mode: `Mode::Report` ledgers what reconcile
    /// finds (`drift_reported`) and changes nothing; IdP events always apply.
    pub fn with_target_in(mut self, target: impl Registered<S> + 'static, reconcile: Mode) -> Self {
        self.registered.push(Arc::new(target));
        self.registered_modes.push(reconcile);
        self
    }

    /// Reconcile one person in every registered target, each in its reconcile mode: read, plan,
    /// apply or report through the one loop.
    pub async fn reconcile_registered(
        &self,
        ctx: &Ctx,
        identity: &Identity,
    ) -> Result<AppliedCounts, ProcessError> {
        let run = self.run(ctx);
        let now = gatehouse_domain::clock::now();
        let results = futures::future::join_all(
            self.registered
                .iter()
                .zip(&self.registered_modes)
                .map(|(t, mode)| t.converge(&self.policy, identity, now, *mode, &run)),
        )
        .await;
        let mut out = AppliedCounts::default();
        for r in results {
            let a = r?;
            out.writes += a.writes;
            out.reported += a.reported;
        }
        Ok(out)
    }

    /// Whether any target is registered beside Looker, AWS and GCP.
    pub fn has_registered(&self) -> bool {
        !self.registered.is_empty()
    }

    /// Show every step to `screen` before it is sent, in every target.
    pub fn with_screen(mut self, screen: Arc<dyn Screen>) -> Self {
        self.screen = screen;
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The retry policy of one call (reconcile's paged reads use it too).
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    pub fn looker(&self) -> Option<&L> {
        self.looker.client()
    }

    /// Looker as a target (the one loop applies its plans).
    pub fn looker_target(&self) -> &LookerTarget<L> {
        &self.looker
    }

    /// How the loop runs for one ledger context.
    fn run<'a>(&'a self, ctx: &'a Ctx) -> Run<'a, S> {
        Run {
            store: &self.store,
            ctx,
            retry: &self.retry,
            screen: &*self.screen,
        }
    }

    /// The steps of these plans the screen withholds, with the reasons (`gatehouse plan`).
    pub async fn withheld(
        &self,
        email: Option<&str>,
        looker_plan: Option<&Plan>,
        cloud_plan: &CloudPlan,
    ) -> Vec<targets::Withheld> {
        self.screen.prepare().await;
        if looker_plan.is_some_and(|p| !p.steps.is_empty()) {
            self.screen
                .prepare_revocations(gatehouse_domain::target::TargetName::LOOKER)
                .await;
        }
        let mut out = Vec::new();
        if let Some(p) = looker_plan {
            out.extend(targets::withheld(&self.looker, p, email, &*self.screen));
        }
        if let Some(c) = &self.cloud {
            if let (Some(t), Some(p)) = (&c.aws, &cloud_plan.aws) {
                out.extend(targets::withheld(t, p, email, &*self.screen));
            }
            if let Some(g) = &c.gcp {
                let p = crate::cloud::GcpPlan {
                    steps: cloud_plan.gcp.clone(),
                    notes: Vec::new(),
                };
                out.extend(targets::withheld(g, &p, email, &*self.screen));
            }
        }
        out
    }

    pub fn cloud(&self) -> Option<&CloudTargets> {
        self.cloud.as_deref()
    }

    fn desired_cloud(&self, identity: &Identity) -> DesiredCloud {
        match &self.cloud {
            Some(c) => c.evaluate(&self.policy, identity, gatehouse_domain::clock::now()),
            None => DesiredCloud { aws: None, gcp: None },
        }
    }

    /// Read the clouds (through the person's links; `persist`: store the links the reads
    /// resolved) and plan (nothing when no cloud target is configured).
    pub async fn compute_cloud_plan(
        &self,
        person: &Identity,
        desired: &DesiredCloud,
        persist: bool,
    ) -> Result<CloudPlan, ProcessError> {
        match &self.cloud {
            Some(c) if !desired.is_empty() => {
                let actual = c.read(desired, person, &self.store, persist).await?;
                Ok(c.plan(desired, &actual))
            }
            _ => Ok(CloudPlan::default()),
        }
    }

    /// Secrets to rotate when a holder is offboarded: email → secret names.
    pub fn with_secret_holders(mut self, holders: std::collections::HashMap<String, Vec<String>>) -> Self {
        self.held_secrets = Arc::new(holders);
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn is_dry_run(&self) -> bool {
        self.looker.client().is_none()
    }

    /// Compute the plan for an envelope without changing anything (reads Looker when configured).
    pub async fn plan(&self, env: &Envelope) -> Result<PlanReport, ProcessError> {
        let bounded = self.bounded(env);
        let env: &Envelope = &bounded;
        let mut identity = match self.store.load_subject(&env.subject.key).await? {
            Some(s) => s.identity,
            None => Identity::new(&env.subject.key),
        };
        let stale = identity.fold(env) == FoldOutcome::Stale;
        let desired = policy::evaluate(&self.policy, &identity);
        let desired_cloud = self.desired_cloud(&identity);
        let now = gatehouse_domain::clock::now();
        let registered = async {
            let calls = futures::future::join_all(
                self.registered
                    .iter()
                    .map(|t| t.plan_calls(&self.policy, &identity, now, &self.store, self.screen.as_ref())),
            )
            .await;
            let mut out = Vec::new();
            for c in calls {
                out.extend(c?);
            }
            Ok::<_, ProcessError>(out)
        };
        let (plan, cloud, registered) = futures::join!(
            self.compute_plan(&identity, &desired, false),
            self.compute_cloud_plan(&identity, &desired_cloud, false),
            registered
        );
        Ok(PlanReport {
            plan: plan?,
            cloud: cloud?,
            registered: registered?,
            identity,
            desired,
            stale,
        })
    }

    /// The Looker plan for one person's desired state (reads Looker when configured, through
    /// the person's link: issue 16). `persist`: store the links the read resolved (not in
    /// `gatehouse plan`, which changes nothing).
    pub async fn compute_plan(
        &self,
        person: &Identity,
        desired: &DesiredLooker,
        persist: bool,
    ) -> Result<Plan, ProcessError> {
        self.compute_plan_vouched(person, desired, persist, None).await
    }

    /// [`Self::compute_plan`], reading only what the converged state does not vouch for
    /// (issue 14, `targets::vouched`).
    async fn compute_plan_vouched(
        &self,
        person: &Identity,
        desired: &DesiredLooker,
        persist: bool,
        vouched: Option<&Vouched>,
    ) -> Result<Plan, ProcessError> {
        let link = targets::load_link(&self.looker, person, &self.store).await?;
        let actual = self
            .looker
            .read_vouched(desired, &link, vouched)
            .await
            .map_err(targets::ReadError::Target)?;
        let read = targets::linked_read(&self.looker, link, actual);
        if persist && self.looker.client().is_some() {
            read.persist(&self.store, TargetName::LOOKER).await?;
        }
        let mut plan = self.looker.diff(desired, &read.actual);
        // License reclamation (issue 15): the rule reconcile applies, so an event about a person
        // disabled for inactivity does not enable their user again.
        if let Some(catalog) = &read.actual.catalog {
            gatehouse_domain::inactivity::hold(
                self.policy.inactivity.as_ref(),
                &mut plan,
                person,
                desired.email.as_deref(),
                &read.actual.user,
                catalog,
                gatehouse_domain::clock::now(),
            );
        }
        Ok(plan)
    }

    /// Apply a Looker plan and the plans of the person's other accounts it carries (offboarding
    /// closes every one: issue 16).
    async fn apply_looker(&self, plan: &Plan, mode: Mode, run: &Run<'_, S>) -> Result<Applied, ProcessError> {
        let mut a = targets::apply(&self.looker, plan, mode, run).await?;
        for other in &plan.resolution.others {
            a = a + targets::apply(&self.looker, other, mode, run).await?;
        }
        Ok(a)
    }

    /// Issue 16's alerts for one person's Looker plan: a refusal to guess between several
    /// candidate users (WARN + ledger row), and an offboarding that found no account of a person
    /// linked before (WARN + counter + ledger row + the error that dead-letters the envelope).
    async fn resolution_alerts(&self, plan: &Plan, run: &Run<'_, S>) -> Result<(), ProcessError> {
        let looker = TargetName::LOOKER;
        let search = |email: &str| gatehouse_domain::looker::HttpCall {
            method: gatehouse_domain::looker::Method::Get,
            path: format!("/users/search?email={email}"),
            body: None,
        };
        let email = match &plan.user {
            UserRef::Email(e) => e.clone(),
            _ => String::new(),
        };
        if let Some(reason) = &plan.resolution.refused {
            tracing::warn!(target_name = %looker, subject = %run.ctx.subject, envelope_id = %run.ctx.envelope_id,
                %reason, "looker user not resolved; nothing changed");
            let row = targets::ledger_row(
                run.ctx,
                looker,
                RESOLUTION_RULE,
                search(&email),
                &CallOutcome::Withheld {
                    reason: reason.clone(),
                },
            );
            self.store.append_ledger(&[row]).await?;
        }
        if let Some(reason) = &plan.resolution.unresolved {
            tracing::warn!(target_name = %looker, subject = %run.ctx.subject, envelope_id = %run.ctx.envelope_id,
                %reason, "offboarding not resolved: dead-lettering the event for an operator");
            events::unresolved_offboarding(looker);
            let row = targets::ledger_row(
                run.ctx,
                looker,
                RESOLUTION_RULE,
                search(&email),
                &CallOutcome::Failed {
                    kind: ErrorKind::NotFound,
                    status: None,
                    detail: Some(format!("unresolved offboarding: {reason}")),
                },
            );
            self.store.append_ledger(&[row]).await?;
            return Err(ProcessError::UnresolvedOffboarding {
                target: looker,
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    /// Process one envelope. `Ok` means its effects and ledger rows are recorded and the message
    /// may be acked; `Err` means it must be retried (or dead-lettered).
    ///
    /// One subject is handled by one task of this process at a time. Another process (or an
    /// unordered queue racing a redelivery) can still handle the same subject at once: then the
    /// store refuses the later commit and the event is handled again from a fresh load, so no
    /// fact is lost and Looker ends as the merged identity wants.
    pub async fn handle(&self, env: &Envelope) -> Result<Handled, ProcessError> {
        self.handle_via(env, Via::Queue).await
    }

    /// [`Engine::handle`] for an envelope that did not come from the queue (see [`Via`]).
    pub async fn handle_via(&self, env: &Envelope, via: Via) -> Result<Handled, ProcessError> {
        self.handle_under(env, via, None).await
    }

    /// [`Engine::handle`] for a delivery of a queue whose lease can lapse (SQS, Pub/Sub): every
    /// write is fenced by `lease` (`gatehouse_targets::lease`), and once it may have lapsed
    /// nothing more is written: [`ProcessError::LeaseLost`].
    pub async fn handle_leased(&self, env: &Envelope, lease: &Lease) -> Result<Handled, ProcessError> {
        self.handle_under(env, Via::Queue, Some(lease)).await
    }

    async fn handle_under(
        &self,
        env: &Envelope,
        via: Via,
        lease: Option<&Lease>,
    ) -> Result<Handled, ProcessError> {
        let bounded = self.bounded(env);
        let env: &Envelope = &bounded;
        let _turn = self.subjects.lock(&env.subject.key).await;
        let mut attempt = 1;
        loop {
            // After a lost race Looker may hold the losing attempt's writes, made from a plan the
            // winner's state no longer wants: the converged shortcut would trust a stale Looker,
            // so every later attempt reads it.
            let after_race = attempt > 1 || via == Via::Operator;
            // Boxed: the whole decide-and-apply future (Looker, AWS and GCP reads and writes,
            // the store) nests deep enough that rustc's layout query of the worker's future
            // overflowed its depth limit in release builds of gatehouse-ingress/-processor. One
            // allocation per attempt cuts the nesting at the engine's boundary.
            match Box::pin(self.handle_once(env, after_race, via, lease)).await {
                Err(e) if e.is_race() && attempt < COMMIT_ATTEMPTS => {
                    events::subject_conflict(env, attempt);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn handle_once(
        &self,
        env: &Envelope,
        after_race: bool,
        via: Via,
        lease: Option<&Lease>,
    ) -> Result<Handled, ProcessError> {
        if self.store.is_processed(&env.id).await? {
            return Ok(Handled::Duplicate);
        }
        if let IdentityEvent::RotationRequested { provider, reason, .. } = &env.event {
            // Forwarded to the rotator through the rotation queue, then marked processed: the
            // delivery is acked only after the publish is durable.
            self.publish_rotations(std::slice::from_ref(env)).await?;
            self.store.commit(Outcome::processed_only(env.id.clone())).await?;
            events::rotation_requested(env, provider, reason);
            return Ok(Handled::RotationRequested);
        }
        let drift = matches!(env.event, IdentityEvent::CloudDrift { .. });
        if !env.event.is_actionable() {
            self.store.commit(Outcome::processed_only(env.id.clone())).await?;
            return Ok(Handled::Ignored);
        }
        if drift
            && let Some(cloud) = &self.cloud
            && let Some(state) = cloud.resolve_drift(&env.subject.key).await?
        {
            let writes = self.converge_drift(env, &state.identity, lease).await?;
            self.store.commit(Outcome::processed_only(env.id.clone())).await?;
            return Ok(Handled::Applied { writes });
        }
        let (mut identity, converged, base_version) = match self.store.load_subject(&env.subject.key).await? {
            Some(s) => (s.identity, s.converged, Some(s.version)),
            // Drift on an identity the directory does not know is not Gatehouse's to undo.
            None if drift => {
                self.store.commit(Outcome::processed_only(env.id.clone())).await?;
                return Ok(Handled::Ignored);
            }
            None => (Identity::new(&env.subject.key), None, None),
        };
        // What the policy wanted before this event, for the breaker to tell what it changes.
        let before =
            (via == Via::Queue && self.breaker.is_some()).then(|| policy::evaluate(&self.policy, &identity));
        // Issue 14: the identity as last converged, to tell what Looker holds without reading.
        let prior = (converged.is_some() && !drift && !after_race).then(|| identity.clone());
        let fold = identity.fold(env);
        // An offboarded holder's secrets are rotated: one request per secret and offboarding
        // event, published to the rotation queue (keyed by the status stamp, so redeliveries and
        // later events publish the same ids again, which the rotator's inbox keeps once).
        if let (true, Some(stamp), Some(email)) = (
            identity.status.is_offboarded(),
            &identity.status_stamp,
            identity.email(),
        ) {
            let requests: Vec<Envelope> = self
                .held_secrets
                .get(&email.to_lowercase())
                .into_iter()
                .flatten()
                .map(|secret| holder_offboarded(env, &identity.key, &stamp.id.0, secret))
                .collect();
            self.publish_rotations(&requests).await?;
        }
        let desired = policy::evaluate(&self.policy, &identity);
        let desired_cloud = self.desired_cloud(&identity);
        let now = gatehouse_domain::clock::now();
        let desired_registered: Vec<(&str, Option<serde_json::Value>)> = self
            .registered
            .iter()
            .map(|t| (t.name().as_str(), t.desired_json(&self.policy, &identity, now)))
            .collect();
        let fingerprint = fingerprint(&desired, &desired_cloud, &desired_registered);
        // Drift (or a lost race) means the actual state may have moved under us: read and
        // converge even if the desired state is the one last converged.
        let live = self.looker.client().is_some() || self.cloud.is_some() || !self.registered.is_empty();
        if !drift && !after_race && live && converged.as_deref() == Some(fingerprint.as_str()) {
            let offboarding = offboarding_times(env, &identity);
            self.store
                .commit(Outcome {
                    envelope_id: env.id.clone(),
                    identity: Some(identity),
                    converged,
                    deletion: DeletionChange::Keep,
                    base_version,
                    offboarding,
                })
                .await?;
            return Ok(Handled::NoOp {
                stale: fold == FoldOutcome::Stale,
            });
        }

        let vouched = prior.and_then(|old| {
            let d = policy::evaluate(&self.policy, &old);
            let registered: Vec<(&str, Option<serde_json::Value>)> = self
                .registered
                .iter()
                .map(|t| (t.name().as_str(), t.desired_json(&self.policy, &old, now)))
                .collect();
            let f = self::fingerprint(&d, &self.desired_cloud(&old), &registered);
            (converged.as_deref() == Some(f.as_str()))
                .then(|| Vouched::of(&d))
                .flatten()
        });
        // Looker and the clouds are read at once, then written at once.
        let plan_span = tracing::info_span!(
            "plan",
            looker_steps = tracing::field::Empty,
            cloud_steps = tracing::field::Empty,
        );
        // The screen learns what it needs (once in a while) beside the reads, not after them.
        let (plan, cloud_plan) = async {
            let (p, c, ()) = futures::join!(
                self.compute_plan_vouched(&identity, &desired, true, vouched.as_ref()),
                self.compute_cloud_plan(&identity, &desired_cloud, true),
                self.screen.prepare()
            );
            (p, c)
        }
        .instrument(plan_span.clone())
        .await;
        let (plan, cloud_plan) = (plan?, cloud_plan?);
        plan_span.record("looker_steps", plan.steps.len());
        plan_span.record("cloud_steps", cloud_plan.len());
        // The mass-change breaker decides before anything is written: a held envelope leaves
        // no trace but its held row (and ledger row), so a release handles it from scratch.
        if let (Some(breaker), Some(before)) = (&self.breaker, &before)
            && breaker
                .admit(
                    &self.store,
                    env,
                    before,
                    &desired,
                    &plan,
                    &cloud_plan,
                    self.policy.digest.as_str(),
                )
                .await?
        {
            return Ok(Handled::Held);
        }
        // Issue 17: the stored fingerprint vouches for what Looker and the clouds held at the
        // last commit, and the writes below make that untrue until this handler commits. Killed
        // (or failing) in between, it would leave the fingerprint vouching for a state its writes
        // changed, and a later event that undoes this one (events of a person may be handled in
        // any order) would find its desired state equal to it and trust it: Looker kept the
        // half-applied plan for good. So the fingerprint is forgotten before the first write, in
        // a compare-and-set that moves the version (a concurrent handler's commit from the older
        // load is refused); whoever handles the person next reads Looker.
        // (A registered target plans inside its own converge, so one counts as writing.)
        let writes_ahead = (self.looker.client().is_some() && !plan.is_empty())
            || (self.cloud.is_some() && !cloud_plan.is_empty())
            || !self.registered.is_empty();
        let base_version = match base_version {
            Some(v) if converged.is_some() && writes_ahead => {
                Some(self.store.forget_converged(&env.subject.key, v).await?)
            }
            other => other,
        };
        // The grace period runs from when Gatehouse offboarded the person, never from an old event time.
        let deletion = deletion_change(&desired, &identity, gatehouse_domain::clock::now());
        let ctx = Ctx {
            lease: lease.cloned(),
            ..ctx(env, desired.email.as_deref(), &self.policy)
        };
        let run = self.run(&ctx);
        let looker_part = async {
            let live = self.looker.client().is_some();
            let mode = if live { Mode::Apply } else { Mode::DryRun };
            let a = self.apply_looker(&plan, mode, &run).await?;
            Ok::<_, ProcessError>((live, if live { a.writes } else { a.planned }))
        };
        let cloud_part = async {
            let cloud = async {
                match &self.cloud {
                    Some(c) => c.apply(&run, &cloud_plan, None).await.map(|a| a.writes),
                    None => Ok(0),
                }
            };
            let registered = futures::future::join_all(
                self.registered
                    .iter()
                    .map(|t| t.converge(&self.policy, &identity, now, Mode::Apply, &run)),
            );
            let (c, r) = futures::join!(cloud, registered);
            let mut writes = c?;
            for a in r {
                writes += a?.writes;
            }
            Ok::<_, ProcessError>(writes)
        };
        let apply_span = tracing::info_span!(
            "apply",
            dry_run = self.looker.client().is_none(),
            writes = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let (l, c) = async { futures::join!(looker_part, cloud_part) }
            .instrument(apply_span.clone())
            .await;
        if l.is_err() || c.is_err() {
            apply_span.record("otel.status_code", "ERROR");
        }
        let ((looker_live, n), cloud_writes) = (l?, c?);
        apply_span.record("writes", n + cloud_writes);
        for note in &cloud_plan.notes {
            tracing::info!(envelope_id = %env.id, subject = %env.subject.key, note = %note, "plan note");
        }
        let result = if looker_live || self.cloud.is_some() || !self.registered.is_empty() {
            Handled::Applied {
                writes: if looker_live { n } else { 0 } + cloud_writes,
            }
        } else {
            Handled::DryRun { planned: n }
        };
        for note in &plan.notes {
            tracing::info!(envelope_id = %env.id, subject = %env.subject.key, note = %note, "plan note");
        }
        for d in &plan.resolution.duplicates {
            tracing::warn!(envelope_id = %env.id, subject = %env.subject.key, duplicate = %d, "duplicate looker user");
        }
        // After every target had its turn (an unresolved Looker offboarding must not stop the
        // clouds'), and before the commit: the envelope is dead-lettered, not marked done.
        if looker_live {
            self.resolution_alerts(&plan, &run).await?;
        }
        // Looker (Google Cloud core): the person's account does not exist until they first
        // sign in. Nothing is written in Looker and nothing fails; the fingerprint is not kept,
        // so the first-login run (`looker_core`) or the person's next event converges them.
        let pending = looker_live && self.pending_first_login(&desired, &plan, &identity);
        let offboarding = offboarding_times(env, &identity);
        self.store
            .commit(Outcome {
                envelope_id: env.id.clone(),
                identity: Some(identity),
                converged: live.then_some(fingerprint).filter(|_| !pending),
                deletion,
                base_version,
                offboarding,
            })
            .await?;
        Ok(result)
    }

    /// Looker (Google Cloud core): converge a person whose Looker user `user_id` just appeared
    /// (their first login): read them in Looker (the read links the user to them), plan their
    /// groups, roles and attributes, and apply through the one loop (screen, retries, one ledger
    /// row per call; envelope `looker-core:first-login:{user_id}`, actor `scheduler`). Applied
    /// like the onboarding event it completes, whatever the reconcile mode. Returns the writes.
    pub async fn converge_first_login(
        &self,
        identity: &Identity,
        user_id: &str,
    ) -> Result<usize, ProcessError> {
        if self.looker.client().is_none() {
            return Ok(0);
        }
        let desired = policy::evaluate(&self.policy, identity);
        let plan = self.compute_plan(identity, &desired, true).await?;
        let ctx = Ctx {
            envelope_id: format!("looker-core:first-login:{user_id}"),
            subject: identity.key.clone(),
            event: "looker_core_first_login".into(),
            email: desired.email.clone(),
            actor: gatehouse_domain::actor::SCHEDULER.into(),
            policy_digest: Some(self.policy.digest.to_string()),
            lease: None,
        };
        let run = self.run(&ctx);
        self.screen.prepare().await;
        let a = self.apply_looker(&plan, Mode::Apply, &run).await?;
        for note in &plan.notes {
            tracing::info!(subject = %identity.key, user_id, note = %note, "plan note");
        }
        self.resolution_alerts(&plan, &run).await?;
        Ok(a.writes)
    }

    /// Whether `plan` leaves the person pending their first Looker (Google Cloud core) login:
    /// logged at debug and counted (`gatehouse_looker_core_pending_first_login_total`).
    fn pending_first_login(&self, desired: &DesiredLooker, plan: &Plan, identity: &Identity) -> bool {
        let pending =
            gatehouse_domain::plan::is_pending_first_login(desired, plan, self.policy.looker_platform());
        if pending {
            events::looker_core_pending_first_login(
                &identity.key,
                desired.email.as_deref().unwrap_or_default(),
            );
        }
        pending
    }

    /// The Looker catalog (with retries). Only when Looker is configured.
    pub async fn catalog(&self) -> Result<Catalog, ProcessError> {
        Ok(self.looker.catalog().await?)
    }

    /// One Looker user search (with retries). `None` without Looker.
    pub async fn find_user(
        &self,
        email: &str,
        needs: &ReadNeeds,
    ) -> Result<Option<LookerUser>, ProcessError> {
        Ok(self.looker.find_user(email, needs).await?)
    }

    /// Reconcile's read of one person in Looker (issue 16): their linked users first, else the
    /// users with their email (any case). The links found are stored (an existing install's
    /// links are backfilled by its next reconcile). Returns the person's user (`None`: none, or
    /// several candidates and no link: not guessed) and the other users that look like theirs
    /// (reported as duplicates).
    pub async fn resolve_looker(
        &self,
        identity: &Identity,
        email: Option<&str>,
        needs: &ReadNeeds,
    ) -> Result<(Option<LookerUser>, Vec<LookerUser>), ProcessError> {
        let looker = TargetName::LOOKER.as_str();
        let person = identity.key.as_str();
        let link = self.looker_link(identity).await?;
        let (found, _gone) = self.looker.resolve(email, &link, needs, false).await?;
        let linked = found.iter().any(|(u, _)| link.accounts.contains(&u.id));
        let mut users = found.into_iter().map(|(u, _)| u);
        let Some(first) = users.next() else {
            return Ok((None, Vec::new()));
        };
        let others: Vec<LookerUser> = users.collect();
        if !linked && !others.is_empty() {
            tracing::warn!(subject = %person, candidates = ?std::iter::once(&first).chain(&others).map(|u| &u.id).collect::<Vec<_>>(),
                "several looker users could be this person and none is linked; not linked, not changed");
            return Ok((None, std::iter::once(first).chain(others).collect()));
        }
        if !link.accounts.contains(&first.id) {
            self.store
                .link_accounts(looker, person, std::slice::from_ref(&first.id))
                .await?;
        }
        Ok((Some(first), others))
    }

    /// The person's Looker link as the state store holds it (issue 16).
    async fn looker_link(&self, identity: &Identity) -> Result<gatehouse_domain::target::Link, ProcessError> {
        let accounts = self
            .store
            .account_links(TargetName::LOOKER.as_str(), &identity.key)
            .await?;
        Ok(gatehouse_domain::target::Link {
            person: identity.key.clone(),
            accounts,
            previous_emails: identity.previous_emails.clone(),
            profile: targets::profile_of(identity),
        })
    }

    /// Apply one person's reconcile plan: targets in `enforce` mode are written, the others get
    /// `drift_reported` ledger rows and a metric.
    pub async fn apply_reconcile(
        &self,
        ctx: &Ctx,
        looker_plan: Option<&Plan>,
        cloud_plan: &CloudPlan,
    ) -> Result<AppliedCounts, ProcessError> {
        let modes = self.cloud.as_ref().map(|c| c.modes).unwrap_or_default();
        let run = self.run(ctx);
        let looker_part = async {
            let Some(plan) = looker_plan else {
                return Ok::<_, ProcessError>(Applied::default());
            };
            let mode = match self.looker.client() {
                Some(_) if modes.looker == ConfigMode::Enforce => Mode::Apply,
                _ => Mode::Report,
            };
            self.apply_looker(plan, mode, &run).await
        };
        let cloud_part = async {
            match &self.cloud {
                Some(c) => c.apply(&run, cloud_plan, Some(modes)).await,
                None => Ok(Applied::default()),
            }
        };
        let (l, c) = futures::join!(looker_part, cloud_part);
        let a = l? + c?;
        Ok(AppliedCounts {
            writes: a.writes,
            reported: a.reported,
        })
    }

    /// Act on an orphan account (issue 15): with `disable`, its plan (a Looker `PATCH` disabling
    /// the user; an IAM user's or GCP member's offboarding steps) goes through the one apply loop
    /// in its target's mode, so the safety screen and the ledger apply as to any reconcile plan;
    /// otherwise it is only reported (`drift_reported` ledger rows). A disable that would write
    /// counts as an offboarding in the mass-change breaker (`[safety.breaker]`, source
    /// `reconcile`): past its limits it is held and only reported, so a bad directory read cannot
    /// mass-disable.
    pub async fn apply_orphan(
        &self,
        ctx: &Ctx,
        plan: &crate::reconcile_model::OrphanPlan,
        disable: bool,
    ) -> Result<AppliedCounts, ProcessError> {
        use crate::reconcile_model::OrphanPlan;
        let modes = self.cloud.as_ref().map(|c| c.modes).unwrap_or_default();
        let cloud = self.cloud.as_deref();
        let enforce = match plan {
            OrphanPlan::Looker(_) => self.looker.client().is_some() && modes.looker == ConfigMode::Enforce,
            OrphanPlan::Aws(_) => cloud.is_some_and(|c| c.aws.is_some()) && modes.aws == ConfigMode::Enforce,
            OrphanPlan::Gcp(_) => cloud.is_some_and(|c| c.gcp.is_some()) && modes.gcp == ConfigMode::Enforce,
        };
        let mut write = disable && enforce && !plan.is_empty();
        if write
            && let Some(breaker) = &self.breaker
            && breaker
                .admit_orphan(&self.store, ctx, self.policy.digest.as_str())
                .await?
        {
            write = false;
        }
        let mode = if write { Mode::Apply } else { Mode::Report };
        let run = self.run(ctx);
        let a = match (plan, cloud) {
            (OrphanPlan::Looker(p), _) => targets::apply(&self.looker, p, mode, &run).await?,
            (OrphanPlan::Aws(p), Some(CloudTargets { aws: Some(t), .. })) => {
                targets::apply(t, p, mode, &run).await?
            }
            (OrphanPlan::Gcp(p), Some(CloudTargets { gcp: Some(g), .. })) => {
                targets::apply(g, p, mode, &run).await?
            }
            _ => targets::Applied::default(),
        };
        Ok(AppliedCounts {
            writes: a.writes,
            reported: a.reported,
        })
    }

    /// Converge one person after a cloud drift event: read every target, plan, and apply to the
    /// targets in `enforce` mode; the others get `drift_reported` ledger rows.
    async fn converge_drift(
        &self,
        env: &Envelope,
        identity: &Identity,
        lease: Option<&Lease>,
    ) -> Result<usize, ProcessError> {
        if self.cloud.is_none() {
            return Ok(0);
        }
        let desired = policy::evaluate(&self.policy, identity);
        let desired_cloud = self.desired_cloud(identity);
        let (plan, cloud_plan) = futures::join!(
            self.compute_plan(identity, &desired, true),
            self.compute_cloud_plan(identity, &desired_cloud, true)
        );
        let (plan, cloud_plan) = (plan?, cloud_plan?);
        let ctx = Ctx {
            envelope_id: env.id.0.clone(),
            subject: identity.key.clone(),
            event: env.source_event_type.clone(),
            email: desired.email.clone(),
            actor: gatehouse_domain::actor::of_envelope(env),
            policy_digest: Some(self.policy.digest.to_string()),
            lease: lease.cloned(),
        };
        Ok(self.apply_reconcile(&ctx, Some(&plan), &cloud_plan).await?.writes)
    }

    /// Delete users whose offboarding grace period is over (policy `delete_after_days`): every
    /// Looker user of the person that is still disabled, found as offboarding finds them (their
    /// links first, then their email, SSO credential and previous emails; issue 16).
    pub async fn sweep_deletions(&self, now: DateTime<Utc>) -> Result<usize, ProcessError> {
        let due = self.store.due_deletions(now).await?;
        let mut done = 0;
        for d in due {
            let step = Step {
                op: LookerOp::DeleteUser,
                rule: policy::rules::OFFBOARD_DELETE.into(),
            };
            let ctx = Ctx {
                envelope_id: format!("scheduled-deletion:{}", d.subject),
                subject: d.subject.clone(),
                event: "scheduled_deletion".into(),
                email: Some(d.email.clone()),
                actor: gatehouse_domain::actor::SCHEDULER.into(),
                policy_digest: Some(self.policy.digest.to_string()),
                lease: None,
            };
            let run = self.run(&ctx);
            let plan = |user| Plan {
                user,
                steps: vec![step.clone()],
                notes: Vec::new(),
                resolution: Default::default(),
            };
            match self.looker.client() {
                None => {
                    targets::apply(
                        &self.looker,
                        &plan(UserRef::Email(d.email.clone())),
                        Mode::DryRun,
                        &run,
                    )
                    .await?;
                }
                Some(_) => {
                    // Issue 16: every account of the person, through their links first (a
                    // renamed person's old user too), then as offboarding resolves them.
                    let identity = match self.store.load_subject(&d.subject).await? {
                        Some(s) => s.identity,
                        None => Identity::new(d.subject.clone()),
                    };
                    let link = self.looker_link(&identity).await?;
                    let (found, _gone) = self
                        .looker
                        .resolve(Some(&d.email), &link, &ReadNeeds::default(), true)
                        .await?;
                    // Only users still disabled are deleted: a reactivated one is kept.
                    for (u, _how) in found {
                        if u.is_disabled {
                            tracing::info!(subject = %d.subject, user_id = %u.id,
                                "deleting the offboarded person's looker user");
                            self.hand_over_and_delete(&u.id, &run).await?;
                        } else {
                            tracing::info!(subject = %d.subject, user_id = %u.id,
                                "the person's looker user is enabled again; not deleted");
                        }
                    }
                }
            }
            self.store.finish_deletion(&d.subject).await?;
            done += 1;
        }
        Ok(done)
    }
}

impl<S: StateStore, L: LookerPort> Engine<S, L> {
    /// Issue 19, deleting without destroying: read what the user owns (nothing with
    /// `handover = "none"`), hand it over (moves and reassignments, `Order::Change`), then
    /// `DELETE /users/{id}` (`Order::Last`, sent only after every hand-over step succeeded), all
    /// through the one apply loop. Without a configured hand-over, a user who owns content is
    /// not deleted: one `withheld` ledger row and a warning.
    async fn hand_over_and_delete(&self, user_id: &str, run: &Run<'_, S>) -> Result<(), ProcessError> {
        use gatehouse_domain::handover::{self, ContentNeeds, Deletion, Handover};
        let configured = self.policy.offboarding.handover.as_ref();
        let content = match configured {
            Some(Handover::Nothing) => None,
            _ => self.looker.content(user_id, ContentNeeds::Everything).await?,
        };
        match handover::deletion(user_id, configured, content.as_ref()) {
            Deletion::Apply(plan) => {
                targets::apply(&self.looker, &plan, Mode::Apply, run).await?;
            }
            Deletion::Withhold { reason } => {
                let call = LookerOp::DeleteUser.http(&UserRef::Id(user_id.to_string()));
                tracing::warn!(subject = %run.ctx.subject, user_id, %reason,
                    "scheduled looker deletion withheld: set offboarding.handover in the policy");
                events::step_withheld(TargetName::LOOKER);
                let row = targets::ledger_row(
                    run.ctx,
                    TargetName::LOOKER,
                    policy::rules::OFFBOARD_DELETE,
                    call,
                    &gatehouse_domain::target::CallOutcome::Withheld { reason },
                );
                self.store.append_ledger(&[row]).await?;
            }
        }
        Ok(())
    }
}

/// Writes made and changes only reported by one reconcile of one person.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppliedCounts {
    pub writes: usize,
    pub reported: usize,
}

/// The ledger context of an envelope's calls.
fn ctx(env: &Envelope, email: Option<&str>, policy: &Policy) -> Ctx {
    Ctx {
        envelope_id: env.id.0.clone(),
        subject: env.subject.key.clone(),
        event: env.source_event_type.clone(),
        email: email.map(str::to_string),
        actor: gatehouse_domain::actor::of_envelope(env),
        policy_digest: Some(policy.digest.to_string()),
        lease: None,
    }
}

/// The times of an offboarding envelope (a deactivation, suspension or deletion, the IdP's or
/// `gatehouse offboard`'s) that leaves the person offboarded, for the deprovisioning SLA report
/// (issue 15). An offboarding event made stale by a later reactivation offboards nobody: none.
fn offboarding_times(env: &Envelope, identity: &Identity) -> Option<OffboardingTimes> {
    let offboarding = matches!(
        env.event,
        IdentityEvent::UserDeactivated | IdentityEvent::UserSuspended | IdentityEvent::UserDeleted
    );
    (offboarding && identity.status.is_offboarded()).then(|| OffboardingTimes {
        envelope_id: env.id.0.clone(),
        person: env.subject.key.clone(),
        email: identity
            .email()
            .map(str::to_string)
            .or_else(|| env.subject.email.clone()),
        source: env.source.as_str().to_string(),
        event: env.event.kind().to_string(),
        occurred_at: env.occurred_at,
        received_at: env.received_at,
        finished_at: gatehouse_domain::clock::now(),
    })
}

/// The converged fingerprint: Looker's alone when no other target applies (unchanged from before
/// cloud targets), else Looker's and the clouds' (unchanged from before registered targets), else
/// every target's.
fn fingerprint(
    desired: &DesiredLooker,
    cloud: &DesiredCloud,
    registered: &[(&str, Option<serde_json::Value>)],
) -> String {
    if cloud.is_empty() && registered.is_empty() {
        return desired.fingerprint();
    }
    use sha2::{Digest, Sha256};
    let json = if registered.is_empty() {
        serde_json::to_vec(&(desired, cloud))
    } else {
        serde_json::to_vec(&(desired, cloud, registered))
    }
    .expect("desired state serializes");
    Sha256::digest(json).iter().map(|b| format!("{b:02x}")).collect()
}

fn deletion_change(desired: &DesiredLooker, identity: &Identity, at: DateTime<Utc>) -> DeletionChange {
    match (&desired.presence, &desired.email) {
        (
            Presence::Offboarded {
                delete_after_days: Some(days),
                ..
            },
            Some(email),
        ) => DeletionChange::Schedule(ScheduledDeletion {
            subject: identity.key.clone(),
            email: email.clone(),
            due_at: at + chrono::Duration::days(i64::from(*days)),
        }),
        (Presence::Active { .. }, _) => DeletionChange::Cancel,
        _ => DeletionChange::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_domain::policy::Offboarding;

    fn desired(presence: Presence) -> DesiredLooker {
        DesiredLooker {
            email: Some("a@b.c".into()),
            first_name: None,
            last_name: None,
            presence,
            groups: Default::default(),
            roles: Default::default(),
            attributes: Default::default(),
            managed_groups: Default::default(),
            managed_roles: Default::default(),
            managed_attributes: Default::default(),
        }
    }

    #[test]
    fn offboarding_schedules_deletion_and_reactivation_cancels_it() {
        let now = gatehouse_domain::clock::now();
        let o = Offboarding {
            delete_after_days: Some(30),
            ..Offboarding::default()
        };
        let off = Presence::Offboarded {
            disable: o.disable,
            revoke_sessions: o.revoke_sessions,
            revoke_api_keys: o.revoke_api_keys,
            delete_after_days: o.delete_after_days,
        };
        match deletion_change(&desired(off), &Identity::new("k"), now) {
            DeletionChange::Schedule(d) => assert_eq!(d.due_at, now + chrono::Duration::days(30)),
            other => panic!("{other:?}"),
        }
        let never = Presence::Offboarded {
            disable: true,
            revoke_sessions: true,
            revoke_api_keys: true,
            delete_after_days: None,
        };
        assert_eq!(
            deletion_change(&desired(never), &Identity::new("k"), now),
            DeletionChange::Keep
        );
        assert_eq!(
            deletion_change(
                &desired(Presence::Active { create: true }),
                &Identity::new("k"),
                now
            ),
            DeletionChange::Cancel
        );
    }
}
