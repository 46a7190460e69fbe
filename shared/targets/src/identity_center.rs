//! AWS IAM Identity Center as a [`Target`] (issue 20): the person is their Identity Store user
//! (the durable link holds its UserId once resolved; the IdP's user id as `ExternalId`, then the
//! email as `userName` / `emails.value` find it the first time); the plan adds the memberships
//! of the groups the rules grant, removes only managed groups' memberships, creates the
//! groups' missing account assignments, and on offboarding (`delete_user`) deletes the user
//! last. Gatehouse never creates Identity Store users or groups: the IdP provisions users
//! (SCIM), groups are infrastructure.
//!
//! An offboarding that finds no user for a person linked before (and was not told to delete
//! users, which would explain it) is an error: WARN, `gatehouse_unresolved_offboardings_total`,
//! and a permanent failure, so the envelope is dead-lettered (issue 16's rail).

use super::{RetryPolicy, retry_read};
use crate::client::identity_center::IdentityCenter;
use chrono::{DateTime, Utc};
use gatehouse_domain::cloud::CloudError;
use gatehouse_domain::identity::Identity;
use gatehouse_domain::identity_center::{self as idc, DesiredIdc, IdcActual, IdcOp, IdcPlan};
use gatehouse_domain::looker::{ErrorKind, HttpCall};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::target::{Link, Order, Planned, SendError, Sent, Target, TargetName};
use std::collections::{BTreeMap, BTreeSet};

/// The ledger's and the metrics' name of this target.
pub const IDENTITY_CENTER: TargetName = TargetName::new("identity_center");

/// Identity Center as a target: the client and the read retries.
#[derive(Clone, Debug)]
pub struct IdentityCenterTarget {
    pub client: IdentityCenter,
    pub retry: RetryPolicy,
}

impl IdentityCenterTarget {
    async fn retry<T, F, Fut>(&self, f: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        retry_read(&self.retry, |_| false, f).await
    }

    /// The person's Identity Store user: a linked one first, else found by id or email.
    async fn resolve(&self, d: &DesiredIdc, link: &Link) -> Result<Option<idc::IdcUser>, CloudError> {
        for id in &link.accounts {
            if let Some(u) = self.retry(|| self.client.user(id)).await? {
                return Ok(Some(u));
            }
        }
        if !link.accounts.is_empty() {
            // Linked, and gone: never look for someone else under their email.
            return Ok(None);
        }
        match self
            .retry(|| self.client.find_user(&d.person, &link.previous_emails))
            .await?
        {
            Some(id) => self.retry(|| self.client.user(&id)).await,
            None => Ok(None),
        }
    }
}

/// The read found no user for a person linked before, while offboarding them.
fn unresolved(link: &Link) -> CloudError {
    CloudError {
        target: gatehouse_domain::cloud::Target::Aws,
        kind: ErrorKind::Permanent,
        status: None,
        message: format!(
            "unresolved offboarding: identity store user {} linked to the person was not found",
            link.accounts.join(", ")
        ),
        retry_after: None,
        source: None,
    }
}

impl Target for IdentityCenterTarget {
    type Desired = DesiredIdc;
    type Actual = IdcActual;
    type Plan = IdcPlan;
    type Op = IdcOp;
    /// The Identity Store UserId (empty while unresolved: then the plan is empty).
    type Account = String;
    type Error = CloudError;

    fn name(&self) -> TargetName {
        IDENTITY_CENTER
    }

    fn desired(&self, policy: &Policy, identity: &Identity, _now: DateTime<Utc>) -> Option<DesiredIdc> {
        idc::evaluate(policy, identity)
    }

    async fn read(&self, d: &DesiredIdc, link: &Link) -> Result<IdcActual, CloudError> {
        let Some(user) = self.resolve(d, link).await? else {
            if d.offboarded && !link.accounts.is_empty() && !d.delete_user {
                tracing::warn!(subject = %link.person, linked = ?link.accounts,
                    "identity center: offboarding found no identity store user of a linked person");
                gatehouse_platform::events::unresolved_offboarding(IDENTITY_CENTER);
                return Err(unresolved(link));
            }
            return Ok(IdcActual::Absent);
        };
        let names = d.groups_to_resolve();
        let ids = futures::future::join_all(
            names
                .iter()
                .map(|g| async move { (g.clone(), self.retry(|| self.client.group_id(g)).await) }),
        );
        let (ids, held) = futures::join!(ids, self.retry(|| self.client.memberships(&user.user_id)));
        let mut group_ids = BTreeMap::new();
        for (g, id) in ids {
            if let Some(id) = id? {
                group_ids.insert(g, id);
            }
        }
        let held = held?;
        let memberships = group_ids
            .iter()
            .filter(|(g, _)| d.managed_groups.contains(*g))
            .filter_map(|(g, id)| held.get(id).map(|m| (g.clone(), m.clone())))
            .collect();
        let checks = d.assignments.iter().filter_map(|(a, _)| {
            let id = group_ids.get(&a.group)?.clone();
            Some(async move { (a.clone(), self.retry(|| self.client.has_assignment(a, &id)).await) })
        });
        let mut assignments = BTreeSet::new();
        for (a, has) in futures::future::join_all(checks).await {
            if has? {
                assignments.insert(a);
            }
        }
        Ok(IdcActual::Present {
            user,
            memberships,
            group_ids,
            assignments,
        })
    }

    fn linked(&self, actual: &IdcActual) -> Vec<String> {
        match actual {
            IdcActual::Present { user, .. } => vec![user.user_id.clone()],
            IdcActual::Absent => Vec::new(),
        }
    }

    fn diff(&self, desired: &DesiredIdc, actual: &IdcActual) -> IdcPlan {
        let plan = idc::diff(desired, actual);
        for note in &plan.notes {
            tracing::info!(note = %note, "identity center plan note");
        }
        plan
    }

    fn account(&self, plan: &IdcPlan) -> String {
        plan.user_id.clone().unwrap_or_default()
    }

    fn steps<'p>(&self, plan: &'p IdcPlan) -> Vec<Planned<'p, IdcOp>> {
        plan.steps
            .iter()
            .map(|s| Planned {
                op: &s.op,
                rule: &s.rule,
                // "Remove before delete": the user goes only after every other step succeeded.
                order: if s.op == IdcOp::DeleteUser {
                    Order::Last
                } else {
                    Order::Change
                },
            })
            .collect()
    }

    fn call(&self, user_id: &String, op: &IdcOp) -> HttpCall {
        let s = self.client.settings();
        op.http(&s.identity_store_id, s.instance_arn.as_deref(), user_id)
    }

    /// The Identity Store UserId (an assignment acts on a group, not on a person).
    fn principal(&self, user_id: &String, op: &IdcOp) -> Option<String> {
        match op {
            IdcOp::CreateAccountAssignment { .. } => None,
            _ => Some(user_id.clone()),
        }
    }

    fn revokes(&self, op: &IdcOp) -> bool {
        op.is_revoking()
    }

    fn not_found_is_done(&self, op: &IdcOp) -> bool {
        op.is_revoking()
    }

    async fn send(&self, user_id: &String, ops: &[&IdcOp]) -> Result<Sent<String>, SendError<CloudError>> {
        for op in ops {
            self.client.execute(user_id, op).await.map_err(SendError::Write)?;
        }
        Ok(Sent::Written {
            account: None,
            status: Some(200),
        })
    }
}
