//! Ports: what the engine needs from the outside world. Adapters implement them (SQLite today;
//! SQS, Pub/Sub and PostgreSQL plug in behind the same traits).

use crate::breaker::{AdmitLimits, Change, HeldChange, Settle, Trip, Verdict};
use crate::envelope::{Envelope, EnvelopeId};
use crate::identity::Identity;
use crate::looker::{Catalog, HttpCall, LookerError, LookerOp, LookerUser, ReadNeeds, UserRef};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A queue or state backend failed. The cause chain is kept.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct BackendError {
    pub context: &'static str,
    #[source]
    pub source: BoxError,
}

impl BackendError {
    pub fn new(context: &'static str, source: impl Into<BoxError>) -> Self {
        BackendError {
            context,
            source: source.into(),
        }
    }

    /// `commit` found that another handler changed the subject since it was loaded.
    pub fn subject_changed(subject: &str) -> Self {
        BackendError::new(
            "the subject changed while this event was handled",
            SubjectChanged(subject.to_string()),
        )
    }

    /// Whether this is the optimistic-concurrency conflict of [`BackendError::subject_changed`]:
    /// handling the event again from a fresh load resolves it.
    pub fn is_subject_changed(&self) -> bool {
        self.source.downcast_ref::<SubjectChanged>().is_some()
    }
}

/// A backend failure is classified by the [`crate::error::Error`] in its cause chain (the queue
/// backends classify SQS and Pub/Sub answers into one); one without a classified cause (a
/// database or I/O failure) is transient, as it always was: retried, never given up on at once.
impl crate::error::Classified for BackendError {
    fn kind(&self) -> crate::error::Kind {
        self.classified()
            .map_or(crate::error::Kind::Transient, |e| e.kind)
    }
    fn retry_after(&self) -> Option<Duration> {
        self.classified().and_then(|e| e.retry_after)
    }
}

impl BackendError {
    fn classified(&self) -> Option<&crate::error::Error> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&*self.source);
        while let Some(e) = cur {
            if let Some(c) = e.downcast_ref::<crate::error::Error>() {
                return Some(c);
            }
            cur = e.source();
        }
        None
    }
}

/// The cause of [`BackendError::subject_changed`].
#[derive(Debug, thiserror::Error)]
#[error("subject {0} was committed by another handler since it was loaded")]
pub struct SubjectChanged(pub String);

/// One message handed out by a queue. The body is decoded by the consumer, so a message that is
/// not a valid envelope can still be dead-lettered with its reason.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Backend handle used to ack/release this delivery (SQS receipt handle, row id, ack id).
    pub receipt: String,
    /// 1 on first delivery.
    pub attempt: u32,
    pub body: String,
}

/// Producer side: durable publish. Returns only once every envelope is durably stored.
pub trait QueueProducer: Send + Sync {
    fn publish(&self, batch: &[Envelope]) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// Consumer side. At-least-once: a delivery that is neither acked nor released comes back after
/// the visibility timeout.
pub trait QueueConsumer: Send + Sync {
    fn receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> impl Future<Output = Result<Vec<Delivery>, BackendError>> + Send;
    /// Done: remove for good.
    fn ack(&self, delivery: &Delivery) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Give back for another attempt after `delay`.
    fn release(
        &self,
        delivery: &Delivery,
        delay: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Move to the dead-letter store with the reason.
    fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Still working on it: keep it invisible for another `visibility` (SQS visibility
    /// timeout, Pub/Sub ack deadline). `Ok` means the backend holds it for this consumer for
    /// at least `visibility` from when the call was made; a delivery no longer held is an error.
    fn extend(
        &self,
        delivery: &Delivery,
        visibility: Duration,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Whether a delivery's lease can lapse while it is worked on, the backend then handing it
    /// (or, with FIFO message groups / ordering keys, the subject's next message) to another
    /// consumer: SQS and Pub/Sub. The worker then fences every write with the lease it last
    /// confirmed (`gatehouse_targets::lease`). Default: no — the embedded queue hands out one
    /// message per subject and the engine handles one subject in one task per process.
    fn leases_can_lapse(&self) -> bool {
        false
    }

    /// Let go of a delivery whose lease may have lapsed, without settling it: it may already be
    /// another consumer's, so nothing goes out under its receipt that could change another
    /// consumer's lease (moto, for one, accepts an old SQS receipt handle); it comes back when
    /// its lease ends. SQS: local bookkeeping only; Pub/Sub: nacked if this process's stream
    /// still holds it. Default: nothing to drop.
    fn abandon(&self, _delivery: &Delivery) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// What the store keeps per subject.
#[derive(Debug, Clone)]
pub struct SubjectState {
    pub identity: Identity,
    /// Fingerprint of the desired state last converged in Looker (see `DesiredLooker::fingerprint`).
    pub converged: Option<String>,
    /// Bumped by every commit of this subject: `Outcome::base_version` is checked against it.
    pub version: i64,
}

/// A deletion scheduled by the offboarding policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledDeletion {
    pub subject: String,
    pub email: String,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeletionChange {
    Keep,
    Schedule(ScheduledDeletion),
    Cancel,
}

/// Everything one processed envelope changes in the state store, written in one transaction.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub envelope_id: EnvelopeId,
    /// `None` when the envelope changed no identity (an event Gatehouse does not act on).
    pub identity: Option<Identity>,
    pub converged: Option<String>,
    pub deletion: DeletionChange,
    /// The subject's `version` when it was loaded (`None`: it did not exist). When `identity` is
    /// written, `commit` fails with [`BackendError::subject_changed`] if the stored version is
    /// not this one any more, so two handlers of one subject (two processes, or an unordered
    /// queue) can never lose each other's facts: the loser handles its event again.
    pub base_version: Option<i64>,
    /// The times of an offboarding envelope (deactivate, suspend, delete, `gatehouse offboard`),
    /// written in the same transaction (issue 15: the deprovisioning SLA report).
    pub offboarding: Option<OffboardingTimes>,
}

/// When one offboarding happened, reached Gatehouse and was finished: one row per processed
/// offboarding envelope, kept after its message is acked (`gatehouse report deprovisioning`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffboardingTimes {
    pub envelope_id: String,
    /// The person (`Subject.key`).
    pub person: String,
    pub email: Option<String>,
    /// `Source::as_str` of the intake.
    pub source: String,
    /// `IdentityEvent::kind` (`user_deactivated`, `user_suspended`, `user_deleted`).
    pub event: String,
    /// The IdP's own event time (as the engine orders it: bounded by the receipt plus the
    /// allowed clock skew).
    pub occurred_at: DateTime<Utc>,
    /// When the intake accepted the event (`Envelope::received_at`).
    pub received_at: DateTime<Utc>,
    /// When the engine finished the envelope (its commit).
    pub finished_at: DateTime<Utc>,
}

/// The offboarding times kept per envelope (see [`OffboardingTimes`]).
pub trait OffboardingLog: Send + Sync {
    /// Offboardings whose event time is in `[since, until)`, oldest first (ties by envelope id).
    fn offboardings(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<OffboardingTimes>, BackendError>> + Send;
}

impl Outcome {
    /// The envelope is done and changed no identity (an ignored event, a drift handled
    /// outside the directory).
    pub fn processed_only(envelope_id: EnvelopeId) -> Self {
        Outcome {
            envelope_id,
            identity: None,
            converged: None,
            deletion: DeletionChange::Keep,
            base_version: None,
            offboarding: None,
        }
    }
}

/// One row of the append-only ledger: a write call (or, in dry run, a planned call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub at: DateTime<Utc>,
    pub envelope_id: String,
    pub subject: String,
    pub event: String,
    pub rule: String,
    /// Which API the call went to: `looker` (rows written before cloud targets existed),
    /// `aws` (IAM Query API, `call.body` holds the form parameters) or `gcp`.
    #[serde(default = "looker_target")]
    pub target: String,
    pub call: HttpCall,
    /// `200`, `204`, `dry_run`, `429`, `error: ...`
    pub status: String,
    /// SHA-256 (hex) of the policy file the decision was made with (`Policy::digest`); `None`
    /// for rows written before it was recorded and for rows no policy decided (rotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_digest: Option<String>,
    /// Who caused the row: `event:<source>:<envelope id>`, `reconcile`, `operator:<name>` (a CLI
    /// command), `rotator`, `scheduler`; `None` for rows written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

fn looker_target() -> String {
    "looker".into()
}

/// A stored ledger row: the entry, its position and its link in the hash chain
/// (see [`crate::ledger_chain`]).

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: LedgerEntry,
    /// The previous row's `hash` (`ledger_chain::GENESIS` for the first row).
    pub prev_hash: String,
    /// SHA-256 of this row's canonical encoding and `prev_hash`.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub attempts: u32,
    pub reason: String,
    pub body: String,
}

/// How long a deletion handed out by `StateStore::due_deletions` stays claimed by that caller.
pub const DELETION_CLAIM: Duration = Duration::from_secs(300);

/// A request for the rotator (see `IdentityEvent::RotationRequested`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationRequest {
    pub envelope_id: String,
    pub subject: String,
    pub provider: String,
    pub reason: String,
    pub secret: Option<String>,
}

impl RotationRequest {
    /// The request an envelope on the rotation queue carries (issue 12, item 4: the processor
    /// publishes rotation requests as envelopes, the rotator consumes them); `None` when the
    /// envelope is not a [`crate::envelope::IdentityEvent::RotationRequested`].
    pub fn from_envelope(env: &Envelope) -> Option<Self> {
        match &env.event {
            crate::envelope::IdentityEvent::RotationRequested {
                provider,
                reason,
                secret,
            } => Some(RotationRequest {
                envelope_id: env.id.0.clone(),
                subject: env.subject.key.clone(),
                provider: provider.clone(),
                reason: reason.clone(),
                secret: secret.clone(),
            }),
            _ => None,
        }
    }
}

/// The directory as a whole, for reconcile (every known person).
pub trait Directory: Send + Sync {
    /// Every subject with its identity, in key order.
    fn subjects(&self) -> impl Future<Output = Result<Vec<SubjectState>, BackendError>> + Send;
}

pub trait StateStore: Send + Sync {
    fn is_processed(&self, id: &EnvelopeId) -> impl Future<Output = Result<bool, BackendError>> + Send;
    fn load_subject(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<SubjectState>, BackendError>> + Send;
    /// Record that an envelope's effects are done, atomically with the identity it produced.
    fn commit(&self, outcome: Outcome) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Forget the subject's converged fingerprint before writing to Looker or a cloud for it,
    /// so a handler that dies (or fails) between those writes and its `commit` leaves "not
    /// known to be converged" behind, never a fingerprint its writes made untrue. A
    /// compare-and-set on `base_version` (the version the handler loaded) that moves the version
    /// on, like a commit: a concurrent handler's commit from the older load is refused.
    /// Returns the new version (the handler's `base_version` from now on);
    /// [`BackendError::subject_changed`] when the subject is no longer at `base_version`.
    fn forget_converged(
        &self,
        key: &str,
        base_version: i64,
    ) -> impl Future<Output = Result<i64, BackendError>> + Send;
    /// Append rows to the hash-chained ledger, linearly even with several writers.
    fn append_ledger(&self, entries: &[LedgerEntry])
    -> impl Future<Output = Result<(), BackendError>> + Send;
    /// The chain head: the last row's seq and hash as recorded with every append.
    fn ledger_head(&self) -> impl Future<Output = Result<Option<ChainHead>, BackendError>> + Send;
    fn ledger_since(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> impl Future<Output = Result<Vec<LedgerRow>, BackendError>> + Send;
    /// Due deletions, each claimed for the caller until `now + DELETION_CLAIM`: another caller
    /// (another replica's sweep) does not get it again before then, unless it is finished.
    fn due_deletions(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ScheduledDeletion>, BackendError>> + Send;
    fn finish_deletion(&self, subject: &str) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// The accounts `person` (the IdP's stable id, `Subject.key`) was ever linked to in `target`
    /// (`looker`: user ids; `aws`: IAM user names; `gcp`: members), first linked first. Issue 16:
    /// a target finds the person by these before anything else, so a new email is not a new
    /// person.
    fn account_links(
        &self,
        target: &str,
        person: &str,
    ) -> impl Future<Output = Result<Vec<String>, BackendError>> + Send;
    /// Link `person` to `accounts` in `target` (idempotent; links are never dropped, so "ever
    /// linked" stays answerable after an account is deleted).
    fn link_accounts(
        &self,
        target: &str,
        person: &str,
        accounts: &[String],
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The mass-change breaker's decision on one change, in one transaction serialized with
    /// every other replica's: an envelope held before → `AlreadyHeld`; a trip of its kind (for
    /// every source or its source) → held; else counted, and held with a new trip if the count
    /// in the window (since the last release or discard) would exceed a limit. A held envelope
    /// is stored with its JSON before this returns, so its message may be acked.
    fn breaker_admit(
        &self,
        change: &Change,
        limits: &AdmitLimits,
    ) -> impl Future<Output = Result<Verdict, BackendError>> + Send;
    /// Current trips.
    fn breaker_trips(&self) -> impl Future<Output = Result<Vec<Trip>, BackendError>> + Send;
    /// Envelopes held and not yet decided on, in the order they were held (one source or all).
    fn breaker_held(
        &self,
        source: Option<&str>,
    ) -> impl Future<Output = Result<Vec<HeldChange>, BackendError>> + Send;
    /// Record a person's decision on one held envelope (`actor` ran it).
    fn breaker_settle(
        &self,
        seq: i64,
        decision: Settle,
        actor: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Close the trips of one source (and its counts), or every trip and count (`None`), so
    /// counting starts afresh. Returns the trips closed.
    fn breaker_reset(
        &self,
        source: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Trip>, BackendError>> + Send;
}

/// Looker admin-API calls counted per calendar month (UTC), summed over every process that
/// shares the state store. Processes count in memory and add their count now and then, so the
/// hot path never writes to the database.
pub trait LookerCallCounts: Send + Sync {
    /// Add `delta` calls to `month` (`YYYY-MM`, UTC) in one atomic `calls = calls + delta`
    /// upsert and return the month's new total (every writer's calls included).
    fn add_looker_calls(
        &self,
        month: &str,
        delta: u64,
    ) -> impl Future<Output = Result<u64, BackendError>> + Send;
    /// The calls counted for `month` so far (0 when none).
    fn looker_calls(&self, month: &str) -> impl Future<Output = Result<u64, BackendError>> + Send;
}

/// The month key of [`LookerCallCounts`]: `YYYY-MM` of `at` in UTC.
pub fn call_month(at: DateTime<Utc>) -> String {
    at.format("%Y-%m").to_string()
}

/// The Looker API as the engine uses it. Reads are batched to the fewest calls; `execute`
/// performs exactly one write call (no retries: the engine owns the retry policy).
pub trait LookerPort: Send + Sync {
    fn catalog(&self) -> impl Future<Output = Result<Catalog, LookerError>> + Send;
    fn find_user(
        &self,
        email: &str,
        needs: &ReadNeeds,
    ) -> impl Future<Output = Result<Option<LookerUser>, LookerError>> + Send;
    /// Every user whose email is `email` in any letter case (one `GET /users/search`), each
    /// read as `find_user` reads one (issue 16: a person's case variants are all theirs).
    fn find_users(
        &self,
        email: &str,
        needs: &ReadNeeds,
    ) -> impl Future<Output = Result<Vec<LookerUser>, LookerError>> + Send;
    /// One user by id (`GET /users/{user_id}`, issue 16's link), read as `find_user` reads one;
    /// `None` when Looker has no such user (any more).
    fn user(
        &self,
        id: &str,
        needs: &ReadNeeds,
    ) -> impl Future<Output = Result<Option<LookerUser>, LookerError>> + Send;
    /// The user holding SSO credential `credential` with id `id` (issue 16:
    /// `GET /users/credential/{type}/{id}`), read as `find_user` reads one; `None` when Looker
    /// has none (404).
    fn user_for_credential(
        &self,
        credential: crate::sso::SsoCredential,
        id: &str,
        needs: &ReadNeeds,
    ) -> impl Future<Output = Result<Option<LookerUser>, LookerError>> + Send;
    /// One page of users for reconcile (issue 14): `GET /users` with `limit` (at most 1,000) and
    /// `offset`, sorted by id, read as `find_user` reads one except that direct roles come from
    /// the page (`role_ids`) and attribute values are not read (`None`). Shorter than `limit`:
    /// the last page.
    fn users_page(
        &self,
        offset: usize,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<LookerUser>, LookerError>> + Send;
    /// Looker (Google Cloud core), issue 14: one page of the people's users, newest first —
    /// one `GET /users/search?is_service_account=false&sorts=id desc&fields=id,email` with
    /// `limit` (at most 1,000) and `offset`. Shorter than `limit`: the last page.
    fn newest_users(
        &self,
        offset: usize,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<crate::looker_core::SeenUser>, LookerError>> + Send;
    /// The values user `user_id` set on its own (source `user`) of `attribute_ids`: one call
    /// (`GET /users/{id}/attribute_values`); Looker has no bulk read of them.
    fn attribute_values(
        &self,
        user_id: &str,
        attribute_ids: &[String],
    ) -> impl Future<Output = Result<std::collections::BTreeMap<String, String>, LookerError>> + Send;
    /// Perform one write. For `CreateUser` returns the new user's id.
    fn execute(
        &self,
        user: &UserRef,
        op: &LookerOp,
    ) -> impl Future<Output = Result<Option<String>, LookerError>> + Send;
    /// What Looker user `user_id` owns (issue 19: hand-over before deletion, outside deliveries
    /// at offboarding); only the reads `needs` asks for.
    fn content(
        &self,
        user_id: &str,
        needs: crate::handover::ContentNeeds,
    ) -> impl Future<Output = Result<crate::handover::LookerContent, LookerError>> + Send;
}

/// The last row of the chain as the chain head records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}
