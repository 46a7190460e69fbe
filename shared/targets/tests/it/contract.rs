//! The target contract: what every [`Target`] must do under the one apply loop. The SAME suite
//! ([`contract`]) runs against Looker (the fake Looker), AWS IAM (moto), GCP IAM (the fake) and
//! the worked example of a new target ([`crate::toy_target`]). A new target passes it by
//! writing one harness: a person who lacks a grant, the desired states that grant and revoke
//! it, and a direct look at the backend.

use gatehouse_domain::looker::HttpCall;
use gatehouse_domain::ports::{LedgerRow, StateStore};
use gatehouse_domain::target::{
    Link, Order, Planned, Screen, Screened, SendAll, SendError, Sent, Target, TargetName,
};
use gatehouse_store::sqlite::Sqlite;
use gatehouse_targets::lease::Lease;
use gatehouse_targets::{self as targets, Applied, Ctx, Mode, RetryPolicy, Run};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// One target under test, with a person and a grant it manages.
pub trait Harness {
    type T: Target;
    fn target(&self) -> &Self::T;
    /// The person holds the grant (and exists, for a target that creates accounts).
    fn granted(&self) -> <Self::T as Target>::Desired;
    /// The person is offboarded: the grant is taken away.
    fn revoked(&self) -> <Self::T as Target>::Desired;
    /// Whether the backend holds the grant now, looked at directly (not through the target).
    fn holds(&self) -> impl std::future::Future<Output = bool>;
}

/// Every write the loop sends through a target, recorded: (starts, ends) in time order.
struct Counted<'a, T: Target> {
    inner: &'a T,
    sends: AtomicUsize,
    ops: AtomicUsize,
    /// `(true, op)` when a write starts, `(false, op)` when it ends (ops as `Debug`).
    events: Mutex<Vec<(bool, String)>>,
}

impl<'a, T: Target> Counted<'a, T> {
    fn new(inner: &'a T) -> Self {
        Counted {
            inner,
            sends: AtomicUsize::new(0),
            ops: AtomicUsize::new(0),
            events: Mutex::default(),
        }
    }
    fn sends(&self) -> usize {
        self.sends.load(Ordering::SeqCst)
    }
    fn ops(&self) -> usize {
        self.ops.load(Ordering::SeqCst)
    }
}

impl<T: Target> Target for Counted<'_, T> {
    type Desired = T::Desired;
    type Actual = T::Actual;
    type Plan = T::Plan;
    type Op = T::Op;
    type Account = T::Account;
    type Error = T::Error;

    fn name(&self) -> TargetName {
        self.inner.name()
    }
    fn desired(
        &self,
        policy: &gatehouse_domain::policy::Policy,
        identity: &gatehouse_domain::identity::Identity,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<T::Desired> {
        self.inner.desired(policy, identity, now)
    }
    fn read(
        &self,
        d: &T::Desired,
        link: &Link,
    ) -> impl std::future::Future<Output = Result<T::Actual, T::Error>> + Send {
        self.inner.read(d, link)
    }
    fn linked(&self, a: &T::Actual) -> Vec<String> {
        self.inner.linked(a)
    }
    fn link_key(&self, a: &T::Account) -> Option<String> {
        self.inner.link_key(a)
    }
    fn diff(&self, d: &T::Desired, a: &T::Actual) -> T::Plan {
        self.inner.diff(d, a)
    }
    fn account(&self, p: &T::Plan) -> T::Account {
        self.inner.account(p)
    }
    fn steps<'p>(&self, p: &'p T::Plan) -> Vec<Planned<'p, T::Op>> {
        self.inner.steps(p)
    }
    fn call(&self, a: &T::Account, op: &T::Op) -> HttpCall {
        self.inner.call(a, op)
    }
    fn not_found_is_done(&self, op: &T::Op) -> bool {
        self.inner.not_found_is_done(op)
    }
    fn batch_key(&self, op: &T::Op) -> Option<String> {
        self.inner.batch_key(op)
    }
    fn conflict_retries(&self) -> usize {
        self.inner.conflict_retries()
    }
    async fn send(&self, a: &T::Account, ops: &[&T::Op]) -> Result<Sent<T::Account>, SendError<T::Error>> {
        let names: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
        {
            let mut ev = self.events.lock().unwrap();
            ev.extend(names.iter().map(|n| (true, n.clone())));
        }
        let r = self.inner.send(a, ops).await;
        if !matches!(r, Ok(Sent::Unchanged) | Err(SendError::BeforeWrite(_))) {
            self.sends.fetch_add(1, Ordering::SeqCst);
            self.ops.fetch_add(ops.len(), Ordering::SeqCst);
        }
        self.events
            .lock()
            .unwrap()
            .extend(names.into_iter().map(|n| (false, n)));
        r
    }
}

/// Withholds every step.
struct WithholdAll;

impl Screen for WithholdAll {
    fn withhold(&self, _: &Screened<'_>) -> Option<String> {
        Some("contract test".into())
    }
}

/// Cannot judge any step yet (Gatehouse's own identity not learned).
struct NotReadyAll;

impl Screen for NotReadyAll {
    fn withhold(&self, _: &Screened<'_>) -> Option<String> {
        None
    }
    fn not_ready(&self, _: &Screened<'_>) -> Option<String> {
        Some("contract test: not ready".into())
    }
}

struct Ledger {
    _dir: tempfile::TempDir,
    store: Sqlite,
    seen: usize,
}

impl Ledger {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(dir.path()).await.unwrap();
        Ledger {
            _dir: dir,
            store,
            seen: 0,
        }
    }

    /// Rows appended since the last call.
    async fn new_rows(&mut self) -> Vec<LedgerRow> {
        let all = self.store.ledger_since(None).await.unwrap();
        let rows = all[self.seen..].to_vec();
        self.seen = all.len();
        rows
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    }
}

async fn plan_of<T: Target>(t: &T, d: &T::Desired) -> T::Plan {
    let actual = t
        .read(d, &Link::unlinked("p"))
        .await
        .unwrap_or_else(|e| panic!("{}: read: {e}", t.name()));
    t.diff(d, &actual)
}

async fn run_plan<T: Target>(
    t: &T,
    plan: &T::Plan,
    mode: Mode,
    ledger: &Ledger,
    screen: &dyn Screen,
) -> Applied {
    try_run_plan(t, plan, mode, ledger, screen)
        .await
        .unwrap_or_else(|e| panic!("{}: apply: {e}", t.name()))
}

async fn try_run_plan<T: Target>(
    t: &T,
    plan: &T::Plan,
    mode: Mode,
    ledger: &Ledger,
    screen: &dyn Screen,
) -> Result<Applied, targets::ApplyError<T::Error>> {
    try_run_plan_under(t, plan, mode, ledger, screen, None).await
}

/// [`try_run_plan`] under a queue delivery's lease.
async fn try_run_plan_under<T: Target>(
    t: &T,
    plan: &T::Plan,
    mode: Mode,
    ledger: &Ledger,
    screen: &dyn Screen,
    lease: Option<Lease>,
) -> Result<Applied, targets::ApplyError<T::Error>> {
    let ctx = Ctx {
        envelope_id: "contract".into(),
        subject: "person".into(),
        event: "contract".into(),
        email: None,
        actor: "event:contract".into(),
        policy_digest: Some("ab".repeat(32)),
        lease,
    };
    let retry = retry();
    let run = Run {
        store: &ledger.store,
        ctx: &ctx,
        retry: &retry,
        screen,
    };
    targets::apply(t, plan, mode, &run).await
}

/// Steps of an earlier order all ended before any step of a later order started.
fn assert_ordered<T: Target>(t: &Counted<'_, T>, plan: &T::Plan) {
    let order_of = |op: &str| {
        t.steps(plan)
            .iter()
            .find(|s| format!("{:?}", s.op) == op)
            .map(|s| s.order)
            .unwrap_or(Order::Change)
    };
    let events = t.events.lock().unwrap().clone();
    for (i, (start, op)) in events.iter().enumerate() {
        if !*start {
            continue;
        }
        let o = order_of(op);
        for (end_start, earlier) in &events[i..] {
            assert!(
                *end_start || order_of(earlier) >= o,
                "{}: {earlier} (order {:?}) ended after {op} (order {o:?}) started",
                t.name(),
                order_of(earlier)
            );
        }
    }
}

/// The contract. Each numbered part is a promise the processor relies on.
pub async fn contract<H: Harness>(h: &H) {
    let t = Counted::new(h.target());
    let name = t.name();
    let mut ledger = Ledger::new().await;
    assert!(!h.holds().await, "{name}: the person starts without the grant");

    // 1. Read + diff: a person who lacks the grant has a non-empty plan.
    let granted = h.granted();
    let plan = plan_of(&t, &granted).await;
    let steps = t.steps(&plan).len();
    assert!(steps > 0, "{name}: granting plans at least one step");

    // 2. Report mode and dry run send nothing and ledger every step.
    for (mode, status) in [(Mode::Report, "drift_reported"), (Mode::DryRun, "dry_run")] {
        let a = run_plan(&t, &plan, mode, &ledger, &SendAll).await;
        assert_eq!(t.sends(), 0, "{name}: {mode:?} sends nothing");
        assert_eq!(a.writes, 0);
        assert_eq!(
            a.reported + a.planned,
            steps,
            "{name}: {mode:?} counts every step"
        );
        let rows = ledger.new_rows().await;
        assert_eq!(rows.len(), steps, "{name}: {mode:?} ledgers every step");
        assert!(
            rows.iter()
                .all(|r| r.entry.status == status && r.entry.target == name.as_str()),
            "{name}: {rows:#?}"
        );
    }
    assert!(
        !h.holds().await,
        "{name}: report mode and dry run changed nothing"
    );

    // 3. A screen sees every step first: a withheld step is never sent, and says why.
    let a = run_plan(&t, &plan, Mode::Apply, &ledger, &WithholdAll).await;
    assert_eq!(
        (t.sends(), a.writes, a.withheld),
        (0, 0, steps),
        "{name}: withheld"
    );
    let rows = ledger.new_rows().await;
    assert_eq!(rows.len(), steps);
    assert!(
        rows.iter().all(|r| r.entry.status == "withheld: contract test"),
        "{name}: {rows:#?}"
    );
    assert!(!h.holds().await, "{name}: nothing withheld reached the target");

    // 3b. A screen that cannot judge a step yet fails the apply before anything is sent, and
    //     ledgers nothing: the event is tried again, not finished without the step.
    let e = try_run_plan(&t, &plan, Mode::Apply, &ledger, &NotReadyAll)
        .await
        .expect_err("a screen that is not ready fails the apply");
    assert!(
        matches!(&e, targets::ApplyError::NotReady(r) if r.contains("not ready")),
        "{name}: {e}"
    );
    assert_eq!(t.sends(), 0, "{name}: nothing sent while the screen is not ready");
    assert!(ledger.new_rows().await.is_empty(), "{name}: nothing ledgered");

    // 3c. Under a queue lease that may have lapsed (another processor may have the person's
    //     message now), nothing is sent and nothing ledgered: the apply fails with LeaseLost.
    let lapsed = Lease::new(Instant::now(), Duration::ZERO);
    let e = try_run_plan_under(&t, &plan, Mode::Apply, &ledger, &SendAll, Some(lapsed))
        .await
        .expect_err("a lapsed lease fails the apply");
    assert!(matches!(&e, targets::ApplyError::LeaseLost(_)), "{name}: {e}");
    assert_eq!(t.sends(), 0, "{name}: nothing sent under a lapsed lease");
    assert!(ledger.new_rows().await.is_empty(), "{name}: nothing ledgered");
    assert!(!h.holds().await, "{name}: nothing reached the target");

    // 4. Apply converges, in order; one ledger row per step per write call. (Under a lease
    //    held for an hour: a held lease lets every write through.)
    let held = Lease::new(Instant::now(), Duration::from_secs(3600));
    let a = try_run_plan_under(&t, &plan, Mode::Apply, &ledger, &SendAll, Some(held))
        .await
        .unwrap_or_else(|e| panic!("{name}: apply: {e}"));
    assert!(h.holds().await, "{name}: applied plan grants");
    assert_eq!(a.writes, steps, "{name}: every step took effect");
    let rows = ledger.new_rows().await;
    assert_eq!(
        rows.len(),
        t.ops(),
        "{name}: ledger rows are the write calls made"
    );
    assert!(
        t.sends() >= 1 && t.sends() <= steps,
        "{name}: {} writes",
        t.sends()
    );
    assert_ordered(&t, &plan);

    // 5. Converged: the next plan is empty and applying it makes no call and no row.
    let sends = t.sends();
    let again = plan_of(&t, &granted).await;
    assert!(t.steps(&again).is_empty(), "{name}: converged plan is empty");
    let a = run_plan(&t, &again, Mode::Apply, &ledger, &SendAll).await;
    assert_eq!((a, t.sends()), (Applied::default(), sends), "{name}: no-op");
    assert!(
        ledger.new_rows().await.is_empty(),
        "{name}: no-op ledgers nothing"
    );

    // 6. Revoke: the grant is taken away, and the revoked person's plan is empty after.
    let revoked = h.revoked();
    let revoke = plan_of(&t, &revoked).await;
    assert!(!t.steps(&revoke).is_empty(), "{name}: revoking plans steps");
    let before = t.ops();
    run_plan(&t, &revoke, Mode::Apply, &ledger, &SendAll).await;
    assert!(!h.holds().await, "{name}: revoked");
    assert_eq!(
        ledger.new_rows().await.len(),
        t.ops() - before,
        "{name}: rows = calls"
    );
    assert!(
        t.steps(&plan_of(&t, &revoked).await).is_empty(),
        "{name}: revoke converged"
    );

    // 7. A stale plan (a redelivery of the same revocation) is done, not an error: what is
    //    already gone counts as done.
    let before = t.ops();
    run_plan(&t, &revoke, Mode::Apply, &ledger, &SendAll).await;
    assert!(!h.holds().await, "{name}: still revoked");
    let rows = ledger.new_rows().await;
    assert_eq!(
        rows.len(),
        t.ops() - before,
        "{name}: rows = calls on a replay too"
    );
    assert!(
        rows.iter().all(|r| !r.entry.status.starts_with("error")),
        "{name}: {rows:#?}"
    );
}
