//! Every metric Gatehouse emits, defined once (issue 12, item 5): its name, kind, help text and
//! label keys in [`ALL`], and one typed function per internal event that emits it. The call
//! sites never name a metric or a label key: they call e.g. [`events_failed`] with a
//! [`FailReason`], so a metric cannot be emitted with another label set than the one declared
//! here, nor a label value outside its closed set (see [`gatehouse_domain::metric_labels`]).
//! The `metrics::counter!`/`gauge!`/`histogram!` macros appear in this file only: clippy's
//! `disallowed-macros` (clippy.toml) and `tests::no_metric_macro_outside_the_events_module`
//! refuse them anywhere else.
//!
//! Where a counter and a log line are one internal event (a refused connection, a clamped event
//! time, a rotation started, ...), the function writes the line too, under the call site's own
//! target (`target: "gatehouse_engine::engine"`), so log filters and the text stay as they were;
//! its doc says at which level. Call sites whose line differs per site (e.g. the two
//! `rotation_request_unmatched` ones) or carries many site-local fields still log themselves.
//!
//! [`describe`] registers the help texts with the recorder; [`crate::telemetry::metrics_handle`]
//! calls it once when it installs the Prometheus recorder. `docs/metrics.md` lists [`ALL`]; a test
//! keeps it equal.
#![allow(clippy::disallowed_macros)]

use gatehouse_domain::breaker::ChangeKind;
use gatehouse_domain::envelope::{Envelope, IdentityEvent, Source};
use gatehouse_domain::error::Kind as ErrorKind;
use gatehouse_domain::metric_labels::{GraphKind, Provider};
use gatehouse_domain::target::TargetName;
use metrics::{Label, SharedString};
use std::fmt::Display;

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// A metric's declaration, whatever its label count: what [`describe`] registers and the
/// registry tests read.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: MetricKind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// The labels of one sample: the declared keys, in order, with the values given.
fn labels<const N: usize>(keys: &'static [&'static str; N], values: [SharedString; N]) -> Vec<Label> {
    keys.iter().zip(values).map(|(k, v)| Label::new(*k, v)).collect()
}

macro_rules! metric_type {
    ($ty:ident, $kind:ident) => {
        /// A declared metric with `N` label keys (see [`ALL`]).
        #[derive(Debug, Clone, Copy)]
        pub struct $ty<const N: usize> {
            pub name: &'static str,
            pub help: &'static str,
            pub labels: &'static [&'static str; N],
        }

        impl<const N: usize> $ty<N> {
            pub const fn def(self) -> Def {
                Def {
                    name: self.name,
                    kind: MetricKind::$kind,
                    help: self.help,
                    labels: self.labels,
                }
            }
        }
    };
}

metric_type!(Counter, Counter);
metric_type!(Gauge, Gauge);
metric_type!(Histogram, Histogram);

impl<const N: usize> Counter<N> {
    fn add(&self, values: [SharedString; N], by: u64) {
        metrics::counter!(self.name, labels(self.labels, values)).increment(by);
    }
}

impl<const N: usize> Gauge<N> {
    fn set(&self, values: [SharedString; N], value: f64) {
        metrics::gauge!(self.name, labels(self.labels, values)).set(value);
    }
}

impl<const N: usize> Histogram<N> {
    fn record(&self, values: [SharedString; N], value: f64) {
        metrics::histogram!(self.name, labels(self.labels, values)).record(value);
    }
}

/// Declares every metric once and [`ALL`] from the same table, so none is left out of it.
macro_rules! registry {
    ($( $(#[$doc:meta])* $ident:ident: $ty:ident = $name:literal [$($label:literal),*] $help:literal; )*) => {
        $(
            $(#[$doc])*
            pub const $ident: $ty<{ <[&str]>::len(&[$($label),*]) }> = $ty {
                name: $name,
                help: $help,
                labels: &[$($label),*],
            };
        )*
        /// Every metric Gatehouse emits.
        pub const ALL: &[Def] = &[$($ident.def()),*];
    };
}

registry! {
    // Intakes.
    EVENTS_RECEIVED: Counter = "gatehouse_events_received_total" ["source", "kind", "actionable"]
        "Events accepted by an intake, by source, normalized kind and whether Gatehouse acts on them.";
    INGRESS_REJECTED: Counter = "gatehouse_ingress_rejected_total" ["source", "reason"]
        "Requests an intake refused, by source and reason.";
    HTTP_CONNECTIONS_REFUSED: Counter = "gatehouse_http_connections_refused_total" ["listener"]
        "Connections closed at once because the listener's connection limit was reached.";
    GRAPH_NOTIFICATIONS_RECEIVED: Counter = "gatehouse_graph_notifications_received_total" ["kind", "actionable"]
        "Microsoft Graph change notifications received, by change type or lifecycle event.";
    GRAPH_NOTIFICATIONS: Counter = "gatehouse_graph_notifications_total" ["outcome"]
        "Stored Graph notifications finished (done) or given up (failed).";
    INTAKE_CATCHUP_EVENTS: Counter = "gatehouse_intake_catchup_events_total" ["source"]
        "Events a catch-up pass (Okta System Log, Graph delta, Google Reports) enqueued.";
    INTAKE_CATCHUP_FAILURES: Counter = "gatehouse_intake_catchup_failures_total" ["source"]
        "Catch-up passes that failed; tried again at the next interval.";
    INTAKE_CATCHUP_SKIPPED: Counter = "gatehouse_intake_catchup_skipped_total" ["source", "reason"]
        "Catch-up log events skipped, by reason.";
    INTAKE_CATCHUP_LAG: Gauge = "gatehouse_intake_catchup_lag_seconds" ["source"]
        "How far behind now the catch-up has covered the source's log, in seconds.";
    SCIM_OUTBOX_PUBLISHED: Counter = "gatehouse_scim_outbox_published_total" []
        "SCIM outbox envelopes published to the queue.";
    GOOGLE_CHANNELS: Counter = "gatehouse_google_channels_total" ["action"]
        "Google Admin SDK watch channels created or stopped.";
    OKTA_IMPORT_PUBLISHED: Counter = "gatehouse_okta_import_published_total" []
        "Events the Okta directory import published.";
    OKTA_IMPORT_FAILURES: Counter = "gatehouse_okta_import_failures_total" []
        "Okta directory imports that failed.";
    OKTA_API_CALLS: Counter = "gatehouse_okta_api_calls_total" ["use"]
        "Okta management API calls, by use (import, enrich).";
    OKTA_ENRICH: Counter = "gatehouse_okta_enrich_total" ["result"]
        "Okta hook events enriched with profile attributes: cached, fetched or failed.";
    OKTA_API_RATE_LIMITED: Counter = "gatehouse_okta_api_rate_limited_total" []
        "Okta API answers 429 (rate limit hit).";
    OKTA_TOKEN_REQUESTS: Counter = "gatehouse_okta_token_requests_total" ["result"]
        "Okta service app token requests, issued or refused.";
    // Queue and store.
    QUEUE_ERRORS: Counter = "gatehouse_queue_errors_total" ["operation", "kind"]
        "Failed queue operations (receive, ack, release, dead_letter), by the error's kind.";
    QUEUE_LAG: Gauge = "gatehouse_queue_lag_seconds" ["queue"]
        "Age of the oldest message waiting in the embedded queue, in seconds.";
    QUEUE_DEPTH: Gauge = "gatehouse_queue_depth" ["queue"]
        "Messages waiting in the embedded queue.";
    STORE_GROUP_COMMITS: Counter = "gatehouse_store_group_commits_total" []
        "Embedded SQLite write transactions committed (one WAL fsync each).";
    // Processor.
    EVENTS_PROCESSED: Counter = "gatehouse_events_processed_total" ["source", "outcome"]
        "Envelopes the processor handled and acked, by source and outcome.";
    EVENTS_FAILED: Counter = "gatehouse_events_failed_total" ["source", "reason"]
        "Envelopes or deliveries that failed, by source and reason (retried, dead_lettered, poison, unparseable, publish, lease_lost).";
    EVENT_AGE: Histogram = "gatehouse_event_age_seconds" ["source"]
        "Queue lag: from the intake accepting an event to work starting, in seconds.";
    EVENT_PROCESSING: Histogram = "gatehouse_event_processing_seconds" []
        "Time to handle one envelope, in seconds.";
    EVENT_TIME_CLAMPED: Counter = "gatehouse_event_time_clamped_total" ["source"]
        "Events dated beyond the allowed clock skew of their receipt, ordered by their receipt instead.";
    SUBJECT_CONFLICTS: Counter = "gatehouse_subject_conflicts_total" []
        "Subjects changed by another handler meanwhile; the event was handled again.";
    UNRESOLVED_OFFBOARDINGS: Counter = "gatehouse_unresolved_offboardings_total" ["target"]
        "Offboardings that found no account of a person linked in the target; dead-lettered.";
    STEPS_WITHHELD: Counter = "gatehouse_steps_withheld_total" ["target"]
        "Steps the safety screen withheld (not sent).";
    STEPS_DEFERRED: Counter = "gatehouse_steps_deferred_total" ["target"]
        "Steps not sent because the safety screen was not ready; the event is tried again.";
    DRIFT_REPORTED: Counter = "gatehouse_drift_reported_total" ["target"]
        "Drift rows reconcile reported (report mode) instead of applying.";
    BREAKER_TRIPS: Counter = "gatehouse_breaker_trips_total" ["kind", "scope"]
        "Times the mass-change breaker tripped, by change kind and scope (all, source).";
    BREAKER_HELD: Counter = "gatehouse_breaker_held_total" ["kind", "source"]
        "Changes held by the mass-change breaker.";
    AWS_MAPPING_CHANGED: Counter = "gatehouse_aws_mapping_changed_total" []
        "AWS user mappings that changed; the linked IAM user is kept.";
    HEAD_EXPORT_FAILURES: Counter = "gatehouse_head_export_failures_total" []
        "Failed exports of the ledger chain head.";
    ROTATION_REQUESTS: Counter = "gatehouse_rotation_requests_total" ["provider"]
        "RotationRequested events forwarded to the rotation queue.";
    ROTATION_REQUESTS_UNMATCHED: Counter = "gatehouse_rotation_requests_unmatched_total" ["provider"]
        "Rotation requests no rotator will act on (no rotation queue, or no declared secret matches).";
    // Looker.
    LOOKER_CALLS: Counter = "gatehouse_looker_calls_total" ["method", "endpoint", "status"]
        "Looker API calls, by method, endpoint template and status.";
    LOOKER_API_CALLS_MONTH: Gauge = "gatehouse_looker_api_calls_month" []
        "Looker admin-API calls this UTC calendar month, every process together.";
    LOOKER_API_BUDGET_REMAINING: Gauge = "gatehouse_looker_api_budget_remaining" []
        "The monthly Looker call quota minus the calls this month (negative once over).";
    LOOKER_API_BUDGET_LOW: Gauge = "gatehouse_looker_api_budget_low" []
        "1 once at most warning_remaining of the monthly Looker quota is left, else 0.";
    LOOKER_CORE_PENDING_FIRST_LOGIN: Counter = "gatehouse_looker_core_pending_first_login_total" []
        "Looker (Google Cloud core) plans of people whose account does not exist yet.";
    LOOKER_CORE_FIRST_LOGINS: Counter = "gatehouse_looker_core_first_logins_total" []
        "People converged when their Looker (Google Cloud core) account appeared.";
    LOOKER_CORE_FIRST_LOGIN_FAILURES: Counter = "gatehouse_looker_core_first_login_failures_total" []
        "People of a new Looker (Google Cloud core) account that could not be converged.";
    LOOKER_CORE_FIRST_LOGIN_SKIPPED: Counter = "gatehouse_looker_core_first_login_skipped_total" ["reason"]
        "First-login runs skipped, by reason.";
    // Reconcile.
    RECONCILE_ORPHANS: Gauge = "gatehouse_reconcile_orphans" []
        "Accounts holding managed grants that the last reconcile matched to nobody in the directory.";
    RECONCILE_DRIFT: Gauge = "gatehouse_reconcile_drift" ["target"]
        "Steps the last reconcile planned, by target (looker, aws, gcp).";
    RECONCILE_DUPLICATE_USERS: Counter = "gatehouse_reconcile_duplicate_users_total" []
        "Looker users that look like another user of one person.";
    RECONCILE_SKIPPED: Counter = "gatehouse_reconcile_skipped_total" ["reason"]
        "Scheduled reconciles skipped, by reason.";
    // Rotator.
    ROTATIONS: Counter = "gatehouse_rotations_total" ["secret", "outcome"]
        "Rotations finished, by secret and outcome (rotated, rolled_back).";
    ROTATIONS_STARTED: Counter = "gatehouse_rotations_started_total" ["secret", "trigger"]
        "Rotations started, by secret and trigger.";
    ROTATION_FAILURES: Counter = "gatehouse_rotation_failures_total" ["secret", "step"]
        "Rotation steps that failed, by secret and step.";
    ROTATION_ALERTS: Counter = "gatehouse_rotation_alerts_total" ["secret"]
        "Keys created outside Gatehouse on a secret set to alert.";
    ROTATION_REQUESTS_POISON: Counter = "gatehouse_rotation_requests_poison_total" []
        "Rotation-queue messages the rotator dead-lettered as not a rotation request.";
    SECRET_AGE: Gauge = "gatehouse_secret_age_seconds" ["secret"]
        "Age of each declared secret's current credential, in seconds.";
}

/// Register every help text with the installed recorder.
pub fn describe() {
    for d in ALL {
        match d.kind {
            MetricKind::Counter => metrics::describe_counter!(d.name, d.help),
            MetricKind::Gauge => metrics::describe_gauge!(d.name, d.help),
            MetricKind::Histogram => metrics::describe_histogram!(d.name, d.help),
        }
    }
}

/// A closed set of label values: an enum and its wire strings.
macro_rules! label_values {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $value:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $value),*
                }
            }
        }

        impl From<$name> for SharedString {
            fn from(v: $name) -> SharedString {
                SharedString::const_str(v.as_str())
            }
        }
    };
}

label_values!(
    /// `reason` of [`EVENTS_FAILED`].
    FailReason {
        Retried = "retried",
        DeadLettered = "dead_lettered",
        Poison = "poison",
        Unparseable = "unparseable",
        Publish = "publish",
        LeaseLost = "lease_lost",
    }
);

label_values!(
    /// `operation` of [`QUEUE_ERRORS`].
    QueueOp {
        Receive = "receive",
        Ack = "ack",
        Release = "release",
        DeadLetter = "dead_letter",
    }
);

label_values!(
    /// `outcome` of [`EVENTS_PROCESSED`].
    ProcessedOutcome {
        Duplicate = "duplicate",
        Ignored = "ignored",
        Stale = "stale",
        NoOp = "noop",
        Applied = "applied",
        DryRun = "dry_run",
        RotationRequested = "rotation_requested",
        Held = "held",
    }
);

label_values!(
    /// `outcome` of [`GRAPH_NOTIFICATIONS`].
    GraphOutcome {
        Done = "done",
        Failed = "failed",
    }
);

label_values!(
    /// `action` of [`GOOGLE_CHANNELS`].
    ChannelAction {
        Created = "created",
        Stopped = "stopped",
    }
);

label_values!(
    /// `use` of [`OKTA_API_CALLS`].
    OktaApiUse {
        Import = "import",
        Enrich = "enrich",
    }
);

label_values!(
    /// `result` of [`OKTA_ENRICH`].
    EnrichResult {
        Cached = "cached",
        Fetched = "fetched",
        Failed = "failed",
    }
);

label_values!(
    /// `result` of [`OKTA_TOKEN_REQUESTS`].
    TokenResult {
        Issued = "issued",
        Refused = "refused",
    }
);

label_values!(
    /// `reason` of [`RECONCILE_SKIPPED`] and [`LOOKER_CORE_FIRST_LOGIN_SKIPPED`].
    SkipReason {
        LookerBudget = "looker_budget",
    }
);

label_values!(
    /// `outcome` of [`ROTATIONS`].
    RotationOutcome {
        Rotated = "rotated",
        RolledBack = "rolled_back",
    }
);

label_values!(
    /// `scope` of [`BREAKER_TRIPS`]: every source together, or one.
    BreakerScope {
        All = "all",
        Source = "source",
    }
);

label_values!(
    /// `queue` of [`QUEUE_LAG`] and [`QUEUE_DEPTH`].
    QueueName {
        Embedded = "embedded",
    }
);

/// The `source` of [`EVENTS_FAILED`] when the envelope could not be read (a poison message).
pub const UNKNOWN_SOURCE: &str = "unknown";

fn s(v: &'static str) -> SharedString {
    SharedString::const_str(v)
}

fn flag(b: bool) -> SharedString {
    s(if b { "true" } else { "false" })
}

// ---- Intakes ------------------------------------------------------------------------------

/// An intake accepted `event` from `source` (`gatehouse_events_received_total`).
pub fn event_received(source: Source, event: &IdentityEvent, actionable: bool) {
    EVENTS_RECEIVED.add(
        [
            s(source.as_str()),
            s(gatehouse_domain::metric_labels::event_kind(event)),
            flag(actionable),
        ],
        1,
    );
}

/// An intake refused a request; `source` and `reason` are the intake's own constants.
pub fn ingress_rejected(source: &'static str, reason: &'static str) {
    INGRESS_REJECTED.add([s(source), s(reason)], 1);
}

/// The listener `listener` closed a connection from `peer` at its limit of `max` (WARN).
pub fn http_connection_refused(listener: &'static str, peer: &dyn Display, max: usize) {
    HTTP_CONNECTIONS_REFUSED.add([s(listener)], 1);
    tracing::warn!(target: "gatehouse_intake::server", listener, %peer, max,
        "connection limit reached; closing the new connection");
}

/// A Graph notification of `kind` arrived.
pub fn graph_notification_received(kind: GraphKind, actionable: bool) {
    GRAPH_NOTIFICATIONS_RECEIVED.add([s(kind.as_str()), flag(actionable)], 1);
}

/// A stored Graph notification was finished or given up.
pub fn graph_notification(outcome: GraphOutcome) {
    GRAPH_NOTIFICATIONS.add([outcome.into()], 1);
}

/// A catch-up pass of `source` enqueued `n` events.
pub fn catchup_events(source: Source, n: u64) {
    INTAKE_CATCHUP_EVENTS.add([s(source.as_str())], n);
}

/// A catch-up pass of `source` failed.
pub fn catchup_failed(source: Source) {
    INTAKE_CATCHUP_FAILURES.add([s(source.as_str())], 1);
}

/// A catch-up pass of `source` skipped one log event for `reason` (the poller's constant).
pub fn catchup_skipped(source: Source, reason: &'static str) {
    INTAKE_CATCHUP_SKIPPED.add([s(source.as_str()), s(reason)], 1);
}

/// The catch-up of `source` has covered its log up to `seconds` ago.
pub fn catchup_lag(source: Source, seconds: f64) {
    INTAKE_CATCHUP_LAG.set([s(source.as_str())], seconds);
}

/// The SCIM relay published `n` outbox envelopes.
pub fn scim_outbox_published(n: u64) {
    SCIM_OUTBOX_PUBLISHED.add([], n);
}

/// A Google watch channel was created or stopped.
pub fn google_channel(action: ChannelAction) {
    GOOGLE_CHANNELS.add([action.into()], 1);
}

/// The Okta directory import published `n` events.
pub fn okta_import_published(n: u64) {
    OKTA_IMPORT_PUBLISHED.add([], n);
}

/// An Okta directory import of `org` failed (ERROR).
pub fn okta_import_failed(org: &dyn Display, error: &dyn Display) {
    OKTA_IMPORT_FAILURES.add([], 1);
    tracing::error!(target: "gatehouse_intake::ingress::okta_import", org = %org, error = %error,
        "okta directory import failed; trying again at the next interval");
}

/// `n` Okta management API calls were made for `use_`.
pub fn okta_api_calls(use_: OktaApiUse, n: u64) {
    OKTA_API_CALLS.add([use_.into()], n);
}

/// One Okta hook event's enrichment ended with `result`.
pub fn okta_enrich(result: EnrichResult) {
    OKTA_ENRICH.add([result.into()], 1);
}

/// Okta answered 429 to attempt `attempt` on `path`; calls wait until `reset` (WARN).
pub fn okta_api_rate_limited(path: &str, attempt: usize, reset: &dyn Display) {
    OKTA_API_RATE_LIMITED.add([], 1);
    tracing::warn!(target: "gatehouse_intake::ingress::okta_api", path, attempt, reset = %reset,
        "okta rate limit hit (429); waiting for the reset");
}

/// An Okta service app token request ended with `result`.
pub fn okta_token_request(result: TokenResult) {
    OKTA_TOKEN_REQUESTS.add([result.into()], 1);
}

// ---- Queue and store ----------------------------------------------------------------------

/// A queue `operation` failed with an error of `kind`.
pub fn queue_error(operation: QueueOp, kind: ErrorKind) {
    QUEUE_ERRORS.add([operation.into(), s(kind.as_str())], 1);
}

/// The oldest message of `queue` waits since `seconds`.
pub fn queue_lag(queue: QueueName, seconds: f64) {
    QUEUE_LAG.set([queue.into()], seconds);
}

/// `depth` messages wait in `queue`.
pub fn queue_depth(queue: QueueName, depth: i64) {
    QUEUE_DEPTH.set([queue.into()], depth as f64);
}

/// The embedded store committed one write transaction.
pub fn store_group_commit() {
    STORE_GROUP_COMMITS.add([], 1);
}

// ---- Processor ----------------------------------------------------------------------------

/// The processor handled an envelope of `source` with `outcome` in `seconds`.
pub fn event_processed(source: Source, outcome: ProcessedOutcome, seconds: f64) {
    EVENTS_PROCESSED.add([s(source.as_str()), outcome.into()], 1);
    EVENT_PROCESSING.record([], seconds);
}

/// An envelope (or delivery) of `source` failed for `reason`; `None` when the message could
/// not be read (its source is [`UNKNOWN_SOURCE`]).
pub fn events_failed(source: Option<Source>, reason: FailReason) {
    let source = source.map_or(UNKNOWN_SOURCE, Source::as_str);
    EVENTS_FAILED.add([s(source), reason.into()], 1);
}

/// Work on an envelope of `source` starts `seconds` after the intake accepted it.
pub fn event_age(source: Source, seconds: f64) {
    EVENT_AGE.record([s(source.as_str())], seconds);
}

/// `env`, dated beyond `max_clock_skew` after its receipt, is ordered by its receipt (WARN).
pub fn event_time_clamped(env: &Envelope, max_clock_skew: std::time::Duration) {
    tracing::warn!(target: "gatehouse_engine::engine", envelope_id = %env.id, source = env.source.as_str(), subject = %env.subject.key,
        claimed = %env.occurred_at.to_rfc3339(), received_at = %env.received_at.to_rfc3339(),
        max_clock_skew = ?max_clock_skew,
        "event time is beyond the allowed clock skew of its receipt; ordered by its receipt instead");
    EVENT_TIME_CLAMPED.add([s(env.source.as_str())], 1);
}

/// A subject changed under the handler; the event is handled again (logged at INFO).
pub fn subject_conflict(env: &Envelope, attempt: u32) {
    tracing::info!(target: "gatehouse_engine::engine", subject = %env.subject.key, envelope_id = %env.id, attempt,
        "subject changed by another handler; handling the event again");
    SUBJECT_CONFLICTS.add([], 1);
}

/// An offboarding found no account of a linked person in `target`.
pub fn unresolved_offboarding(target: TargetName) {
    UNRESOLVED_OFFBOARDINGS.add([s(target.as_str())], 1);
}

/// The safety screen withheld a step for `target`.
pub fn step_withheld(target: TargetName) {
    STEPS_WITHHELD.add([s(target.as_str())], 1);
}

/// The safety screen was not ready; nothing was sent to `target` (logged at WARN).
pub fn step_deferred(
    target: TargetName,
    subject: &dyn Display,
    envelope_id: &dyn Display,
    reason: &dyn Display,
) {
    tracing::warn!(target: "gatehouse_targets", target_name = %target, subject = %subject, envelope_id = %envelope_id,
        %reason, "the safety screen is not ready; nothing sent, the event is tried again");
    STEPS_DEFERRED.add([s(target.as_str())], 1);
}

/// Reconcile reported `n` drift rows of `target` instead of applying them.
pub fn drift_reported(target: TargetName, n: u64) {
    DRIFT_REPORTED.add([s(target.as_str())], n);
}

/// The mass-change breaker tripped for `kind`.
pub fn breaker_tripped(kind: ChangeKind, scope: BreakerScope) {
    BREAKER_TRIPS.add([s(kind.as_str()), scope.into()], 1);
}

/// The breaker held `env`, a change of `kind` from `source` (an envelope source or
/// `reconcile`) (WARN).
pub fn breaker_held(kind: ChangeKind, source: &str, env: &Envelope) {
    tracing::warn!(target: "gatehouse_engine::breaker", kind = kind.as_str(), source, envelope_id = %env.id,
        subject = %env.subject.key, "change held by the mass-change breaker");
    BREAKER_HELD.add([s(kind.as_str()), source.to_string().into()], 1);
}

/// The AWS user mapping of a linked person changed: `iam_user` (linked) is kept although the
/// mapping now says `mapped` (logged at WARN).
pub fn aws_mapping_changed(
    subject: &dyn Display,
    envelope_id: &dyn Display,
    iam_user: &dyn Display,
    mapped: &dyn Display,
) {
    tracing::warn!(target: "gatehouse_engine::cloud", target_name = "aws", subject = %subject, envelope_id = %envelope_id,
        iam_user = %iam_user, mapped = %mapped, "aws user mapping changed; the linked iam user is kept, nothing split");
    AWS_MAPPING_CHANGED.add([], 1);
}

/// Exporting the ledger chain head failed (logged at ERROR).
pub fn head_export_failed(error: &dyn Display) {
    HEAD_EXPORT_FAILURES.add([], 1);
    tracing::error!(target: "gatehouse_engine::head_export", error = %error, "cannot export the ledger chain head");
}

/// A processor forwarded `env`, a rotation request of `provider` (as the event named it), for
/// `reason` (WARN).
pub fn rotation_requested(env: &Envelope, provider: &str, reason: &str) {
    ROTATION_REQUESTS.add([s(Provider::of(provider).as_str())], 1);
    tracing::warn!(target: "gatehouse_engine::engine", subject = %env.subject.key, %provider, %reason, "rotation requested");
}

/// A rotation request of `provider` reaches no rotator or matches no declared secret.
pub fn rotation_request_unmatched(provider: &str) {
    ROTATION_REQUESTS_UNMATCHED.add([s(Provider::of(provider).as_str())], 1);
}

// ---- Looker -------------------------------------------------------------------------------

/// One Looker API call: `method`, the endpoint template (never a filled-in path) and the status
/// (a code or an error kind).
pub fn looker_call(method: impl std::fmt::Display, endpoint: &str, status: String) {
    LOOKER_CALLS.add(
        [
            method.to_string().into(),
            endpoint.to_owned().into(),
            status.into(),
        ],
        1,
    );
}

/// The Looker budget as read back from the state store.
pub fn looker_budget(calls_month: u64, remaining: i64, low: bool) {
    LOOKER_API_CALLS_MONTH.set([], calls_month as f64);
    LOOKER_API_BUDGET_REMAINING.set([], remaining as f64);
    LOOKER_API_BUDGET_LOW.set([], if low { 1.0 } else { 0.0 });
}

/// A Looker (Google Cloud core) person's plan waits for their first login (DEBUG).
pub fn looker_core_pending_first_login(subject: &dyn Display, email: &str) {
    tracing::debug!(target: "gatehouse_engine::engine", subject = %subject, email,
        "looker (google cloud core) user pending first login; converged once it appears");
    LOOKER_CORE_PENDING_FIRST_LOGIN.add([], 1);
}

/// A new Looker (Google Cloud core) user's person was converged with `writes` calls (INFO).
pub fn looker_core_first_login(subject: &dyn Display, user_id: &dyn Display, writes: usize) {
    tracing::info!(target: "gatehouse_engine::looker_core", subject = %subject, user_id = %user_id, writes,
        "looker (google cloud core) user appeared; person converged");
    LOOKER_CORE_FIRST_LOGINS.add([], 1);
}

/// A new Looker (Google Cloud core) user's person could not be converged (WARN).
pub fn looker_core_first_login_failed(subject: &dyn Display, user_id: &dyn Display, error: &dyn Display) {
    tracing::warn!(target: "gatehouse_engine::looker_core", subject = %subject, user_id = %user_id, error = %error,
        "cannot converge the person of a new looker user; tried again next run");
    LOOKER_CORE_FIRST_LOGIN_FAILURES.add([], 1);
}

/// A first-login run was skipped.
pub fn looker_core_first_login_skipped(reason: SkipReason) {
    LOOKER_CORE_FIRST_LOGIN_SKIPPED.add([reason.into()], 1);
}

// ---- Reconcile ----------------------------------------------------------------------------

/// The last reconcile found `n` orphans.
pub fn reconcile_orphans(n: usize) {
    RECONCILE_ORPHANS.set([], n as f64);
}

/// The last reconcile planned `n` changes in `target`.
pub fn reconcile_drift(target: gatehouse_domain::cloud::Target, n: usize) {
    RECONCILE_DRIFT.set([s(target.as_str())], n as f64);
}

/// The Looker user `looker_user` looks like another user of the person `subject` (WARN).
pub fn reconcile_duplicate_user(subject: &dyn Display, looker_user: &dyn Display) {
    tracing::warn!(target: "gatehouse_engine::reconcile_paged", subject = %subject, looker_user = %looker_user,
        "duplicate looker user of one person");
    RECONCILE_DUPLICATE_USERS.add([], 1);
}

/// A scheduled reconcile was skipped.
pub fn reconcile_skipped(reason: SkipReason) {
    RECONCILE_SKIPPED.add([reason.into()], 1);
}

// ---- Rotator ------------------------------------------------------------------------------
// `secret` is a name the operator declared in `[[rotator.secrets]]`, `trigger` and `step` the
// rotator's own constants: closed sets, never payload text.

/// A rotation of `secret` finished with `outcome`.
pub fn rotation_finished(secret: &str, outcome: RotationOutcome) {
    ROTATIONS.add([secret.to_string().into(), outcome.into()], 1);
}

/// The rotation `rotation` of `secret` started because of `trigger` (INFO).
pub fn rotation_started(secret: &str, trigger: &str, rotation: &dyn Display) {
    tracing::info!(target: "gatehouse_rotation::rotator", secret = %secret, trigger = %trigger, rotation = %rotation,
        "rotation started");
    ROTATIONS_STARTED.add([secret.to_string().into(), trigger.to_string().into()], 1);
}

/// The rotation step `step` of `secret` failed.
pub fn rotation_failed(secret: &str, step: &'static str) {
    ROTATION_FAILURES.add([secret.to_string().into(), s(step)], 1);
}

/// A key of `secret` was created outside Gatehouse by `subject`, and the secret says alert (WARN).
pub fn rotation_alert(secret: &str, subject: &dyn Display) {
    ROTATION_ALERTS.add([secret.to_string().into()], 1);
    tracing::warn!(target: "gatehouse_rotation::rotator", secret = %secret, subject = %subject,
        "a key was created outside gatehouse");
}

/// A rotation-queue message (delivery `attempt`) was not a rotation request (WARN).
pub fn rotation_request_poison(attempt: u32, reason: &dyn Display) {
    tracing::warn!(target: "gatehouse_rotation::rotator", attempt, %reason,
        "rotation queue: dead-lettering a message that is not a rotation request");
    ROTATION_REQUESTS_POISON.add([], 1);
}

/// The current credential of `secret` is `seconds` old.
pub fn secret_age(secret: &str, seconds: f64) {
    SECRET_AGE.set([secret.to_string().into()], seconds);
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
