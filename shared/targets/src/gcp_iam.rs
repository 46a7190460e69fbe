//! GCP IAM as a [`Target`]: the person is the `user:EMAIL` member; what is read is the policy of
//! every managed resource (a resource that does not exist is skipped, not guessed at); the plan
//! is `cloud::diff_gcp`. Every change to one resource goes in one read-modify-write:
//! getIamPolicy → change → setIamPolicy with the etag; a concurrent change (409/ABORTED) is
//! read again and re-applied, never overwritten.

use super::{RetryPolicy, retry_read};
use crate::client::gcp_iam::GcpIam;
use chrono::{DateTime, Utc};
use gatehouse_domain::cloud::{self, CloudError, DesiredGcp, GcpIamOp, GcpStep, IamPolicy};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::{ErrorKind, HttpCall};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::target::{Link, Order, Planned, SendError, Sent, Target, TargetName};
use std::collections::BTreeMap;

/// GCP as a target: the client, the read retries and how often a concurrently changed policy
/// is read and changed again.
#[derive(Clone, Debug)]
pub struct GcpTarget {
    pub iam: GcpIam,
    pub retry: RetryPolicy,
    /// Read-modify-write attempts of one policy.
    pub conflict_retries: usize,
}

/// The GCP changes for one person, and what could not be planned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcpPlan {
    pub steps: Vec<GcpStep>,
    pub notes: Vec<String>,
}

/// The plan against the policies read. Pure. Resources that could not be read are skipped (with
/// a note), not guessed at.
pub fn plan(desired: &DesiredGcp, actual: &BTreeMap<String, IamPolicy>) -> GcpPlan {
    let (steps, _) = cloud::diff_gcp(desired, actual);
    let steps = steps
        .into_iter()
        .filter(|s| actual.contains_key(s.op.resource()))
        .collect();
    let notes = desired
        .resources()
        .into_iter()
        .filter(|r| !actual.contains_key(r))
        .map(|r| format!("gcp resource {r} was not found; skipped"))
        .collect();
    GcpPlan { steps, notes }
}

impl Target for GcpTarget {
    type Desired = DesiredGcp;
    /// Resource name → its policy, for every managed resource that exists.
    type Actual = BTreeMap<String, IamPolicy>;
    type Plan = GcpPlan;
    type Op = GcpIamOp;
    /// Every op names its member and resource itself.
    type Account = ();
    type Error = CloudError;

    fn name(&self) -> TargetName {
        TargetName::GCP
    }

    fn desired(&self, policy: &Policy, identity: &Identity, now: DateTime<Utc>) -> Option<DesiredGcp> {
        cloud::evaluate(policy, identity, None, true, now).gcp
    }

    async fn read(&self, d: &DesiredGcp, _link: &Link) -> Result<BTreeMap<String, IamPolicy>, CloudError> {
        let reads = d.resources().into_iter().map(|r| async move {
            let p = retry_read(&self.retry, |_| false, || self.iam.get_policy(&r)).await;
            (r, p)
        });
        let mut out = BTreeMap::new();
        for (r, p) in futures::future::join_all(reads).await {
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
    }

    fn diff(&self, desired: &DesiredGcp, actual: &BTreeMap<String, IamPolicy>) -> GcpPlan {
        plan(desired, actual)
    }

    fn account(&self, _plan: &GcpPlan) {}

    fn steps<'p>(&self, plan: &'p GcpPlan) -> Vec<Planned<'p, GcpIamOp>> {
        plan.steps
            .iter()
            .map(|s| Planned {
                op: &s.op,
                rule: &s.rule,
                order: Order::Change,
            })
            .collect()
    }

    fn call(&self, _: &(), op: &GcpIamOp) -> HttpCall {
        op.http()
    }

    /// The member the binding change names (`user:a@b.c`, `serviceAccount:...`).
    fn principal(&self, _: &(), op: &GcpIamOp) -> Option<String> {
        match op {
            GcpIamOp::AddMember { member, .. } | GcpIamOp::RemoveMember { member, .. } => {
                Some(member.clone())
            }
        }
    }

    fn revokes(&self, op: &GcpIamOp) -> bool {
        op.is_revoking()
    }

    fn not_found_is_done(&self, _op: &GcpIamOp) -> bool {
        false
    }

    /// One setIamPolicy per resource.
    fn batch_key(&self, op: &GcpIamOp) -> Option<String> {
        Some(op.resource().to_string())
    }

    fn conflict_retries(&self) -> usize {
        self.conflict_retries
    }

    /// getIamPolicy (with read retries; not a write, so not ledgered) → change → setIamPolicy.
    async fn send(&self, _: &(), ops: &[&GcpIamOp]) -> Result<Sent<()>, SendError<CloudError>> {
        let Some(resource) = ops.first().map(|o| o.resource()) else {
            return Ok(Sent::Unchanged);
        };
        let mut policy = retry_read(&self.retry, |_| false, || self.iam.get_policy(resource))
            .await
            .map_err(SendError::BeforeWrite)?;
        if !cloud::apply_gcp(&mut policy, ops.iter().copied()) {
            return Ok(Sent::Unchanged); // already as wanted
        }
        self.iam
            .set_policy(resource, &policy)
            .await
            .map_err(SendError::Write)?;
        Ok(Sent::Written {
            account: None,
            status: Some(200),
        })
    }
}
