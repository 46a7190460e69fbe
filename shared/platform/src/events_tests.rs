use super::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn registry() -> BTreeMap<&'static str, Def> {
    ALL.iter().map(|d| (d.name, *d)).collect()
}

#[test]
fn registry_names_are_unique_and_well_formed() {
    assert_eq!(registry().len(), ALL.len(), "a metric name is declared twice");
    let snake = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    for d in ALL {
        assert!(
            d.name.starts_with("gatehouse_") && snake(d.name),
            "{}: not gatehouse_snake_case",
            d.name
        );
        assert_eq!(
            d.name.ends_with("_total"),
            d.kind == MetricKind::Counter,
            "{}: counters and only counters end in _total",
            d.name
        );
        assert!(!d.help.is_empty() && !d.help.contains('\n'), "{}: help", d.name);
        let keys: BTreeSet<_> = d.labels.iter().collect();
        assert_eq!(keys.len(), d.labels.len(), "{}: a label key twice", d.name);
        for k in d.labels {
            assert!(snake(k), "{}: label key {k:?}", d.name);
        }
    }
}

/// Emit every typed event once (the label values are the first of each closed set).
fn emit_every_event() {
    let event = IdentityEvent::UserDeactivated;
    event_received(Source::Okta, &event, true);
    ingress_rejected("okta", "unauthorized");
    http_connection_refused("intake", &"127.0.0.1:1", 10);
    graph_notification_received(GraphKind::Updated, false);
    graph_notification(GraphOutcome::Done);
    catchup_events(Source::Okta, 2);
    catchup_failed(Source::Graph);
    catchup_skipped(Source::Okta, "unmapped");
    catchup_lag(Source::GoogleWorkspace, 1.5);
    scim_outbox_published(3);
    google_channel(ChannelAction::Created);
    okta_import_published(4);
    okta_import_failed(&"example.okta.com", &"401");
    okta_api_calls(OktaApiUse::Import, 5);
    okta_enrich(EnrichResult::Cached);
    okta_api_rate_limited("/api/v1/logs", 1, &"2026-01-01T00:00:00Z");
    okta_token_request(TokenResult::Issued);
    queue_error(QueueOp::Receive, ErrorKind::Throttled);
    queue_lag(QueueName::Embedded, 0.5);
    queue_depth(QueueName::Embedded, 7);
    store_group_commit();
    event_processed(Source::Scim, ProcessedOutcome::Applied, 0.01);
    events_failed(None, FailReason::Poison);
    events_failed(Some(Source::Okta), FailReason::Retried);
    event_age(Source::Okta, 0.2);
    let now = gatehouse_domain::clock::now();
    let env = Envelope {
        version: Envelope::VERSION,
        id: gatehouse_domain::envelope::EnvelopeId("generic:1".into()),
        source: Source::Generic,
        subject: gatehouse_domain::envelope::Subject {
            key: "u1".into(),
            email: None,
            display_name: None,
        },
        occurred_at: now + chrono::Duration::days(1),
        received_at: now,
        event: event.clone(),
        profile: Default::default(),
        source_event_type: "user.deactivated".into(),
        raw: Default::default(),
        trace_parent: None,
    };
    event_time_clamped(&env, std::time::Duration::from_secs(300));
    subject_conflict(&env, 1);
    unresolved_offboarding(TargetName::LOOKER);
    step_withheld(TargetName::AWS);
    step_deferred(TargetName::GCP, &"u1", &"generic:1", &"screen not ready");
    drift_reported(TargetName::LOOKER, 2);
    breaker_tripped(ChangeKind::Offboarding, BreakerScope::All);
    breaker_held(ChangeKind::Offboarding, "okta", &env);
    aws_mapping_changed(&"u1", &"generic:1", &"alice", &"alice2");
    head_export_failed(&"disk full");
    rotation_requested(&env, "aws", "key leaked");
    rotation_request_unmatched("somewhere");
    looker_call("GET", "/api/4.0/users/{user_id}", "200".to_string());
    looker_budget(10, 90, false);
    looker_core_pending_first_login(&"u1", "a@example.com");
    looker_core_first_login(&"u1", &"42", 2);
    looker_core_first_login_failed(&"u1", &"42", &"timeout");
    looker_core_first_login_skipped(SkipReason::LookerBudget);
    reconcile_orphans(1);
    reconcile_drift(gatehouse_domain::cloud::Target::Looker, 3);
    reconcile_duplicate_user(&"u1", &"43");
    reconcile_skipped(SkipReason::LookerBudget);
    rotation_finished("looker-api", RotationOutcome::Rotated);
    rotation_started("looker-api", "schedule", &"r1");
    rotation_failed("looker-api", "create");
    rotation_alert("looker-api", &"u1");
    rotation_request_poison(1, &"not json");
    secret_age("looker-api", 86400.0);
}

/// Each sample line of a Prometheus text page: (metric name, label keys in order).
fn samples(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let series = l.rsplit_once(' ').map_or(l, |(s, _)| s);
            let (name, labels) = series.split_once('{').unwrap_or((series, ""));
            let keys = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k).to_string())
                .filter(|k| k != "quantile" && k != "le")
                .collect();
            (name.to_string(), keys)
        })
        .collect()
}

#[test]
fn every_metric_is_emitted_with_exactly_its_declared_label_keys_and_described() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        emit_every_event();
    });
    let text = handle.render();
    let reg = registry();
    let mut seen = BTreeSet::new();
    for (name, keys) in samples(&text) {
        let def = reg.get(name.as_str()).copied().or_else(|| {
            // A histogram renders as a summary: `name{quantile}`, `name_sum`, `name_count`.
            let base = name
                .strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))?;
            reg.get(base).copied().filter(|d| d.kind == MetricKind::Histogram)
        });
        let def = def.unwrap_or_else(|| panic!("{name} is emitted but not declared in events::ALL"));
        assert_eq!(
            keys, def.labels,
            "{name}: emitted label keys differ from the declared ones"
        );
        seen.insert(def.name);
    }
    for d in ALL {
        assert!(
            seen.contains(d.name),
            "{}: declared but emit_every_event never emitted it",
            d.name
        );
        let kind = match d.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "summary",
        };
        assert!(
            text.contains(&format!("# TYPE {} {kind}\n", d.name)),
            "{}: type\n{text}",
            d.name
        );
        assert!(
            text.contains(&format!("# HELP {} {}\n", d.name, d.help)),
            "{}: help\n{text}",
            d.name
        );
    }
}

#[test]
fn label_values_on_the_wire_are_the_documented_strings() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        events_failed(None, FailReason::Poison);
        events_failed(Some(Source::AwsCloudTrail), FailReason::Unparseable);
        event_received(Source::GoogleWorkspace, &IdentityEvent::UserSuspended, false);
        rotation_request_unmatched("attacker-chosen");
        queue_error(QueueOp::DeadLetter, ErrorKind::NotFound);
    });
    let text = handle.render();
    for line in [
        "gatehouse_events_failed_total{source=\"unknown\",reason=\"poison\"} 1",
        "gatehouse_events_failed_total{source=\"aws_cloudtrail\",reason=\"unparseable\"} 1",
        "gatehouse_events_received_total{source=\"google_workspace\",kind=\"user_suspended\",actionable=\"false\"} 1",
        "gatehouse_rotation_requests_unmatched_total{provider=\"other\"} 1",
        "gatehouse_queue_errors_total{operation=\"dead_letter\",kind=\"not_found\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

/// The table `docs/metrics.md` should hold, generated from [`ALL`].
fn metrics_table() -> String {
    let mut out = String::from("| metric | kind | labels | meaning |\n|---|---|---|---|\n");
    for d in ALL {
        let labels = if d.labels.is_empty() {
            "—".to_string()
        } else {
            d.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {labels} | {} |\n",
            d.name,
            d.kind.as_str(),
            d.help
        ));
    }
    out
}

#[test]
fn docs_metrics_md_lists_exactly_the_registry() {
    let doc = read("docs/metrics.md");
    let table = metrics_table();
    assert!(
        doc.contains(&table),
        "docs/metrics.md must hold the registry's table (events::ALL); replace its table with:\n\n{table}"
    );
}

/// Every `gatehouse_…` name in the docs that looks like a metric (it ends as some declared
/// metric ends: `_total`, `_seconds`, …) is declared, so the docs never name a metric that
/// does not exist.
#[test]
fn the_docs_name_only_declared_metrics() {
    let reg = registry();
    let endings: BTreeSet<&str> = ALL.iter().filter_map(|d| d.name.rsplit('_').next()).collect();
    let mut files = vec![
        "README.md".to_string(),
        "ARCHITECTURE.md".into(),
        "CONTRIBUTING.md".into(),
    ];
    for e in std::fs::read_dir(workspace().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(format!("docs/{}", p.file_name().unwrap().to_string_lossy()));
        }
    }
    let mut unknown = Vec::new();
    for f in &files {
        let text = read(f);
        let mut rest = text.as_str();
        while let Some(i) = rest.find("gatehouse_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = tail[..end].trim_end_matches('_');
            let ending = name.rsplit('_').next().unwrap_or_default();
            if endings.contains(ending) && !reg.contains_key(name) {
                unknown.push(format!("{f}: {name}"));
            }
            rest = &tail[end.max(1)..];
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics named in the docs but not declared in events::ALL: {unknown:#?}"
    );
}

/// `counter!`, `gauge!` or `histogram!` (the `metrics` macros), and `use metrics::…` of them,
/// anywhere in the library and service sources but this module: file:line of each.
fn metric_macros_outside_events(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for group in ["shared", "services"] {
        for krate in std::fs::read_dir(root.join(group)).unwrap().flatten() {
            let src = krate.path().join("src");
            if src.is_dir() {
                walk(&src, &mut files);
            }
        }
    }
    // The module itself, and its tests (which name the macros to look for them).
    let allowed = [
        "shared/platform/src/events.rs",
        "shared/platform/src/events_tests.rs",
    ];
    let mut found = Vec::new();
    for f in files {
        if allowed.iter().any(|a| f.ends_with(a)) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let hit = ["counter!", "gauge!", "histogram!"].iter().any(|m| {
                code.match_indices(m).any(|(at, _)| {
                    // A whole macro name, not e.g. `my_counter!`.
                    at == 0 || !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            }) || (code.contains("use metrics::")
                && ["counter", "gauge", "histogram"].iter().any(|m| code.contains(m)));
            if hit {
                let rel = f.strip_prefix(root).unwrap_or(&f);
                found.push(format!("{}:{}: {}", rel.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn no_metric_macro_outside_the_events_module() {
    let found = metric_macros_outside_events(&workspace());
    assert!(
        found.is_empty(),
        "emit metrics through gatehouse_platform::events (one definition per metric), not the metrics macros:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_finds_a_metric_macro_where_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("shared/demo/src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(dir.path().join("services")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "fn f() {\n    // metrics::counter!(\"in a comment\")\n    metrics::counter!(\"gatehouse_x_total\").increment(1);\n}\nuse metrics::gauge;\nfn g() { my_histogram!(); }\n",
    )
    .unwrap();
    let found = metric_macros_outside_events(dir.path());
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("shared/demo/src/lib.rs:3:"), "{found:#?}");
    assert!(found[1].starts_with("shared/demo/src/lib.rs:5:"), "{found:#?}");
}

/// What a text subscriber writes while `f` runs (targets shown).
fn logged(f: impl FnOnce()) -> String {
    let buf = gatehouse_testkit::logs::LogBuffer::default();
    let out = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || out.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    buf.text()
}

#[test]
fn an_event_writes_its_log_line_once_under_the_call_sites_target() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let log = metrics::with_local_recorder(&recorder, || {
        logged(|| {
            head_export_failed(&"disk full");
            http_connection_refused("intake", &"127.0.0.1:9", 4);
        })
    });
    let lines: Vec<_> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains(
            "ERROR gatehouse_engine::head_export: cannot export the ledger chain head error=disk full"
        ),
        "{log}"
    );
    assert!(
        lines[1].contains(
            "WARN gatehouse_intake::server: connection limit reached; closing the new connection listener=\"intake\" peer=127.0.0.1:9 max=4"
        ),
        "{log}"
    );
    let text = handle.render();
    assert!(text.contains("gatehouse_head_export_failures_total 1"), "{text}");
    assert!(
        text.contains("gatehouse_http_connections_refused_total{listener=\"intake\"} 1"),
        "{text}"
    );
}
