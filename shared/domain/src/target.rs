//! The target port: what every system Gatehouse changes (Looker, AWS IAM, GCP IAM, and the
//! next one) implements, so that the processor has ONE loop that applies, reports or dry-runs a
//! plan, ledgers every attempt and retries what is retryable.
//!
//! A target says:
//! - **desired**: what the policy wants it to hold for one person (pure);
//! - **read**: resolve the person to their account(s) in the target, their durable [`Link`]
//!   first, and read what it holds (with the client's read retries); [`Target::linked`] says
//!   which accounts the loop links to the person;
//! - **diff**: the plan from actual to desired (pure); [`Target::steps`] lists it in the
//!   order the loop must keep ([`Order`]: "create before add", "transfer before delete");
//! - **send**: one write call carrying one step (or, for a read-modify-write target, every step
//!   on one object: [`Target::batch_key`]), no retry;
//! - **classify**: its error type implements [`Failure`] (the error core's [`Classified`]: a
//!   small [`ErrorKind`] and the server's `Retry-After`; plus the ledger outcome), decided
//!   once, in the client.
//!
//! Before a step is sent, the loop asks a [`Screen`] whether to withhold it (a protected
//! principal, a held mass change): a withheld step is never sent and gets a ledger row saying why.
//! Everything here is pure; the loop itself lives with the processor (I/O).

pub use crate::error::Classified;
use crate::identity::Identity;
use crate::looker::{ErrorKind, HttpCall};
use crate::policy::Policy;
use chrono::{DateTime, Utc};
use std::fmt;
use std::future::Future;

/// A target's name, as the ledger's `target` column, metric labels and reconcile modes know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetName(&'static str);

impl TargetName {
    pub const LOOKER: TargetName = TargetName("looker");
    pub const AWS: TargetName = TargetName("aws");
    pub const GCP: TargetName = TargetName("gcp");

    /// A new target's name: lowercase ASCII, as it appears in the ledger and metrics.
    pub const fn new(name: &'static str) -> Self {
        TargetName(name)
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// When a step may be sent relative to the other steps of its plan. The loop sends the steps
/// of one order together (concurrently) and starts the next order only when every step of the
/// previous one succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Order {
    /// Makes the account the other steps act on ("create before add"): sent first, and its
    /// answer names the account ([`Sent::Written`]'s `account`).
    Create,
    /// Independent of each other: sent at once.
    Change,
    /// Only after every other step succeeded ("transfer before delete").
    Last,
}

impl Order {
    pub const ALL: [Order; 3] = [Order::Create, Order::Change, Order::Last];
}

/// One step of a plan as the loop sees it: the operation, the policy element that asks for it
/// and its order.
#[derive(Debug, Clone, Copy)]
pub struct Planned<'p, O> {
    pub op: &'p O,
    pub rule: &'p str,
    pub order: Order,
}

/// What one attempt of one write call came to, as the ledger records it. The ledger stores the
/// rendering ([`CallOutcome::ledger_status`]), unchanged from the rows written before this type
/// existed, so old and new rows hash the same way (`ledger_chain::canonical`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// The write was made. Looker rows say `ok`; cloud rows carry the HTTP status (`200`).
    Done { status: Option<u16> },
    /// A revocation that found nothing: already done (`404 already gone`).
    AlreadyGone,
    /// Failed. `detail` (when the client gives one) is shown instead of the status.
    Failed {
        kind: ErrorKind,
        status: Option<u16>,
        detail: Option<String>,
    },
    /// Not sent: dry run (no client configured).
    DryRun,
    /// Not sent: the target is in `report` mode.
    Reported,
    /// Not sent: a [`Screen`] withheld it, for this reason.
    Withheld { reason: String },
}

/// The ledger's status of a change found but not made (`report` mode).
pub const REPORTED: &str = "drift_reported";

impl CallOutcome {
    /// The ledger's `status` column.
    pub fn ledger_status(&self) -> String {
        match self {
            CallOutcome::Done { status: None } => "ok".into(),
            CallOutcome::Done { status: Some(s) } => s.to_string(),
            CallOutcome::AlreadyGone => "404 already gone".into(),
            CallOutcome::Failed { detail: Some(d), .. } => format!("error: {d}"),
            CallOutcome::Failed { status: Some(s), .. } => s.to_string(),
            CallOutcome::Failed { kind, .. } => format!("error: {kind:?}"),
            CallOutcome::DryRun => "dry_run".into(),
            CallOutcome::Reported => REPORTED.into(),
            CallOutcome::Withheld { reason } => format!("withheld: {reason}"),
        }
    }
}

/// A target call's failure, classified once by the client that made it.
/// Its kind and `Retry-After` are the error core's ([`Classified`]); this adds the ledger's view.
pub trait Failure: Classified {
    /// How the ledger records an attempt that failed this way.
    fn outcome(&self) -> CallOutcome;
}

/// What a write call achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent<A> {
    /// The write was made. `account` is the account it created ([`Order::Create`]): later
    /// steps act on it. `status` is what the ledger shows (`None`: `ok`).
    Written { account: Option<A>, status: Option<u16> },
    /// Nothing had to be sent: the target already holds what the steps ask (a read-modify-write
    /// target found its object as wanted). No call, so no ledger row.
    Unchanged,
}

/// A write call that failed.
#[derive(Debug)]
pub enum SendError<E> {
    /// The write went out (or was refused before the wire by the client's own checks) and
    /// failed: the attempt is ledgered.
    Write(E),
    /// Failed before any write went out (the read of a read-modify-write, after the client's
    /// read retries): nothing to ledger, not retried by the loop.
    BeforeWrite(E),
}

impl<E> SendError<E> {
    pub fn into_inner(self) -> E {
        match self {
            SendError::Write(e) | SendError::BeforeWrite(e) => e,
        }
    }
}

pub use crate::link::Link;

/// One system Gatehouse changes. Implement this (one module) and the processor reads, plans,
/// applies, reports, screens and ledgers it like every other target.
pub trait Target: Send + Sync {
    /// What the policy wants the target to hold for one person.
    type Desired: Send + Sync;
    /// What the target holds for one person, as read.
    type Actual: Send + Sync;
    /// The plan for one person (its own type, so `gatehouse plan` can print it its own way).
    type Plan: Send + Sync;
    /// One write operation.
    type Op: Send + Sync + fmt::Debug;
    /// Which account of the target a plan acts on (Looker user, IAM user name, ...).
    type Account: Clone + Send + Sync + fmt::Debug;
    type Error: Failure;

    fn name(&self) -> TargetName;

    /// The desired state of one person, `None` when the target has nothing to manage for them.
    /// Pure.
    fn desired(&self, policy: &Policy, identity: &Identity, now: DateTime<Utc>) -> Option<Self::Desired>;

    /// Resolve the person to their account(s) in the target and read what it holds, with the
    /// client's read retries. `link` names the person and the accounts they were ever linked to
    /// in this target (issue 16): a target looks those up first, so a new email is not a new
    /// person; email (or whatever else the target matches on) only finds the link the first
    /// time.
    fn read(
        &self,
        desired: &Self::Desired,
        link: &Link,
    ) -> impl Future<Output = Result<Self::Actual, Self::Error>> + Send;

    /// The accounts `actual` resolved the person to: the loop links them to the person
    /// ([`Link`]), so the next read finds them whatever the person's email has become. Default:
    /// none (the target does not link).
    fn linked(&self, _actual: &Self::Actual) -> Vec<String> {
        Vec::new()
    }

    /// The link key of an account a [`Order::Create`] step named (linked at once). Default:
    /// none.
    fn link_key(&self, _account: &Self::Account) -> Option<String> {
        None
    }

    /// The plan from `actual` to `desired`. Pure. A converged person has an empty plan.
    fn diff(&self, desired: &Self::Desired, actual: &Self::Actual) -> Self::Plan;

    /// The account the plan acts on (before any [`Order::Create`] step names a new one).
    fn account(&self, plan: &Self::Plan) -> Self::Account;

    /// The plan's steps, each with its order.
    fn steps<'p>(&self, plan: &'p Self::Plan) -> Vec<Planned<'p, Self::Op>>;

    /// The exact call an operation makes (ledger, `gatehouse plan`, the [`Screen`]).
    fn call(&self, account: &Self::Account, op: &Self::Op) -> HttpCall;

    /// Whether a `NotFound` answer to this operation means its effect already holds (a
    /// revocation of something already gone): ledgered as [`CallOutcome::AlreadyGone`], done.
    fn not_found_is_done(&self, op: &Self::Op) -> bool;

    /// Steps with the same key are sent as one write (every change to one GCP resource's
    /// policy in one setIamPolicy). `None`: the step is one write of its own.
    fn batch_key(&self, _op: &Self::Op) -> Option<String> {
        None
    }

    /// How often a `Conflict` answer (a concurrent change; a read-modify-write target re-reads
    /// in `send`) is tried again at once. 0: a conflict fails the plan.
    fn conflict_retries(&self) -> usize {
        0
    }

    /// The account `op` acts on, as a [`Screen`] matches it (a Looker user id, an IAM user
    /// name, a GCP member such as `user:a@b.c`). `None` (the default): not known.
    fn principal(&self, _account: &Self::Account, _op: &Self::Op) -> Option<String> {
        None
    }

    /// Whether `op` disables, revokes or removes access (a protected principal is never
    /// subject to one). The default, `true`, is the safe answer for a target that does not say.
    fn revokes(&self, _op: &Self::Op) -> bool {
        true
    }

    /// Send one write carrying `ops` (one op unless [`Target::batch_key`] groups them). No retry.
    fn send(
        &self,
        account: &Self::Account,
        ops: &[&Self::Op],
    ) -> impl Future<Output = Result<Sent<Self::Account>, SendError<Self::Error>>> + Send;
}

/// One step as a [`Screen`] sees it: the call, who it acts on and whether it takes access away.
#[derive(Debug, Clone, Copy)]
pub struct Screened<'a> {
    pub target: TargetName,
    /// The exact call (as the ledger and `gatehouse plan` show it).
    pub call: &'a HttpCall,
    /// The policy element that asks for it.
    pub rule: &'a str,
    /// The person the plan is for (their email), when known.
    pub email: Option<&'a str>,
    /// The account the step acts on, as the target names it ([`Target::principal`]): a Looker
    /// user id, an IAM user name, a GCP member (`user:a@b.c`). `None`: not known yet (an
    /// account the plan creates, an offline dry run).
    pub principal: Option<&'a str>,
    /// The step disables, revokes or removes something ([`Target::revokes`]).
    pub revokes: bool,
}

/// Looks at every step before it is sent. A step it withholds is never sent: the loop writes a
/// [`CallOutcome::Withheld`] ledger row with the reason and logs a warning. (Issue 19's
/// protected principals and its own credentials are checked here, once, for every target.)
pub trait Screen: Send + Sync {
    /// `Some(reason)` to withhold the step.
    fn withhold(&self, step: &Screened<'_>) -> Option<String>;

    /// `Some(reason)` when the screen cannot judge this step yet because it has not learned what
    /// it needs (who Gatehouse itself is): the apply then fails with a transient error before
    /// anything is sent, and the event is tried again later, instead of the step being withheld
    /// and the event finished without it. Default: always ready.
    fn not_ready(&self, _step: &Screened<'_>) -> Option<String> {
        None
    }

    /// Called before a plan's steps are screened, and beside the reads of an event: a screen
    /// that must learn something from the targets (who Gatehouse itself is) does it here,
    /// cheaply when it already knows. Default: nothing.
    fn prepare(&self) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    /// Called after [`Screen::prepare`], before the steps of `target` are screened, only when at
    /// least one of them revokes: a screen whose knowledge matters only for revocations (who
    /// holds a protected Looker role) learns it here, so a plan that only grants never pays
    /// for it. Default: nothing.
    fn prepare_revocations(
        &self,
        _target: TargetName,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

/// The screen that sends everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendAll;

impl Screen for SendAll {
    fn withhold(&self, _: &Screened<'_>) -> Option<String> {
        None
    }
}

impl Failure for crate::looker::LookerError {
    /// The HTTP status, or `error: Kind` without one.
    fn outcome(&self) -> CallOutcome {
        CallOutcome::Failed {
            kind: self.kind,
            status: self.status,
            detail: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{CloudError, Target as CloudTarget};
    use crate::looker::LookerError;

    fn cloud(kind: ErrorKind, status: Option<u16>) -> CloudError {
        CloudError {
            target: CloudTarget::Aws,
            kind,
            status,
            message: "AddUserToGroup: AccessDenied: no".into(),
            retry_after: None,
            source: None,
        }
    }

    fn looker(kind: ErrorKind, status: Option<u16>) -> LookerError {
        LookerError {
            kind,
            status,
            message: "m".into(),
            retry_after: None,
            source: None,
        }
    }

    #[test]
    fn outcomes_render_as_the_ledger_always_stored_them() {
        for (o, s) in [
            (CallOutcome::Done { status: None }, "ok"),
            (CallOutcome::Done { status: Some(200) }, "200"),
            (CallOutcome::AlreadyGone, "404 already gone"),
            (CallOutcome::DryRun, "dry_run"),
            (CallOutcome::Reported, "drift_reported"),
            (
                CallOutcome::Withheld {
                    reason: "protected principal".into(),
                },
                "withheld: protected principal",
            ),
            (looker(ErrorKind::Throttled, Some(429)).outcome(), "429"),
            (looker(ErrorKind::Permanent, Some(400)).outcome(), "400"),
            (looker(ErrorKind::Transient, None).outcome(), "error: Transient"),
            (cloud(ErrorKind::Throttled, Some(400)).outcome(), "400"),
            (cloud(ErrorKind::Transient, None).outcome(), "error: Transient"),
            (
                cloud(ErrorKind::Unauthorized, Some(403)).outcome(),
                "error: access denied: AddUserToGroup: AccessDenied: no",
            ),
            (
                cloud(ErrorKind::Permanent, Some(400)).outcome(),
                "error: AddUserToGroup: AccessDenied: no",
            ),
        ] {
            assert_eq!(o.ledger_status(), s, "{o:?}");
        }
        // The same rendering as the cloud error's own, which older code wrote.
        for (k, st) in [
            (ErrorKind::Unauthorized, Some(403)),
            (ErrorKind::Permanent, None),
            (ErrorKind::Conflict, Some(409)),
            (ErrorKind::NotFound, None),
        ] {
            let e = cloud(k, st);
            assert_eq!(e.outcome().ledger_status(), e.ledger_status());
        }
    }
}
