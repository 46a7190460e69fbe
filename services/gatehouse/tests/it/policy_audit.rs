//! Issue 15, item 5 through the CLI: `plan --policy`, the chain head export and
//! `audit verify --against`.

use crate::{bin, text};
use chrono::DateTime;
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::ledger_chain;
use gatehouse_domain::looker::{HttpCall, Method};
use gatehouse_domain::ports::{LedgerEntry, Outcome, StateStore};
use gatehouse_store::sqlite::Sqlite;
use std::path::Path;

fn run(data: &Path, args: &[&str], vars: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut c = bin();
    c.args(args).env("GATEHOUSE_DATA_DIR", data);
    for (k, v) in vars {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let (out, err) = text(&o);
    (o.status.code(), out, err)
}

fn entry(n: i64) -> LedgerEntry {
    LedgerEntry {
        at: DateTime::from_timestamp_millis(1_700_000_000_000 + n * 1000).unwrap(),
        envelope_id: format!("okta:env-{n}"),
        subject: "okta:00u1".into(),
        event: "user_deactivated".into(),
        rule: "offboarding.revoke_sessions".into(),
        call: HttpCall {
            method: Method::Delete,
            path: format!("/users/7/sessions/{n}"),
            body: None,
        },
        status: "ok".into(),
        target: "looker".into(),
        policy_digest: Some("d".repeat(64)),
        actor: Some(format!("event:okta:env-{n}")),
    }
}

/// Rewrite history as the database's owner can: alter row `seq` and recompute every hash after
/// it, and the chain head (triggers dropped).
async fn rewrite(data: &Path, seq: i64) {
    let db = Sqlite::open(data).await.unwrap();
    let rows = db.ledger_since(None).await.unwrap();
    db.close().await;
    let mut sql =
        String::from("DROP TRIGGER IF EXISTS ledger_no_update; DROP TRIGGER IF EXISTS ledger_no_delete;");
    let mut prev = ledger_chain::GENESIS.to_string();
    for r in &rows {
        let mut e = r.entry.clone();
        if r.seq == seq {
            e.status = "skipped".into();
            sql.push_str(&format!(
                "UPDATE ledger SET status = 'skipped' WHERE seq = {seq};"
            ));
        }
        let hash = ledger_chain::row_hash(r.seq, &e, &prev);
        sql.push_str(&format!(
            "UPDATE ledger SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {};",
            r.seq
        ));
        prev = hash;
    }
    sql.push_str(&format!("UPDATE ledger_head SET hash = '{prev}' WHERE id = 1;"));
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("gatehouse.db").display()))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_head_catches_a_rewritten_ledger_that_plain_verify_passes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let heads = dir.path().join("heads.jsonl");
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit.head_export]\nsink = \"file\"\npath = {:?}\n",
            heads.display().to_string()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let db = Sqlite::open(&data).await.unwrap();
    db.append_ledger(&(1..=4).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    db.close().await;

    // Export: the CLI prints the head and appends it to the file sink.
    let (code, out, err) = run(&data, &["--config", cfg, "audit", "head", "--export"], &[]);
    assert_eq!(code, Some(0), "{err}");
    let printed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(printed["seq"], 4);
    let file = std::fs::read_to_string(&heads).unwrap();
    assert_eq!(file.lines().count(), 1);
    let line: serde_json::Value = serde_json::from_str(file.trim()).unwrap();
    assert_eq!(line["hash"], printed["hash"]);

    // More rows after the export; the unaltered ledger passes, from the file and from stdin.
    let db = Sqlite::open(&data).await.unwrap();
    db.append_ledger(&[entry(5), entry(6)]).await.unwrap();
    db.close().await;
    let heads_arg = heads.to_str().unwrap();
    let (code, out, err) = run(&data, &["audit", "verify", "--against", heads_arg], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("ledger ok: 6 rows") && out.contains("(seq 4)"),
        "{out}"
    );
    let o = bin()
        .args(["audit", "verify", "--against", "-"])
        .env("GATEHOUSE_DATA_DIR", &data)
        .stdin(std::fs::File::open(&heads).unwrap())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);

    // The attack: row 2 altered, the chain after it and the head recomputed.
    rewrite(&data, 2).await;
    let (code, out, err) = run(&data, &["audit", "verify"], &[]);
    assert_eq!(code, Some(0), "plain verify cannot see a re-hashed chain: {err}");
    assert!(out.starts_with("ledger ok: 6 rows"), "{out}");
    let (code, _, err) = run(&data, &["audit", "verify", "--against", heads_arg], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("ledger row 4 has hash") && err.contains("the ledger was rewritten"),
        "{err}"
    );

    // A bad exported head is a clear error, not a pass.
    std::fs::write(dir.path().join("bad.json"), "{\"seq\": 4}\n").unwrap();
    let (code, _, err) = run(
        &data,
        &[
            "audit",
            "verify",
            "--against",
            dir.path().join("bad.json").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("the exported head is not valid"), "{err}");
}

#[test]
fn audit_head_export_without_a_sink_exits_64_naming_the_section() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&dir.path().join("data"), &["audit", "head", "--export"], &[]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("audit.head_export"), "{err}");
}

/// The processor exports the head on its interval with the `log` sink: a structured line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_exports_the_head_to_the_log_on_its_interval() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Sqlite::open(&data).await.unwrap();
    db.append_ledger(&(1..=3).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    let head = db.ledger_head().await.unwrap().unwrap();
    db.close().await;
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(&cfg, "[audit.head_export]\nsink = \"log\"\ninterval = \"1s\"\n").unwrap();
    let mut child = tokio::process::Command::from(bin())
        .args(["--config", cfg.to_str().unwrap(), "standalone"])
        .env("GATEHOUSE_DATA_DIR", &data)
        .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err_lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let found = loop {
        let line = tokio::select! {
            l = lines.next_line() => l.unwrap(),
            l = err_lines.next_line() => l.unwrap(),
            _ = tokio::time::sleep_until(deadline) => panic!("no head export logged"),
        };
        let Some(line) = line else {
            panic!("standalone exited before exporting the head");
        };
        if line.contains("ledger chain head") {
            break line;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&found).unwrap();
    let fields = if v.get("fields").is_some() {
        &v["fields"]
    } else {
        &v
    };
    assert_eq!(fields["seq"], head.seq, "{found}");
    assert_eq!(fields["hash"], head.hash, "{found}");
    child.kill().await.unwrap();
}

fn person(n: u32, groups: &[&str]) -> Vec<Envelope> {
    let key = format!("okta:00u{n}");
    let at = |i: i64| DateTime::from_timestamp(1_700_000_000 + i, 0).unwrap();
    let env = |i: i64, event: IdentityEvent, profile: Profile| Envelope {
        trace_parent: None,
        version: Envelope::VERSION,
        id: EnvelopeId(format!("okta:{n}-{i}")),
        source: Source::Okta,
        subject: Subject {
            key: key.clone(),
            email: None,
            display_name: None,
        },
        occurred_at: at(i),
        received_at: at(i),
        event,
        profile,
        source_event_type: "t".into(),
        raw: serde_json::Value::Null,
    };
    let mut out = vec![env(
        0,
        IdentityEvent::UserActivated,
        Profile::from([("email".to_string(), format!("p{n}@example.com"))]),
    )];
    for (i, g) in groups.iter().enumerate() {
        out.push(env(
            i as i64 + 1,
            IdentityEvent::GroupMemberAdded {
                group: GroupRef {
                    id: format!("id-{g}"),
                    name: g.to_string(),
                },
            },
            Profile::new(),
        ));
    }
    out
}

/// Subject, added, removed (each `target kind name [rule]`).
type Person = (String, Vec<String>, Vec<String>);

const CURRENT: &str = r#"
[[rule]]
name = "engineers"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]

[[rule]]
name = "finance"
when = { idp_group = "Finance" }
looker_groups = ["Finance"]
looker_roles = ["Viewer", "Finance Analyst"]

[[rule]]
name = "analysts"
when = { idp_group = "Analysts" }
looker_roles = ["Finance Analyst"]
"#;

/// `plan --policy`: a group added to one rule and a role removed from another show exactly the
/// people and grants concerned; the same policy shows no change; a bad file exits 64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_policy_shows_exactly_the_people_and_grants_a_change_affects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = Sqlite::open(&data).await.unwrap();
    for (n, groups) in [
        (1, vec!["Engineering"]),
        (2, vec!["Finance"]),
        (3, vec!["Sales"]),
        (4, vec!["Finance", "Analysts"]),
    ] {
        for env in person(n, &groups) {
            let loaded = db.load_subject(&env.subject.key).await.unwrap();
            let base_version = loaded.as_ref().map(|s| s.version);
            let mut id = loaded
                .map(|s| s.identity)
                .unwrap_or_else(|| gatehouse_domain::identity::Identity::new(&env.subject.key));
            id.fold(&env);
            db.commit(Outcome {
                envelope_id: env.id.clone(),
                identity: Some(id),
                converged: None,
                deletion: gatehouse_domain::ports::DeletionChange::Keep,
                base_version,
                offboarding: None,
            })
            .await
            .unwrap();
        }
    }
    db.close().await;
    let current = dir.path().join("policy.toml");
    std::fs::write(&current, CURRENT).unwrap();
    let new = dir.path().join("new.toml");
    std::fs::write(
        &new,
        CURRENT
            .replace(
                "looker_groups = [\"Engineers\"]",
                "looker_groups = [\"Engineers\", \"Oncall\"]",
            )
            .replace("[\"Viewer\", \"Finance Analyst\"]", "[\"Viewer\"]"),
    )
    .unwrap();
    let vars = [("GATEHOUSE_POLICY", current.to_str().unwrap())];
    let (code, out, err) = run(
        &data,
        &["plan", "--policy", new.to_str().unwrap(), "--json"],
        &vars,
    );
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["evaluated"], 4, "{out}");
    let people: Vec<Person> = v["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let names = |k: &str| {
                p[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|g| {
                        format!("{} {} {} [{}]", g["target"], g["kind"], g["name"], g["rule"])
                            .replace('"', "")
                    })
                    .collect::<Vec<_>>()
            };
            (
                p["subject"].as_str().unwrap().to_string(),
                names("added"),
                names("removed"),
            )
        })
        .collect();
    assert_eq!(
        people,
        vec![
            (
                "okta:00u1".to_string(),
                vec!["looker group Oncall [engineers]".to_string()],
                vec![]
            ),
            (
                "okta:00u2".to_string(),
                vec![],
                vec!["looker role Finance Analyst [finance]".to_string()]
            ),
        ],
        "okta:00u4 keeps Finance Analyst through analysts; okta:00u3 is untouched: {out}"
    );
    assert_eq!(v["per_rule"]["engineers"]["added"], 1);
    assert_eq!(v["per_rule"]["finance"]["removed"], 1);
    assert_eq!(v["per_target"]["looker"]["people"], 2);
    assert_eq!(
        v["new_digest"],
        gatehouse_domain::policy::PolicyDigest::of(&std::fs::read(&new).unwrap()).0
    );

    // The text form, as docs/audit-ledger.md shows it (kept with GATEHOUSE_REPORT_EXAMPLES).
    let (code, out, err) = run(&data, &["plan", "--policy", new.to_str().unwrap()], &vars);
    assert_eq!(code, Some(0), "{err}");
    crate::report_access::keep_example("plan-policy.txt", &out);
    assert!(
        out.contains("+ looker group Oncall  [engineers]")
            && out.contains("- looker role Finance Analyst  [finance]")
            && out.contains("2 of 4 people affected"),
        "{out}"
    );

    let (code, out, err) = run(&data, &["plan", "--policy", current.to_str().unwrap()], &vars);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("no change: the new policy grants the same to all 4 people"),
        "{out}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"x\"\nwhen = \"everyone\"\nlooker_grups = [\"A\"]\n",
    )
    .unwrap();
    let (code, _, err) = run(&data, &["plan", "--policy", bad.to_str().unwrap()], &vars);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("looker_grups"), "{err}");
}

fn s3_client() -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{BehaviorVersion, Builder, Credentials, Region};
    let conf = Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(crate::crash::moto_url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

async fn keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let page = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    page.contents()
        .iter()
        .filter_map(|o| o.key().map(String::from))
        .collect()
}

const AWS_VARS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

/// The `s3` sink against moto: one new Object Lock'ed object per export, read back (the newest)
/// by `verify --against s3://…`, which catches a re-hashed ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_sink_writes_locked_objects_and_verify_against_s3_catches_a_rewrite() {
    let s3 = s3_client();
    let bucket = crate::crash::unique("heads");
    s3.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("gatehouse.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit.head_export]\nsink = \"s3\"\nbucket = \"{bucket}\"\nprefix = \"audit/heads\"\n\
             endpoint_url = \"{}\"\nregion = \"us-east-1\"\nretain_days = 30\n",
            crate::crash::moto_url()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let db = Sqlite::open(&data).await.unwrap();
    db.append_ledger(&(1..=4).map(entry).collect::<Vec<_>>())
        .await
        .unwrap();
    db.close().await;

    let (code, out, err) = run(&data, &["--config", cfg, "audit", "head", "--export"], &AWS_VARS);
    assert_eq!(code, Some(0), "{err}");
    let printed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let first = keys(&s3, &bucket).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].starts_with("audit/heads/00000000000000000004-") && first[0].ends_with(".json"),
        "{first:?}"
    );
    let obj = s3
        .get_object()
        .bucket(&bucket)
        .key(&first[0])
        .send()
        .await
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_slice(&obj.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(body, printed, "the same JSON as the file sink");
    // The object's retention (HeadObject: moto 5.2 answers GetObjectRetention on a path-style
    // URL with the object itself).
    let retention = s3
        .head_object()
        .bucket(&bucket)
        .key(&first[0])
        .send()
        .await
        .unwrap();
    assert_eq!(
        retention.object_lock_mode,
        Some(aws_sdk_s3::types::ObjectLockMode::Compliance)
    );
    let until = retention
        .object_lock_retain_until_date
        .expect("the exported head is under retention")
        .secs();
    let in_30_days = gatehouse_domain::clock::now().timestamp() + 30 * 86_400;
    assert!(
        (in_30_days - 3600..=in_30_days).contains(&until),
        "retain until {until}, expected about {in_30_days}"
    );

    // A second export (after more rows) is a second object; the first one is untouched.
    let db = Sqlite::open(&data).await.unwrap();
    db.append_ledger(&[entry(5), entry(6)]).await.unwrap();
    db.close().await;
    let (code, _, err) = run(&data, &["--config", cfg, "audit", "head", "--export"], &AWS_VARS);
    assert_eq!(code, Some(0), "{err}");
    let both = keys(&s3, &bucket).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.contains(&first[0]), "{both:?}");

    // The newest head (seq 6) is the one checked; the unaltered ledger passes.
    let against = format!("s3://{bucket}/audit/heads");
    let (code, out, err) = run(
        &data,
        &["--config", cfg, "audit", "verify", "--against", &against],
        &AWS_VARS,
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("ledger ok: 6 rows") && out.contains("(seq 6)"),
        "{out}"
    );

    rewrite(&data, 2).await;
    let (code, _, err) = run(
        &data,
        &["--config", cfg, "audit", "verify", "--against", &against],
        &AWS_VARS,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the ledger was rewritten"), "{err}");

    // An empty prefix is a clear failure, not a pass.
    let (code, _, err) = run(
        &data,
        &[
            "--config",
            cfg,
            "audit",
            "verify",
            "--against",
            &format!("s3://{bucket}/nothing"),
        ],
        &AWS_VARS,
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no exported head under"), "{err}");
}

#[test]
fn a_bad_s3_sink_config_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (toml_text, field) in [
        ("[audit.head_export]\nsink = \"s3\"\n", "audit.head_export.bucket"),
        (
            "[audit.head_export]\nsink = \"s3\"\nbucket = \"heads\"\nretain_days = 0\n",
            "audit.head_export.retain_days",
        ),
    ] {
        let cfg = dir.path().join("gatehouse.toml");
        std::fs::write(&cfg, toml_text).unwrap();
        let (code, _, err) = run(
            &dir.path().join("data"),
            &["--config", cfg.to_str().unwrap(), "audit", "head", "--export"],
            &[],
        );
        assert_eq!(code, Some(64), "{err}");
        assert!(err.contains(field), "{field}: {err}");
    }
}
