//! `gatehouse report access` (issue 15 item 1) on a fixture state: people with drift, an
//! orphan Looker user created by hand in the fake Looker, a deactivated person still enabled.

use super::{bin, text};
use chrono::{DateTime, Utc};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::identity::{Identity, Membership, Stamp, Stamped, Status};
use gatehouse_domain::ports::{DeletionChange, Outcome, StateStore};
use gatehouse_testkit::FakeLooker;
use std::path::{Path, PathBuf};

pub(crate) const POLICY: &str = r#"
[offboarding]
disable = true
revoke_sessions = true
revoke_api_keys = true
remove_managed_groups = true

[[rule]]
name = "finance"
when = { idp_group = "Finance" }
looker_groups = ["Finance Analysts"]
"#;

pub(crate) fn person(key: &str, email: &str, status: Status, groups: &[&str]) -> Identity {
    let stamp = Stamp {
        at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        id: EnvelopeId(format!("seed-{key}")),
    };
    let mut id = Identity::new(key);
    id.status = status;
    id.status_stamp = Some(stamp.clone());
    id.profile.insert(
        "email".into(),
        Stamped {
            value: email.into(),
            stamp: stamp.clone(),
            source: None,
        },
    );
    for g in groups {
        id.groups.insert(
            format!("00g{g}"),
            Membership {
                name: (*g).into(),
                member: true,
                stamp: stamp.clone(),
                source: None,
            },
        );
    }
    id
}

/// The fixture: a fake Looker, a directory in a state store, a policy and a config.
pub(crate) struct Fixture {
    pub fake: FakeLooker,
    pub dir: tempfile::TempDir,
    pub eve: String,
    pub dan: String,
    pub bob: String,
}

impl Fixture {
    pub async fn new(config: &str) -> Fixture {
        let fake = FakeLooker::start().await;
        let finance = fake.add_group("Finance Analysts");
        let other = fake.add_group("Engineers");
        // ann: Finance at the IdP, not in the Looker group (wanted, not had).
        fake.add_user("ann@example.com", "Ann", "A");
        // carl: not in Finance at the IdP, in the Looker group (had, not wanted).
        let carl = fake.add_user("carl@example.com", "Carl", "C");
        fake.add_user_to_group(&carl, &finance);
        // bob: deactivated at the IdP, still enabled and granted in Looker.
        let bob = fake.add_user("bob@example.com", "Bob", "B");
        fake.add_user_to_group(&bob, &finance);
        // eve: created by hand in Looker, holds a managed group, nobody in the directory.
        let eve = fake.add_user("eve@contractor.example", "Eve", "E");
        fake.add_user_to_group(&eve, &finance);
        // dan: by hand too, but holds nothing the policy manages: not an orphan of ours.
        let dan = fake.add_user("dan@contractor.example", "Dan", "D");
        fake.add_user_to_group(&dan, &other);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        std::fs::write(dir.path().join("gatehouse.toml"), config).unwrap();
        let store = gatehouse_store::sqlite::Sqlite::open(dir.path()).await.unwrap();
        for id in [
            person("00uANN", "ann@example.com", Status::Active, &["Finance"]),
            person("00uCARL", "carl@example.com", Status::Active, &[]),
            person("00uBOB", "bob@example.com", Status::Deactivated, &["Finance"]),
        ] {
            store
                .commit(Outcome {
                    envelope_id: EnvelopeId(format!("seed-{}", id.key)),
                    identity: Some(id),
                    converged: None,
                    deletion: DeletionChange::Keep,
                    base_version: None,
                    offboarding: None,
                })
                .await
                .unwrap();
        }
        store.close().await;
        Fixture {
            fake,
            dir,
            eve,
            dan,
            bob,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run `gatehouse ARGS` against the fixture; panics with its stderr when it fails.
    pub async fn run(&self, args: &[&str]) -> String {
        let o = tokio::process::Command::from(bin())
            .args(args)
            .arg("--config")
            .arg(self.path().join("gatehouse.toml"))
            .env("GATEHOUSE_DATA_DIR", self.path())
            .env("GATEHOUSE_POLICY", self.path().join("policy.toml"))
            .env("GATEHOUSE_LOOKER_URL", self.fake.base_url())
            .env("GATEHOUSE_LOOKER_CLIENT_ID", self.fake.client_id())
            .env("GATEHOUSE_LOOKER_CLIENT_SECRET", self.fake.client_secret())
            .output()
            .await
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "gatehouse {args:?} failed: {err}");
        assert!(!out.contains(self.fake.client_secret()) && !err.contains(self.fake.client_secret()));
        out
    }
}

/// With `GATEHOUSE_REPORT_EXAMPLES=DIR`, the outputs are written there (docs/reports.md pastes
/// them: real output of the fixture).
pub(crate) fn keep_example(name: &str, text: &str) {
    if let Ok(dir) = std::env::var("GATEHOUSE_REPORT_EXAMPLES") {
        std::fs::write(Path::new(&dir).join(name), text).unwrap();
    }
}

fn grant<'a>(v: &'a serde_json::Value, email: &str, kind: &str) -> &'a serde_json::Value {
    v["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["email"] == email && g["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} grant of {email} in {v:#}"))
}

fn orphan<'a>(v: &'a serde_json::Value, account: &str) -> Option<&'a serde_json::Value> {
    v["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["account"] == account)
}

/// JSON: per person and grant the rule, whether Looker has it and the drift; orphans of both
/// kinds; and the report itself calls no target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_shows_grants_drift_and_orphans_without_calling_looker() {
    let f = Fixture::new("").await;
    let before_reconcile = gatehouse_domain::clock::now();
    let text = f.run(&["reconcile"]).await;
    assert!(
        text.contains(&format!(
            "orphan looker account {} (eve@contractor.example)",
            f.eve
        )),
        "reconcile lists the orphan:\n{text}"
    );
    f.fake.reset_calls();
    let out = f.run(&["report", "access", "--format", "json"]).await;
    keep_example("access.json", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        f.fake.calls().is_empty(),
        "the report called Looker: {:?}",
        f.fake.calls()
    );
    let at: DateTime<Utc> = v["snapshot_at"].as_str().unwrap().parse().unwrap();
    assert!(at >= before_reconcile, "the reconcile's snapshot is used");
    let people: Vec<&str> = v["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["email"].as_str().unwrap())
        .collect();
    assert_eq!(people, ["ann@example.com", "bob@example.com", "carl@example.com"]);
    assert_eq!(v["people"][0]["idp_groups"], serde_json::json!(["Finance"]));
    assert_eq!(v["people"][1]["idp_status"], "deactivated");
    let ann = grant(&v, "ann@example.com", "group");
    assert_eq!(
        (
            &ann["name"],
            &ann["rule"],
            &ann["wanted"],
            &ann["had"],
            &ann["drift"]
        ),
        (
            &"Finance Analysts".into(),
            &"finance".into(),
            &true.into(),
            &false.into(),
            &"wanted-not-had".into()
        )
    );
    let carl = grant(&v, "carl@example.com", "group");
    assert_eq!(
        (&carl["rule"], &carl["had"], &carl["drift"]),
        (&serde_json::Value::Null, &true.into(), &"had-not-wanted".into())
    );
    let bob = grant(&v, "bob@example.com", "account");
    assert_eq!(
        (&bob["wanted"], &bob["had"], &bob["drift"]),
        (&false.into(), &true.into(), &"had-not-wanted".into())
    );
    let eve = orphan(&v, &f.eve).expect("the hand-made user with a managed group is an orphan");
    assert_eq!(eve["reason"], "matches nobody in the directory");
    assert_eq!(eve["grants"], serde_json::json!(["group:Finance Analysts"]));
    assert_eq!(eve["email"], "eve@contractor.example");
    let gone = orphan(&v, &f.bob).expect("the deactivated person's enabled account is listed");
    assert_eq!(
        (&gone["reason"], &gone["subject"]),
        (&"idp status deactivated".into(), &"00uBOB".into())
    );
    assert!(
        orphan(&v, &f.dan).is_none(),
        "a user with no managed grant is not ours to report"
    );
}

/// `--refresh` runs reconcile's paged Looker reads first (pages of `[reconcile] page_size`, no
/// write), counts every call against the month's Looker budget, and the review shows a change made
/// in Looker since the last snapshot; without `--refresh` the report calls nothing and still
/// shows the snapshot's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reads_looker_in_pages_counts_the_budget_and_shows_a_new_change() {
    let f = Fixture::new("[reconcile]\npage_size = 2\n[looker.budget]\nmonthly_call_quota = 100000\n").await;
    f.run(&["reconcile"]).await;
    // Since that snapshot, ann was put in Finance Analysts by hand in Looker.
    let ann = f.fake.user_by_email("ann@example.com").unwrap().id;
    let finance = f
        .fake
        .group_names()
        .into_iter()
        .find(|(_, n)| n == "Finance Analysts")
        .unwrap()
        .0;
    f.fake.add_user_to_group(&ann, &finance);
    let drift = |out: &str| {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        let g = grant(&v, "ann@example.com", "group");
        (g["had"].clone(), g["drift"].clone())
    };
    let budget = || async {
        use gatehouse_domain::ports::LookerCallCounts;
        let db = gatehouse_store::sqlite::Sqlite::open(f.path()).await.unwrap();
        let n = db
            .looker_calls(&gatehouse_domain::ports::call_month(
                gatehouse_domain::clock::now(),
            ))
            .await
            .unwrap();
        db.close().await;
        n
    };

    f.fake.reset_calls();
    let stale = f.run(&["report", "access", "--format", "json"]).await;
    assert!(f.fake.calls().is_empty(), "{:?}", f.fake.calls());
    assert_eq!(drift(&stale), (false.into(), "wanted-not-had".into()));

    let counted = budget().await;
    let fresh = f
        .run(&["report", "access", "--refresh", "--format", "json"])
        .await;
    let calls = f.fake.calls();
    assert_eq!(drift(&fresh), (true.into(), "none".into()), "{fresh}");
    let pages: Vec<(String, String)> = calls
        .iter()
        .filter(|c| c.method == "GET" && c.path == "/users")
        .map(|c| {
            (
                c.query_param("limit").unwrap_or_default(),
                c.query_param("offset").unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        pages.len() >= 3 && pages.iter().all(|(limit, _)| limit == "2"),
        "every user read in pages of 2: {pages:?}"
    );
    assert_eq!(f.fake.write_calls(), 0, "a refresh reads, it never writes");
    assert_eq!(
        budget().await - counted,
        calls.len() as u64,
        "every call the refresh made is counted against the budget"
    );
}

/// CSV: the stable header, one row per grant and per orphan, provenance on every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_has_stable_columns_and_a_row_per_grant_and_orphan() {
    let f = Fixture::new("").await;
    f.run(&["reconcile"]).await;
    let out = f.run(&["report", "access", "--format", "csv"]).await;
    keep_example("access.csv", &out);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap(),
        "section,subject,email,idp_status,idp_groups,target,kind,name,value,rule,wanted,had,drift,reason,snapshot_at,ledger_seqs"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let find = |section: &str, email: &str, kind: &str| {
        rows.iter()
            .find(|r| r[0] == section && r[2] == email && r[6] == kind)
            .unwrap_or_else(|| panic!("no {section} {kind} row of {email}:\n{out}"))
    };
    let ann = find("grant", "ann@example.com", "group");
    assert_eq!(
        &ann[..13],
        [
            "grant",
            "00uANN",
            "ann@example.com",
            "active",
            "Finance",
            "looker",
            "group",
            "Finance Analysts",
            "",
            "finance",
            "true",
            "false",
            "wanted-not-had"
        ]
    );
    assert!(ann[14].starts_with("20"), "snapshot time on the row: {ann:?}");
    let eve = find("orphan", "eve@contractor.example", "account");
    assert_eq!(eve[7], f.eve);
    assert_eq!(eve[13], "matches nobody in the directory");
    assert_eq!(
        find("orphan", "bob@example.com", "account")[13],
        "idp status deactivated"
    );
    assert!(
        rows.iter().all(|r| r.len() == 16),
        "every row has the 16 columns:\n{out}"
    );
}

/// `--as-of` answers from the snapshot at or before it plus the ledger's writes after it, and
/// says which; `[reconcile] orphans = "report"` ledgers the orphan and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_of_uses_the_snapshot_then_replays_the_ledger() {
    let f = Fixture::new("").await;
    f.run(&["reconcile"]).await;
    let between = gatehouse_domain::clock::now();
    // Poll until the clock has moved past `between` (snapshot times are milliseconds).
    while gatehouse_domain::clock::now().timestamp_millis() <= between.timestamp_millis() {
        tokio::task::yield_now().await;
    }
    f.run(&["reconcile", "--apply"]).await;
    assert!(
        !f.fake.user(&f.eve).unwrap().is_disabled,
        "report mode changes no orphan"
    );
    let now: serde_json::Value =
        serde_json::from_str(&f.run(&["report", "access", "--format", "json"]).await).unwrap();
    assert!(
        now["ledger"]["replayed"].as_u64().unwrap() >= 1,
        "{:#}",
        now["ledger"]
    );
    assert!(now["ledger"]["first_seq"].as_i64().unwrap() <= now["ledger"]["last_seq"].as_i64().unwrap());
    let ann = grant(&now, "ann@example.com", "group");
    assert_eq!(
        (&ann["had"], &ann["drift"]),
        (&true.into(), &"none".into()),
        "the apply's ledger row is replayed"
    );
    assert!(
        !now["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["email"] == "carl@example.com" && g["kind"] == "group"),
        "carl's removal is replayed: neither wanted nor had, so not listed"
    );
    let then: serde_json::Value = serde_json::from_str(
        &f.run(&[
            "report",
            "access",
            "--format",
            "json",
            "--as-of",
            &between.to_rfc3339(),
        ])
        .await,
    )
    .unwrap();
    let first: DateTime<Utc> = then["snapshot_at"].as_str().unwrap().parse().unwrap();
    assert!(first <= between);
    assert_eq!(
        then["ledger"]["replayed"], 0,
        "no write between the first snapshot and then"
    );
    assert_eq!(
        grant(&then, "ann@example.com", "group")["drift"],
        "wanted-not-had"
    );
    // The orphan was ledgered (report), not disabled.
    let store = gatehouse_store::sqlite::Sqlite::open(f.path()).await.unwrap();
    let rows = store.ledger_since(None).await.unwrap();
    store.close().await;
    let subject = format!("orphan:looker:{}", f.eve);
    assert!(
        rows.iter().any(|r| r.entry.subject == subject
            && r.entry.rule == "reconcile.orphans"
            && r.entry.status == "drift_reported"),
        "no report row for the orphan: {rows:#?}"
    );
}

/// `[reconcile] orphans = "disable"`: reconcile disables the orphan Looker user through the
/// apply loop (ledgered); nobody else is touched by it; the review then shows it gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_mode_disables_the_orphan_and_ledgers_it() {
    let f = Fixture::new("[reconcile]\norphans = \"disable\"\n").await;
    f.run(&["reconcile", "--apply"]).await;
    assert!(f.fake.user(&f.eve).unwrap().is_disabled, "the orphan is disabled");
    assert!(
        !f.fake.user(&f.dan).unwrap().is_disabled,
        "a user without managed grants is left alone"
    );
    let store = gatehouse_store::sqlite::Sqlite::open(f.path()).await.unwrap();
    let rows = store.ledger_since(None).await.unwrap();
    store.close().await;
    let row = rows
        .iter()
        .find(|r| r.entry.subject == format!("orphan:looker:{}", f.eve))
        .expect("the disable is ledgered");
    assert_eq!(row.entry.call.path, format!("/users/{}", f.eve));
    assert_eq!(row.entry.status, "ok", "{row:?}");
    let v: serde_json::Value =
        serde_json::from_str(&f.run(&["report", "access", "--format", "json"]).await).unwrap();
    assert!(
        orphan(&v, &f.eve).is_none(),
        "a disabled orphan is no longer listed: {:#}",
        v["orphans"]
    );
}

/// A bad `orphans` value exits 64 naming the field.
#[test]
fn a_bad_orphans_value_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(&cfg, "[reconcile]\norphans = \"delete\"\n").unwrap();
    let o = bin()
        .args(["report", "access", "--config"])
        .arg(&cfg)
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{:?}", text(&o));
    assert!(text(&o).1.contains("reconcile.orphans"), "{:?}", text(&o));
}

pub(crate) fn html_path(f: &Fixture) -> PathBuf {
    f.path().join("access.html")
}

/// Open `page` (with a URL fragment) in headless Chromium and return the DOM after its
/// scripts ran. Fails with a clear message when the browser is missing or cannot start.
fn chromium_dom(page: &Path, fragment: &str) -> String {
    let browser = std::env::var("GATEHOUSE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&browser).exists(),
        "{browser} is missing: install the Debian package `chromium` (make test does: scripts/chromium.sh)"
    );
    let profile = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}#{fragment}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot start {browser}: {e}"));
    let (out, err) = text(&o);
    assert!(
        o.status.success() && out.contains("data-ready=\"1\""),
        "{browser} did not render the page (status {:?}):\n{err}",
        o.status
    );
    out
}

/// The rows of table `id` as a person sees them: (visible, cell texts), in DOM order.
fn rows(dom: &str, id: &str) -> Vec<(bool, Vec<String>)> {
    let start = dom
        .find(&format!("<table id=\"{id}\""))
        .unwrap_or_else(|| panic!("no table {id}"));
    let table = &dom[start..start + dom[start..].find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.split("<tr")
        .skip(1)
        .map(|tr| {
            let open = &tr[..tr.find('>').unwrap()];
            let cells = tr
                .split("<td>")
                .skip(1)
                .map(|c| {
                    c[..c.find("</td>").unwrap()]
                        .replace("&amp;", "&")
                        .replace("&lt;", "<")
                        .replace("&gt;", ">")
                })
                .collect();
            (!open.contains("hidden"), cells)
        })
        .collect()
}

/// The HTML page in a real browser: the rows are there; typing in the filter hides the
/// others; clicking a header sorts, clicking again reverses; no external asset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_page_filters_and_sorts_in_headless_chromium() {
    let f = Fixture::new("").await;
    f.run(&["reconcile"]).await;
    let html = f.run(&["report", "access", "--format", "html"]).await;
    for external in ["http://", "https://", "src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(external),
            "external reference {external:?} in the page"
        );
    }
    let page = html_path(&f);
    std::fs::write(&page, &html).unwrap();

    let dom = chromium_dom(&page, "");
    let grants = rows(&dom, "grants");
    assert!(
        grants.iter().all(|(shown, _)| *shown),
        "nothing hidden without a filter"
    );
    let emails: Vec<&str> = grants.iter().map(|(_, c)| c[0].as_str()).collect();
    for e in ["ann@example.com", "bob@example.com", "carl@example.com"] {
        assert!(emails.contains(&e), "{e} missing: {emails:?}");
    }
    let orphans = rows(&dom, "orphans");
    assert!(
        orphans
            .iter()
            .any(|(_, c)| c[1] == f.eve && c[5] == "matches nobody in the directory"),
        "{orphans:?}"
    );

    // Typing "carl": only carl's rows stay visible, in every table.
    let dom = chromium_dom(&page, "q=carl");
    let grants = rows(&dom, "grants");
    assert!(
        grants
            .iter()
            .any(|(shown, c)| *shown && c[0] == "carl@example.com")
    );
    for (shown, c) in &grants {
        assert_eq!(*shown, c.join(" ").contains("carl"), "filter wrong for {c:?}");
    }
    assert!(
        rows(&dom, "orphans").iter().all(|(shown, _)| !shown),
        "orphans without carl are hidden"
    );

    // One click on "drift": ascending; two: descending.
    for (clicks, desc) in [("grants:drift", false), ("grants:drift,grants:drift", true)] {
        let dom = chromium_dom(&page, &format!("click={clicks}"));
        let drift: Vec<String> = rows(&dom, "grants")
            .into_iter()
            .map(|(_, c)| c[9].clone())
            .collect();
        let mut want = drift.clone();
        want.sort();
        if desc {
            want.reverse();
        }
        assert_eq!(drift, want, "after {clicks}");
        assert!(
            drift.first() != drift.last(),
            "the fixture has several drift values: {drift:?}"
        );
    }
}
