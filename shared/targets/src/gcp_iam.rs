//! GCP IAM as a [`Target`]: the person is the `user:EMAIL` member; what is read is the policy of
//! every managed resource (a resource that does not exist is skipped, not guessed at); the plan
//! is `cloud::diff_gcp`. Every change to one resource goes in one read-modify-write:
//! getIamPolicy → change → setIamPolicy with the etag; a concurrent change (409/ABORTED) is
//! read again and re-applied, never overwritten.
//!
//! Issue 16: the person is linked to the member strings they were granted under, so when their
//! email changes the old member leaves every managed binding (with the new one granted in the
//! same setIamPolicy), and an offboarding after a rename removes the linked member too.
//!
//! Google groups (issue 20): a rule's `gcp_groups` are memberships in the Cloud Identity Groups
//! API, read with `memberships:lookup` (the person's current and earlier emails) and written one
//! call per membership (`memberships.create` / `.delete`), through the same loop.

use super::{RetryPolicy, retry_read};
use crate::client::cloud_identity::{CloudIdentity, Created};
use crate::client::gcp_iam::GcpIam;
use chrono::{DateTime, Utc};
use gatehouse_domain::cloud::{self, CloudError, DesiredGcp, GcpIamOp, GcpStep, GroupHeld, IamPolicy};
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
    /// Google group memberships (Cloud Identity Groups API).
    pub groups: CloudIdentity,
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

/// What GCP holds for one person: the policy of every managed resource that exists, every
/// managed Google group that exists with the person's memberships in it, and who the person is
/// there (their member now and the members linked to them before).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcpActual {
    /// Resource name → its policy.
    pub policies: BTreeMap<String, IamPolicy>,
    /// Managed group email → the group and the person's memberships in it.
    pub groups: BTreeMap<String, GroupHeld>,
    /// The member the person is now (`user:EMAIL`), linked once it is granted something.
    pub member: String,
    /// Whether the person is to hold (or holds) a managed binding under `member`: then the
    /// member is linked to them.
    pub grants: bool,
    /// Members linked to the person before (issue 16), other than `member`.
    pub linked: Vec<String>,
}

/// The plan against what was read, with the members linked to the person before removed
/// wherever a managed binding still holds them. Pure.
pub fn plan_linked(desired: &DesiredGcp, actual: &GcpActual) -> GcpPlan {
    let mut d = desired.clone();
    d.add_former_members(&actual.linked);
    plan(&d, actual)
}

/// The plan against the policies and groups read. Pure. Resources and groups that could not be
/// read are skipped (with a note), not guessed at.
pub fn plan(desired: &DesiredGcp, actual: &GcpActual) -> GcpPlan {
    let (steps, _) = cloud::diff_gcp(desired, &actual.policies);
    let mut steps: Vec<GcpStep> = steps
        .into_iter()
        .filter(|s| actual.policies.contains_key(s.op.resource()))
        .collect();
    let mut notes: Vec<String> = desired
        .resources()
        .into_iter()
        .filter(|r| !actual.policies.contains_key(r))
        .map(|r| format!("gcp resource {r} was not found; skipped"))
        .collect();
    let (group_steps, group_notes) = cloud::diff_gcp_groups(desired, Some(&actual.groups));
    steps.extend(group_steps);
    notes.extend(group_notes);
    GcpPlan { steps, notes }
}

impl Target for GcpTarget {
    type Desired = DesiredGcp;
    /// Every managed resource's policy and managed group's memberships that exist.
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
        let (policies, groups) = futures::join!(self.read_policies(d), self.read_groups(d, link));
        let (policies, groups) = (policies?, groups?);
        let grants = (!d.offboarded && !d.bindings.is_empty())
            || d.managed.iter().any(|g| {
                policies
                    .get(&g.resource)
                    .is_some_and(|p| p.has(&g.role, &d.member))
            });
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
            policies,
            groups,
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

    /// The member the change names (`user:a@b.c`, `serviceAccount:...`; a group member as
    /// `user:EMAIL`, so `[safety] protected` members are screened alike).
    fn principal(&self, _: &(), op: &GcpIamOp) -> Option<String> {
        Some(op.principal())
    }

    fn revokes(&self, op: &GcpIamOp) -> bool {
        op.is_revoking()
    }

    /// A membership that is already gone is done.
    fn not_found_is_done(&self, op: &GcpIamOp) -> bool {
        matches!(op, GcpIamOp::RemoveGroupMember { .. })
    }

    /// One setIamPolicy per resource; one call per group membership.
    fn batch_key(&self, op: &GcpIamOp) -> Option<String> {
        (!op.is_group_membership()).then(|| op.resource().to_string())
    }

    fn conflict_retries(&self) -> usize {
        self.conflict_retries
    }

    /// getIamPolicy (with read retries; not a write, so not ledgered) → change → setIamPolicy;
    /// a membership: one create or delete.
    async fn send(&self, _: &(), ops: &[&GcpIamOp]) -> Result<Sent<()>, SendError<CloudError>> {
        match ops {
            [op] if op.is_group_membership() => self.send_membership(op).await,
            _ => self.send_policy(ops).await,
        }
    }
}

impl GcpTarget {
    async fn read_policies(&self, d: &DesiredGcp) -> Result<BTreeMap<String, IamPolicy>, CloudError> {
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

    /// Every managed group that exists (`groups:lookup`, cached) and the person's memberships
    /// in it: the current email and every earlier one (`memberships:lookup`).
    async fn read_groups(
        &self,
        d: &DesiredGcp,
        link: &Link,
    ) -> Result<BTreeMap<String, GroupHeld>, CloudError> {
        let email = d
            .member
            .strip_prefix("user:")
            .unwrap_or(&d.member)
            .to_ascii_lowercase();
        let mut emails: Vec<String> = vec![email];
        for e in d.previous_emails.iter().chain(&link.previous_emails) {
            let e = e.to_ascii_lowercase();
            if !emails.contains(&e) {
                emails.push(e);
            }
        }
        let emails = &emails;
        let reads = d.managed_groups.iter().map(|g| async move {
            let name = match retry_read(&self.retry, |_| false, || self.groups.group_name(g)).await {
                Ok(n) => n,
                Err(e) if e.kind == ErrorKind::NotFound => {
                    tracing::warn!(group = %g, "google group not found; skipped");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            let mut memberships = BTreeMap::new();
            for e in emails {
                let m =
                    retry_read(&self.retry, |_| false, || self.groups.lookup_membership(&name, e)).await?;
                if let Some(m) = m {
                    memberships.insert(e.clone(), m);
                }
            }
            Ok(Some((g.clone(), GroupHeld { name, memberships })))
        });
        let mut out = BTreeMap::new();
        for r in futures::future::join_all(reads).await {
            if let Some((g, h)) = r? {
                out.insert(g, h);
            }
        }
        Ok(out)
    }

    /// One membership call. A create finding the member already there (409 `ALREADY_EXISTS`)
    /// is done; a delete of a membership not found by lookup makes no call.
    async fn send_membership(&self, op: &GcpIamOp) -> Result<Sent<()>, SendError<CloudError>> {
        match op {
            GcpIamOp::AddGroupMember {
                group,
                group_name,
                member,
            } => {
                let name = match group_name {
                    Some(n) => n.clone(),
                    None => retry_read(&self.retry, |_| false, || self.groups.group_name(group))
                        .await
                        .map_err(SendError::BeforeWrite)?,
                };
                let created = self
                    .groups
                    .create_membership(&name, member)
                    .await
                    .map_err(SendError::Write)?;
                Ok(Sent::Written {
                    account: None,
                    status: Some(if created == Created::AlreadyMember {
                        409
                    } else {
                        200
                    }),
                })
            }
            GcpIamOp::RemoveGroupMember {
                group,
                membership,
                member,
            } => {
                let membership = match membership {
                    Some(m) => m.clone(),
                    None => {
                        let found = retry_read(
                            &self.retry,
                            |_| false,
                            || async {
                                let name = self.groups.group_name(group).await?;
                                self.groups.lookup_membership(&name, member).await
                            },
                        )
                        .await;
                        match found {
                            Ok(Some(m)) => m,
                            Ok(None) => return Ok(Sent::Unchanged),
                            Err(e) if e.kind == ErrorKind::NotFound => return Ok(Sent::Unchanged),
                            Err(e) => return Err(SendError::BeforeWrite(e)),
                        }
                    }
                };
                self.groups
                    .delete_membership(&membership)
                    .await
                    .map_err(SendError::Write)?;
                Ok(Sent::Written {
                    account: None,
                    status: Some(200),
                })
            }
            GcpIamOp::AddMember { .. } | GcpIamOp::RemoveMember { .. } => self.send_policy(&[op]).await,
        }
    }

    async fn send_policy(&self, ops: &[&GcpIamOp]) -> Result<Sent<()>, SendError<CloudError>> {
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
