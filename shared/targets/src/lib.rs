//! The targets (Looker, AWS IAM, GCP IAM, AWS IAM Identity Center: each implements [`Target`]) and the ONE loop that
//! applies, reports or dry-runs a plan for any of them: [`apply`].
//!
//! The loop, for every target alike:
//! - `report` mode / dry run: one ledger row per step (`drift_reported` + a metric / `dry_run`),
//!   nothing sent;
//! - every step is shown to the [`Screen`] first; a withheld step is never sent and gets a
//!   `withheld: REASON` row and a warning;
//! - steps go out in their [`Order`]: the `Create` step first (its answer names the account the
//!   others act on), then every `Change` at once, then the `Last` ones;
//! - one write per step (or per batch, [`Target::batch_key`]), one ledger row per step per
//!   attempt, so ledger rows are exactly the write calls made;
//! - throttled and transient failures back off (a `Retry-After` is honoured), a `Conflict` is
//!   tried again at once as often as the target says, a `NotFound` on a revocation is done;
//! - before every write (every attempt), the queue lease the work runs under, if any
//!   ([`Ctx::lease`]), is checked ([`lease::Lease::check`], no I/O): a lease that may have
//!   lapsed stops the plan with [`ApplyError::LeaseLost`], so two processors never both write
//!   for one person.

pub mod aws_iam;
pub mod client;
pub mod gcp_iam;
pub mod identity_center;
pub mod lease;
pub mod looker;
pub mod safety;
pub mod vouched;

use backon::BackoffBuilder;
use chrono::Utc;
use futures::future::join_all;
use gatehouse_domain::error::Classified;
use gatehouse_domain::looker::{ErrorKind, HttpCall};
use gatehouse_domain::ports::{BackendError, LedgerEntry, StateStore};
use gatehouse_domain::target::{
    CallOutcome, Failure, Link, Order, Planned, Screen, Screened, SendError, Sent, Target, TargetName,
};
use std::future::Future;
use std::time::Duration;

/// Retry policy for one call within one delivery: the one policy (`gatehouse_platform::retry`).
pub use gatehouse_platform::retry::RetryPolicy;

/// A read with retries: throttled and transient failures (and whatever `also` accepts) back
/// off, at least as long as a `Retry-After` asks; the last failure is returned.
pub async fn retry_read<T, E, F, Fut>(policy: &RetryPolicy, also: impl Fn(&E) -> bool, f: F) -> Result<T, E>
where
    E: Failure,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    policy.call_when("read", also, f).await
}

/// What a call belongs to, for the ledger.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub envelope_id: String,
    pub subject: String,
    pub event: String,
    /// The person's email, when known (what a [`Screen`] matches protected people by).
    pub email: Option<String>,
    /// Who caused these calls (see `gatehouse_domain::actor`), recorded on every ledger row.
    pub actor: String,
    /// The digest of the policy the plan was made with, recorded on every ledger row.
    pub policy_digest: Option<String>,
    /// The queue lease the calls run under (an event from SQS or Pub/Sub): every write is
    /// fenced by it ([`lease::Lease::check`]). `None`: nothing can take the work away (the
    /// embedded queue, reconcile, an operator's command).
    pub lease: Option<lease::Lease>,
}

/// What the loop does with a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send it.
    Apply,
    /// Ledger every step as `drift_reported` (+ metric); send nothing.
    Report,
    /// Ledger every step as `dry_run`; send nothing (no client configured).
    DryRun,
}

/// Where the loop ledgers, how it retries and who screens the steps.
pub struct Run<'a, S> {
    pub store: &'a S,
    pub ctx: &'a Ctx,
    pub retry: &'a RetryPolicy,
    pub screen: &'a dyn Screen,
}

/// What one plan came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Steps whose write took effect (a revocation that found nothing is not counted).
    pub writes: usize,
    /// Steps ledgered as `drift_reported`.
    pub reported: usize,
    /// Steps ledgered as `dry_run`.
    pub planned: usize,
    /// Steps a screen withheld.
    pub withheld: usize,
}

impl std::ops::Add for Applied {
    type Output = Applied;
    fn add(self, o: Applied) -> Applied {
        Applied {
            writes: self.writes + o.writes,
            reported: self.reported + o.reported,
            planned: self.planned + o.planned,
            withheld: self.withheld + o.withheld,
        }
    }
}

/// The loop failed: a step failed for good (`order` says which phase), or the ledger did.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError<E: std::error::Error + 'static> {
    #[error("{error}")]
    Target { error: E, order: Order },
    #[error(transparent)]
    Ledger(BackendError),
    /// The screen cannot judge a step yet ([`Screen::not_ready`]): nothing was sent; try again.
    #[error("the safety screen cannot judge a step yet: {0}")]
    NotReady(String),
    /// The queue lease the work runs under may have lapsed ([`Ctx::lease`]): nothing more was
    /// sent; the delivery is let go, not retried here.
    #[error(transparent)]
    LeaseLost(lease::LeaseLost),
}

/// One ledger row: what was (or would be) called, on which target, and how it went.
pub fn ledger_row(
    ctx: &Ctx,
    target: TargetName,
    rule: &str,
    call: HttpCall,
    outcome: &CallOutcome,
) -> LedgerEntry {
    LedgerEntry {
        at: gatehouse_domain::clock::now(),
        envelope_id: ctx.envelope_id.clone(),
        subject: ctx.subject.clone(),
        event: ctx.event.clone(),
        rule: rule.to_string(),
        target: target.as_str().to_string(),
        call,
        status: outcome.ledger_status(),
        policy_digest: ctx.policy_digest.clone(),
        actor: Some(ctx.actor.clone()),
    }
}

/// A read failed: the target's read or the state store's link lookup.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E: std::error::Error + 'static> {
    #[error("{0}")]
    Target(E),
    #[error(transparent)]
    Links(BackendError),
}

/// What a linked read found: the actual state, the person's link as it was, and the accounts the
/// read resolved that the link does not hold yet.
#[derive(Debug)]
pub struct LinkedRead<A> {
    pub actual: A,
    pub link: Link,
    pub new_links: Vec<String>,
}

impl<A> LinkedRead<A> {
    /// Store the new links (issue 16): the next read finds the person by them.
    pub async fn persist<S: StateStore>(&self, store: &S, target: TargetName) -> Result<(), BackendError> {
        if self.new_links.is_empty() {
            return Ok(());
        }
        tracing::info!(target_name = %target, subject = %self.link.person, accounts = ?self.new_links,
            "person linked to accounts");
        store
            .link_accounts(target.as_str(), &self.link.person, &self.new_links)
            .await
    }
}

/// Read one person in one target through their durable link (issue 16): the link is loaded from
/// the store and handed to [`Target::read`]; what the read resolved beyond it is returned to be
/// persisted (not stored here, so `gatehouse plan` changes nothing).
pub async fn read_linked<T: Target, S: StateStore>(
    target: &T,
    desired: &T::Desired,
    person: &gatehouse_domain::identity::Identity,
    store: &S,
) -> Result<LinkedRead<T::Actual>, ReadError<T::Error>> {
    let link = load_link(target, person, store).await?;
    let actual = target.read(desired, &link).await.map_err(ReadError::Target)?;
    Ok(linked_read(target, link, actual))
}

/// The person's link in `target`, as the state store holds it.
pub async fn load_link<T: Target, S: StateStore>(
    target: &T,
    person: &gatehouse_domain::identity::Identity,
    store: &S,
) -> Result<Link, ReadError<T::Error>> {
    let accounts = store
        .account_links(target.name().as_str(), &person.key)
        .await
        .map_err(ReadError::Links)?;
    Ok(Link {
        person: person.key.clone(),
        accounts,
        previous_emails: person.previous_emails.clone(),
        profile: profile_of(person),
    })
}

/// The person's current IdP profile values, for [`Link::profile`].
pub fn profile_of(
    person: &gatehouse_domain::identity::Identity,
) -> std::collections::BTreeMap<String, String> {
    person
        .profile
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

/// What a read through `link` found, with the accounts it resolved that `link` lacks.
pub fn linked_read<T: Target>(target: &T, link: Link, actual: T::Actual) -> LinkedRead<T::Actual> {
    let new_links = target
        .linked(&actual)
        .into_iter()
        .filter(|a| !link.accounts.contains(a))
        .fold(Vec::new(), |mut v, a| {
            if !v.contains(&a) {
                v.push(a);
            }
            v
        });
    LinkedRead {
        actual,
        link,
        new_links,
    }
}

/// Apply (or report, or dry-run) one target's plan for one person. See the module docs.
pub async fn apply<T: Target, S: StateStore>(
    target: &T,
    plan: &T::Plan,
    mode: Mode,
    run: &Run<'_, S>,
) -> Result<Applied, ApplyError<T::Error>> {
    let name = target.name();
    let steps = target.steps(plan);
    let mut out = Applied::default();
    if steps.is_empty() {
        return Ok(out);
    }
    let mut account = target.account(plan);
    if mode != Mode::Apply {
        let outcome = match mode {
            Mode::Report => CallOutcome::Reported,
            _ => CallOutcome::DryRun,
        };
        let rows: Vec<LedgerEntry> = steps
            .iter()
            .map(|s| ledger_row(run.ctx, name, s.rule, target.call(&account, s.op), &outcome))
            .collect();
        run.store.append_ledger(&rows).await.map_err(ApplyError::Ledger)?;
        if mode == Mode::Report {
            gatehouse_platform::events::drift_reported(name, rows.len() as u64);
            out.reported = rows.len();
        } else {
            out.planned = rows.len();
        }
        return Ok(out);
    }

    run.screen.prepare().await;
    if steps.iter().any(|s| target.revokes(s.op)) {
        run.screen.prepare_revocations(name).await;
    }
    if mode == Mode::Apply
        && let Some(reason) = steps
            .iter()
            .find_map(|s| not_ready(target, &account, s, run.ctx.email.as_deref(), run.screen))
    {
        gatehouse_platform::events::step_deferred(name, &run.ctx.subject, &run.ctx.envelope_id, &reason);
        return Err(ApplyError::NotReady(reason));
    }
    let mut sendable = Vec::with_capacity(steps.len());
    let mut withheld = Vec::new();
    for s in steps {
        let (call, verdict) = screen_step(target, &account, &s, run.ctx.email.as_deref(), run.screen);
        match verdict {
            None => sendable.push(s),
            Some(reason) => {
                tracing::warn!(target_name = %name, subject = %run.ctx.subject, envelope_id = %run.ctx.envelope_id,
                    rule = s.rule, method = %call.method, path = %call.path, %reason, "step withheld; not sent");
                gatehouse_platform::events::step_withheld(name);
                withheld.push(ledger_row(
                    run.ctx,
                    name,
                    s.rule,
                    call,
                    &CallOutcome::Withheld { reason },
                ));
            }
        }
    }
    if !withheld.is_empty() {
        run.store
            .append_ledger(&withheld)
            .await
            .map_err(ApplyError::Ledger)?;
        out.withheld = withheld.len();
    }

    for order in Order::ALL {
        let batches = batches(target, sendable.iter().filter(|s| s.order == order));
        if batches.is_empty() {
            continue;
        }
        let fail = |e: BatchError<T::Error>| match e {
            BatchError::Target(error) => ApplyError::Target { error, order },
            BatchError::Ledger(e) => ApplyError::Ledger(e),
            BatchError::LeaseLost(e) => ApplyError::LeaseLost(e),
        };
        if order == Order::Create {
            // One at a time: each may name the account the rest act on.
            for b in &batches {
                let done = send_batch(target, &account, b, run).await.map_err(fail)?;
                out.writes += done.writes;
                if let Some(a) = done.account {
                    // The new account is the person's at once (issue 16): a later event finds it
                    // by the link, whatever the person's email has become.
                    if let Some(key) = target.link_key(&a) {
                        run.store
                            .link_accounts(name.as_str(), &run.ctx.subject, &[key])
                            .await
                            .map_err(ApplyError::Ledger)?;
                    }
                    account = a;
                }
            }
            continue;
        }
        let results = join_all(batches.iter().map(|b| send_batch(target, &account, b, run))).await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(done) => out.writes += done.writes,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(fail(e));
        }
    }
    Ok(out)
}

/// [`ApplyError::NotReady`] as the transient backend failure the worker retries with backoff
/// (and dead-letters with the reason after `max_attempts`).
pub fn not_ready_error(reason: String) -> BackendError {
    BackendError::new("the safety screen cannot judge a step yet", reason)
}

/// The step as a screen sees it, handed to `judge`; returns the step's call and the verdict.
fn screened<T: Target, R>(
    target: &T,
    account: &T::Account,
    s: &Planned<'_, T::Op>,
    email: Option<&str>,
    judge: impl FnOnce(&Screened<'_>) -> R,
) -> (HttpCall, R) {
    let call = target.call(account, s.op);
    let principal = target.principal(account, s.op);
    let verdict = judge(&Screened {
        target: target.name(),
        call: &call,
        rule: s.rule,
        email,
        principal: principal.as_deref(),
        revokes: target.revokes(s.op),
    });
    (call, verdict)
}

/// Why the screen cannot judge `s` yet, if it cannot.
fn not_ready<T: Target>(
    target: &T,
    account: &T::Account,
    s: &Planned<'_, T::Op>,
    email: Option<&str>,
    screen: &dyn Screen,
) -> Option<String> {
    screened(target, account, s, email, |step| screen.not_ready(step)).1
}

/// What the screen says of one step: its call, and the reason when it is withheld.
fn screen_step<T: Target>(
    target: &T,
    account: &T::Account,
    s: &Planned<'_, T::Op>,
    email: Option<&str>,
    screen: &dyn Screen,
) -> (HttpCall, Option<String>) {
    screened(target, account, s, email, |step| screen.withhold(step))
}

/// A step a screen withholds, and why (what `gatehouse plan` shows).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Withheld {
    pub target: &'static str,
    pub rule: String,
    pub call: HttpCall,
    pub reason: String,
}

/// The steps of a plan that [`apply`] would withhold (in `Mode::Apply`), with the reasons: the
/// same screen, asked the same way, nothing sent.
pub fn withheld<T: Target>(
    target: &T,
    plan: &T::Plan,
    email: Option<&str>,
    screen: &dyn Screen,
) -> Vec<Withheld> {
    let account = target.account(plan);
    target
        .steps(plan)
        .iter()
        .filter_map(|s| {
            let (call, reason) = screen_step(target, &account, s, email, screen);
            reason.map(|reason| Withheld {
                target: target.name().as_str(),
                rule: s.rule.to_string(),
                call,
                reason,
            })
        })
        .collect()
}

/// Group one phase's steps into writes: steps sharing a batch key go together (first-seen
/// order), the others alone.
fn batches<'s, 'p, T: Target>(
    target: &T,
    steps: impl Iterator<Item = &'s Planned<'p, T::Op>>,
) -> Vec<Vec<&'s Planned<'p, T::Op>>>
where
    'p: 's,
{
    let mut out: Vec<Vec<&Planned<'p, T::Op>>> = Vec::new();
    let mut keyed: Vec<(String, usize)> = Vec::new();
    for s in steps {
        match target.batch_key(s.op) {
            None => out.push(vec![s]),
            Some(k) => match keyed.iter().find(|(key, _)| *key == k) {
                Some((_, i)) => out[*i].push(s),
                None => {
                    keyed.push((k, out.len()));
                    out.push(vec![s]);
                }
            },
        }
    }
    out
}

struct BatchDone<A> {
    writes: usize,
    account: Option<A>,
}

enum BatchError<E> {
    Target(E),
    Ledger(BackendError),
    LeaseLost(lease::LeaseLost),
}

/// One write (one batch of steps) with retries; every attempt that went out is ledgered once per
/// step it carries.
async fn send_batch<T: Target, S: StateStore>(
    target: &T,
    account: &T::Account,
    batch: &[&Planned<'_, T::Op>],
    run: &Run<'_, S>,
) -> Result<BatchDone<T::Account>, BatchError<T::Error>> {
    let name = target.name();
    let ops: Vec<&T::Op> = batch.iter().map(|s| s.op).collect();
    let mut backoff = run.retry.backoff().build();
    let mut conflicts = 0;
    loop {
        // The fence: the one place every write of every target passes (see `lease`).
        if let Some(lease) = &run.ctx.lease {
            lease.check().map_err(|e| {
                tracing::warn!(target_name = %name, subject = %run.ctx.subject, envelope_id = %run.ctx.envelope_id,
                    error = %e, "queue lease may have lapsed; not sent");
                BatchError::LeaseLost(e)
            })?;
        }
        let r = target.send(account, &ops).await;
        let gone = matches!(&r, Err(SendError::Write(e))
            if e.kind() == ErrorKind::NotFound && ops.iter().all(|o| target.not_found_is_done(o)));
        let outcome = match &r {
            Ok(Sent::Unchanged) => {
                return Ok(BatchDone {
                    writes: 0,
                    account: None,
                });
            }
            Ok(Sent::Written { status, .. }) => Some(CallOutcome::Done { status: *status }),
            Err(SendError::Write(_)) if gone => Some(CallOutcome::AlreadyGone),
            Err(SendError::Write(e)) => Some(e.outcome()),
            Err(SendError::BeforeWrite(_)) => None,
        };
        if let Some(outcome) = outcome {
            let rows: Vec<LedgerEntry> = batch
                .iter()
                .map(|s| ledger_row(run.ctx, name, s.rule, target.call(account, s.op), &outcome))
                .collect();
            if let Err(e) = run.store.append_ledger(&rows).await {
                tracing::error!(error = %e, "ledger append failed");
                return Err(BatchError::Ledger(e));
            }
        }
        let e = match r {
            Ok(Sent::Written { account, .. }) => {
                return Ok(BatchDone {
                    writes: ops.len(),
                    account,
                });
            }
            Ok(Sent::Unchanged) => {
                return Ok(BatchDone {
                    writes: 0,
                    account: None,
                });
            }
            Err(SendError::Write(_)) if gone => {
                return Ok(BatchDone {
                    writes: 0,
                    account: None,
                });
            }
            Err(SendError::BeforeWrite(e)) => return Err(BatchError::Target(e)),
            Err(SendError::Write(e)) => e,
        };
        if e.kind() == ErrorKind::Conflict && conflicts + 1 < target.conflict_retries() {
            conflicts += 1;
            tracing::info!(target_name = %name, conflicts, "changed concurrently; reading it again");
            continue;
        }
        if !e.is_retryable() {
            return Err(BatchError::Target(e));
        }
        match backoff.next() {
            Some(d) => {
                let d = run.retry.honour(&e, d);
                tracing::warn!(target_name = %name, error = %gatehouse_domain::error::chain(&e), retry_in = ?d, "call failed; retrying");
                tokio::time::sleep(d).await;
            }
            None => return Err(BatchError::Target(e)),
        }
    }
}

/// A target registered with the engine beside Looker, AWS and GCP (`Engine::with_target`):
/// any [`Target`] whose desired state serializes is one. Event-driven: on every event the
/// engine asks it for the person's desired state (part of the converged fingerprint, so a
/// replay or no-op still costs zero calls), then reads, plans and applies it through
/// [`apply`], beside the other targets.
pub trait Registered<S>: Send + Sync {
    fn name(&self) -> TargetName;
    /// The person's desired state as JSON (`None`: nothing to manage for them).
    fn desired_json(
        &self,
        policy: &gatehouse_domain::policy::Policy,
        identity: &gatehouse_domain::identity::Identity,
        now: chrono::DateTime<Utc>,
    ) -> Option<serde_json::Value>;
    /// Read (changing nothing: links are not stored) and plan for one person: every call the
    /// plan would make, and the screen's verdict on each (`gatehouse plan`).
    fn plan_calls<'a>(
        &'a self,
        policy: &'a gatehouse_domain::policy::Policy,
        identity: &'a gatehouse_domain::identity::Identity,
        now: chrono::DateTime<Utc>,
        store: &'a S,
        screen: &'a dyn Screen,
    ) -> futures::future::BoxFuture<'a, Result<Vec<PlannedCall>, TargetFailure>>;
    /// Read, plan and apply (or report / dry-run) for one person.
    fn converge<'a>(
        &'a self,
        policy: &'a gatehouse_domain::policy::Policy,
        identity: &'a gatehouse_domain::identity::Identity,
        now: chrono::DateTime<Utc>,
        mode: Mode,
        run: &'a Run<'a, S>,
    ) -> futures::future::BoxFuture<'a, Result<Applied, TargetFailure>>;
}

/// One call a registered target's plan would make, as `gatehouse plan` prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlannedCall {
    pub target: &'static str,
    pub rule: String,
    pub call: HttpCall,
    /// The safety screen would withhold it, for this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub withheld: Option<String>,
}

/// A registered target failed: classified by its [`Failure`], cause kept.
#[derive(Debug, thiserror::Error)]
pub enum TargetFailure {
    #[error("{target} {kind:?}: {source}")]
    Target {
        target: TargetName,
        kind: ErrorKind,
        retry_after: Option<Duration>,
        #[source]
        source: gatehouse_domain::ports::BoxError,
    },
    #[error(transparent)]
    Ledger(BackendError),
    /// The queue lease the work runs under may have lapsed: nothing more was sent.
    #[error(transparent)]
    LeaseLost(lease::LeaseLost),
}

impl TargetFailure {
    fn of<E: Failure>(target: TargetName, e: E) -> Self {
        TargetFailure::Target {
            target,
            kind: e.kind(),
            retry_after: e.retry_after(),
            source: Box::new(e),
        }
    }
}

impl<S, T> Registered<S> for T
where
    S: StateStore,
    T: Target,
    T::Desired: serde::Serialize,
{
    fn name(&self) -> TargetName {
        Target::name(self)
    }

    fn desired_json(
        &self,
        policy: &gatehouse_domain::policy::Policy,
        identity: &gatehouse_domain::identity::Identity,
        now: chrono::DateTime<Utc>,
    ) -> Option<serde_json::Value> {
        self.desired(policy, identity, now)
            .map(|d| serde_json::to_value(d).expect("desired state serializes"))
    }

    fn plan_calls<'a>(
        &'a self,
        policy: &'a gatehouse_domain::policy::Policy,
        identity: &'a gatehouse_domain::identity::Identity,
        now: chrono::DateTime<Utc>,
        store: &'a S,
        screen: &'a dyn Screen,
    ) -> futures::future::BoxFuture<'a, Result<Vec<PlannedCall>, TargetFailure>> {
        Box::pin(async move {
            let name = Target::name(self);
            let Some(desired) = self.desired(policy, identity, now) else {
                return Ok(Vec::new());
            };
            let read = read_linked(self, &desired, identity, store)
                .await
                .map_err(|e| match e {
                    ReadError::Target(e) => TargetFailure::of(name, e),
                    ReadError::Links(e) => TargetFailure::Ledger(e),
                })?;
            let plan = self.diff(&desired, &read.actual);
            let account = self.account(&plan);
            Ok(self
                .steps(&plan)
                .iter()
                .map(|s| {
                    let (call, withheld) = screen_step(self, &account, s, identity.email(), screen);
                    PlannedCall {
                        target: name.as_str(),
                        rule: s.rule.to_string(),
                        call,
                        withheld,
                    }
                })
                .collect())
        })
    }

    fn converge<'a>(
        &'a self,
        policy: &'a gatehouse_domain::policy::Policy,
        identity: &'a gatehouse_domain::identity::Identity,
        now: chrono::DateTime<Utc>,
        mode: Mode,
        run: &'a Run<'a, S>,
    ) -> futures::future::BoxFuture<'a, Result<Applied, TargetFailure>> {
        Box::pin(async move {
            let name = Target::name(self);
            let Some(desired) = self.desired(policy, identity, now) else {
                return Ok(Applied::default());
            };
            let read = read_linked(self, &desired, identity, run.store)
                .await
                .map_err(|e| match e {
                    ReadError::Target(e) => TargetFailure::of(name, e),
                    ReadError::Links(e) => TargetFailure::Ledger(e),
                })?;
            if mode == Mode::Apply {
                read.persist(run.store, name)
                    .await
                    .map_err(TargetFailure::Ledger)?;
            }
            let plan = self.diff(&desired, &read.actual);
            apply(self, &plan, mode, run).await.map_err(|e| match e {
                ApplyError::Target { error, .. } => TargetFailure::of(name, error),
                ApplyError::Ledger(e) => TargetFailure::Ledger(e),
                ApplyError::NotReady(reason) => TargetFailure::Ledger(not_ready_error(reason)),
                ApplyError::LeaseLost(e) => TargetFailure::LeaseLost(e),
            })
        })
    }
}
