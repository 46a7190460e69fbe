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

    /// The person is the IAM user the mapping names today. A person linked to another IAM user
    /// before (the mapping's input changed: a new email) is reported, never silently split:
    /// the old user keeps what it holds until an operator moves it.
    async fn read(&self, d: &DesiredAws, link: &Link) -> Result<AwsActual, CloudError> {
        let Some(name) = self.retry(|| self.iam.resolve(&d.user)).await? else {
            if !link.accounts.is_empty() {
                tracing::warn!(subject = %link.person, linked = ?link.accounts,
                    "aws: the person's mapping names no iam user now, but they were linked to one; not split: check the mapping");
            }
            return Ok(AwsActual::Absent);
        };
        if link.accounts.iter().any(|a| *a != name) {
            tracing::warn!(subject = %link.person, iam_user = %name, linked = ?link.accounts,
                "aws: the person's mapping now names another iam user than the one linked; the old user is not changed: move it by hand");
        }
        let needs = d.needs();
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
