//! The rotation-store contract: what the rotator relies on from any `RotationStore`, run against
//! the in-memory store, SQLite (a temp directory) and PostgreSQL (a database with a random name
//! on the cluster of `scripts/postgres.sh`).
//!
//! Every test gets two instances of one store, `a` and `b`, as two rotator processes see it:
//! two connection pools on the same database (memory: two handles on one state). Races are run
//! for real, `a` against `b`, many times over. Each function panics when the backend breaks the
//! property it documents.

use chrono::{DateTime, Duration as ChronoDuration, TimeZone, Utc};
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{LedgerEntry, RotationRequest};
use gatehouse_rotation::memory::MemoryRotations;
use gatehouse_rotation::postgres::PgRotations;
use gatehouse_rotation::sqlite::SqliteRotations;
use gatehouse_rotation::state::SecretState;
use gatehouse_rotation::{Phase, Rotation, RotationStore, Started};
use gatehouse_store::postgres::Postgres;
use gatehouse_store::sqlite::Sqlite;
use secrecy::SecretString;

/// Two instances of one store.
pub(crate) struct Fixture<S> {
    a: S,
    b: S,
    _dir: Option<tempfile::TempDir>,
}

/// Stores keep millisecond precision: every time here is whole milliseconds.
fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap() + ChronoDuration::seconds(secs)
}

fn rotation(id: &str, secret: &str, started: i64) -> Rotation {
    Rotation {
        id: id.to_string(),
        ..Rotation::new(secret, "manual", t(started))
    }
}

/// `r` in `phase`, written the way the rotator writes: under a lease, released after.
async fn put<S: RotationStore>(s: &S, r: &Rotation, phase: Phase) -> Rotation {
    let mut r = r.clone();
    r.phase = phase;
    assert!(
        s.claim(&r.id, "writer", t(100_000), t(0)).await.unwrap(),
        "lease for {}",
        r.id
    );
    assert!(s.save(&r, "writer").await.unwrap(), "save of {}", r.id);
    s.release(&r.id, "writer").await.unwrap();
    r
}

fn ids(rs: &[Rotation]) -> Vec<&str> {
    rs.iter().map(|r| r.id.as_str()).collect()
}

/// A second rotation of a secret is refused while one is active (started, created, set,
/// tested), and names the active one; once it is finished or rolled back a new one starts. Two
/// instances starting the same secret at once: exactly one rotation.
pub(crate) async fn start_while_active_is_refused<S: RotationStore>(f: Fixture<S>) {
    let r1 = rotation("r1", "x", 0);
    assert_eq!(f.a.start(&r1).await.unwrap(), Started::New("r1".into()));
    assert_eq!(
        f.a.start(&rotation("y1", "y", 0)).await.unwrap(),
        Started::New("y1".into()),
        "another secret is independent"
    );
    for phase in Phase::ACTIVE {
        put(&f.a, &r1, phase).await;
        assert_eq!(
            f.b.start(&rotation("r2", "x", 1)).await.unwrap(),
            Started::AlreadyActive("r1".into()),
            "while r1 is {phase:?}"
        );
    }
    put(&f.a, &r1, Phase::Finished).await;
    let r2 = rotation("r2", "x", 2);
    assert_eq!(f.b.start(&r2).await.unwrap(), Started::New("r2".into()));
    put(&f.b, &r2, Phase::RolledBack).await;
    assert_eq!(
        f.a.start(&rotation("r3", "x", 3)).await.unwrap(),
        Started::New("r3".into())
    );
    assert_eq!(ids(&f.a.history("x").await.unwrap()), ["r1", "r2", "r3"]);

    for n in 0..20 {
        let secret = format!("race-{n}");
        let (ra, rb) = (
            rotation(&format!("a{n}"), &secret, 0),
            rotation(&format!("b{n}"), &secret, 0),
        );
        let (x, y) = tokio::join!(f.a.start(&ra), f.b.start(&rb));
        let (x, y) = (x.unwrap(), y.unwrap());
        let named = |s: &Started| match s {
            Started::New(id) | Started::AlreadyActive(id) | Started::Existed(id) => id.clone(),
        };
        assert_eq!(named(&x), named(&y), "both name the one rotation of {secret}");
        let new = [&x, &y].iter().filter(|s| matches!(s, Started::New(_))).count();
        assert_eq!(new, 1, "{secret}: {x:?} {y:?}");
        assert_eq!(f.b.history(&secret).await.unwrap().len(), 1);
    }
}

/// A lease held by a live owner is refused to another; the owner renews it; once expired,
/// another takes it. Releasing is the owner's alone. Two instances claiming at once: one wins.
pub(crate) async fn a_live_lease_is_refused_and_an_expired_one_taken<S: RotationStore>(f: Fixture<S>) {
    let r = rotation("r1", "x", 0);
    f.a.start(&r).await.unwrap();
    assert!(f.a.claim("r1", "A", t(300), t(0)).await.unwrap());
    assert!(!f.b.claim("r1", "B", t(400), t(100)).await.unwrap(), "live lease");
    assert!(
        f.a.claim("r1", "A", t(600), t(200)).await.unwrap(),
        "the owner renews"
    );
    assert!(
        !f.b.claim("r1", "B", t(700), t(400)).await.unwrap(),
        "renewed lease is live"
    );
    f.b.release("r1", "B").await.unwrap();
    assert!(
        !f.b.claim("r1", "B", t(700), t(401)).await.unwrap(),
        "a non-owner's release frees nothing"
    );
    assert!(
        f.b.claim("r1", "B", t(900), t(600)).await.unwrap(),
        "expired: taken over"
    );
    assert!(!f.a.claim("r1", "A", t(950), t(650)).await.unwrap(), "now B's");
    f.b.release("r1", "B").await.unwrap();
    assert!(
        f.a.claim("r1", "A", t(1000), t(700)).await.unwrap(),
        "released: free"
    );
    assert!(
        !f.a.claim("nope", "A", t(1000), t(700)).await.unwrap(),
        "no such rotation"
    );

    for n in 0..20 {
        let id = format!("race-{n}");
        f.a.start(&rotation(&id, &id, 0)).await.unwrap();
        let (x, y) = tokio::join!(
            f.a.claim(&id, "A", t(300), t(0)),
            f.b.claim(&id, "B", t(300), t(0))
        );
        assert!(
            x.unwrap() ^ y.unwrap(),
            "{id}: exactly one instance holds the lease"
        );
    }
}

/// Only the lease owner saves: without a lease, or after losing it, a save changes nothing.
/// What is saved reads back whole.
pub(crate) async fn only_the_lease_owner_saves<S: RotationStore>(f: Fixture<S>) {
    let r = rotation("r1", "x", 0);
    f.a.start(&r).await.unwrap();
    let mut next = r.clone();
    next.phase = Phase::Created;
    next.keys_before = Some(vec!["k1".into(), "k2".into()]);
    next.old_key_id = Some("k1".into());
    next.old_version = Some("v1".into());
    next.new_key_id = Some("k3".into());
    next.due_at = t(42);
    next.attempts = 3;
    next.error = Some("throttled".into());
    assert!(!f.a.save(&next, "A").await.unwrap(), "nobody holds the lease");
    assert_eq!(f.b.get("r1").await.unwrap().unwrap(), r, "unchanged");
    assert!(f.a.claim("r1", "A", t(300), t(0)).await.unwrap());
    assert!(!f.b.save(&next, "B").await.unwrap(), "B does not hold the lease");
    assert_eq!(f.b.get("r1").await.unwrap().unwrap(), r, "unchanged");
    assert!(f.a.save(&next, "A").await.unwrap());
    assert_eq!(
        f.b.get("r1").await.unwrap().unwrap(),
        next,
        "every field reads back"
    );

    // A's lease expires and B takes over: A's late save is fenced off.
    assert!(f.b.claim("r1", "B", t(900), t(301)).await.unwrap());
    let mut late = next.clone();
    late.phase = Phase::Set;
    late.new_version = Some("v2".into());
    assert!(!f.a.save(&late, "A").await.unwrap(), "lease lost");
    assert_eq!(f.a.get("r1").await.unwrap().unwrap(), next);
    late.keys_before = Some(Vec::new());
    late.error = None;
    late.attempts = 0;
    assert!(f.b.save(&late, "B").await.unwrap());
    assert_eq!(f.a.get("r1").await.unwrap().unwrap(), late);
    assert_eq!(f.a.get("nope").await.unwrap(), None);
}

/// `claim_fire` moves a secret's schedule from the occurrence both instances saw to the next
/// one: when both try at once, exactly one wins; a stale `prev` loses.
pub(crate) async fn claim_fire_is_compare_and_set<S: RotationStore>(f: Fixture<S>) {
    for n in 0..20 {
        let secret = format!("s{n}");
        // First sight of the schedule (no occurrence yet), then a due occurrence.
        for (prev, fire) in [(None, t(0)), (Some(t(0)), t(3600))] {
            let (x, y) = tokio::join!(
                f.a.claim_fire(&secret, prev, fire),
                f.b.claim_fire(&secret, prev, fire)
            );
            assert!(x.unwrap() ^ y.unwrap(), "{secret} {prev:?}: exactly one winner");
        }
        assert_eq!(f.a.secret_state(&secret).await.unwrap().last_fire, Some(t(3600)));
    }
    assert!(
        !f.a.claim_fire("s0", None, t(7200)).await.unwrap(),
        "stale: already fired"
    );
    assert!(
        !f.a.claim_fire("s0", Some(t(0)), t(7200)).await.unwrap(),
        "stale prev"
    );
    assert!(f.b.claim_fire("s0", Some(t(3600)), t(7200)).await.unwrap());
    assert_eq!(f.a.secret_state("s0").await.unwrap().last_fire, Some(t(7200)));
}

/// A secret's rotations come back oldest first (by start time; equal times in the order they
/// were started), and only that secret's.
pub(crate) async fn history_is_oldest_first<S: RotationStore>(f: Fixture<S>) {
    assert!(f.a.history("x").await.unwrap().is_empty());
    // Started by instances whose clocks disagree: r-late is inserted first.
    for (id, started) in [
        ("r-late", 200),
        ("r-early", 100),
        ("r-tie-1", 300),
        ("r-tie-2", 300),
    ] {
        let r = rotation(id, "x", started);
        assert_eq!(f.a.start(&r).await.unwrap(), Started::New(id.into()));
        put(&f.b, &r, Phase::Done).await;
        f.a.start(&rotation(&format!("other-{id}"), "y", 0))
            .await
            .unwrap();
        put(&f.b, &rotation(&format!("other-{id}"), "y", 0), Phase::Done).await;
    }
    assert_eq!(
        ids(&f.b.history("x").await.unwrap()),
        ["r-early", "r-late", "r-tie-1", "r-tie-2"]
    );
    assert_eq!(f.b.history("y").await.unwrap().len(), 4);
}

/// `due(now)`: rotations not done nor rolled back whose `due_at` has come, earliest first;
/// `next_due`: the earliest `due_at` of those, due or not.
pub(crate) async fn due_and_next_due_skip_terminal_rotations<S: RotationStore>(f: Fixture<S>) {
    assert!(f.a.due(t(1_000)).await.unwrap().is_empty());
    assert_eq!(f.a.next_due().await.unwrap(), None);
    let at = |id: &str, secret: &str, due: i64| {
        let mut r = rotation(id, secret, 0);
        r.due_at = t(due);
        r
    };
    for (r, phase) in [
        (at("late", "a", 50), Phase::Created),
        (at("early", "b", 10), Phase::Started),
        (at("done", "c", 5), Phase::Done),
        (at("grace", "d", 100), Phase::Finished),
        (at("rolled", "e", 0), Phase::RolledBack),
        (at("revoked", "f", 200), Phase::Revoked),
    ] {
        f.a.start(&r).await.unwrap();
        put(&f.a, &r, phase).await;
    }
    assert!(f.b.due(t(9)).await.unwrap().is_empty());
    assert_eq!(ids(&f.b.due(t(10)).await.unwrap()), ["early"]);
    assert_eq!(ids(&f.b.due(t(99)).await.unwrap()), ["early", "late"]);
    assert_eq!(
        ids(&f.b.due(t(1_000)).await.unwrap()),
        ["early", "late", "grace", "revoked"]
    );
    assert_eq!(f.b.next_due().await.unwrap(), Some(t(10)));
    put(&f.a, &at("early", "b", 10), Phase::RolledBack).await;
    assert_eq!(f.b.next_due().await.unwrap(), Some(t(50)));
}

/// The failure backoff is kept per secret, beside (not over) the schedule's last occurrence.
pub(crate) async fn backoff_is_kept_per_secret<S: RotationStore>(f: Fixture<S>) {
    assert_eq!(f.a.secret_state("x").await.unwrap(), SecretState::default());
    f.a.set_backoff("x", 2, Some(t(60))).await.unwrap();
    let want = SecretState {
        last_fire: None,
        failures: 2,
        retry_at: Some(t(60)),
    };
    assert_eq!(f.b.secret_state("x").await.unwrap(), want);
    assert_eq!(f.b.secret_state("y").await.unwrap(), SecretState::default());
    assert!(f.b.claim_fire("x", None, t(30)).await.unwrap());
    assert_eq!(
        f.a.secret_state("x").await.unwrap(),
        SecretState {
            last_fire: Some(t(30)),
            ..want
        }
    );
    f.a.set_backoff("x", 3, Some(t(120))).await.unwrap();
    f.a.set_backoff("x", 0, None).await.unwrap();
    assert_eq!(
        f.b.secret_state("x").await.unwrap(),
        SecretState {
            last_fire: Some(t(30)),
            failures: 0,
            retry_at: None,
        }
    );
}

fn request(n: usize) -> RotationRequest {
    RotationRequest {
        envelope_id: format!("env-{n}"),
        subject: format!("aws:iam-user:svc-{n}"),
        provider: "aws".into(),
        reason: "SECRET_ROTATE".into(),
        secret: n.is_multiple_of(2).then(|| format!("secret-{n}")),
    }
}

/// Requests a rotator recorded from the rotation queue are pending, oldest first, on every
/// instance, until one marks them handled; marking again changes nothing. Recording is once per
/// envelope id, whichever instance records (a redelivery, or two rotators receiving one
/// request), and a handled request recorded again stays handled.
pub(crate) async fn requests_are_pending_until_handled<S: RotationStore>(f: Fixture<S>) {
    assert!(f.a.pending_requests().await.unwrap().is_empty());
    for (n, by, new) in [
        (1, &f.a, true),
        (2, &f.b, true),
        (3, &f.a, true),
        (2, &f.a, false),
    ] {
        assert_eq!(
            by.record_request(&request(n), t(1)).await.unwrap(),
            new,
            "request {n}"
        );
    }
    assert_eq!(
        f.b.pending_requests().await.unwrap(),
        vec![request(1), request(2), request(3)]
    );
    f.a.mark_handled("env-2", t(10)).await.unwrap();
    assert_eq!(
        f.b.pending_requests().await.unwrap(),
        vec![request(1), request(3)]
    );
    f.b.mark_handled("env-2", t(20)).await.unwrap();
    f.b.mark_handled("env-unknown", t(20)).await.unwrap();
    f.b.mark_handled("env-1", t(20)).await.unwrap();
    assert_eq!(f.a.pending_requests().await.unwrap(), vec![request(3)]);
    assert!(!f.b.record_request(&request(1), t(30)).await.unwrap());
    assert_eq!(
        f.a.pending_requests().await.unwrap(),
        vec![request(3)],
        "a handled request is not recorded again"
    );
}

fn ledger_entry(n: usize, subject: &str) -> LedgerEntry {
    LedgerEntry {
        at: t(n as i64),
        envelope_id: format!("rot-{n}"),
        subject: subject.to_string(),
        event: "rotation".into(),
        rule: "manual".into(),
        call: HttpCall {
            method: Method::Post,
            path: format!("/rotation/x/step-{n}"),
            body: Some(serde_json::json!({"new_key_id": format!("k{n}")})),
        },
        status: "ok".into(),
        target: "rotator".into(),
        policy_digest: None,
        actor: Some("rotator".into()),
    }
}

/// The ledger keeps the rotation rows (subject `secret:NAME`) from every instance, in append
/// order; the processor's rows in the same ledger are not the rotator's.
pub(crate) async fn ledger_keeps_rotation_rows_in_order<S: RotationStore>(f: Fixture<S>) {
    let mut want = Vec::new();
    for n in 0..6 {
        let e = ledger_entry(n, "secret:x");
        let s = if n % 2 == 0 { &f.a } else { &f.b };
        s.append_ledger(std::slice::from_ref(&e)).await.unwrap();
        s.append_ledger(&[ledger_entry(n, "okta:someone")]).await.unwrap();
        want.push(e);
    }
    assert_eq!(f.a.ledger().await.unwrap(), want);
}

/// A rotation id is started at most once, whatever became of it: the rotation a request asks
/// for (`Rotation::for_request`) is not started again by an instance that read the request late,
/// after the first rotation finished or while it runs. Two instances racing one id: one starts it.
pub(crate) async fn an_id_is_started_once_even_after_it_finished<S: RotationStore>(f: Fixture<S>) {
    let first = Rotation::for_request("x", "holder_offboarded", "env-1", t(0));
    assert_eq!(
        first.id,
        Rotation::for_request("x", "holder_offboarded", "env-1", t(9)).id,
        "same request and secret, same id"
    );
    assert_ne!(
        first.id,
        Rotation::for_request("y", "holder_offboarded", "env-1", t(0)).id
    );
    assert_ne!(
        first.id,
        Rotation::for_request("x", "holder_offboarded", "env-2", t(0)).id
    );
    assert_eq!(f.a.start(&first).await.unwrap(), Started::New(first.id.clone()));
    assert_eq!(
        f.b.start(&first).await.unwrap(),
        Started::Existed(first.id.clone()),
        "while it runs"
    );
    put(&f.a, &first, Phase::Done).await;
    let late = Rotation::for_request("x", "holder_offboarded", "env-1", t(50));
    assert_eq!(
        f.b.start(&late).await.unwrap(),
        Started::Existed(first.id.clone()),
        "after it finished"
    );
    assert_eq!(f.a.history("x").await.unwrap().len(), 1, "no second rotation");
    let next = Rotation::for_request("x", "holder_offboarded", "env-2", t(60));
    assert_eq!(f.b.start(&next).await.unwrap(), Started::New(next.id.clone()));

    for n in 0..20 {
        let r = Rotation::for_request("race", "secret_event", &format!("env-{n}"), t(n));
        let (x, y) = tokio::join!(f.a.start(&r), f.b.start(&r));
        let (x, y) = (x.unwrap(), y.unwrap());
        let new = [&x, &y].iter().filter(|s| matches!(s, Started::New(_))).count();
        assert_eq!(new, 1, "{n}: {x:?} {y:?}");
        let other = if matches!(x, Started::New(_)) { &y } else { &x };
        assert_eq!(other, &Started::Existed(r.id.clone()), "{n}");
        put(&f.a, &r, Phase::Done).await;
    }
}

/// Instantiate every contract test for the three stores.
macro_rules! all_stores {
    ($($name:ident,)*) => {
        mod memory_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(memory()).await;
                }
            )*
        }
        mod sqlite_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(sqlite().await).await;
                }
            )*
        }
        mod postgres_store {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(postgres().await).await;
                }
            )*
        }
    };
}

fn memory() -> Fixture<MemoryRotations> {
    let a = MemoryRotations::default();
    Fixture {
        b: a.clone(),
        a,
        _dir: None,
    }
}

async fn sqlite() -> Fixture<SqliteRotations> {
    let dir = tempfile::tempdir().unwrap();
    let a = Sqlite::open(dir.path()).await.unwrap();
    let b = Sqlite::open(dir.path()).await.unwrap();
    Fixture {
        a: SqliteRotations::new(a),
        b: SqliteRotations::new(b),
        _dir: Some(dir),
    }
}

pub(crate) async fn postgres() -> Fixture<PgRotations> {
    let url = SecretString::from(gatehouse_testkit::postgres::fresh_database().await);
    let a = Postgres::connect(&url, 4)
        .await
        .expect("connect to the fresh database");
    let b = Postgres::connect(&url, 4).await.expect("connect again");
    Fixture {
        a: PgRotations::new(a),
        b: PgRotations::new(b),
        _dir: None,
    }
}

all_stores! {
    start_while_active_is_refused,
    an_id_is_started_once_even_after_it_finished,
    a_live_lease_is_refused_and_an_expired_one_taken,
    only_the_lease_owner_saves,
    claim_fire_is_compare_and_set,
    history_is_oldest_first,
    due_and_next_due_skip_terminal_rotations,
    backoff_is_kept_per_secret,
    requests_are_pending_until_handled,
    ledger_keeps_rotation_rows_in_order,
}
