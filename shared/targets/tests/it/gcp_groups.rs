//! Google groups (issue 20) through the GCP target and the one apply loop, against the stateful
//! Cloud Identity fake (`gatehouse_testkit::cloud_identity_fake`): joins, idempotent runs,
//! leaves of managed groups only, offboarding, email changes (issue 16), paging, retries.

use crate::contract::{Harness, contract};
use gatehouse_domain::cloud::DesiredGcp;
use gatehouse_domain::looker::ErrorKind;
use gatehouse_domain::ports::{LedgerRow, StateStore};
use gatehouse_domain::target::{Link, Screen, Screened, Target};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::client::cloud_identity::{CloudIdentity, CloudIdentityConfig};
use gatehouse_targets::client::gcp_iam::{GcpIam, GcpIamConfig, TokenSource};
use gatehouse_targets::gcp_iam::GcpTarget;
use gatehouse_targets::{self as targets, Applied, Ctx, Mode, RetryPolicy, Run};
use gatehouse_testkit::cloud_identity_fake::FakeCloudIdentity;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const PAT: &str = "pat@example.com";
const DA: &str = "data-analysts@example.com";
const ENG: &str = "eng@example.com";
const OTHER: &str = "everyone@example.com";

fn retry() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

fn groups_client(fake: &FakeCloudIdentity, token: &str, page_size: u32) -> CloudIdentity {
    CloudIdentity::new(CloudIdentityConfig {
        url: fake.base_url(),
        token: TokenSource::Static(token.to_string().into()),
        timeout: Duration::from_secs(10),
        page_size,
    })
    .unwrap()
}

fn target(fake: &FakeCloudIdentity) -> GcpTarget {
    let b = fake.base_url();
    GcpTarget {
        // No IAM policy is managed in these tests: no policy call is made.
        iam: GcpIam::new(GcpIamConfig {
            resource_manager_url: b.clone(),
            bigquery_url: b.clone(),
            iam_url: b,
            token: TokenSource::Static(fake.token().into()),
            timeout: Duration::from_secs(10),
        })
        .unwrap(),
        groups: groups_client(fake, &fake.token(), 200),
        retry: retry(),
        conflict_retries: 3,
    }
}

fn desired(
    member: &str,
    groups: &[&str],
    managed: &[&str],
    offboarded: bool,
    previous: &[&str],
) -> DesiredGcp {
    DesiredGcp {
        member: format!("user:{member}"),
        offboarded,
        bindings: BTreeMap::new(),
        managed: BTreeSet::new(),
        former_members: Vec::new(),
        groups: groups
            .iter()
            .map(|g| (g.to_string(), "analysts".to_string()))
            .collect(),
        managed_groups: managed.iter().map(|g| g.to_string()).collect(),
        previous_emails: previous.iter().map(|p| p.to_string()).collect(),
    }
}

struct Ledger {
    _dir: tempfile::TempDir,
    store: Sqlite,
}

impl Ledger {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).await.unwrap();
        Ledger { _dir: dir, store }
    }
    async fn rows(&self) -> Vec<LedgerRow> {
        self.store.ledger_since(None).await.unwrap()
    }
}

struct Allow;
impl Screen for Allow {
    fn withhold(&self, _: &Screened<'_>) -> Option<String> {
        None
    }
}

/// read → diff → apply, as the engine does for one person.
async fn converge(
    t: &GcpTarget,
    d: &DesiredGcp,
    ledger: &Ledger,
    mode: Mode,
    screen: &dyn Screen,
) -> Applied {
    let actual = t.read(d, &Link::unlinked("p")).await.unwrap();
    let plan = t.diff(d, &actual);
    let ctx = Ctx {
        envelope_id: "e1".into(),
        subject: "p".into(),
        event: "test".into(),
        email: None,
        actor: "event:test".into(),
        policy_digest: None,
        lease: None,
    };
    let retry = retry();
    let run = Run {
        store: &ledger.store,
        ctx: &ctx,
        retry: &retry,
        screen,
    };
    targets::apply(t, &plan, mode, &run).await.unwrap()
}

fn writes(fake: &FakeCloudIdentity) -> usize {
    fake.calls().iter().filter(|c| c.is_write()).count()
}

#[tokio::test]
async fn onboarding_adds_one_membership_and_a_second_run_writes_nothing() {
    let fake = FakeCloudIdentity::start().await;
    let name = fake.add_group(DA);
    let t = target(&fake);
    let ledger = Ledger::new().await;
    let d = desired(PAT, &[DA], &[DA], false, &[]);
    let a = converge(&t, &d, &ledger, Mode::Apply, &Allow).await;
    assert_eq!(a.writes, 1);
    assert_eq!(fake.members(DA), [PAT]);
    assert_eq!(fake.count("memberships.create"), 1, "{:?}", fake.calls());
    let rows = ledger.rows().await;
    assert_eq!(rows.len(), 1, "one ledger row per call");
    assert_eq!(rows[0].entry.target, "gcp");
    assert_eq!(rows[0].entry.rule, "analysts");
    assert_eq!(rows[0].entry.call.path, format!("/v1/{name}/memberships"));
    assert_eq!(
        rows[0].entry.call.body.as_ref().unwrap()["preferredMemberKey"]["id"],
        PAT
    );
    // Again: the group name is cached, one lookup, nothing written.
    fake.reset_calls();
    let a = converge(&t, &d, &ledger, Mode::Apply, &Allow).await;
    assert_eq!(a, Applied::default());
    assert_eq!(writes(&fake), 0);
    assert_eq!(fake.count("groups.lookup"), 0, "group name cached");
    assert_eq!(fake.count("memberships.lookup"), 1);
    assert_eq!(ledger.rows().await.len(), 1);
}

#[tokio::test]
async fn a_group_removed_from_the_rule_removes_only_that_membership() {
    let fake = FakeCloudIdentity::start().await;
    for g in [DA, ENG, OTHER] {
        fake.add_group(g);
        fake.add_member(g, PAT);
        fake.add_member(g, "sam@example.com");
    }
    let t = target(&fake);
    let ledger = Ledger::new().await;
    // The rule now grants ENG only; DA is still managed (another rule names it).
    let a = converge(
        &t,
        &desired(PAT, &[ENG], &[DA, ENG], false, &[]),
        &ledger,
        Mode::Apply,
        &Allow,
    )
    .await;
    assert_eq!(a.writes, 1);
    assert_eq!(fake.members(DA), ["sam@example.com"]);
    assert_eq!(fake.members(ENG), ["pat@example.com", "sam@example.com"]);
    assert_eq!(
        fake.members(OTHER),
        ["pat@example.com", "sam@example.com"],
        "unmanaged group untouched"
    );
    let rows = ledger.rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].entry.call.method.to_string(), "DELETE");
    assert_eq!(rows[0].entry.status, "200");
}

#[tokio::test]
async fn offboarding_removes_every_managed_membership_and_leaves_other_groups() {
    let fake = FakeCloudIdentity::start().await;
    for g in [DA, ENG, OTHER] {
        fake.add_group(g);
        fake.add_member(g, PAT);
    }
    let t = target(&fake);
    let ledger = Ledger::new().await;
    let d = desired(PAT, &[], &[DA, ENG], true, &[]);
    let a = converge(&t, &d, &ledger, Mode::Apply, &Allow).await;
    assert_eq!(a.writes, 2);
    assert!(fake.members(DA).is_empty() && fake.members(ENG).is_empty());
    assert_eq!(
        fake.members(OTHER),
        [PAT],
        "a group no rule names is never touched"
    );
    let rows = ledger.rows().await;
    assert!(
        rows.iter()
            .all(|r| r.entry.rule == "gcp.offboarding.remove_group_memberships"),
        "{rows:?}"
    );
    // Converged: nothing more.
    assert_eq!(
        converge(&t, &d, &ledger, Mode::Apply, &Allow).await,
        Applied::default()
    );
}

#[tokio::test]
async fn report_mode_and_a_protected_member_write_nothing() {
    let fake = FakeCloudIdentity::start().await;
    fake.add_group(DA);
    fake.add_member(DA, PAT);
    let t = target(&fake);
    let ledger = Ledger::new().await;
    let d = desired(PAT, &[], &[DA], true, &[]);
    let a = converge(&t, &d, &ledger, Mode::Report, &Allow).await;
    assert_eq!(a.reported, 1);
    struct Protect;
    impl Screen for Protect {
        fn withhold(&self, s: &Screened<'_>) -> Option<String> {
            (s.principal == Some("user:pat@example.com") && s.revokes).then(|| "protected".into())
        }
    }
    let a = converge(&t, &d, &ledger, Mode::Apply, &Protect).await;
    assert_eq!(a.withheld, 1);
    assert_eq!(writes(&fake), 0);
    assert_eq!(fake.members(DA), [PAT]);
    let status: Vec<_> = ledger.rows().await.into_iter().map(|r| r.entry.status).collect();
    assert_eq!(status[0], "drift_reported");
    assert!(status[1].starts_with("withheld"), "{status:?}");
}

#[tokio::test]
async fn a_membership_follows_an_email_change() {
    let fake = FakeCloudIdentity::start().await;
    fake.add_group(DA);
    fake.add_member(DA, "pat.old@example.com");
    let t = target(&fake);
    let ledger = Ledger::new().await;
    let d = desired(PAT, &[DA], &[DA], false, &["pat.old@example.com"]);
    let a = converge(&t, &d, &ledger, Mode::Apply, &Allow).await;
    assert_eq!(a.writes, 2);
    assert_eq!(fake.members(DA), [PAT], "old member removed, new one added");
    assert!(
        ledger
            .rows()
            .await
            .iter()
            .any(|r| r.entry.rule == "identity.previous_email")
    );
}

#[tokio::test]
async fn a_429_is_retried_through_the_retry_policy_and_a_duplicate_is_done() {
    let fake = FakeCloudIdentity::start().await;
    fake.add_group(DA);
    let t = target(&fake);
    let ledger = Ledger::new().await;
    let d = desired(PAT, &[DA], &[DA], false, &[]);
    let actual = t.read(&d, &Link::unlinked("p")).await.unwrap();
    let plan = t.diff(&d, &actual);
    // The next call (the create) is throttled once: the loop backs off and sends it again.
    fake.set_retry_after_secs(0);
    fake.fail_next(429, 1);
    let ctx = Ctx {
        envelope_id: "e1".into(),
        subject: "p".into(),
        event: "test".into(),
        email: None,
        actor: "event:test".into(),
        policy_digest: None,
        lease: None,
    };
    let retry = retry();
    let run = Run {
        store: &ledger.store,
        ctx: &ctx,
        retry: &retry,
        screen: &Allow,
    };
    let a = targets::apply(&t, &plan, Mode::Apply, &run).await.unwrap();
    assert_eq!(a.writes, 1);
    assert_eq!(fake.count("memberships.create"), 2);
    let status: Vec<_> = ledger.rows().await.into_iter().map(|r| r.entry.status).collect();
    assert_eq!(status, ["429", "200"], "one row per attempt");
    // The same plan again (the member was added meanwhile): 409 ALREADY_EXISTS is done, once.
    let a = targets::apply(&t, &plan, Mode::Apply, &run).await.unwrap();
    assert_eq!(a.writes, 1);
    assert_eq!(fake.count("memberships.create"), 3, "a duplicate is not retried");
    assert_eq!(ledger.rows().await.last().unwrap().entry.status, "409");
    assert_eq!(fake.members(DA), [PAT]);
    // Reads are retried too.
    fake.fail_next(429, 1);
    let again = t.read(&d, &Link::unlinked("p")).await.unwrap();
    assert!(t.diff(&d, &again).steps.is_empty());
}

#[tokio::test]
async fn a_stale_removal_is_done_and_a_missing_group_is_skipped() {
    let fake = FakeCloudIdentity::start().await;
    fake.add_group(DA);
    fake.add_member(DA, PAT);
    let t = target(&fake);
    let ledger = Ledger::new().await;
    let d = desired(PAT, &[], &[DA, "gone@example.com"], true, &[]);
    let actual = t.read(&d, &Link::unlinked("p")).await.unwrap();
    let plan = t.diff(&d, &actual);
    assert!(
        plan.notes.iter().any(|n| n.contains("gone@example.com")),
        "{:?}",
        plan.notes
    );
    // Someone removed the membership by hand between the read and the write.
    let m = actual.groups[DA].memberships[PAT].clone();
    groups_client(&fake, &fake.token(), 200)
        .delete_membership(&m)
        .await
        .unwrap();
    let ctx = Ctx {
        envelope_id: "e1".into(),
        subject: "p".into(),
        event: "test".into(),
        email: None,
        actor: "event:test".into(),
        policy_digest: None,
        lease: None,
    };
    let retry = retry();
    let run = Run {
        store: &ledger.store,
        ctx: &ctx,
        retry: &retry,
        screen: &Allow,
    };
    let a = targets::apply(&t, &plan, Mode::Apply, &run).await.unwrap();
    assert_eq!(a.writes, 0, "already gone is not a write that took effect");
    assert_eq!(ledger.rows().await[0].entry.status, "404 already gone");
}

#[tokio::test]
async fn listing_a_group_follows_next_page_tokens() {
    let fake = FakeCloudIdentity::start().await;
    fake.add_group(DA);
    for i in 0..7 {
        fake.add_member(DA, &format!("p{i}@example.com"));
    }
    fake.set_max_page_size(3);
    let c = groups_client(&fake, &fake.token(), 100);
    let held = c.list_group(DA).await.unwrap();
    assert_eq!(held.memberships.len(), 7);
    assert_eq!(fake.count("memberships.list"), 3, "3 + 3 + 1");
    let tokens: Vec<_> = fake
        .calls()
        .iter()
        .filter(|c| c.method_name() == "memberships.list")
        .map(|c| c.path.contains("pageToken="))
        .collect();
    assert_eq!(tokens, [false, true, true]);
}

#[tokio::test]
async fn no_or_a_wrong_token_is_unauthorized() {
    let fake = FakeCloudIdentity::start().await;
    fake.add_group(DA);
    let e = groups_client(&fake, "ya29.wrong", 100)
        .group_name(DA)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unauthorized);
    assert!(!e.to_string().contains("ya29.wrong"), "{e}");
    let e = groups_client(&fake, &fake.token(), 100)
        .group_name("nobody@example.com")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}

/// The target contract, for a Google group membership.
struct Groups {
    fake: FakeCloudIdentity,
    target: GcpTarget,
}

impl Harness for Groups {
    type T = GcpTarget;
    fn target(&self) -> &GcpTarget {
        &self.target
    }
    fn granted(&self) -> DesiredGcp {
        desired(PAT, &[DA], &[DA], false, &[])
    }
    fn revoked(&self) -> DesiredGcp {
        desired(PAT, &[], &[DA], true, &[])
    }
    async fn holds(&self) -> bool {
        self.fake.members(DA).iter().any(|m| m == PAT)
    }
}

#[tokio::test]
async fn google_groups_pass_the_target_contract() {
    let fake = FakeCloudIdentity::start().await;
    fake.add_group(DA);
    fake.add_member(DA, "sam@example.com");
    let h = Groups {
        target: target(&fake),
        fake,
    };
    contract(&h).await;
    assert_eq!(h.fake.members(DA), ["sam@example.com"], "other members are kept");
}
