//! The cloud half of the engine: read AWS IAM and GCP IAM for one person, plan, apply (every call
//! ledgered, independent calls concurrent), or only report (reconcile `report` mode).
//!
//! Retries live here: throttling and transient errors back off (a `Retry-After` is honoured);
//! a revocation that finds nothing (`NoSuchEntity`, 404) is already done; GCP writes are a
//! read-modify-write with the etag, re-read on 409/ABORTED.

use crate::engine::{ProcessError, RetryPolicy};
use backon::{BackoffBuilder, Retryable};
use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, join_all};
use gatehouse_adapters::aws_iam::AwsIam;
use gatehouse_adapters::gcp_iam::GcpIam;
use gatehouse_domain::cloud::{
    self, AwsActual, AwsPlan, AwsUserKey, AwsUserMapping, CloudError, CloudPlan, DesiredCloud, GcpStep,
    IamPolicy, Target,
};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::ErrorKind;
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{BackendError, LedgerEntry, StateStore, SubjectState};
use gatehouse_platform::config::{Mode, Modes};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Lists the directory (every subject), for resolving a drift subject to a person.
pub type DirectoryFn =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<SubjectState>, BackendError>> + Send + Sync>;

/// AWS as a target: the client and how a person maps to an IAM user.
#[derive(Clone, Debug)]
pub struct AwsTarget {
    pub iam: AwsIam,
    pub mapping: AwsUserMapping,
}

/// The configured cloud targets.
#[derive(Clone)]
pub struct CloudTargets {
    pub aws: Option<AwsTarget>,
    pub gcp: Option<GcpIam>,
    pub modes: Modes,
    pub retry: RetryPolicy,
    /// Read-modify-write attempts of one GCP policy.
    pub conflict_retries: usize,
    pub directory: DirectoryFn,
}

/// What a cloud call belongs to, for the ledger.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub envelope_id: String,
    pub subject: String,
    pub event: String,
}

/// What the clouds hold for one person.
#[derive(Debug, Clone)]
pub struct CloudActual {
    pub aws: AwsActual,
    pub gcp: BTreeMap<String, IamPolicy>,
}

impl CloudTargets {
    pub fn is_empty(&self) -> bool {
        self.aws.is_none() && self.gcp.is_none()
    }

    /// The desired cloud state of one person. Pure.
    pub fn evaluate(&self, policy: &Policy, identity: &Identity, now: DateTime<Utc>) -> DesiredCloud {
        cloud::evaluate(
            policy,
            identity,
            self.aws.as_ref().map(|a| &a.mapping),
            self.gcp.is_some(),
            now,
        )
    }

    /// Read what the clouds hold for one person: the IAM user and every managed GCP resource,
    /// all at once.
    pub async fn read(&self, desired: &DesiredCloud) -> Result<CloudActual, CloudError> {
        let aws = async {
            let (Some(t), Some(d)) = (&self.aws, &desired.aws) else {
                return Ok(AwsActual::Unknown);
            };
            let name = self.retry(|| t.iam.resolve(&d.user)).await?;
            let Some(name) = name else {
                return Ok(AwsActual::Absent);
            };
            let needs = d.needs();
            Ok(self
                .retry(|| t.iam.read_user(&name, needs))
                .await?
                .map(AwsActual::Present)
                .unwrap_or(AwsActual::Absent))
        };
        let gcp = async {
            let (Some(g), Some(d)) = (&self.gcp, &desired.gcp) else {
                return Ok(BTreeMap::new());
            };
            let reads = d.resources().into_iter().map(|r| async move {
                let p = self.retry(|| g.get_policy(&r)).await;
                (r, p)
            });
            let mut out = BTreeMap::new();
            for (r, p) in join_all(reads).await {
                match p {
                    Ok(p) => {
                        out.insert(r, p);
                    }
                    // A resource that does not exist (any more) cannot grant anything.
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        tracing::warn!(resource = %r, "gcp resource not found; skipped");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        };
        let (aws, gcp) = futures::join!(aws, gcp);
        Ok(CloudActual { aws: aws?, gcp: gcp? })
    }

    /// The plan for one person (pure, given what was read).
    pub fn plan(&self, desired: &DesiredCloud, actual: &CloudActual) -> CloudPlan {
        let aws = desired.aws.as_ref().map(|d| cloud::diff_aws(d, &actual.aws));
        let (gcp, notes) = match &desired.gcp {
            Some(d) => {
                let (steps, _) = cloud::diff_gcp(d, &actual.gcp);
                // Resources that could not be read are skipped, not guessed at.
                let steps: Vec<GcpStep> = steps
                    .into_iter()
                    .filter(|s| actual.gcp.contains_key(s.op.resource()))
                    .collect();
                let missing: Vec<String> = d
                    .resources()
                    .into_iter()
                    .filter(|r| !actual.gcp.contains_key(r))
                    .map(|r| format!("gcp resource {r} was not found; skipped"))
                    .collect();
                (steps, missing)
            }
            None => (Vec::new(), Vec::new()),
        };
        CloudPlan { aws, gcp, notes }
    }

    /// An offline plan (`gatehouse plan` without cloud access): every call that may apply.
    pub fn offline_plan(desired: &DesiredCloud) -> CloudPlan {
        let aws = desired
            .aws
            .as_ref()
            .map(|d| cloud::diff_aws(d, &AwsActual::Unknown));
        let (gcp, notes) = desired
            .gcp
            .as_ref()
            .map(|d| cloud::diff_gcp(d, &BTreeMap::new()))
            .unwrap_or_default();
        CloudPlan { aws, gcp, notes }
    }

    async fn retry<T, F, Fut>(&self, f: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        f.retry(self.retry.backoff())
            .when(CloudError::is_retryable)
            .adjust(|e: &CloudError, d| d.map(|d| e.retry_after.map_or(d, |r| r.max(d))))
            .await
    }

    /// Apply a plan: every IAM call and every GCP resource's read-modify-write at once.
    /// `only` limits it to targets in enforce mode (drift and reconcile); `None` applies all.
    /// Returns the number of writes that took effect.
    pub async fn apply<S: StateStore>(
        &self,
        store: &S,
        ctx: &Ctx,
        plan: &CloudPlan,
        modes: Option<Modes>,
    ) -> Result<usize, ProcessError> {
        let enforce = |t: Target| {
            modes.is_none_or(|m| match t {
                Target::Aws => m.aws == Mode::Enforce,
                Target::Gcp => m.gcp == Mode::Enforce,
                Target::Looker => m.looker == Mode::Enforce,
            })
        };
        let mut reported = Vec::new();
        let aws = async {
            let (Some(t), Some(p)) = (&self.aws, &plan.aws) else {
                return Ok(0);
            };
            if !enforce(Target::Aws) {
                reported.extend(report_aws(ctx, p));
                return Ok(0);
            }
            self.apply_aws(store, ctx, &t.iam, p).await
        };
        let mut gcp_reported = Vec::new();
        let gcp = async {
            let Some(g) = &self.gcp else { return Ok(0) };
            if !enforce(Target::Gcp) {
                gcp_reported.extend(
                    plan.gcp
                        .iter()
                        .map(|s| entry(ctx, Target::Gcp, &s.rule, s.op.http(), REPORTED)),
                );
                return Ok(0);
            }
            let mut by_resource: BTreeMap<&str, Vec<&GcpStep>> = BTreeMap::new();
            for s in &plan.gcp {
                by_resource.entry(s.op.resource()).or_default().push(s);
            }
            let results = join_all(
                by_resource
                    .into_iter()
                    .map(|(r, steps)| self.apply_gcp_resource(store, ctx, g, r, steps)),
            )
            .await;
            let mut n = 0;
            for r in results {
                n += r?;
            }
            Ok::<usize, ProcessError>(n)
        };
        let (a, g) = futures::join!(aws, gcp);
        reported.extend(gcp_reported);
        if !reported.is_empty() {
            for e in &reported {
                metrics::counter!("gatehouse_drift_reported_total", "target" => e.target.clone())
                    .increment(1);
            }
            store.append_ledger(&reported).await?;
        }
        Ok(a? + g?)
    }

    async fn apply_aws<S: StateStore>(
        &self,
        store: &S,
        ctx: &Ctx,
        iam: &AwsIam,
        plan: &AwsPlan,
    ) -> Result<usize, ProcessError> {
        let calls = plan.steps.iter().map(|step| async move {
            let attempt = || async {
                let r = iam.execute(&plan.user, &step.op).await;
                let gone = matches!(&r, Err(e) if e.kind == ErrorKind::NotFound && step.op.is_revoking());
                let status = match &r {
                    Ok(()) => "200".to_string(),
                    Err(_) if gone => "404 already gone".to_string(),
                    Err(e) => e.ledger_status(),
                };
                store
                    .append_ledger(&[entry(
                        ctx,
                        Target::Aws,
                        &step.rule,
                        step.op.http(&plan.user),
                        &status,
                    )])
                    .await
                    .map_err(Attempt::Ledger)?;
                match r {
                    Err(_) if gone => Ok(false),
                    Ok(()) => Ok(true),
                    Err(e) => Err(Attempt::Cloud(e)),
                }
            };
            attempt
                .retry(self.retry.backoff())
                .when(|e: &Attempt| matches!(e, Attempt::Cloud(c) if c.is_retryable()))
                .adjust(|e: &Attempt, d| match e {
                    Attempt::Cloud(c) => d.map(|d| c.retry_after.map_or(d, |r| r.max(d))),
                    Attempt::Ledger(_) => d,
                })
                .await
        });
        let mut writes = 0;
        let mut first_error = None;
        for r in join_all(calls).await {
            match r {
                Ok(true) => writes += 1,
                Ok(false) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(writes),
        }
    }

    /// getIamPolicy → change → setIamPolicy with the etag; on 409/ABORTED read again. Every
    /// setIamPolicy attempt is ledgered once per change it carries.
    async fn apply_gcp_resource<S: StateStore>(
        &self,
        store: &S,
        ctx: &Ctx,
        gcp: &GcpIam,
        resource: &str,
        steps: Vec<&GcpStep>,
    ) -> Result<usize, ProcessError> {
        let mut backoff = self.retry.backoff().build();
        let mut conflicts = 0;
        loop {
            let mut policy = self.retry(|| gcp.get_policy(resource)).await?;
            if !cloud::apply_gcp(&mut policy, steps.iter().map(|s| &s.op)) {
                return Ok(0); // already as wanted
            }
            let r = gcp.set_policy(resource, &policy).await;
            let status = match &r {
                Ok(_) => "200".to_string(),
                Err(e) => e.ledger_status(),
            };
            let rows: Vec<LedgerEntry> = steps
                .iter()
                .map(|s| entry(ctx, Target::Gcp, &s.rule, s.op.http(), &status))
                .collect();
            store.append_ledger(&rows).await?;
            match r {
                Ok(_) => return Ok(steps.len()),
                Err(e) if e.kind == ErrorKind::Conflict && conflicts + 1 < self.conflict_retries => {
                    conflicts += 1;
                    tracing::info!(%resource, conflicts, "gcp policy changed concurrently; reading it again");
                }
                Err(e) if e.is_retryable() => match backoff.next() {
                    Some(d) => {
                        let d = e.retry_after.map_or(d, |r| r.max(d));
                        tracing::warn!(error = %e, retry_in = ?d, "gcp setIamPolicy failed; retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The directory identity a drift subject (`aws:iam-user:NAME`, `gcp:user:EMAIL`) belongs to.
    pub async fn resolve_drift(&self, subject: &str) -> Result<Option<SubjectState>, ProcessError> {
        let key = if let Some(email) = subject.strip_prefix("gcp:user:") {
            DriftKey::Email(email.to_ascii_lowercase())
        } else if let Some(name) = subject.strip_prefix("aws:iam-user:") {
            match &self.aws {
                Some(AwsTarget {
                    iam,
                    mapping: AwsUserMapping::Tag { key },
                }) => {
                    let tags = self.retry(|| iam.tags(name)).await;
                    match tags {
                        Ok(mut t) => match t.remove(key) {
                            Some(v) => DriftKey::Email(v.to_ascii_lowercase()),
                            None => return Ok(None),
                        },
                        Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(AwsTarget { mapping, .. }) => DriftKey::IamName(name.to_string(), mapping.clone()),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let subjects = (self.directory)().await?;
        Ok(subjects.into_iter().find(|s| match &key {
            DriftKey::Email(e) => s.identity.email().is_some_and(|m| m.eq_ignore_ascii_case(e)),
            DriftKey::IamName(n, m) => m.key_for(&s.identity) == Some(AwsUserKey::Name(n.clone())),
        }))
    }
}

enum DriftKey {
    Email(String),
    IamName(String, AwsUserMapping),
}

/// Ledger status of a change found but not made (report mode).
pub const REPORTED: &str = "drift_reported";

fn report_aws(ctx: &Ctx, p: &AwsPlan) -> Vec<LedgerEntry> {
    p.steps
        .iter()
        .map(|s| entry(ctx, Target::Aws, &s.rule, s.op.http(&p.user), REPORTED))
        .collect()
}

/// A ledger row for a cloud call.
pub fn entry(
    ctx: &Ctx,
    target: Target,
    rule: &str,
    call: gatehouse_domain::looker::HttpCall,
    status: &str,
) -> LedgerEntry {
    LedgerEntry {
        at: Utc::now(),
        envelope_id: ctx.envelope_id.clone(),
        subject: ctx.subject.clone(),
        event: ctx.event.clone(),
        rule: rule.to_string(),
        target: target.as_str().to_string(),
        call,
        status: status.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error(transparent)]
    Cloud(CloudError),
    #[error(transparent)]
    Ledger(BackendError),
}

impl From<Attempt> for ProcessError {
    fn from(a: Attempt) -> Self {
        match a {
            Attempt::Cloud(e) => ProcessError::Cloud(e),
            Attempt::Ledger(e) => ProcessError::Backend(e),
        }
    }
}
