//! Looker as a [`Target`]: the person is found by email (one `GET /users/search`), the catalog
//! names groups, roles and attributes; the plan is `plan::diff`; `CreateUser` goes first (the
//! other calls need its id) and `DeleteUser` last. Without a client (no Looker configured) the
//! read is `Unknown` and the plan lists every call that may apply (dry run).

use super::{RetryPolicy, retry_read};
use chrono::{DateTime, Utc};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::{
    Catalog, ErrorKind, HttpCall, LookerError, LookerOp, LookerUser, Method, ReadNeeds, UserRef,
};
use gatehouse_domain::plan::{self, Actual, Plan};
use gatehouse_domain::policy::{self, DesiredLooker, Policy, Presence};
use gatehouse_domain::ports::LookerPort;
use gatehouse_domain::target::{Order, Planned, SendError, Sent, Target, TargetName};

/// Looker, through a [`LookerPort`] client (none: dry run).
pub struct LookerTarget<L> {
    client: Option<L>,
    retry: RetryPolicy,
}

/// What Looker holds for one person: the catalog (`None` in a dry run) and the user.
#[derive(Debug, Clone)]
pub struct LookerActual {
    pub catalog: Option<Catalog>,
    pub user: Actual,
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
        LookerTarget { client, retry }
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
        Ok(LookerActual {
            catalog: Some(catalog),
            user: found.map(Actual::Present).unwrap_or(Actual::Absent),
        })
    }

    fn diff(&self, desired: &DesiredLooker, actual: &LookerActual) -> Plan {
        plan::diff(desired, &actual.user, actual.catalog.as_ref())
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

    /// The Looker user id (`None` for a user the plan creates, or offline).
    fn principal(&self, account: &UserRef, _op: &LookerOp) -> Option<String> {
        match account {
            UserRef::Id(id) => Some(id.clone()),
            UserRef::New | UserRef::Email(_) => None,
        }
    }

    /// Revocations, and what may remove access: replacing the roles, deleting an attribute value.
    fn revokes(&self, op: &LookerOp) -> bool {
        op.is_revoking() || matches!(op, LookerOp::SetRoles { .. } | LookerOp::DeleteAttribute { .. })
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
