//! AWS IAM as a [`Target`]: the person is the IAM user the configured mapping names (by name
//! template, or the user carrying a tag with their email); the plan is `cloud::diff_aws`; every
//! step is one IAM call, all at once. A revocation that finds nothing (`NoSuchEntity`) is done.

use super::{RetryPolicy, retry_read};
use crate::client::aws_iam::AwsIam;
use chrono::{DateTime, Utc};
use gatehouse_domain::cloud::{self, AwsActual, AwsIamOp, AwsPlan, AwsUserMapping, CloudError, DesiredAws};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::HttpCall;
use gatehouse_domain::policy::Policy;
use gatehouse_domain::target::{Link, Order, Planned, SendError, Sent, Target, TargetName};

/// AWS as a target: the client, how a person maps to an IAM user, and the read retries.
#[derive(Clone, Debug)]
pub struct AwsTarget {
    pub iam: AwsIam,
    pub mapping: AwsUserMapping,
    pub retry: RetryPolicy,
}

impl AwsTarget {
    /// A read with this target's retries.
    pub async fn retry<T, F, Fut>(&self, f: F) -> Result<T, CloudError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        retry_read(&self.retry, |_| false, f).await
    }
}

impl Target for AwsTarget {
    type Desired = DesiredAws;
    type Actual = AwsActual;
    type Plan = AwsPlan;
    type Op = AwsIamOp;
    /// The IAM user name (a description while unresolved).
    type Account = String;
    type Error = CloudError;

    fn name(&self) -> TargetName {
        TargetName::AWS
    }

    fn desired(&self, policy: &Policy, identity: &Identity, now: DateTime<Utc>) -> Option<DesiredAws> {
        cloud::evaluate(policy, identity, Some(&self.mapping), false, now).aws
    }

    /// The person is the IAM user linked to them (issue 16), else the one the mapping names
    /// today. When the mapping's input changed (a new email) and it now names another IAM user
    /// (or none), the linked user is still the person's: it is the one read, planned and
    /// offboarded, no second user is ever acted on, and the change is reported
    /// ([`AwsUser::remapped`](gatehouse_domain::cloud::AwsUser::remapped): a WARN here, a ledger
    /// row and a `gatehouse plan` note from the plan).
    async fn read(&self, d: &DesiredAws, link: &Link) -> Result<AwsActual, CloudError> {
        let mapped = self.retry(|| self.iam.resolve(&d.user)).await?;
        let needs = d.needs();
        // The mapping naming any linked user is the person as linked: nothing changed.
        let linked = link
            .accounts
            .first()
            .filter(|_| !link.accounts.iter().any(|a| Some(a) == mapped.as_ref()));
        if let Some(linked) = linked {
            if let Some(mut user) = self.retry(|| self.iam.read_user(linked, needs)).await? {
                let now = mapped
                    .clone()
                    .unwrap_or_else(|| format!("no iam user ({})", d.user.describe()));
                tracing::warn!(subject = %link.person, iam_user = %linked, mapped = %now,
                    "aws: the person's user mapping now names another iam user than the one linked; acting on the linked user, not splitting: check the mapping");
                user.remapped = Some(now);
                return Ok(AwsActual::Present(user));
            }
            tracing::warn!(subject = %link.person, iam_user = %linked, mapped = ?mapped,
                "aws: the iam user linked to the person no longer exists; using the user mapping");
        }
        let Some(name) = mapped else {
            return Ok(AwsActual::Absent);
        };
        Ok(self
            .retry(|| self.iam.read_user(&name, needs))
            .await?
            .map(AwsActual::Present)
            .unwrap_or(AwsActual::Absent))
    }

    fn linked(&self, actual: &AwsActual) -> Vec<String> {
        match actual {
            AwsActual::Present(u) => vec![u.name.clone()],
            _ => Vec::new(),
        }
    }

    fn diff(&self, desired: &DesiredAws, actual: &AwsActual) -> AwsPlan {
        cloud::diff_aws(desired, actual)
    }

    fn account(&self, plan: &AwsPlan) -> String {
        plan.user.clone()
    }

    fn steps<'p>(&self, plan: &'p AwsPlan) -> Vec<Planned<'p, AwsIamOp>> {
        plan.steps
            .iter()
            .map(|s| Planned {
                op: &s.op,
                rule: &s.rule,
                order: Order::Change,
            })
            .collect()
    }

    fn call(&self, user: &String, op: &AwsIamOp) -> HttpCall {
        op.http(user)
    }

    /// The IAM user name (unresolved: a description, which matches nothing).
    fn principal(&self, user: &String, _op: &AwsIamOp) -> Option<String> {
        Some(user.clone())
    }

    fn revokes(&self, op: &AwsIamOp) -> bool {
        op.is_revoking()
    }

    fn not_found_is_done(&self, op: &AwsIamOp) -> bool {
        op.is_revoking()
    }

    async fn send(&self, user: &String, ops: &[&AwsIamOp]) -> Result<Sent<String>, SendError<CloudError>> {
        for op in ops {
            self.iam.execute(user, op).await.map_err(SendError::Write)?;
        }
        Ok(Sent::Written {
            account: None,
            status: Some(200),
        })
    }
}
