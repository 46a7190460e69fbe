//! GCP IAM as a [`Target`]: the person is the `user:EMAIL` member; what is read is the policy of
//! every managed resource (a resource that does not exist is skipped, not guessed at); the plan
//! is `cloud::diff_gcp`. Every change to one resource goes in one read-modify-write:
//! getIamPolicy → change → setIamPolicy with the etag; a concurrent change (409/ABORTED) is
//! read again and re-applied, never overwritten.
//!
//! Issue 16: the person is linked to the member strings they were granted under, so when their
//! email changes the old member leaves every managed binding (with the new one granted in the
//! same setIamPolicy), and an offboarding after a rename removes the linked member too.

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

/// What GCP holds for one person: the policy of every managed resource that exists, and who
/// the person is there (their member now and the members linked to them before).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcpActual {
    /// Resource name → its policy.
    pub policies: BTreeMap<String, IamPolicy>,
    /// The member the person is now (`user:EMAIL`), linked once it is granted something.
    pub member: String,
    /// Whether the person is to hold (or holds) a managed binding under `member`: then the
    /// member is linked to them.
    pub grants: bool,
    /// Members linked to the person before (issue 16), other than `member`.
    pub linked: Vec<String>,
}

/// The GCP changes for one person, and what could not be planned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcpPlan {
    pub steps: Vec<GcpStep>,
    pub notes: Vec<String>,
}

/// The plan against what was read: the policies, and the members linked to the person before
/// (removed wherever a managed binding still holds them). Pure.
pub fn plan_linked(desired: &DesiredGcp, actual: &GcpActual) -> GcpPlan {
    let mut d = desired.clone();
    d.add_former_members(&actual.linked);
    plan(&d, &actual.policies)
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
    /// The policy of every managed resource that exists, and the person's members.
    type Actual = GcpActual;
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

    async fn read(&self, d: &DesiredGcp, link: &Link) -> Result<GcpActual, CloudError> {
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
        let grants = (!d.offboarded && !d.bindings.is_empty())
            || d.managed
                .iter()
                .any(|g| out.get(&g.resource).is_some_and(|p| p.has(&g.role, &d.member)));
        let linked: Vec<String> = link
            .accounts
            .iter()
            .filter(|a| !a.eq_ignore_ascii_case(&d.member))
            .cloned()
            .collect();
        if !linked.is_empty() {
            tracing::info!(subject = %link.person, member = %d.member, linked = ?linked,
                "gcp: the person was linked to other members; they leave the managed bindings");
        }
        Ok(GcpActual {
            policies: out,
            member: d.member.clone(),
            grants,
            linked,
        })
    }

    /// The member the person holds (or is granted) managed bindings under.
    fn linked(&self, actual: &GcpActual) -> Vec<String> {
        if actual.grants {
            vec![actual.member.clone()]
        } else {
            Vec::new()
        }
    }

    fn diff(&self, desired: &DesiredGcp, actual: &GcpActual) -> GcpPlan {
        plan_linked(desired, actual)
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
