//! Reconcile: directory + policy (desired) against what Looker, AWS IAM and GCP IAM hold
//! (actual), with the fewest paginated reads; then print the diff, or apply it (targets in
//! `enforce` mode) and ledger it (targets in `report` mode: ledger + metric only).
//!
//! Reads, for N people, G managed IAM groups and R managed GCP resources:
//! - AWS: `ListUsers` (N/1000 calls) + `GetGroup` per managed group (G × members/1000) instead of
//!   `ListGroupsForUser` per person; `ListUserTags` only when tags are managed (or the mapping is
//!   by tag); `ListAccessKeys` + `GetLoginProfile` only for offboarded people.
//! - GCP: one `getIamPolicy` per managed resource (R calls), whatever N is; per managed Google
//!   group, one `groups:lookup` (cached) and its members in pages (`memberships.list`).
//! - Looker: the catalog once, every user in pages of at most 1,000 (`GET /users`, groups and
//!   direct roles included), and each user's attribute values only in the rolling audit
//!   (`reconcile_paged`: everyone every `k` runs; Looker has no bulk read of them).
//!
//! [`plan_all`] is the pure part (also what the benchmark measures; the compiled planner lives in
//! `reconcile_plan`).

use crate::cloud::Ctx;
use crate::engine::{AppliedCounts, Engine, ProcessError};
pub use crate::reconcile_model::{
    CloudShape, LogProgress, LookerUsers, Progress, ReadCalls, Snapshot, SubjectPlan, iam_members,
    looker_users,
};
pub use crate::reconcile_paged::ReadOptions;
use chrono::{DateTime, Utc};
use gatehouse_domain::clock::Clock;
use gatehouse_domain::cloud::{AwsActual, AwsUser, AwsUserKey, AwsUserMapping, CloudPlan, Target};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::inactivity::{InactiveUser, InactivityMode};
use gatehouse_domain::plan::{self, Actual};
use gatehouse_domain::policy::{self, Policy};
use gatehouse_domain::ports::{Directory, LookerPort, StateStore};
use gatehouse_platform::config::{Mode, Orphans};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Plan every person against the snapshot and keep the plans a reconcile acts on or reports
/// ([`SubjectPlan::is_kept`]: drift, or an inactive Looker user), in directory order; a person
/// with nothing to change yields nothing kept. Pure. The compiled planner
/// ([`crate::reconcile_plan`]): O(what each person is granted or holds), not O(policy) per person.
pub fn plan_all(
    policy: &Policy,
    identities: &[Identity],
    snapshot: &Snapshot,
    shape: &CloudShape,
    now: DateTime<Utc>,
) -> Vec<SubjectPlan> {
    crate::reconcile_plan::plan_all(policy, identities, snapshot, shape, now)
}

/// The straightforward planner [`plan_all`] replaced (every rule and every managed name for
/// every person): kept as the reference the property test and the benchmark compare against.
/// Returns every person's plan, kept or not (filter with [`SubjectPlan::is_kept`] to compare).
#[doc(hidden)]
pub fn plan_all_reference(
    policy: &Policy,
    identities: &[Identity],
    snapshot: &Snapshot,
    shape: &CloudShape,
    now: DateTime<Utc>,
) -> Vec<SubjectPlan> {
    let index = Index::of(snapshot);
    identities
        .iter()
        .map(|id| plan_one(policy, id, snapshot, &index, shape, now))
        .collect()
}

/// Lookups built once per reconcile: IAM user → groups, and (resource, role) → members of the
/// unconditional binding (lowercase), so each person costs lookups, not scans.
struct Index<'a> {
    user_groups: HashMap<&'a str, BTreeSet<String>>,
    gcp: HashMap<(&'a str, &'a str), HashSet<String>>,
    gcp_read: HashSet<&'a str>,
}

impl<'a> Index<'a> {
    fn of(snap: &'a Snapshot) -> Self {
        let mut user_groups: HashMap<&str, BTreeSet<String>> = HashMap::new();
        for (g, members) in &snap.aws_groups {
            for m in members {
                user_groups.entry(&**m).or_default().insert(g.clone());
            }
        }
        let mut gcp: HashMap<(&str, &str), HashSet<String>> = HashMap::new();
        let mut gcp_read = HashSet::new();
        for (r, p) in snap.gcp.iter().flatten() {
            gcp_read.insert(r.as_str());
            for b in p.bindings.iter().filter(|b| b.condition.is_none()) {
                gcp.entry((r.as_str(), b.role.as_str()))
                    .or_default()
                    .extend(b.members.iter().map(|m| m.to_ascii_lowercase()));
            }
        }
        Index {
            user_groups,
            gcp,
            gcp_read,
        }
    }
}

fn plan_one(
    policy: &Policy,
    id: &Identity,
    snap: &Snapshot,
    index: &Index<'_>,
    shape: &CloudShape,
    now: DateTime<Utc>,
) -> SubjectPlan {
    let desired = policy::evaluate(policy, id);
    let mut inactive = None;
    let looker = snap.looker.as_ref().and_then(|(catalog, users)| {
        let email = desired.email.as_ref()?;
        let actual = match users.get(&email.to_ascii_lowercase()) {
            Some(Some(u)) => Actual::Present(u.clone()),
            _ => Actual::Absent,
        };
        let mut plan = plan::diff_on(&desired, &actual, Some(catalog), policy.looker_platform());
        // License reclamation (issue 15): the same rule as every event's plan.
        inactive = gatehouse_domain::inactivity::hold(
            policy.inactivity.as_ref(),
            &mut plan,
            id,
            Some(email),
            &actual,
            catalog,
            now,
        );
        Some(plan)
    });
    let dc = gatehouse_domain::cloud::evaluate(policy, id, shape.aws.as_ref(), shape.gcp, now);
    let aws_actual = match (&dc.aws, &snap.aws_users) {
        (Some(d), Some(users)) => {
            let name = match &d.user {
                AwsUserKey::Name(n) => users.contains(n.as_str()).then(|| n.clone()),
                AwsUserKey::Tag { value, .. } => snap.aws_tag_index.get(value).cloned(),
            };
            match name {
                None => AwsActual::Absent,
                Some(n) => {
                    let (keys, profile) = snap.aws_credentials.get(&n).cloned().unwrap_or_default();
                    AwsActual::Present(AwsUser {
                        groups: index.user_groups.get(n.as_str()).cloned().unwrap_or_default(),
                        tags: snap.aws_tags.get(&n).cloned().unwrap_or_default(),
                        access_keys: keys,
                        login_profile: profile,
                        // Not read by reconcile: the leaver sweep runs on the offboarding event.
                        held: None,
                        remapped: None,
                        name: n,
                    })
                }
            }
        }
        _ => AwsActual::Unknown,
    };
    let mut cloud = CloudPlan::default();
    if let Some(d) = &dc.aws {
        cloud.aws = Some(gatehouse_domain::cloud::diff_aws(d, &aws_actual));
    }
    if let Some(d) = &dc.gcp {
        let (steps, notes) = gatehouse_domain::cloud::diff_gcp_with(d, |g, member| {
            index.gcp_read.contains(g.resource.as_str()).then(|| {
                index
                    .gcp
                    .get(&(g.resource.as_str(), g.role.as_str()))
                    .is_some_and(|m| m.contains(&member.to_ascii_lowercase()))
            })
        });
        cloud.gcp = steps;
        cloud.notes = notes;
        if snap.gcp.is_some() {
            let (steps, notes) = gatehouse_domain::cloud::diff_gcp_groups(d, Some(&snap.gcp_groups));
            cloud.gcp.extend(steps);
            cloud.notes.extend(notes);
        }
    }
    SubjectPlan {
        subject: id.key.clone(),
        email: desired.email.clone(),
        looker,
        cloud,
        inactive,
    }
}

/// What a reconcile came to.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub people: usize,
    pub reads: ReadCalls,
    /// Only people with something to change.
    pub plans: Vec<SubjectPlan>,
    pub applied: bool,
    pub writes: usize,
    pub reported: usize,
    /// Looker users that look like a person's beside the one resolved (issue 16).
    pub looker_duplicates: usize,
    /// License reclamation (`[inactivity]`, issue 15); `None` when off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inactivity: Option<InactivityReport>,
    /// Accounts holding managed grants that match nobody in the directory (issue 15).
    pub orphans: Vec<crate::access::Orphan>,
    /// What every target held, per person, as read (issue 15: stored by [`record`]).
    #[serde(skip)]
    pub observed: Vec<gatehouse_domain::access::AccessRow>,
    /// When the reads were made.
    pub read_at: DateTime<Utc>,
}

/// Seats of managed users inactive past `[inactivity] disable_after_days`.
#[derive(Debug, Clone, Serialize)]
pub struct InactivityReport {
    pub mode: InactivityMode,
    pub disable_after_days: u32,
    /// Still enabled: seats to reclaim (enforce mode: disabled by this run when applied).
    pub reclaimable: usize,
    /// Already disabled (by an earlier enforce run or by hand): seats reclaimed.
    pub reclaimed: usize,
    /// Every such user, oldest activity first.
    pub users: Vec<InactiveUser>,
}

/// Read everything with the fewest calls (Looker: default [`ReadOptions`]).
pub async fn read_snapshot<S, L>(
    engine: &Engine<S, L>,
    identities: &[Identity],
    progress: &dyn Progress,
) -> Result<(Snapshot, ReadCalls), ProcessError>
where
    S: StateStore,
    L: LookerPort,
{
    read_snapshot_with(engine, identities, &ReadOptions::default(), progress).await
}

/// Read everything with the fewest calls; Looker in pages (`reconcile_paged`).
pub async fn read_snapshot_with<S, L>(
    engine: &Engine<S, L>,
    identities: &[Identity],
    opts: &ReadOptions,
    progress: &dyn Progress,
) -> Result<(Snapshot, ReadCalls), ProcessError>
where
    S: StateStore,
    L: LookerPort,
{
    let mut snap = Snapshot::default();
    let mut reads = ReadCalls::default();
    let policy = engine.policy();
    if let Some(read) = crate::reconcile_paged::read_looker(engine, identities, opts, progress).await? {
        reads.looker = read.calls;
        snap.looker_duplicates = read.duplicates;
        snap.looker_unmatched = read.unmatched;
        snap.looker = Some((read.catalog, read.users));
    }
    let Some(cloud) = engine.cloud() else {
        return Ok((snap, reads));
    };
    let now = gatehouse_domain::clock::now();
    let desired: Vec<_> = identities
        .iter()
        .map(|id| cloud.evaluate(policy, id, now))
        .collect();
    if let Some(aws) = &cloud.aws {
        progress.phase("read aws", policy.managed_aws_groups().len() + 1);
        let before = aws.iam.read_calls();
        let users: BTreeSet<Arc<str>> = aws.iam.list_users().await?.into_iter().map(Arc::from).collect();
        if let AwsUserMapping::Tag { key } = &aws.mapping {
            snap.aws_tag_index = aws.iam.tag_index_of(key).await?;
        }
        for g in policy.managed_aws_groups() {
            if let Some(m) = aws.iam.group_members(&g).await? {
                snap.aws_groups.insert(g, iam_members(&users, m));
            }
            progress.advance(1);
        }
        for d in desired.iter().filter_map(|d| d.aws.as_ref()) {
            let name = match &d.user {
                AwsUserKey::Name(n) if users.contains(n.as_str()) => n.clone(),
                AwsUserKey::Tag { value, .. } if snap.aws_tag_index.contains_key(value) => {
                    snap.aws_tag_index[value].clone()
                }
                _ => continue,
            };
            let needs = d.needs();
            if !d.managed_tags.is_empty() {
                snap.aws_tags.insert(name.clone(), aws.iam.tags(&name).await?);
            }
            if needs.credentials {
                let keys = aws.iam.access_keys(&name).await?;
                let profile = aws.iam.has_login_profile(&name).await?;
                snap.aws_credentials.insert(name, (keys, profile));
            }
        }
        snap.aws_users = Some(users);
        reads.aws = aws.iam.read_calls() - before;
    }
    if let Some(gcp) = &cloud.gcp {
        let resources: BTreeSet<String> = policy
            .managed_gcp_grants()
            .into_iter()
            .map(|g| g.resource)
            .collect();
        progress.phase("read gcp", resources.len());
        let mut policies = BTreeMap::new();
        for r in resources {
            reads.gcp += 1;
            match gcp.iam.get_policy(&r).await {
                Ok(p) => {
                    policies.insert(r, p);
                }
                Err(e) if e.kind == gatehouse_domain::looker::ErrorKind::NotFound => {
                    tracing::warn!(resource = %r, "gcp resource not found; skipped");
                }
                Err(e) => return Err(e.into()),
            }
            progress.advance(1);
        }
        snap.gcp = Some(policies);
        let groups = policy.managed_gcp_groups();
        progress.phase("read google groups", groups.len());
        let before = gcp.groups.read_calls();
        for g in groups {
            match gcp.groups.list_group(&g).await {
                Ok(h) => {
                    snap.gcp_groups.insert(g, h);
                }
                Err(e) if e.kind == gatehouse_domain::looker::ErrorKind::NotFound => {
                    tracing::warn!(group = %g, "google group not found; skipped");
                }
                Err(e) => return Err(e.into()),
            }
            progress.advance(1);
        }
        reads.gcp += gcp.groups.read_calls() - before;
    }
    snap.shrink_to_fit();
    Ok((snap, reads))
}

/// Reconcile everyone: read, plan, and (with `apply`) apply per target mode.
pub async fn run<S, L>(
    engine: &Engine<S, L>,
    directory: &impl Directory,
    apply: bool,
    progress: &dyn Progress,
) -> Result<Report, ProcessError>
where
    S: StateStore,
    L: LookerPort,
{
    run_with(engine, directory, apply, &ReadOptions::default(), progress).await
}

/// [`run`] with Looker read as `opts` says (page size, attribute audit slice).
pub async fn run_with<S, L>(
    engine: &Engine<S, L>,
    directory: &impl Directory,
    apply: bool,
    opts: &ReadOptions,
    progress: &dyn Progress,
) -> Result<Report, ProcessError>
where
    S: StateStore,
    L: LookerPort,
{
    run_full(engine, directory, apply, opts, Orphans::Report, progress).await
}

/// [`run_with`] with what to do about orphan accounts (`[reconcile] orphans`, issue 15): with
/// `apply`, each orphan Looker user, IAM user or GCP member is ledgered (`report`) or disabled
/// through the one apply loop (`disable`, in its target's mode; see [`crate::reconcile_orphans`]). The report carries what was read
/// ([`Report::observed`]): store it with [`record`].
pub async fn run_full<S, L>(
    engine: &Engine<S, L>,
    directory: &impl Directory,
    apply: bool,
    opts: &ReadOptions,
    orphans: Orphans,
    progress: &dyn Progress,
) -> Result<Report, ProcessError>
where
    S: StateStore,
    L: LookerPort,
{
    let read_at = gatehouse_domain::clock::now();
    let identities: Vec<Identity> = directory
        .subjects()
        .await?
        .into_iter()
        .map(|s| s.identity)
        .collect();
    let (snap, reads) = read_snapshot_with(engine, &identities, opts, progress).await?;
    let shape = CloudShape {
        aws: engine
            .cloud()
            .and_then(|c| c.aws.as_ref().map(|a| a.mapping.clone())),
        gcp: engine.cloud().is_some_and(|c| c.gcp.is_some()),
    };
    let all = plan_all(
        engine.policy(),
        &identities,
        &snap,
        &shape,
        gatehouse_domain::clock::now(),
    );
    let inactivity = engine.policy().inactivity.as_ref().map(|rule| {
        let mut users: Vec<InactiveUser> = all.iter().filter_map(|p| p.inactive.clone()).collect();
        users.sort_by(|a, b| (a.active_at, &a.subject).cmp(&(b.active_at, &b.subject)));
        let reclaimed = users.iter().filter(|u| u.disabled).count();
        InactivityReport {
            mode: rule.mode,
            disable_after_days: rule.disable_after_days,
            reclaimable: users.len() - reclaimed,
            reclaimed,
            users,
        }
    });
    let plans: Vec<SubjectPlan> = all.into_iter().filter(|p| !p.is_empty()).collect();
    let observed = crate::access::observe(engine.policy(), &identities, &snap, &shape, read_at);
    let mut report = Report {
        people: identities.len(),
        reads,
        plans,
        applied: apply,
        writes: 0,
        reported: 0,
        looker_duplicates: snap.looker_duplicates,
        inactivity,
        orphans: observed.orphans,
        observed: observed.rows,
        read_at,
    };
    gatehouse_platform::events::reconcile_orphans(report.orphans.len());
    for (target, n) in [
        (
            Target::Looker,
            report
                .plans
                .iter()
                .map(|p| p.looker.as_ref().map_or(0, |l| l.steps.len()))
                .sum::<usize>(),
        ),
        (
            Target::Aws,
            report
                .plans
                .iter()
                .map(|p| p.cloud.aws.as_ref().map_or(0, |a| a.steps.len()))
                .sum(),
        ),
        (Target::Gcp, report.plans.iter().map(|p| p.cloud.gcp.len()).sum()),
    ] {
        gatehouse_platform::events::reconcile_drift(target, n);
    }
    if !apply {
        return Ok(report);
    }
    progress.phase("apply", report.plans.len());
    let run_id = format!("reconcile:{}", gatehouse_domain::clock::now().to_rfc3339());
    for p in &report.plans {
        let ctx = Ctx {
            envelope_id: run_id.clone(),
            subject: p.subject.clone(),
            event: "reconcile".into(),
            email: p.email.clone(),
            actor: gatehouse_domain::actor::RECONCILE.into(),
            policy_digest: Some(engine.policy().digest.to_string()),
            lease: None,
        };
        let AppliedCounts { writes, reported } =
            engine.apply_reconcile(&ctx, p.looker.as_ref(), &p.cloud).await?;
        report.writes += writes;
        report.reported += reported;
        progress.advance(1);
    }
    let AppliedCounts { writes, reported } =
        crate::reconcile_orphans::act(engine, &run_id, &report.orphans, &snap, orphans).await?;
    report.writes += writes;
    report.reported += reported;
    // Registered targets (AWS IAM Identity Center, ...) read and plan per person inside their
    // own converge, in their reconcile mode.
    if engine.has_registered() {
        progress.phase("registered targets", identities.len());
        for identity in &identities {
            let ctx = Ctx {
                envelope_id: run_id.clone(),
                subject: identity.key.clone(),
                event: "reconcile".into(),
                email: identity.email().map(str::to_string),
                actor: gatehouse_domain::actor::RECONCILE.into(),
                policy_digest: Some(engine.policy().digest.to_string()),
                lease: None,
            };
            let AppliedCounts { writes, reported } = engine.reconcile_registered(&ctx, identity).await?;
            report.writes += writes;
            report.reported += reported;
            progress.advance(1);
        }
    }
    Ok(report)
}

/// Store what `report`'s reconcile read (issue 15), with its time; `retention` bounds how many
/// runs are kept.
pub async fn record<C: gatehouse_domain::access::AccessSnapshots>(
    store: &C,
    report: &Report,
    retention: gatehouse_domain::access::Retention,
) -> Result<(), ProcessError> {
    let snapshot = gatehouse_domain::access::AccessSnapshot {
        run_at: report.read_at,
        rows: report.observed.clone(),
    };
    store.save_access_snapshot(&snapshot, retention).await?;
    tracing::info!(rows = snapshot.rows.len(), run_at = %snapshot.run_at, "access snapshot stored");
    Ok(())
}

/// Human-readable report.
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reconcile: {} people; read calls: looker {}, aws {}, gcp {}; {} with drift",
        r.people,
        r.reads.looker,
        r.reads.aws,
        r.reads.gcp,
        r.plans.len()
    );
    for p in &r.plans {
        let _ = writeln!(
            out,
            "{} ({}):",
            p.email.as_deref().unwrap_or("<no email>"),
            p.subject
        );
        if let Some(l) = &p.looker
            && !l.is_empty()
        {
            out.push_str(&l.render_text());
        }
        out.push_str(&p.cloud.render_text());
    }
    if r.looker_duplicates > 0 {
        let _ = writeln!(
            out,
            "looker: {} user(s) look like another user of the same person (see the warnings); not changed",
            r.looker_duplicates
        );
    }
    if let Some(i) = &r.inactivity {
        let mode = match i.mode {
            InactivityMode::Report => "report",
            InactivityMode::Enforce => "enforce",
        };
        let _ = writeln!(
            out,
            "inactivity ({mode}, no login for {} days): {} seat(s) reclaimable, {} reclaimed (disabled)",
            i.disable_after_days, i.reclaimable, i.reclaimed
        );
        for u in &i.users {
            let _ = writeln!(
                out,
                "  {} ({}) looker user {}: {}, {} days{}",
                u.email.as_deref().unwrap_or("<no email>"),
                u.subject,
                u.looker_user_id,
                match u.last_login_at {
                    Some(t) => format!("last login {}", t.to_rfc3339()),
                    None => format!(
                        "never logged in (credential created {})",
                        u.active_at.to_rfc3339()
                    ),
                },
                u.inactive_days,
                if u.disabled { ", disabled" } else { "" }
            );
        }
    }
    for o in &r.orphans {
        let _ = writeln!(
            out,
            "orphan {} account {} ({}): holds {}; matches nobody in the directory",
            o.target,
            o.account,
            o.email.as_deref().unwrap_or("no email"),
            o.grants.join(", ")
        );
    }
    if r.applied {
        let _ = writeln!(out, "applied: {} writes, {} reported only", r.writes, r.reported);
    } else if !r.plans.is_empty() {
        let _ = writeln!(out, "dry run: nothing changed (use --apply)");
    }
    out
}

/// The mode of a target (enforce when not configured otherwise).
pub fn mode_of(modes: &gatehouse_platform::config::Modes, t: Target) -> Mode {
    match t {
        Target::Looker => modes.looker,
        Target::Aws => modes.aws,
        Target::Gcp => modes.gcp,
    }
}

/// Run `job` at every occurrence of `cron` until `shutdown` fires. `clock` is the wall clock (a
/// parameter so tests can drive the schedule with tokio's paused clock); waiting uses tokio time.
/// Each run starts after the previous one ended: a run longer than the period skips the
/// occurrences it overlapped instead of piling up.
pub async fn run_on_schedule<F, Fut>(
    cron: &croner::Cron,
    clock: impl Clock,
    shutdown: gatehouse_platform::shutdown::Shutdown,
    mut job: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let at = clock.now();
        let Ok(next) = cron.find_next_occurrence(&at, false) else {
            tracing::error!("reconcile schedule has no next occurrence; scheduled reconcile stops");
            return;
        };
        let wait = (next - at).to_std().unwrap_or_default();
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        job().await;
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use gatehouse_domain::cloud::IamPolicy;
    use gatehouse_domain::looker::LookerUser;

    fn user(id: &str) -> Option<LookerUser> {
        Some(LookerUser {
            id: id.into(),
            is_disabled: false,
            email: None,
            group_ids: Default::default(),
            session_ids: vec![],
            api3_key_ids: vec![],
            direct_role_ids: None,
            user_attribute_values: None,
            logins: None,
        })
    }

    #[test]
    fn looker_users_hold_what_a_btreemap_of_the_same_inserts_holds() {
        let pairs: Vec<(String, Option<LookerUser>)> = (0..50u32)
            .map(|i| {
                (
                    format!("p{}@x.io", (i * 7) % 13),
                    (i % 4 != 0).then(|| i.to_string()),
                )
            })
            .map(|(e, id)| (e, id.and_then(|id| user(&id))))
            .collect();
        let mut b = BTreeMap::new();
        for (e, u) in pairs.clone() {
            b.insert(e, u);
        }
        let m = looker_users(pairs);
        assert_eq!(m.len(), b.len());
        assert!(
            m.iter().eq(b.iter()),
            "same entries, same order, the last user of each email"
        );
        assert_eq!(m.get("p3@x.io"), b.get("p3@x.io"));
        assert_eq!(m.get("nobody@x.io"), None);
    }

    #[test]
    fn shrink_to_fit_leaves_no_spare_room_in_gcp_member_lists() {
        let mut members = Vec::with_capacity(64);
        members.extend(["user:a@x.io".to_string(), "user:b@x.io".into()]);
        let binding = gatehouse_domain::cloud::Binding {
            role: "roles/viewer".into(),
            members,
            condition: None,
            other: Default::default(),
        };
        let policy = IamPolicy {
            bindings: vec![binding],
            ..Default::default()
        };
        let mut snap = Snapshot {
            gcp: Some([("projects/p".to_string(), policy)].into()),
            ..Default::default()
        };
        snap.shrink_to_fit();
        let b = &snap.gcp.as_ref().unwrap()["projects/p"].bindings[0];
        assert_eq!(b.members, ["user:a@x.io", "user:b@x.io"]);
        assert_eq!(b.members.capacity(), 2);
    }

    #[test]
    fn iam_group_members_share_the_user_names_and_keep_strangers() {
        let users: BTreeSet<Arc<str>> = ["ann", "bob"].map(Arc::from).into();
        let m = iam_members(
            &users,
            ["bob".to_string(), "zed".into(), "ann".into(), "bob".into()],
        );
        assert_eq!(m.iter().map(|n| &**n).collect::<Vec<_>>(), ["ann", "bob", "zed"]);
        let bob = users.get("bob").unwrap();
        assert!(Arc::ptr_eq(&m.as_slice()[1], bob), "one string per IAM user");
        assert_eq!(Arc::strong_count(bob), 2);
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;
    use gatehouse_platform::shutdown::Shutdown;
    use std::str::FromStr;
    use std::sync::{Arc, Mutex};

    #[tokio::test(start_paused = true)]
    async fn the_job_runs_at_each_occurrence_and_stops_on_shutdown() {
        // 02:30 UTC; the schedule is daily at 03:00.
        let base = DateTime::parse_from_rfc3339("2026-11-23T02:30:00Z")
            .unwrap()
            .to_utc();
        let started = tokio::time::Instant::now();
        let clock = move || base + chrono::Duration::from_std(started.elapsed()).unwrap();
        let cron = croner::Cron::from_str("0 3 * * *").unwrap();
        let runs: Arc<Mutex<Vec<DateTime<Utc>>>> = Arc::default();
        let (trigger, shutdown) = Shutdown::new();
        let seen = runs.clone();
        let task = tokio::spawn(async move {
            run_on_schedule(&cron, clock, shutdown, || {
                let seen = seen.clone();
                async move { seen.lock().unwrap().push(clock()) }
            })
            .await
        });
        // Two and a half days of paused time pass in no real time.
        tokio::time::sleep(std::time::Duration::from_secs(60 * 60 * 60)).await;
        let at: Vec<String> = runs.lock().unwrap().iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            at,
            [
                "2026-11-23T03:00:00+00:00",
                "2026-11-24T03:00:00+00:00",
                "2026-11-25T03:00:00+00:00"
            ]
        );
        trigger.trigger();
        task.await.unwrap();
        assert_eq!(runs.lock().unwrap().len(), 3, "nothing ran after shutdown");
    }
}
