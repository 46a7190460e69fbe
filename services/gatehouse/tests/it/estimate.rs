//! `gatehouse reconcile --estimate [--json]` (issue 14, item 2): the expected Looker calls of a
//! reconcile, from the directory and the policy alone, equal the arithmetic of
//! docs/looker-budget.md ("What a reconcile costs"), and estimating calls nothing.

use super::report_access::person;
use super::{bin, text};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::identity::Status;
use gatehouse_domain::ports::{DeletionChange, Outcome, StateStore};
use gatehouse_testkit::FakeLooker;

/// Every active person gets a managed attribute (`team`, set or denied): all of them are in
/// the rolling attribute audit; deactivated people are read in the pages only.
const POLICY: &str = r#"
[[rule]]
name = "finance"
when = { idp_group = "Finance" }
looker_groups = ["Finance Analysts"]
looker_attributes = { team = "finance" }

[attributes.team]
deny_value = "gatehouse-no-access"
"#;

const ACTIVE: usize = 1_200;
const DEACTIVATED: usize = 34;
const PAGE: u64 = 500;
const AUDIT_RUNS: u64 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estimate_prints_the_documented_arithmetic_and_calls_nothing() {
    let fake = FakeLooker::start().await;
    fake.add_group("Finance Analysts");
    fake.add_user_attribute("team");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("gatehouse.toml"),
        format!("[reconcile]\npage_size = {PAGE}\nattribute_audit_runs = {AUDIT_RUNS}\n"),
    )
    .unwrap();
    let store = gatehouse_store::sqlite::Sqlite::open(dir.path()).await.unwrap();
    for i in 0..ACTIVE + DEACTIVATED {
        let status = if i < ACTIVE {
            Status::Active
        } else {
            Status::Deactivated
        };
        let groups: &[&str] = if i % 3 == 0 { &["Finance"] } else { &[] };
        let id = person(
            &format!("00uEST{i}"),
            &format!("est-{i}@example.com"),
            status,
            groups,
        );
        store
            .commit(Outcome {
                envelope_id: EnvelopeId(format!("seed-est-{i}")),
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

    // docs/looker-budget.md: 1 login + 3 catalog lists + floor(N / page) + 1 pages (the last
    // one short) + ceil(M / k) attribute reads, N people, M of them with managed attributes.
    let people = (ACTIVE + DEACTIVATED) as u64;
    let pages = people / PAGE + 1;
    assert_eq!(pages, people.div_ceil(PAGE), "N is no multiple of the page");
    let audit = (ACTIVE as u64).div_ceil(AUDIT_RUNS);
    let looker = 1 + 3 + pages + audit;
    assert_eq!((pages, audit, looker), (3, 172, 179));

    let run = async |args: &[&str]| {
        let o = tokio::process::Command::from(bin())
            .args(["--config"])
            .arg(dir.path().join("gatehouse.toml"))
            .args(args)
            .env("GATEHOUSE_DATA_DIR", dir.path())
            .env("GATEHOUSE_POLICY", dir.path().join("policy.toml"))
            .env("GATEHOUSE_LOOKER_URL", fake.base_url())
            .env("GATEHOUSE_LOOKER_CLIENT_ID", fake.client_id())
            .env("GATEHOUSE_LOOKER_CLIENT_SECRET", fake.client_secret())
            .env("GATEHOUSE_LOOKER_MONTHLY_CALL_QUOTA", "1000")
            .output()
            .await
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "gatehouse {args:?} failed: {err}");
        assert!(!out.contains(fake.client_secret()) && !err.contains(fake.client_secret()));
        out
    };

    let out = run(&["reconcile", "--estimate", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["people"], people, "{v}");
    assert_eq!(
        v["calls"],
        serde_json::json!({ "looker": looker, "aws": null, "gcp": null }),
        "{v}"
    );
    // Nothing counted yet this month; 10 % of the quota kept for events by default.
    assert_eq!(
        v["budget"],
        serde_json::json!({ "quota": 1000, "used": 0, "reserve": 100, "needed": looker }),
        "{v}"
    );

    let out = run(&["reconcile", "--estimate"]).await;
    let lines: Vec<&str> = out.lines().collect();
    let expected: Vec<String> = vec![
        format!(
            "reconcile estimate for {people} people (pages of {PAGE}, attribute audit every {AUDIT_RUNS} runs), read calls per target:"
        ),
        format!("  looker: {looker}"),
        "  aws: not configured".into(),
        "  gcp: not configured".into(),
        "writes for drift found come on top (one per change)".into(),
        format!(
            "looker budget: 0 of 1000 calls used this month, 100 kept for events, 900 spare; this reconcile needs ~{looker}"
        ),
    ];
    assert_eq!(lines, expected, "{out}");

    assert!(
        fake.calls().is_empty(),
        "--estimate calls nothing: {:?}",
        fake.calls()
            .iter()
            .map(|c| format!("{} {}", c.method, c.path))
            .collect::<Vec<_>>()
    );
}
