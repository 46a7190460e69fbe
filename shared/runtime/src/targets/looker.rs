//! Looker as a [`Target`]: the person is found by email (one `GET /users/search`), the catalog
//! names groups, roles and attributes; the plan is `plan::diff`; `CreateUser` goes first (the
//! other calls need its id) and `DeleteUser` last. Without a client (no Looker configured) the
//! read is `Unknown` and the plan lists every call that may apply (dry run).

use super::{RetryPolicy, retry_read};
use chrono::{DateTime, Utc};
use gatehouse_domain::handover::{self, ContentNeeds, LookerContent};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::{
    Catalog, ErrorKind, HttpCall, LookerError, LookerOp, LookerUser, Method, ReadNeeds, UserRef,
};
use gatehouse_domain::plan::{self, Actual, Plan};
use gatehouse_domain::policy::{self, DesiredLooker, Policy, Presence};
use gatehouse_domain::ports::LookerPort;
use gatehouse_domain::target::{Order, Planned, SendError, Sent, Target, TargetName};
use std::collections::BTreeSet;

/// Looker, through a [`LookerPort`] client (none: dry run).
pub struct LookerTarget<L> {
    client: Option<L>,
    retry: RetryPolicy,
    /// `[identity] allowed_email_domains`: at offboarding, the person's schedules and alerts
    /// mailing outside them are disabled (issue 19). `None`: no such reads or steps.
    delivery_domains: Option<BTreeSet<String>>,
}

/// What Looker holds for one person: the catalog (`None` in a dry run) and the user.
#[derive(Debug, Clone)]
pub struct LookerActual {
    pub catalog: Option<Catalog>,
    pub user: Actual,
    /// The person's scheduled plans and alerts, read only at offboarding when allowed email
    /// domains are configured and the user exists.
    pub deliveries: Option<LookerContent>,
}

fn permanent(message: &str) -> LookerError {
    LookerError {
        kind: ErrorKind::Permanent,
        status: None,
        message: message.into(),
        retry_after: None,
    }
}

impl<L: LookerPort> LookerTarget<L> {
    pub fn new(client: Option<L>, retry: RetryPolicy) -> Self {
        LookerTarget {
            client,
            retry,
            delivery_domains: None,
        }
    }

    /// Disable, at offboarding, the person's schedules and alerts that mail outside `domains`.
    pub fn with_delivery_domains(mut self, domains: Option<BTreeSet<String>>) -> Self {
        self.delivery_domains = domains;
        self
    }

    /// What Looker user `user_id` owns, with retries (`None` without a client).
    pub async fn content(
        &self,
        user_id: &str,
        needs: ContentNeeds,
    ) -> Result<Option<LookerContent>, LookerError> {
        let Some(l) = &self.client else { return Ok(None) };
        retry_read(&self.retry, |_| false, || l.content(user_id, needs))
            .await
            .map(Some)
    }

    /// Offboarding only, and only with allowed domains configured: the person's deliveries.
    async fn deliveries(
        &self,
        desired: &DesiredLooker,
        found: Option<&LookerUser>,
    ) -> Result<Option<LookerContent>, LookerError> {
        match (&desired.presence, found, &self.delivery_domains) {
            (Presence::Offboarded { .. }, Some(u), Some(_)) => {
                self.content(&u.id, ContentNeeds::Deliveries).await
            }
            _ => Ok(None),
        }
    }

    /// The client, `None` in a dry run.
    pub fn client(&self) -> Option<&L> {
        self.client.as_ref()
    }

    /// The catalog, with retries (empty without a client).
    pub async fn catalog(&self) -> Result<Catalog, LookerError> {
        match &self.client {
            Some(l) => retry_read(&self.retry, |_| false, || l.catalog()).await,
            None => Ok(Catalog::default()),
        }
    }

    /// One user search, with retries (`None` without a client).
    pub async fn find_user(&self, email: &str, needs: &ReadNeeds) -> Result<Option<LookerUser>, LookerError> {
        let Some(l) = &self.client else { return Ok(None) };
        // A NotFound here means the user vanished between the search and a follow-up read: a
        // fresh search settles it.
        retry_read(
            &self.retry,
            |e: &LookerError| e.kind == ErrorKind::NotFound,
            || l.find_user(email, needs),
        )
        .await
    }
}

impl<L: LookerPort> Target for LookerTarget<L> {
    type Desired = DesiredLooker;
    type Actual = LookerActual;
    type Plan = Plan;
    type Op = LookerOp;
    type Account = UserRef;
    type Error = LookerError;

    fn name(&self) -> TargetName {
        TargetName::LOOKER
    }

    fn desired(&self, policy: &Policy, identity: &Identity, _now: DateTime<Utc>) -> Option<DesiredLooker> {
        Some(policy::evaluate(policy, identity))
    }

    async fn read(&self, desired: &DesiredLooker) -> Result<LookerActual, LookerError> {
        if self.client.is_none() {
            return Ok(LookerActual {
                catalog: None,
                user: Actual::Unknown,
                deliveries: None,
            });
        }
        let (catalog, found) = match (&desired.email, &desired.presence) {
            (None, _) => (self.catalog().await?, None),
            // Offboarding needs nothing from the catalog to read the user: both reads at once,
            // so a cold start is login → (catalog ∥ search) → revocations.
            (Some(email), Presence::Offboarded { .. }) => {
                let no_needs = ReadNeeds::default();
                let (c, f) = futures::join!(self.catalog(), self.find_user(email, &no_needs));
                (c?, f?)
            }
            (Some(email), Presence::Active { .. }) => {
                let c = self.catalog().await?;
                let needs = plan::read_needs(desired, &c);
                let f = self.find_user(email, &needs).await?;
                (c, f)
            }
        };
        let deliveries = self.deliveries(desired, found.as_ref()).await?;
        Ok(LookerActual {
            catalog: Some(catalog),
            user: found.map(Actual::Present).unwrap_or(Actual::Absent),
            deliveries,
        })
    }

    fn diff(&self, desired: &DesiredLooker, actual: &LookerActual) -> Plan {
        let mut plan = plan::diff(desired, &actual.user, actual.catalog.as_ref());
        if let (Some(content), Some(domains)) = (&actual.deliveries, &self.delivery_domains) {
            plan.steps
                .extend(handover::outside_delivery_steps(content, domains));
        }
        plan
    }

    fn account(&self, plan: &Plan) -> UserRef {
        plan.user.clone()
    }

    fn steps<'p>(&self, plan: &'p Plan) -> Vec<Planned<'p, LookerOp>> {
        plan.steps
            .iter()
            .map(|s| Planned {
                op: &s.op,
                rule: &s.rule,
                order: match s.op {
                    LookerOp::CreateUser { .. } => Order::Create,
                    LookerOp::DeleteUser => Order::Last,
                    _ => Order::Change,
                },
            })
            .collect()
    }

    fn call(&self, account: &UserRef, op: &LookerOp) -> HttpCall {
        op.http(account)
    }

    /// A 404 on a `DELETE` means it is already gone.
    fn not_found_is_done(&self, op: &LookerOp) -> bool {
        op.http(&UserRef::New).method == Method::Delete
    }

    async fn send(
        &self,
        account: &UserRef,
        ops: &[&LookerOp],
    ) -> Result<Sent<UserRef>, SendError<LookerError>> {
        let (Some(l), [op]) = (&self.client, ops) else {
            return Err(SendError::Write(permanent(
                "one looker call per write, and only with a client",
            )));
        };
        let id = l.execute(account, op).await.map_err(SendError::Write)?;
        match (op, id) {
            (LookerOp::CreateUser { .. }, Some(id)) => Ok(Sent::Written {
                account: Some(UserRef::Id(id)),
                status: None,
            }),
            (LookerOp::CreateUser { .. }, None) => {
                Err(SendError::Write(permanent("create user returned no id")))
            }
            _ => Ok(Sent::Written {
                account: None,
                status: None,
            }),
        }
    }
}
