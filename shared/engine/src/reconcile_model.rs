//! What a reconcile reads and plans, shared by its parts: the [`Snapshot`] of every target,
//! the plan per person ([`SubjectPlan`]), how the clouds are configured ([`CloudShape`]) and
//! [`Progress`] reporting. A leaf of the engine: the compiled planner (`reconcile_plan`), the
//! paged Looker reads (`reconcile_paged`), the orphan report (`reconcile_orphans`) and the
//! access review (`access`) use it; `reconcile` drives them and re-exports it.

use gatehouse_domain::cloud::AwsPlan;
use gatehouse_domain::cloud::{AwsAccessKey, AwsUserMapping, CloudPlan, GroupHeld, IamPolicy};
use gatehouse_domain::inactivity::InactiveUser;
use gatehouse_domain::looker::{Catalog, LookerUser};
use gatehouse_domain::plan::Plan;
use gatehouse_domain::vec_map::VecSet;
use gatehouse_targets::gcp_iam::GcpPlan;
use litemap::LiteMap;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Looker users by the person's email (lowercase), `None` for a person with none: a
/// [`LiteMap`] (one sorted `Vec`), not a `BTreeMap`, whose nodes leave a third of their slots
/// empty; a reconcile holds one entry per person (bench/reconcile.md). Build it with
/// [`looker_users`], not `insert` out of order (each shifts the slots after it).
pub type LookerUsers = LiteMap<String, Option<LookerUser>>;

/// [`LookerUsers`] from (email, user) pairs in any order, sorted in place (no second vector
/// of 100,000 users); a repeated email keeps its last user, as `BTreeMap::insert` would.
pub fn looker_users(mut users: Vec<(String, Option<LookerUser>)>) -> LookerUsers {
    // Reversed, then a stable sort: among equal emails the last given comes first, and `dedup`
    // keeps the first of each run.
    users.reverse();
    users.sort_by(|a, b| a.0.cmp(&b.0));
    users.dedup_by(|a, b| a.0 == b.0);
    LiteMap::from_sorted_store_unchecked(users)
}

/// The members of an IAM group as held in a [`Snapshot`]: each name shared with
/// [`Snapshot::aws_users`] (one string per IAM user, however many groups hold them; a name
/// `ListUsers` did not return gets its own), sorted.
pub fn iam_members(
    users: &BTreeSet<Arc<str>>,
    members: impl IntoIterator<Item = String>,
) -> VecSet<Arc<str>> {
    members
        .into_iter()
        .map(|m| users.get(m.as_str()).cloned().unwrap_or_else(|| Arc::from(m)))
        .collect()
}

/// What every target holds, as read in one reconcile.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `None` when Looker is not configured.
    pub looker: Option<(Catalog, LookerUsers)>,
    /// IAM user names that exist (`None` when AWS is not configured).
    pub aws_users: Option<BTreeSet<Arc<str>>>,
    /// Tag-mapping index: tag value → user name.
    pub aws_tag_index: BTreeMap<String, String>,
    /// Managed group → member user names (a group IAM does not have is absent), built with
    /// [`iam_members`].
    pub aws_groups: BTreeMap<String, VecSet<Arc<str>>>,
    pub aws_tags: BTreeMap<String, BTreeMap<String, String>>,
    pub aws_credentials: BTreeMap<String, (Vec<AwsAccessKey>, bool)>,
    /// `None` when GCP is not configured.
    pub gcp: Option<BTreeMap<String, IamPolicy>>,
    /// Managed Google groups that exist, with every membership (read only when GCP is).
    pub gcp_groups: BTreeMap<String, GroupHeld>,
    /// Looker users that look like a person's beside the one resolved (issue 16: reported).
    pub looker_duplicates: usize,
    /// Looker users that are nobody's in the directory (issue 15: orphan candidates).
    pub looker_unmatched: Vec<LookerUser>,
}

impl Snapshot {
    /// Give back the spare room of the GCP binding member lists: read from JSON one member at a
    /// time, each list's capacity doubles as it grows (up to twice the members held, for the
    /// length of the reconcile). `read_snapshot` calls it once everything is read.
    pub fn shrink_to_fit(&mut self) {
        for p in self.gcp.iter_mut().flat_map(BTreeMap::values_mut) {
            for b in &mut p.bindings {
                b.members.shrink_to_fit();
            }
        }
    }
}

/// Read calls per target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadCalls {
    pub looker: usize,
    pub aws: usize,
    pub gcp: usize,
}

/// The plan for one person.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectPlan {
    pub subject: String,
    pub email: Option<String>,
    pub looker: Option<Plan>,
    pub cloud: CloudPlan,
    /// The person's Looker user is inactive past `[inactivity] disable_after_days` (issue 15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inactive: Option<InactiveUser>,
}

impl SubjectPlan {
    pub fn is_empty(&self) -> bool {
        self.looker.as_ref().is_none_or(Plan::is_empty) && self.cloud.is_empty()
    }

    /// Whether a reconcile keeps this plan: something to change, or an inactive Looker user to
    /// report (issue 15). [`plan_all`] returns only these.
    pub fn is_kept(&self) -> bool {
        !self.is_empty() || self.inactive.is_some()
    }

    pub fn calls(&self) -> usize {
        self.looker.as_ref().map_or(0, |p| p.steps.len()) + self.cloud.len()
    }
}

/// How the cloud part is configured, for the pure planner.
#[derive(Debug, Clone, Default)]
pub struct CloudShape {
    pub aws: Option<AwsUserMapping>,
    pub gcp: bool,
}

/// Progress of a reconcile, reported per person read and per person applied.
pub trait Progress: Send + Sync {
    fn phase(&self, name: &str, total: usize);
    fn advance(&self, n: usize);
}

/// Structured progress logs (non-terminal runs and the scheduled job).
pub struct LogProgress;

impl Progress for LogProgress {
    fn phase(&self, name: &str, total: usize) {
        tracing::info!(phase = name, total, "reconcile progress");
    }
    fn advance(&self, _n: usize) {}
}

/// One orphan's plan, in its target.
#[derive(Debug, Clone)]
pub enum OrphanPlan {
    Looker(Plan),
    Aws(AwsPlan),
    Gcp(GcpPlan),
}

impl OrphanPlan {
    pub fn is_empty(&self) -> bool {
        match self {
            OrphanPlan::Looker(p) => p.steps.is_empty(),
            OrphanPlan::Aws(p) => p.steps.is_empty(),
            OrphanPlan::Gcp(p) => p.steps.is_empty(),
        }
    }
}
