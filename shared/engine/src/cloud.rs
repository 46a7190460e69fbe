//! The cloud half of the engine: AWS IAM and GCP IAM for one person — read both at once, plan,
//! and apply or report each through the one loop of [`crate::targets`] (every call ledgered,
//! independent calls concurrent); and which person a cloud drift event is about.

use crate::error::ProcessError;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use gatehouse_domain::cloud::{self, AwsActual, AwsUserKey, AwsUserMapping, CloudPlan, DesiredCloud};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::ErrorKind;
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{BackendError, StateStore, SubjectState};
use gatehouse_domain::target::Target as _;
use gatehouse_platform::config::{Mode as ConfigMode, Modes};
use gatehouse_targets::{self as targets, Applied, Mode, Run};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Ledger status of a change found but not made (report mode).
pub use gatehouse_domain::target::REPORTED;
pub use gatehouse_targets::Ctx;
pub use gatehouse_targets::aws_iam::AwsTarget;
pub use gatehouse_targets::gcp_iam::{GcpActual, GcpPlan, GcpTarget};

/// Lists the directory (every subject), for resolving a drift subject to a person.
pub type DirectoryFn =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Vec<SubjectState>, BackendError>> + Send + Sync>;

/// The configured cloud targets.
#[derive(Clone)]
pub struct CloudTargets {
    pub aws: Option<AwsTarget>,
    pub gcp: Option<GcpTarget>,
    pub modes: Modes,
    pub directory: DirectoryFn,
}

/// What the clouds hold for one person.
#[derive(Debug, Clone)]
pub struct CloudActual {
    pub aws: AwsActual,
    pub gcp: GcpActual,
}

impl CloudTargets {
    pub fn is_empty(&self) -> bool {
        self.aws.is_none() && self.gcp.is_none()
    }

    /// The desired cloud state of one person. Pure.
    pub fn evaluate(&self, policy: &Policy, identity: &Identity, now: DateTime<Utc>) -> DesiredCloud {
        cloud::evaluate(
            policy,
            identity,
            self.aws.as_ref().map(|a| &a.mapping),
            self.gcp.is_some(),
            now,
        )
    }

    /// Read what the clouds hold for one person: the IAM user and
    /// every managed GCP resource, all at once, each through the person's link (issue 16).
    /// `persist`: store the links the reads resolved (not in `gatehouse plan`).
    pub async fn read<S: StateStore>(
        &self,
        desired: &DesiredCloud,
        person: &Identity,
        store: &S,
        persist: bool,
    ) -> Result<CloudActual, ProcessError> {
        let aws = async {
            match (&self.aws, &desired.aws) {
                (Some(t), Some(d)) => {
                    let r = targets::read_linked(t, d, person, store).await?;
                    if persist {
                        r.persist(store, t.name()).await?;
                    }
                    Ok::<_, ProcessError>(r.actual)
                }
                _ => Ok(AwsActual::Unknown),
            }
        };
        let gcp = async {
            match (&self.gcp, &desired.gcp) {
                (Some(g), Some(d)) => {
                    let r = targets::read_linked(g, d, person, store).await?;
                    if persist {
                        r.persist(store, g.name()).await?;
                    }
                    Ok::<_, ProcessError>(r.actual)
                }
                _ => Ok(GcpActual::default()),
            }
        };
        let (aws, gcp) = futures::join!(aws, gcp);
        Ok(CloudActual { aws: aws?, gcp: gcp? })
    }

    /// The plan for one person (pure, given what was read).
    pub fn plan(&self, desired: &DesiredCloud, actual: &CloudActual) -> CloudPlan {
        let aws = desired.aws.as_ref().map(|d| cloud::diff_aws(d, &actual.aws));
        let GcpPlan { steps: gcp, notes } = desired
            .gcp
            .as_ref()
            .map(|d| targets::gcp_iam::plan_linked(d, &actual.gcp))
            .unwrap_or_default();
        CloudPlan { aws, gcp, notes }
    }

    /// An offline plan (`gatehouse plan` without cloud access): every call that may apply.
    pub fn offline_plan(desired: &DesiredCloud) -> CloudPlan {
        let aws = desired
            .aws
            .as_ref()
            .map(|d| cloud::diff_aws(d, &AwsActual::Unknown));
        let (gcp, notes) = desired
            .gcp
            .as_ref()
            .map(|d| {
                let (mut steps, mut notes) = cloud::diff_gcp(d, &BTreeMap::new());
                let (g, n) = cloud::diff_gcp_groups(d, None);
                steps.extend(g);
                notes.extend(n);
                (steps, notes)
            })
            .unwrap_or_default();
        CloudPlan { aws, gcp, notes }
    }

    /// Apply a plan through the one loop: AWS and GCP at once. `modes` limits writes to targets
    /// in enforce mode (drift and reconcile; the others are reported); `None` applies all.
    pub async fn apply<S: StateStore>(
        &self,
        run: &Run<'_, S>,
        plan: &CloudPlan,
        modes: Option<Modes>,
    ) -> Result<Applied, ProcessError> {
        let mode = |m: fn(&Modes) -> ConfigMode| match modes {
            Some(ms) if m(&ms) != ConfigMode::Enforce => Mode::Report,
            _ => Mode::Apply,
        };
        let aws = async {
            match (&self.aws, &plan.aws) {
                (Some(t), Some(p)) => Ok(targets::apply(t, p, mode(|m| m.aws), run).await?),
                _ => Ok::<_, ProcessError>(Applied::default()),
            }
        };
        let gcp = async {
            match &self.gcp {
                Some(g) if !plan.gcp.is_empty() => {
                    let p = GcpPlan {
                        steps: plan.gcp.clone(),
                        notes: Vec::new(),
                    };
                    Ok(targets::apply(g, &p, mode(|m| m.gcp), run).await?)
                }
                _ => Ok::<_, ProcessError>(Applied::default()),
            }
        };
        let (a, g) = futures::join!(aws, gcp);
        if let (Some(_), Some(p)) = (&self.aws, &plan.aws) {
            report_mapping_change(run, p).await?;
        }
        Ok(a? + g?)
    }

    /// The directory identity a drift subject (`aws:iam-user:NAME`, `gcp:user:EMAIL`) belongs to.
    pub async fn resolve_drift(&self, subject: &str) -> Result<Option<SubjectState>, ProcessError> {
        let key = if let Some(email) = subject.strip_prefix("gcp:user:") {
            DriftKey::Email(email.to_ascii_lowercase())
        } else if let Some(name) = subject.strip_prefix("aws:iam-user:") {
            match &self.aws {
                Some(
                    t @ AwsTarget {
                        mapping: AwsUserMapping::Tag { key },
                        ..
                    },
                ) => {
                    let tags = t.retry(|| t.iam.tags(name)).await;
                    match tags {
                        Ok(mut t) => match t.remove(key) {
                            Some(v) => DriftKey::Email(v.to_ascii_lowercase()),
                            None => return Ok(None),
                        },
                        Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(AwsTarget { mapping, .. }) => DriftKey::IamName(name.to_string(), mapping.clone()),
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        let subjects = (self.directory)().await?;
        Ok(subjects.into_iter().find(|s| match &key {
            DriftKey::Email(e) => s.identity.email().is_some_and(|m| m.eq_ignore_ascii_case(e)),
            DriftKey::IamName(n, m) => m.key_for(&s.identity) == Some(AwsUserKey::Name(n.clone())),
        }))
    }
}

/// Issue 16: the AWS user mapping names another IAM user than the one linked to the person (a
/// renamed person). The plan acts on the linked user; this says so: WARN, and a `withheld:`
/// ledger row (rule `identity.mapping_changed`) naming both, for an operator to move or relink.
async fn report_mapping_change<S: StateStore>(
    run: &Run<'_, S>,
    plan: &cloud::AwsPlan,
) -> Result<(), ProcessError> {
    let (Some(now), Some(reason)) = (&plan.mapping_changed, plan.mapping_change_reason()) else {
        return Ok(());
    };
    gatehouse_platform::events::aws_mapping_changed(&run.ctx.subject, &run.ctx.envelope_id, &plan.user, &now);
    let call = gatehouse_domain::looker::HttpCall {
        method: gatehouse_domain::looker::Method::Post,
        path: "/".into(),
        body: Some(
            serde_json::json!({ "Action": "GetUser", "UserName": plan.user, "Version": "2010-05-08" }),
        ),
    };
    let row = targets::ledger_row(
        run.ctx,
        gatehouse_domain::target::TargetName::AWS,
        cloud::rules::AWS_MAPPING_CHANGED,
        call,
        &gatehouse_domain::target::CallOutcome::Withheld { reason },
    );
    run.store.append_ledger(&[row]).await?;
    Ok(())
}

enum DriftKey {
    Email(String),
    IamName(String, AwsUserMapping),
}
