//! What reconcile does with orphan accounts (issue 15, `[reconcile] orphans`): accounts holding
//! grants the policy manages that match nobody in the directory ([`crate::access::observe`]
//! finds them in reconcile's paged reads).
//!
//! Each orphan gets a plan made the way an offboarding's is: a Looker user is disabled; an IAM
//! user gets the offboarding plan of `[aws.offboarding]` (managed group memberships removed,
//! access keys deactivated, ...: `cloud::diff_aws` for an offboarded person); a GCP member gets
//! that of `[gcp.offboarding]` (its managed bindings removed: `cloud::diff_gcp`). In `report`
//! mode the plan is only ledgered (`drift_reported` rows, from what reconcile already read: no
//! extra call); in `disable` mode an IAM user is read first (its keys are not in reconcile's
//! reads) and the plan goes through the one apply loop ([`Engine::apply_orphan`]: the safety
//! screen, the ledger, the target's mode and the mass-change breaker). Every step carries the
//! rule [`ORPHAN_RULE`] and the subject [`orphan_subject`].

use crate::access::{ORPHAN_RULE, Orphan};
use crate::cloud::Ctx;
use crate::engine::{AppliedCounts, Engine, ProcessError};
use crate::reconcile_model::Snapshot;
use chrono::{DateTime, Utc};
use gatehouse_domain::access::orphan_subject;
use gatehouse_domain::cloud::{self, AwsActual, AwsUser, AwsUserKey, AwsUserMapping, DesiredAws};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::identity::{Identity, Stamp, Stamped, Status};
use gatehouse_domain::looker::{LookerOp, UserRef};
use gatehouse_domain::plan::{Plan, Step};
use gatehouse_domain::policy::Policy;
use gatehouse_domain::ports::{LookerPort, StateStore};
use gatehouse_domain::target::{Link, Target as _};
use gatehouse_platform::config::Orphans;
use gatehouse_targets::gcp_iam::GcpPlan;

pub use crate::reconcile_model::OrphanPlan;

/// An offboarded stand-in for an orphan account, so its plan is the offboarding plan.
fn offboarded(subject: &str, email: &str, now: DateTime<Utc>) -> Identity {
    let mut id = Identity::new(subject);
    id.status = Status::Deactivated;
    id.profile.insert(
        "email".into(),
        Stamped {
            value: email.into(),
            stamp: Stamp {
                at: now,
                id: EnvelopeId(subject.to_string()),
            },
            source: None,
        },
    );
    id
}

/// The offboarding `[aws.offboarding]` asks of IAM user `name` (`None`: it asks nothing).
pub fn desired_aws(policy: &Policy, name: &str, now: DateTime<Utc>) -> Option<DesiredAws> {
    // IAM user names cannot hold `{`, so the template names exactly this user.
    let mapping = AwsUserMapping::Template {
        template: name.to_string(),
    };
    let id = offboarded(
        &orphan_subject("aws", name),
        &format!("{name}@orphan.invalid"),
        now,
    );
    let mut d = cloud::evaluate(policy, &id, Some(&mapping), false, now).aws?;
    d.user = AwsUserKey::Name(name.to_string());
    Some(d)
}

/// The orphan IAM user as reconcile read it (groups, tags and any keys it read).
fn aws_as_read(snap: &Snapshot, name: &str) -> AwsActual {
    let (access_keys, login_profile) = snap.aws_credentials.get(name).cloned().unwrap_or_default();
    AwsActual::Present(AwsUser {
        name: name.to_string(),
        groups: snap
            .aws_groups
            .iter()
            .filter(|(_, members)| members.contains(name))
            .map(|(g, _)| g.clone())
            .collect(),
        tags: snap.aws_tags.get(name).cloned().unwrap_or_default(),
        access_keys,
        login_profile,
        ..Default::default()
    })
}

/// The plan for orphan GCP member `member` (`user:EMAIL`): the offboarding `[gcp.offboarding]`
/// asks, against the policies reconcile read.
pub fn gcp_plan(policy: &Policy, snap: &Snapshot, member: &str, now: DateTime<Utc>) -> Option<GcpPlan> {
    let email = member.strip_prefix("user:")?;
    let policies = snap.gcp.as_ref()?;
    let id = offboarded(&orphan_subject("gcp", member), email, now);
    let d = cloud::evaluate(policy, &id, None, true, now).gcp?;
    let (steps, notes) = cloud::diff_gcp(&d, policies);
    Some(GcpPlan { steps, notes })
}

fn looker_plan(account: &str) -> Plan {
    Plan {
        user: UserRef::Id(account.to_string()),
        steps: vec![Step {
            op: LookerOp::SetDisabled { disabled: true },
            rule: ORPHAN_RULE.into(),
        }],
        notes: Vec::new(),
        resolution: Default::default(),
    }
}

/// Ledger every orphan (`report`) or disable it (`disable`), as the module docs say.
pub async fn act<S, L>(
    engine: &Engine<S, L>,
    run_id: &str,
    orphans: &[Orphan],
    snap: &Snapshot,
    mode: Orphans,
) -> Result<AppliedCounts, ProcessError>
where
    S: StateStore,
    L: LookerPort,
{
    let disable = mode == Orphans::Disable;
    let policy = engine.policy();
    let now = gatehouse_domain::clock::now();
    let mut total = AppliedCounts::default();
    for o in orphans {
        let subject = orphan_subject(&o.target, &o.account);
        let plan = match o.target.as_str() {
            "looker" => Some(OrphanPlan::Looker(looker_plan(&o.account))),
            "aws" => match (
                engine.cloud().and_then(|c| c.aws.as_ref()),
                desired_aws(policy, &o.account, now),
            ) {
                (Some(t), Some(d)) => {
                    let actual = if disable {
                        t.read(&d, &Link::unlinked(subject.clone())).await?
                    } else {
                        aws_as_read(snap, &o.account)
                    };
                    let mut p = t.diff(&d, &actual);
                    for s in &mut p.steps {
                        s.rule = ORPHAN_RULE.into();
                    }
                    Some(OrphanPlan::Aws(p))
                }
                _ => None,
            },
            "gcp" => gcp_plan(policy, snap, &o.account, now).map(|mut p| {
                for s in &mut p.steps {
                    s.rule = ORPHAN_RULE.into();
                }
                OrphanPlan::Gcp(p)
            }),
            _ => None,
        };
        let Some(plan) = plan.filter(|p| !p.is_empty()) else {
            tracing::warn!(target_name = %o.target, account = %o.account, action = ?mode,
                "orphan account: holds managed grants, matches nobody in the directory; the offboarding policy asks nothing of it");
            continue;
        };
        tracing::warn!(target_name = %o.target, account = %o.account, action = ?mode,
            "orphan account: holds managed grants, matches nobody in the directory");
        let ctx = Ctx {
            envelope_id: run_id.to_string(),
            subject,
            event: "reconcile".into(),
            email: o.email.clone(),
            actor: gatehouse_domain::actor::RECONCILE.into(),
            policy_digest: Some(policy.digest.to_string()),
            lease: None,
        };
        let AppliedCounts { writes, reported } = engine.apply_orphan(&ctx, &plan, disable).await?;
        total.writes += writes;
        total.reported += reported;
    }
    Ok(total)
}
