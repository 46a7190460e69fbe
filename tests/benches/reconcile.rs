//! `make bench` (bench `reconcile`): the reconcile plan for 100,000 people × 1,000 IdP groups
//! against recorded state (Looker, AWS IAM and GCP IAM snapshots held in memory, 1% of people
//! drifted by hand), timed on the pure planner `reconcile::plan_all` (the compiled planner):
//! CPU time, peak memory (RSS), and the number of read calls each target needs for that
//! reconcile, from the read strategies of `reconcile_paged::read_looker` (pages of 1,000 users,
//! a rolling attribute audit) and `reconcile::read_snapshot` (IAM pages of 1,000). In the
//! same run, the reference planner it replaced (`reconcile::plan_all_reference`) on
//! `REFERENCE_PEOPLE` people (it takes minutes at 100,000), whose plans must equal the compiled
//! planner's on the same input. Writes `bench/reconcile.json` and `bench/reconcile.md` at the
//! repository root. Linux only (reads /proc/self; peak RSS is reset between the two runs through
//! /proc/self/clear_refs).

use chrono::{DateTime, Utc};
use gatehouse_domain::cloud::{AwsUserMapping, Binding, IamPolicy};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::identity::{Identity, Membership, Stamp, Stamped, Status};
use gatehouse_domain::looker::{Catalog, LookerUser};
use gatehouse_domain::policy::{self, Policy};
use gatehouse_domain::vec_map::VecSet;
use gatehouse_engine::reconcile::{
    CloudShape, Snapshot, SubjectPlan, looker_users, plan_all, plan_all_reference,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const PEOPLE: usize = 100_000;
/// People the reference planner is measured on (same groups, same shape).
const REFERENCE_PEOPLE: usize = 5_000;
const GROUPS: usize = 1_000;
const GROUPS_PER_PERSON: usize = 3;
const RESOURCES: usize = 10;
const IAM_PAGE: usize = 1_000;
/// Reconcile's Looker page size and attribute-audit slices (`[reconcile] page_size`,
/// `attribute_audit_runs`: their defaults).
const LOOKER_PAGE: usize = 1_000;
const ATTRIBUTE_AUDIT_RUNS: usize = 7;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resident memory now (MiB).
fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// The 1-minute load average when the bench ends (the machine may be shared).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn policy() -> Policy {
    let mut text = String::from("[aws.offboarding]\ndelete_access_keys_after_days = 30\n");
    for g in 0..GROUPS {
        text.push_str(&format!(
            "[[rule]]\nname = \"r{g}\"\nwhen = {{ idp_group = \"G{g}\" }}\nlooker_groups = [\"LG{g}\"]\n\
             aws_groups = [\"ag{g}\"]\ngcp_bindings = [{{ resource = \"projects/p{}\", role = \"roles/custom.r{g}\" }}]\n",
            g % RESOURCES
        ));
    }
    Policy::from_toml(&text).unwrap()
}

fn groups_of(i: usize) -> Vec<usize> {
    (0..GROUPS_PER_PERSON)
        .map(|k| (i * 7919 + k * 104_729) % GROUPS)
        .collect()
}

fn identity(i: usize) -> Identity {
    let stamp = Stamp {
        at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        id: EnvelopeId(format!("e{i}")),
    };
    let mut id = Identity::new(format!("00u{i:07}"));
    id.status = if i.is_multiple_of(50) {
        Status::Deactivated
    } else {
        Status::Active
    };
    id.status_stamp = Some(stamp.clone());
    id.profile.insert(
        "email".into(),
        Stamped {
            value: format!("p{i}@example.com"),
            stamp: stamp.clone(),
            source: None,
        },
    );
    for g in groups_of(i) {
        id.groups.insert(
            format!("00g{g}"),
            Membership {
                name: format!("G{g}"),
                member: true,
                stamp: stamp.clone(),
                source: None,
            },
        );
    }
    id
}

/// What the targets hold: what the policy wants, except 1% of people drifted by hand (one
/// managed group taken away and another one added, everywhere) and offboarded people not yet
/// closed (groups kept, one active key, a console password).
fn recorded(people: &[Identity], p: &Policy) -> Snapshot {
    let catalog = Catalog {
        groups: (0..GROUPS).map(|g| (format!("LG{g}"), g.to_string())).collect(),
        ..Default::default()
    };
    // (email, user) as `reconcile_paged::read_looker` gathers them, then sorted into the map.
    let mut looker = Vec::with_capacity(people.len());
    // IAM users and group members as `read_snapshot` holds them: a member's name is the IAM
    // user's (`reconcile::iam_members`; it interns each group as it is read, here each
    // membership as it is made).
    let aws_users: BTreeSet<Arc<str>> = (0..people.len()).map(|i| Arc::from(format!("p{i}"))).collect();
    let mut aws_groups: BTreeMap<String, Vec<Arc<str>>> = BTreeMap::new();
    let mut aws_credentials = BTreeMap::new();
    let mut gcp: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (i, id) in people.iter().enumerate() {
        let mut gs = groups_of(i);
        if i % 100 == 1 {
            gs[0] = (gs[0] + 1) % GROUPS;
        }
        let name = format!("p{i}");
        let email = format!("p{i}@example.com");
        looker.push((
            email.clone(),
            Some(LookerUser {
                id: i.to_string(),
                is_disabled: false,
                email: Some(email.clone()),
                group_ids: gs.iter().map(|g| g.to_string()).collect(),
                session_ids: vec![],
                api3_key_ids: vec![],
                direct_role_ids: None,
                user_attribute_values: None,
                logins: None,
            }),
        ));
        for g in &gs {
            let member = aws_users
                .get(name.as_str())
                .expect("every person has an IAM user");
            aws_groups
                .entry(format!("ag{g}"))
                .or_default()
                .push(member.clone());
            gcp.entry(format!("projects/p{}", g % RESOURCES))
                .or_default()
                .entry(format!("roles/custom.r{g}"))
                .or_default()
                .push(format!("user:{email}"));
        }
        if id.status.is_offboarded() {
            aws_credentials.insert(
                name.clone(),
                (
                    vec![gatehouse_domain::cloud::AwsAccessKey {
                        id: format!("AKIA{i}"),
                        active: true,
                    }],
                    true,
                ),
            );
        }
    }
    let _ = p;
    let aws_groups = aws_groups
        .into_iter()
        .map(|(g, m)| (g, m.into_iter().collect::<VecSet<_>>()))
        .collect();
    let mut snap = Snapshot {
        looker: Some((catalog, looker_users(looker))),
        aws_users: Some(aws_users),
        aws_tag_index: BTreeMap::new(),
        aws_groups,
        aws_tags: BTreeMap::new(),
        aws_credentials,
        looker_duplicates: 0,
        looker_unmatched: Vec::new(),
        gcp_groups: BTreeMap::new(),
        gcp: Some(
            gcp.into_iter()
                .map(|(r, roles)| {
                    let bindings = roles
                        .into_iter()
                        .map(|(role, members)| Binding {
                            role,
                            members,
                            condition: None,
                            other: Default::default(),
                        })
                        .collect();
                    (
                        r,
                        IamPolicy {
                            version: 3,
                            etag: Some("BwE=".into()),
                            bindings,
                            other: Default::default(),
                        },
                    )
                })
                .collect(),
        ),
    };
    // As `read_snapshot` leaves it.
    snap.shrink_to_fit();
    snap
}

struct Run {
    people: Vec<Identity>,
    snap: Snapshot,
    plans: Vec<SubjectPlan>,
    setup_cpu: f64,
    plan_cpu: f64,
    plan_wall: f64,
    rss: f64,
    stages: Stages,
}

/// Resident memory (MiB) at each stage of a run: before it, and what building the people, the
/// recorded state and the plan each added (the plans kept); the peak above the end of the plan is
/// what the planner held only while planning.
#[derive(Clone, Copy)]
struct Stages {
    before: f64,
    people: f64,
    snapshot: f64,
    plans_kept: f64,
    planner_transient: f64,
}

type Planner = fn(&Policy, &[Identity], &Snapshot, &CloudShape, DateTime<Utc>) -> Vec<SubjectPlan>;

/// Build `n` people and their recorded state, then plan them with `planner`.
fn run(p: &Policy, n: usize, planner: Planner) -> Run {
    reset_peak_rss();
    let build_cpu = cpu_seconds();
    let before = rss_mib();
    let people: Vec<Identity> = (0..n).map(identity).collect();
    let after_people = rss_mib();
    let snap = recorded(&people, p);
    let after_snapshot = rss_mib();
    let shape = CloudShape {
        aws: Some(AwsUserMapping::Template {
            template: "{local}".into(),
        }),
        gcp: true,
    };
    let setup_cpu = cpu_seconds() - build_cpu;
    let now: DateTime<Utc> = DateTime::from_timestamp(1_700_000_000 + 86_400, 0).unwrap();
    let t0 = cpu_seconds();
    let wall = tokio::time::Instant::now();
    let plans = planner(p, &people, &snap, &shape, now);
    let plan_cpu = cpu_seconds() - t0;
    let plan_wall = wall.elapsed().as_secs_f64();
    let after_plan = rss_mib();
    let rss = peak_rss_mib();
    Run {
        rss,
        stages: Stages {
            before,
            people: after_people - before,
            snapshot: after_snapshot - after_people,
            plans_kept: after_plan - after_snapshot,
            planner_transient: rss - after_plan,
        },
        people,
        snap,
        plans,
        setup_cpu,
        plan_cpu,
        plan_wall,
    }
}

fn main() {
    let p = policy();
    // The compiled planner first, in a fresh process, so its peak is the whole process's peak
    // (the reference run after it is smaller and starts from a reset peak).
    let Run {
        people,
        snap,
        plans,
        setup_cpu,
        plan_cpu,
        plan_wall,
        rss,
        stages,
    } = run(&p, PEOPLE, plan_all);

    let drifted: Vec<_> = plans.iter().filter(|p| !p.is_empty()).collect();
    let looker_calls: usize = drifted
        .iter()
        .map(|p| p.looker.as_ref().map_or(0, |l| l.steps.len()))
        .sum();
    let aws_calls: usize = drifted
        .iter()
        .map(|p| p.cloud.aws.as_ref().map_or(0, |a| a.steps.len()))
        .sum();
    let gcp_changes: usize = drifted.iter().map(|p| p.cloud.gcp.len()).sum();
    let gcp_set_iam_policy = drifted
        .iter()
        .flat_map(|p| p.cloud.gcp.iter().map(|s| s.op.resource()))
        .collect::<BTreeSet<&str>>()
        .len();
    let (people_with_drift, plans_kept) = (drifted.len(), plans.len());

    // Read calls, by the read strategy of reconcile::read_snapshot.
    let offboarded = people.iter().filter(|i| i.status.is_offboarded()).count();
    let pages = |n: usize| n.div_ceil(IAM_PAGE).max(1);
    let aws_reads = pages(PEOPLE)
        + snap.aws_groups.values().map(|m| pages(m.len())).sum::<usize>()
        + (GROUPS - snap.aws_groups.len())
        + 2 * offboarded;
    let needs_extra = people
        .iter()
        .filter(|i| {
            let d = policy::evaluate(&p, i);
            let n = gatehouse_domain::plan::read_needs(&d, &snap.looker.as_ref().unwrap().0);
            !n.attribute_ids.is_empty()
        })
        .count();
    // docs/looker-budget.md: login + 3 catalog lists + floor(U / page) + 1 pages + the audit's
    // slice of the people with managed attributes.
    let looker_reads = 1 + 3 + PEOPLE / LOOKER_PAGE + 1 + needs_extra.div_ceil(ATTRIBUTE_AUDIT_RUNS);
    let gcp_reads = p
        .managed_gcp_grants()
        .iter()
        .map(|g| g.resource.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let naive_aws = PEOPLE + 2 * offboarded; // ListGroupsForUser per person
    let naive_looker = 1 + PEOPLE + needs_extra; // the design before paged reads

    // Then the reference on fewer people; the compiled planner on the same input must keep the
    // same plans (a bench of a wrong planner is worthless: nothing is written if they differ).
    drop(drifted);
    drop((people, snap, plans));
    let reference = run(&p, REFERENCE_PEOPLE, plan_all_reference);
    let kept: Vec<&SubjectPlan> = reference.plans.iter().filter(|p| p.is_kept()).collect();
    let check = plan_all(
        &p,
        &reference.people,
        &reference.snap,
        &CloudShape {
            aws: Some(AwsUserMapping::Template {
                template: "{local}".into(),
            }),
            gcp: true,
        },
        DateTime::from_timestamp(1_700_000_000 + 86_400, 0).unwrap(),
    );
    assert_eq!(
        serde_json::to_value(&check).unwrap(),
        serde_json::to_value(&kept).unwrap(),
        "the compiled planner and the reference disagree"
    );
    let (ref_cpu, ref_wall, ref_rss, ref_left, ref_drift) = (
        reference.plan_cpu,
        reference.plan_wall,
        reference.rss,
        reference.stages.before,
        reference.plans.iter().filter(|p| !p.is_empty()).count(),
    );
    drop((kept, check));
    drop(reference);

    let result = json!({
        "people": PEOPLE, "idp_groups": GROUPS, "groups_per_person": GROUPS_PER_PERSON,
        "gcp_resources": RESOURCES, "offboarded": offboarded,
        "setup_cpu_seconds": setup_cpu,
        "plan_cpu_seconds": plan_cpu, "plan_wall_seconds": plan_wall,
        "peak_rss_mib": rss,
        "release_build": !cfg!(debug_assertions), "cores": std::thread::available_parallelism().map_or(0, usize::from),
        "load_average_1m": load_average(),
        "reference": { "people": REFERENCE_PEOPLE, "plan_cpu_seconds": ref_cpu,
                       "plan_wall_seconds": ref_wall, "peak_rss_mib": ref_rss,
                       "rss_mib_before": ref_left,
                       "people_with_drift": ref_drift, "same_plans_as_compiled": true },
        "people_with_drift": people_with_drift, "plans_kept": plans_kept,
        "rss_mib": { "before": stages.before, "people": stages.people, "snapshot": stages.snapshot,
                     "plans_kept": stages.plans_kept, "planner_transient": stages.planner_transient },
        "planned_writes": { "looker": looker_calls, "aws": aws_calls, "gcp_changes": gcp_changes,
                            "gcp_set_iam_policy": gcp_set_iam_policy },
        "read_calls": { "looker": looker_reads, "aws": aws_reads, "gcp": gcp_reads },
        "aws_reads_if_listed_per_person": naive_aws,
        "looker_reads_if_searched_per_person": naive_looker,
    });
    let per_ref = ref_cpu / REFERENCE_PEOPLE as f64 * PEOPLE as f64;
    let (cores, load) = (
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
    );
    // Issue 14, item 3: < 2 s CPU and < 200 MiB peak RSS at this size.
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    let (cpu_ok, rss_ok) = (verdict(plan_cpu < 2.0), verdict(rss < 200.0));
    // `make bench` builds with the release profile; a debug build says so in the result.
    let build = if cfg!(debug_assertions) {
        "**debug build (unoptimized)**: figures are not comparable with a release run"
    } else {
        "release build"
    };
    let md = format!(
        "# Reconcile benchmark\n\n`cargo bench -p gatehouse-e2e --bench reconcile` (part of `make bench`); \
         this run: {build}, {cores} cores, 1-minute load average {load} at the end (CPU time is \
         per process, so other work on the machine inflates it less than wall time). The pure reconcile planner (`reconcile::plan_all`, the compiled planner of \
         `reconcile_plan`) over {PEOPLE} people × {GROUPS} IdP groups \
         (each person in {GROUPS_PER_PERSON}; each group maps to a Looker group, an IAM group and a GCP \
         binding on one of {RESOURCES} projects), against recorded state in memory: 1% of people \
         drifted by hand, {offboarded} offboarded people not yet closed.\n\n\
         | measure | value |\n|---|---|\n\
         | CPU time of the plan | {plan_cpu:.2} s ({plan_wall:.2} s wall); issue 14's < 2 s: {cpu_ok} |\n\
         | CPU time to build the recorded state | {setup_cpu:.2} s |\n\
         | peak memory (RSS, whole process: directory + recorded state + planner + plans kept) | {rss:.0} MiB; issue 14's < 200 MiB: {rss_ok} |\n\
         | people with drift (plans kept) | {people_with_drift} ({plans_kept}) |\n\
         | planned writes: Looker / AWS / GCP changes (setIamPolicy calls) | {looker_calls} / {aws_calls} / {gcp_changes} ({gcp_set_iam_policy}) |\n\
         | read calls: Looker | {looker_reads} (login, 3 catalog lists, pages of {LOOKER_PAGE} users, 1/{ATTRIBUTE_AUDIT_RUNS} of the people with managed attributes) — {naive_looker} if searched per person |\n\
         | read calls: AWS | {aws_reads} (ListUsers pages + GetGroup per managed group + 2 per offboarded person) — {naive_aws} if read per person |\n\
         | read calls: GCP | {gcp_reads} (one getIamPolicy per managed resource) |\n\n\
         ## Where the memory goes\n\n\
         Resident memory (VmRSS) after each stage of the run above, in a fresh process (the \
         reference runs after it):\n\n\
         | stage | MiB |\n|---|---|\n\
         | before (binary, policy of {GROUPS} rules) | {:.0} |\n\
         | + the directory: {PEOPLE} `Identity` records | {:.0} |\n\
         | + the recorded state (`Snapshot`: Looker users, IAM users and groups, GCP policies) | {:.0} |\n\
         | + the plans kept ({plans_kept}) | {:.0} |\n\
         | + held by the planner only while planning (peak − after the plan) | {:.0} |\n\
         | = peak | {rss:.0} |\n\n\
         The planner itself holds little: the kept plans (people with drift) and, while planning, \
         its reverse indexes (IAM user → groups, GCP member → bindings: one sorted vector each of \
         8-byte (list, position) references to the names the recorded state holds). The bulk is \
         the input every reconcile holds: the directory (per person a record whose profile and \
         groups are sorted vectors, and some 13 small strings — key, email, group ids and names, \
         the envelope id of every stamp — at 32 bytes of heap each) and the recorded state (per \
         Looker user about 480 bytes: a slot of one sorted vector by email (`litemap`), the email \
         key, and the user's id, email and group ids; per IAM group membership a 16-byte `Arc<str>` \
         sharing the IAM user's name; per GCP binding member one owned string, the member lists \
         shrunk to fit once read).\n\n\
         Before (commit 4a204d1, issue 14's memory half; same machine, fresh process): 239 MiB \
         peak: 7 before + 94 the directory + 115 the recorded state (Looker users in a `BTreeMap` \
         by email, whose nodes are a third empty; an owned string per IAM group member in a \
         `BTreeSet`; GCP member lists with the room their growth left) + 7 the plans kept + 16 \
         the planner (pairs of a borrowed name or `Cow` and an index: 24 and 32 bytes each for \
         300,000 memberships); 1.39 s CPU (1.20 to 1.69 s in reruns on the shared machine). Then \
         218 MiB with the Looker users in a `litemap`, the IAM member names shared and the GCP \
         member lists shrunk (recorded state 115 → 97 MiB); then 190 MiB with the planner's \
         indexes as 8-byte references (plans kept + planner 19 → 7 MiB), the Looker vector sorted \
         in place (no second vector of 100,000 users), and this bench making each IAM membership \
         as `read_snapshot` leaves it (shared with the user) instead of first building 300,000 \
         owned names (recorded state 97 → 81 MiB). The directory is unchanged. The planner's \
         8-byte references cost some CPU (a name is two lookups away): 1.28 and 1.34 s against \
         1.22 and 1.20 s before, run alternately at a load average of 2.5. The planner's row \
         reads 0 because its indexes fit in memory the building of the recorded state freed and \
         the allocator kept; once freed they stay resident, in the plans-kept row.\n\n\
         Earlier still (commit 84fb2f4, the reference run first): 505 MiB peak: 49 MiB the reference run \
         left resident, + 221 MiB the directory (`BTreeMap` profile and groups: an 11-slot node \
         each, about 2.2 KiB per person; 262 MiB in a fresh process), + 134 MiB the recorded state \
         (a `BTreeSet` node per Looker user's group ids), + 90 MiB the plan (every person's plan \
         kept, and the planner's maps of vectors); 1.93 s CPU (1.26 to 1.62 s in reruns).\n\n\
         ## The reference planner, same run\n\n\
         `reconcile::plan_all_reference` (every rule and every managed name for every person: \
         O(people × policy)), measured after the compiled planner on {REFERENCE_PEOPLE} people × {GROUPS} groups (it takes \
         minutes at {PEOPLE}); the compiled planner's kept plans for those people are checked equal to \
         its plans with something to change or report (nothing is written if they differ).\n\n\
         | measure | value |\n|---|---|\n\
         | CPU time of the plan, {REFERENCE_PEOPLE} people | {ref_cpu:.2} s ({ref_wall:.2} s wall) |\n\
         | the same, scaled linearly to {PEOPLE} people | {per_ref:.0} s |\n\
         | peak memory (RSS, whole process, during this run) | {ref_rss:.0} MiB, of which {ref_left:.0} MiB the first run left resident (freed, kept by the allocator) |\n\
         | people with drift | {ref_drift} |\n\n\
         Read calls follow the read strategies of `reconcile_paged::read_looker` (Looker, as in \
         docs/looker-budget.md) and `reconcile::read_snapshot` (IAM pages of 1,000); the \
         end-to-end test `cloud::drift_is_reverted_in_enforce_mode_and_only_reported_in_report_mode` \
         checks the GCP figure against the fake. CPU time and RSS from /proc/self (Linux); peak RSS \
         is reset between the two runs.\n",
        stages.before, stages.people, stages.snapshot, stages.plans_kept, stages.planner_transient,
    );
    gatehouse_e2e::write_bench_results("reconcile", &result, &md);
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
}
