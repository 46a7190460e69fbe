//! The worked example of docs/adding-a-target.md: a wiki whose spaces people join by IdP group.
//! Everything a new target needs is this one module: its types, its diff, its calls and its
//! error classification. The apply loop, the ledger, report mode, dry run, retries and the
//! screen come with the [`Target`] trait. (The wiki itself is in memory here; a real target's
//! `send` is one HTTP call.)

use chrono::{DateTime, Utc};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::{ErrorKind, HttpCall, Method};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::target::{
    CallOutcome, Failure, Link, Order, Planned, SendError, Sent, Target, TargetName,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// The wiki: account → the spaces it is a member of.
#[derive(Clone, Default)]
pub struct Wiki(Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>);

impl Wiki {
    pub fn spaces_of(&self, user: &str) -> Option<BTreeSet<String>> {
        self.0.lock().unwrap().get(user).cloned()
    }
}

/// The target and its configuration: which IdP group gives which space.
pub struct WikiTarget {
    pub wiki: Wiki,
    pub spaces: BTreeMap<String, String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WikiDesired {
    pub user: String,
    pub spaces: BTreeSet<String>,
    /// Spaces Gatehouse manages (every configured one); others are left alone.
    pub managed: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WikiOp {
    CreateAccount,
    Join { space: String },
    Leave { space: String },
}

pub struct WikiPlan {
    pub user: String,
    pub steps: Vec<(WikiOp, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("wiki {kind:?}: {message}")]
pub struct WikiError {
    kind: ErrorKind,
    message: String,
}

impl gatehouse_domain::error::Classified for WikiError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl Failure for WikiError {
    fn outcome(&self) -> CallOutcome {
        CallOutcome::Failed {
            kind: self.kind,
            status: None,
            detail: Some(self.message.clone()),
        }
    }
}

impl Target for WikiTarget {
    type Desired = WikiDesired;
    /// The account's spaces; `None`: no account.
    type Actual = Option<BTreeSet<String>>;
    type Plan = WikiPlan;
    type Op = WikiOp;
    type Account = String;
    type Error = WikiError;

    fn name(&self) -> TargetName {
        TargetName::new("wiki")
    }

    fn desired(&self, _policy: &Policy, identity: &Identity, _now: DateTime<Utc>) -> Option<WikiDesired> {
        let active = !identity.status.is_offboarded();
        Some(WikiDesired {
            user: identity.email()?.to_ascii_lowercase(),
            spaces: self
                .spaces
                .iter()
                .filter(|(group, _)| active && identity.is_member(group))
                .map(|(_, space)| space.clone())
                .collect(),
            managed: self.spaces.values().cloned().collect(),
        })
    }

    async fn read(&self, d: &WikiDesired, _link: &Link) -> Result<Self::Actual, WikiError> {
        Ok(self.wiki.spaces_of(&d.user))
    }

    fn diff(&self, d: &WikiDesired, actual: &Self::Actual) -> WikiPlan {
        let mut steps = Vec::new();
        let empty = BTreeSet::new();
        let have = match actual {
            Some(have) => have,
            None if d.spaces.is_empty() => &empty,
            None => {
                steps.push((WikiOp::CreateAccount, "wiki.create".into()));
                &empty
            }
        };
        for s in d.spaces.difference(have) {
            steps.push((WikiOp::Join { space: s.clone() }, "wiki.spaces".into()));
        }
        for s in have.intersection(&d.managed).filter(|s| !d.spaces.contains(*s)) {
            steps.push((WikiOp::Leave { space: s.clone() }, "wiki.spaces".into()));
        }
        WikiPlan {
            user: d.user.clone(),
            steps,
        }
    }

    fn account(&self, plan: &WikiPlan) -> String {
        plan.user.clone()
    }

    fn steps<'p>(&self, plan: &'p WikiPlan) -> Vec<Planned<'p, WikiOp>> {
        plan.steps
            .iter()
            .map(|(op, rule)| Planned {
                op,
                rule,
                order: match op {
                    WikiOp::CreateAccount => Order::Create,
                    _ => Order::Change,
                },
            })
            .collect()
    }

    fn call(&self, user: &String, op: &WikiOp) -> HttpCall {
        let (method, path) = match op {
            WikiOp::CreateAccount => (Method::Post, "/wiki/accounts".to_string()),
            WikiOp::Join { space } => (Method::Put, format!("/wiki/spaces/{space}/members/{user}")),
            WikiOp::Leave { space } => (Method::Delete, format!("/wiki/spaces/{space}/members/{user}")),
        };
        let body = matches!(op, WikiOp::CreateAccount).then(|| serde_json::json!({ "user": user }));
        HttpCall { method, path, body }
    }

    fn not_found_is_done(&self, op: &WikiOp) -> bool {
        matches!(op, WikiOp::Leave { .. })
    }

    async fn send(&self, user: &String, ops: &[&WikiOp]) -> Result<Sent<String>, SendError<WikiError>> {
        let not_found = |message: &str| {
            SendError::Write(WikiError {
                kind: ErrorKind::NotFound,
                message: message.into(),
            })
        };
        let mut accounts = self.wiki.0.lock().unwrap();
        for op in ops {
            match op {
                WikiOp::CreateAccount => {
                    accounts.entry(user.clone()).or_default();
                }
                WikiOp::Join { space } => {
                    let spaces = accounts
                        .get_mut(user)
                        .ok_or_else(|| not_found("no such account"))?;
                    spaces.insert(space.clone());
                }
                WikiOp::Leave { space } => {
                    let spaces = accounts
                        .get_mut(user)
                        .ok_or_else(|| not_found("no such account"))?;
                    if !spaces.remove(space) {
                        return Err(not_found("not a member"));
                    }
                }
            }
        }
        Ok(Sent::Written {
            account: None,
            status: Some(200),
        })
    }
}
