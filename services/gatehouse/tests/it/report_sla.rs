//! `gatehouse report deprovisioning` (issue 15): the SLA from the state store alone.

use super::{bin, text};
use chrono::{DateTime, TimeDelta, Utc};
use gatehouse_domain::envelope::EnvelopeId;
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{DeletionChange, LedgerEntry, OffboardingTimes, Outcome, StateStore};
use gatehouse_store::sqlite::Sqlite;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-02T09:00:00Z")
        .unwrap()
        .to_utc()
}

fn row(envelope: &str, target: &str, at: DateTime<Utc>, status: &str, path: &str) -> LedgerEntry {
    LedgerEntry {
        at,
        envelope_id: envelope.into(),
        subject: format!("okta:{envelope}"),
        event: "user.lifecycle.deactivate".into(),
        rule: "offboarding.disable".into(),
        target: target.into(),
        call: HttpCall {
            method: Method::Patch,
            path: path.into(),
            body: None,
        },
        status: status.into(),
        policy_digest: None,
        actor: Some(format!("event:{envelope}")),
    }
}

/// Five offboardings with controlled times (the ledger rows carry their own times): Looker's
/// last revoking calls come 1, 2, 3, 4 and 40 minutes after the event, AWS's once after 2
/// minutes; receipts 1..5 s after the events. A sixth offboarding is before `--since` (the evening before).
async fn fixture(db: &Sqlite) {
    let min = |m: i64| TimeDelta::seconds(m * 60);
    let s = TimeDelta::seconds;
    let people = [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 40)];
    for (i, (p, minutes)) in people.iter().enumerate() {
        let event = t0() + min(i as i64 * 60);
        let id = format!("okta:default:{p}");
        let mut rows = vec![
            // A throttled attempt, then the call that worked.
            row(&id, "looker", event + s(10), "429", "/users/1"),
            row(&id, "looker", event + s(20), "ok", "/users/1"),
            row(
                &id,
                "looker",
                event + min(*minutes),
                "404 already gone",
                "/users/1/sessions/2",
            ),
        ];
        if *p == "a" {
            rows.push(row(&id, "aws", event + min(2), "200", "DeactivateMFADevice"));
            // The operator's decision is not a call.
            rows.push(row(
                &id,
                "gatehouse",
                event + min(50),
                "ok: by ann",
                "/safety/offboard",
            ));
        }
        if *p == "e" {
            // Neither a withheld step nor a failure revokes anything.
            rows.push(row(
                &id,
                "looker",
                event + min(50),
                "withheld: protected",
                "/users/9",
            ));
            rows.push(row(&id, "looker", event + min(55), "error: boom", "/users/9"));
        }
        db.append_ledger(&rows).await.unwrap();
        let times = OffboardingTimes {
            envelope_id: id.clone(),
            person: format!("okta:00u{p}"),
            email: Some(format!("{p}@example.com")),
            source: "okta".into(),
            event: "user_deactivated".into(),
            occurred_at: event,
            received_at: event + s(i as i64 + 1),
            finished_at: event + min(*minutes) + s(1),
        };
        db.commit(Outcome {
            envelope_id: EnvelopeId(id),
            identity: None,
            converged: None,
            deletion: DeletionChange::Keep,
            base_version: None,
            offboarding: Some(times),
        })
        .await
        .unwrap();
    }
    let early = "okta:default:early";
    db.append_ledger(&[row(early, "looker", t0() - min(570), "ok", "/users/7")])
        .await
        .unwrap();
    db.commit(Outcome {
        offboarding: Some(OffboardingTimes {
            envelope_id: early.into(),
            person: "okta:00uearly".into(),
            email: None,
            source: "okta".into(),
            event: "user_suspended".into(),
            // The evening before the window.
            occurred_at: t0() - min(600),
            received_at: t0() - min(600),
            finished_at: t0() - min(570),
        }),
        ..Outcome::processed_only(EnvelopeId(early.into()))
    })
    .await
    .unwrap();
}

fn report(data: &std::path::Path, extra: &[&str]) -> std::process::Output {
    bin()
        .args(["report", "deprovisioning", "--since", "2026-11-02T00:00:00Z"])
        .args(["--until", "2026-11-03T00:00:00Z", "--sla", "15m"])
        .args(extra)
        .env("GATEHOUSE_DATA_DIR", data)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sla_report_gives_percentiles_and_the_breach_as_its_ledger_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Sqlite::open(&data).await.unwrap();
    fixture(&db).await;
    let ledger = db.ledger_since(None).await.unwrap();
    db.close().await;

    let o = report(&data, &["--format", "json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["offboardings"].as_array().unwrap().len(),
        5,
        "the early one is outside"
    );
    assert_eq!(v["sla_ms"], 900_000);
    let looker = &v["targets"][1];
    assert_eq!(looker["target"], "looker");
    // Nearest rank over 1, 2, 3, 4, 40 minutes.
    assert_eq!(
        (
            &looker["offboardings"],
            &looker["p50_ms"],
            &looker["p95_ms"],
            &looker["max_ms"],
            &looker["breaches"]
        ),
        (
            &5.into(),
            &180_000.into(),
            &2_400_000.into(),
            &2_400_000.into(),
            &1.into()
        )
    );
    assert_eq!(
        (
            &v["targets"][0]["target"],
            &v["targets"][0]["p50_ms"],
            &v["targets"][0]["max_ms"]
        ),
        (&"aws".into(), &120_000.into(), &120_000.into())
    );
    assert_eq!(
        v["targets"].as_array().unwrap().len(),
        2,
        "decisions are not a target"
    );
    assert_eq!(
        (
            &v["receive"]["p50_ms"],
            &v["receive"]["p95_ms"],
            &v["receive"]["max_ms"]
        ),
        (&3000.into(), &5000.into(), &5000.into())
    );
    // The one breach is e's last revoking Looker call: the very ledger row, seq and hash.
    let breaches = v["breaches"].as_array().unwrap();
    assert_eq!(breaches.len(), 1, "{out}");
    let b = &breaches[0];
    let last_e = ledger
        .iter()
        .filter(|r| r.entry.envelope_id == "okta:default:e" && r.entry.status == "404 already gone")
        .max_by_key(|r| r.seq)
        .unwrap();
    assert_eq!(b["seq"], last_e.seq);
    assert_eq!(b["hash"], last_e.hash.as_str());
    assert_eq!(
        (&b["target"], &b["person"], &b["event_to_revoke_ms"]),
        (&"looker".into(), &"okta:00ue".into(), &2_400_000.into())
    );
    let a = &v["offboardings"][0];
    assert_eq!(
        (
            &a["envelope_id"],
            &a["event_to_receive_ms"],
            &a["revokes"][1]["event_to_revoke_ms"]
        ),
        (&"okta:default:a".into(), &1000.into(), &60_000.into())
    );

    // The same report for people and spreadsheets.
    let o = report(&data, &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    // The example in docs/reports.md (`-- --nocapture`).
    println!("{out}");
    assert_eq!(out.matches("BREACH").count(), 1, "{out}");
    assert!(
        out.contains(&format!("seq {} hash {}", last_e.seq, last_e.hash)),
        "{out}"
    );
    assert!(
        out.contains("looker") && out.contains("event → receive: p50 3s, p95 5s, max 5s"),
        "{out}"
    );
    let o = report(&data, &["--format", "csv"]);
    let (out, _) = text(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1 + 6,
        "a header, a's two targets, one row each for b..e: {out}"
    );
    assert!(lines[0].starts_with("envelope_id,person,email"));
    assert_eq!(lines.iter().filter(|l| l.ends_with(",true")).count(), 1);

    // An auditor checks the chain the breach belongs to.
    let o = bin()
        .args(["audit", "verify"])
        .env("GATEHOUSE_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
}

#[test]
fn a_window_that_ends_before_it_starts_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["report", "deprovisioning", "--since", "2026-11-03T00:00:00Z"])
        .args(["--until", "2026-11-02T00:00:00Z"])
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).1.contains("--since"), "{}", text(&o).1);
}

/// The engine keeps the times of an offboarding it finishes: `gatehouse offboard` revokes in
/// the fake Looker, and the report finds that offboarding with its last revoking call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offboarding_the_engine_finishes_is_in_the_report() {
    let fake = gatehouse_testkit::FakeLooker::start().await;
    let uid = fake.add_user("john.doe@example.com", "John", "Doe");
    fake.add_session(&uid);
    let dir = tempfile::tempdir().unwrap();
    let since = (gatehouse_domain::clock::now() - TimeDelta::hours(1)).to_rfc3339();
    let o = tokio::process::Command::from(bin())
        .args([
            "offboard",
            "john.doe@example.com",
            "--reason",
            "left",
            "--actor",
            "ann",
        ])
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .env("GATEHOUSE_LOOKER_URL", fake.base_url())
        .env("GATEHOUSE_LOOKER_CLIENT_ID", fake.client_id())
        .env("GATEHOUSE_LOOKER_CLIENT_SECRET", fake.client_secret())
        .output()
        .await
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(fake.user(&uid).unwrap().is_disabled);
    let o = bin()
        .args(["report", "deprovisioning", "--since", &since, "--format", "json"])
        .env("GATEHOUSE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let offboardings = v["offboardings"].as_array().unwrap();
    assert_eq!(offboardings.len(), 1, "{out}");
    let ob = &offboardings[0];
    assert_eq!(
        (&ob["source"], &ob["event"]),
        (&"manual".into(), &"user_deactivated".into())
    );
    let db = Sqlite::open(dir.path()).await.unwrap();
    let last = db
        .ledger_since(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.target == "looker" && r.entry.envelope_id == ob["envelope_id"])
        .max_by_key(|r| r.seq)
        .expect("looker calls ledgered");
    db.close().await;
    let revoke = &ob["revokes"][0];
    assert_eq!(
        (&revoke["target"], &revoke["seq"], &revoke["hash"]),
        (&"looker".into(), &last.seq.into(), &last.hash.as_str().into())
    );
}
