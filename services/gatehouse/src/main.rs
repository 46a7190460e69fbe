//! `gatehouse`: run everything in one process, preview plans, read the ledger and dead letters.

// The engine's per-event future (reads, breaker, applies across Looker, AWS, GCP and the
// store) nests deeper than rustc's default query depth (128) when release codegen computes
// its layout ("queries overflow the depth limit"); debug builds never compute it.
#![recursion_limit = "256"]

mod audit_head;
mod ocsf;
mod ops;
mod policy_plan;
mod report_access;
mod report_sla;

use anyhow::Context;
use clap::{ArgGroup, Parser, Subcommand};
use gatehouse_app::{self as app, AppError, Components};
use gatehouse_domain::okta;
use gatehouse_platform::config::Config;
use gatehouse_store::dlq::Redrive;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "Keeps Looker access in step with the identity provider"
)]
struct Cli {
    /// TOML configuration file; without it, built-in defaults plus GATEHOUSE_* variables apply.
    #[arg(long, short, global = true, env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ingress and the processor in one process over the embedded SQLite queue.
    Standalone,
    /// Print the exact calls an event (--event) or the first reconcile (--all) would cause, and
    /// which steps the safety rails withhold and why, changing nothing.
    #[command(group(ArgGroup::new("what").required(true).args(["event", "all", "policy"])))]
    Plan {
        /// An Okta event hook body (JSON).
        #[arg(long)]
        event: Option<PathBuf>,
        /// Everyone in the directory: what `gatehouse reconcile --apply` would change, per
        /// target mode (run it before the first reconcile is allowed to write).
        #[arg(long)]
        all: bool,
        /// A changed policy file: the grants it adds and removes, per target, person and rule,
        /// for everyone in the directory, against the running policy (no target is called).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Compare directory + policy with Looker, AWS IAM and GCP IAM; print the drift (dry run) or
    /// fix it with --apply (targets in `report` mode are only ledgered).
    Reconcile {
        /// Apply the changes (default: dry run, nothing changes).
        #[arg(long)]
        apply: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Print the expected read calls per target (and the Looker budget), call nothing.
        #[arg(long, conflicts_with = "apply")]
        estimate: bool,
    },
    /// Reports for auditors and owners, from the state store.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Read and verify the hash-chained ledger of write calls.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Inspect and redrive dead-lettered messages of the configured queue backend.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The mass-change circuit breaker (`[safety.breaker]`): what it holds, and a person's decision.
    Safety {
        #[command(subcommand)]
        command: SafetyCommand,
        /// Who decides (recorded in the ledger); default: the OS user.
        #[arg(long, global = true)]
        actor: Option<String>,
    },
    /// Offboard a person everywhere now (every target, account, session and key), whatever
    /// the identity provider says; ledgered with the operator and the reason.
    Offboard {
        /// The person's email.
        email: String,
        /// Why (recorded in the ledger).
        #[arg(long)]
        reason: Option<String>,
        /// Who runs it (recorded in the ledger); default: the OS user.
        #[arg(long)]
        actor: Option<String>,
    },
    /// Rotate a declared secret now (create → set → test → finish); the old credential is
    /// revoked after its grace period by the running rotator.
    Rotate {
        /// The secret's name in `[[rotator.secrets]]`.
        secret: String,
        /// Print the steps it would take, changing nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Access review: per person, IdP status and groups, each managed grant per target with
    /// the rule that wants it, whether the target has it and the drift; orphan accounts.
    /// Answers from the state store (snapshots + ledger); calls no target without --refresh.
    Access {
        /// Answer for this RFC 3339 time (default: now): the last reconcile snapshot at or
        /// before it, with the ledger's writes after that snapshot replayed on top.
        #[arg(long)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_enum, default_value = "csv")]
        format: report_access::Format,
        /// Read every target first (reconcile's paged reads, no write; counted against the
        /// Looker budget) and store that snapshot.
        #[arg(long, conflicts_with = "as_of")]
        refresh: bool,
    },
    /// The deprovisioning SLA: per offboarding, the IdP's event time, the receive time and each
    /// target's last revoking call (ledger seq, time, chain hash); p50/p95/max per target; the
    /// revocations later than the SLA.
    Deprovisioning {
        /// Offboardings whose event time is at or after this RFC 3339 time.
        #[arg(long)]
        since: chrono::DateTime<chrono::Utc>,
        /// ... and before this one (default: now).
        #[arg(long)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Longest allowed time from the IdP's event to a target's last revoking call.
        #[arg(long, default_value = "15m", value_parser = report_sla::parse_sla)]
        sla: std::time::Duration,
        #[arg(long, value_enum, default_value = "text")]
        format: report_sla::Format,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write ledger rows (with their chain hashes) as JSON lines to standard output.
    Export {
        /// Only rows at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// `json`: the rows as stored; `ocsf`: OCSF 1.1.0 events for a SIEM.
        #[arg(long, value_enum, default_value = "json")]
        format: ocsf::ExportFormat,
    },
    /// Check the hash chain: exit 0 when intact, else name the first altered, removed or
    /// reordered row and exit 1.
    Verify {
        /// A chain head exported earlier (`audit head --export`): a file of JSON lines (the
        /// last line counts), `-` for standard input, or `s3://BUCKET/KEY`. The ledger must
        /// still hold that seq with that hash.
        #[arg(long)]
        against: Option<String>,
    },
    /// Print the chain head (seq, hash, time) as JSON; `--export` also writes it to the
    /// configured sink (`[audit.head_export]`).
    Head {
        #[arg(long)]
        export: bool,
    },
}

#[derive(Subcommand)]
enum SafetyCommand {
    /// Trips and held changes, oldest first.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Close the trips and apply the held changes in the order they were held, each once.
    Release {
        /// Only this source's trips and changes (e.g. `okta`).
        #[arg(long)]
        source: Option<String>,
    },
    /// Close the trips and drop the held changes unapplied.
    Discard {
        /// Only this source's trips and changes (e.g. `okta`).
        #[arg(long)]
        source: Option<String>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters (id, time, attempts, reason).
    List,
    /// One dead letter with its body, as JSON.
    Show {
        /// The id `dlq list` shows.
        id: String,
    },
    /// Put dead letters back on the queue they came from.
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
    Redrive {
        /// The id `dlq list` shows.
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A backend this build lacks (cargo features) is a configuration error too.
    let cfg = match Config::load(cli.config.as_deref(), |k| std::env::var(k).ok())
        .and_then(|c| gatehouse_store::backends::check(&c).map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::from(64);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gatehouse: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the trace exporter's batch task runs on it.
    let telemetry = match rt
        .block_on(async { gatehouse_platform::telemetry::init(&cfg.log, &cfg.telemetry, "gatehouse") })
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gatehouse: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let r = run(cli.command, cfg).await;
        telemetry.shutdown().await;
        r
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.downcast_ref::<AppError>().map(AppError::exit_code).unwrap_or(1);
            eprintln!("gatehouse: {e:#}");
            ExitCode::from(code as u8)
        }
    }
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Standalone => {
            let running = app::start(
                &cfg,
                Components {
                    ingress: true,
                    processor: true,
                },
            )
            .await?;
            eprintln!(
                "gatehouse standalone listening on http://{} ({})",
                running.addr,
                if running.dry_run {
                    "dry-run: no Looker configured"
                } else {
                    "live"
                }
            );
            running.until(gatehouse_platform::shutdown::os_signal()).await;
            Ok(())
        }
        Command::Plan {
            policy: Some(new),
            json,
            ..
        } => policy_plan::plan_policy(&cfg, &new, json).await,
        Command::Plan {
            event: Some(event),
            json,
            ..
        } => plan(&cfg, &event, json).await,
        Command::Plan {
            event: None, json, ..
        } => plan_all(&cfg, json).await,
        Command::Safety { command, actor } => {
            let action = match command {
                SafetyCommand::Status { json } => ops::SafetyAction::Status { json },
                SafetyCommand::Release { source } => ops::SafetyAction::Release(source),
                SafetyCommand::Discard { source } => ops::SafetyAction::Discard(source),
            };
            ops::safety(&cfg, action, actor.as_deref()).await
        }
        Command::Offboard { email, reason, actor } => {
            ops::offboard(&cfg, &email, reason.as_deref(), actor.as_deref()).await
        }
        Command::Rotate { secret, dry_run } => rotate(&cfg, &secret, dry_run).await,
        Command::Reconcile {
            apply,
            json,
            estimate,
        } => reconcile(&cfg, apply, json, estimate).await,
        Command::Audit {
            command: AuditCommand::Export { since, format },
        } => ocsf::audit_export(&cfg, since, format).await,
        Command::Audit {
            command: AuditCommand::Verify { against: None },
        } => ops::audit_verify(&cfg).await,
        Command::Report {
            command:
                ReportCommand::Deprovisioning {
                    since,
                    until,
                    sla,
                    format,
                },
        } => report_sla::deprovisioning(&cfg, since, until, sla, format).await,
        Command::Report {
            command:
                ReportCommand::Access {
                    as_of,
                    format,
                    refresh,
                },
        } => report_access::report_access(&cfg, as_of, format, refresh).await,
        Command::Audit {
            command: AuditCommand::Verify { against: Some(from) },
        } => audit_head::verify_against(&cfg, &from).await,
        Command::Audit {
            command: AuditCommand::Head { export },
        } => audit_head::head(&cfg, export).await,
        Command::Dlq { command } => {
            let action = match command {
                DlqCommand::List => ops::DlqAction::List,
                DlqCommand::Show { id } => ops::DlqAction::Show(id),
                DlqCommand::Redrive { id: Some(id), .. } => ops::DlqAction::Redrive(Redrive::One(id)),
                DlqCommand::Redrive { id: None, .. } => ops::DlqAction::Redrive(Redrive::All),
            };
            ops::dlq(&cfg, action).await
        }
    }
}

async fn rotate(cfg: &Config, secret: &str, dry_run: bool) -> anyhow::Result<()> {
    if cfg.rotator.secret(secret).is_none() {
        return Err(AppError::Config(gatehouse_platform::config::ConfigError::new(
            "SECRET",
            format!("{secret:?} is not declared in [[rotator.secrets]]"),
        ))
        .into());
    }
    let state = app::open_state_alone(cfg).await?;
    let rotator = gatehouse_rotation::build::rotator(cfg, state.clone()).await?;
    let result = rotate_with(&rotator, secret, dry_run).await;
    if cfg.looker.budget.monthly_call_quota.is_some() {
        app::count_calls(cfg, state.clone(), rotator.looker_meters()).await;
    }
    state.close().await;
    result
}

async fn rotate_with(
    rotator: &gatehouse_rotation::Rotator<gatehouse_rotation::any::AnyRotations>,
    secret: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    use gatehouse_rotation::{Phase, RotationStore, Started};
    let mut out = std::io::stdout().lock();
    if dry_run {
        for line in rotator.plan(secret).await? {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    let id = match rotator.start(secret, "manual", false).await? {
        Some(Started::New(id)) => id,
        Some(Started::AlreadyActive(id) | Started::Existed(id)) => {
            writeln!(out, "{secret}: rotation {id} is already under way; continuing it")?;
            id
        }
        None => anyhow::bail!("{secret}: rotation refused"),
    };
    rotator.drive(&id).await?;
    let r = rotator.store().get(&id).await?.context("the rotation vanished")?;
    writeln!(
        out,
        "{secret}: rotation {id} {} (new key {}, version {}){}",
        r.phase.as_str(),
        r.new_key_id.as_deref().unwrap_or("-"),
        r.new_version.as_deref().unwrap_or("-"),
        r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
    )?;
    match r.phase {
        Phase::Finished | Phase::Revoked | Phase::Done => Ok(()),
        _ => anyhow::bail!("{secret}: rotation {id} stopped at {}", r.phase.as_str()),
    }
}

async fn plan(cfg: &Config, event: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let body = std::fs::read(event).with_context(|| format!("cannot read {}", event.display()))?;
    let envelopes = okta::parse_hook_body(&cfg.okta.org, &body, gatehouse_domain::clock::now())
        .with_context(|| format!("{} is not a supported event", event.display()))?;
    let store = gatehouse_store::sqlite::Sqlite::open(&cfg.data_dir).await?;
    let engine = app::engine_with_cloud(cfg, app::open_state(cfg, &store).await?).await?;
    let result = print_plans(&engine, &envelopes, json).await;
    app::count_looker_calls(cfg, &engine).await;
    result
}

async fn print_plans(
    engine: &app::AppEngine,
    envelopes: &[gatehouse_domain::envelope::Envelope],
    json: bool,
) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut out = std::io::stdout().lock();
    for env in envelopes {
        if !env.event.is_actionable() {
            if json {
                reports.push(serde_json::json!({
                    "envelope_id": env.id, "event_type": env.source_event_type, "subject": env.subject.key,
                    "ignored": true, "steps": [], "notes": ["Gatehouse does not act on this event"],
                }));
            } else {
                writeln!(
                    out,
                    "{} {} ({}): ignored, no calls",
                    env.id, env.source_event_type, env.subject.key
                )?;
            }
            continue;
        }
        let r = engine.plan(env).await?;
        let withheld = engine
            .withheld(r.desired.email.as_deref(), Some(&r.plan), &r.cloud)
            .await;
        if json {
            let steps: Vec<_> = r
                .plan
                .steps
                .iter()
                .map(|s| {
                    let call = s.op.http(&r.plan.user);
                    serde_json::json!({
                        "rule": s.rule, "method": call.method, "path": format!("/api/4.0{}", call.path),
                        "body": call.body,
                    })
                })
                .collect();
            reports.push(serde_json::json!({
                "envelope_id": env.id, "event_type": env.source_event_type, "subject": env.subject.key,
                "email": r.desired.email, "stale": r.stale, "dry_run": engine.is_dry_run(),
                "steps": steps, "notes": r.plan.notes, "cloud": r.cloud, "withheld": withheld,
                "registered": r.registered,
            }));
        } else {
            writeln!(
                out,
                "{} {} for {} ({}){}:",
                env.id,
                env.source_event_type,
                r.desired.email.as_deref().unwrap_or("<no email>"),
                env.subject.key,
                if r.stale {
                    " [older than what is known: changes nothing]"
                } else {
                    ""
                }
            )?;
            write!(out, "{}", r.plan.render_text())?;
            write!(out, "{}", r.cloud.render_text())?;
            write!(out, "{}", render_withheld(&withheld))?;
            write!(out, "{}", render_registered(&r.registered))?;
        }
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&reports)?)?;
    }
    Ok(())
}

/// The registered targets' calls (Identity Center, ...): `  TARGET RULE: CALL`, and what the
/// safety rails would withhold.
fn render_registered(calls: &[gatehouse_targets::PlannedCall]) -> String {
    calls
        .iter()
        .map(|c| match &c.withheld {
            None => format!("  {} [{}]: {}\n", c.target, c.rule, c.call),
            Some(reason) => format!("  withheld (not sent): {} {} — {}\n", c.target, c.call, reason),
        })
        .collect()
}

/// The steps the safety rails withhold: `  withheld (not sent): CALL — REASON`.
fn render_withheld(withheld: &[gatehouse_targets::Withheld]) -> String {
    withheld
        .iter()
        .map(|w| format!("  withheld (not sent): {} {} — {}\n", w.target, w.call, w.reason))
        .collect()
}

/// `gatehouse plan --all`: the first reconcile's plan for everyone, changing nothing: what each
/// target's mode would do with it, and what the safety rails withhold.
async fn plan_all(cfg: &Config, json: bool) -> anyhow::Result<()> {
    use gatehouse_engine::reconcile::{self, LogProgress};
    let store = gatehouse_store::sqlite::Sqlite::open(&cfg.data_dir).await?;
    let store = app::open_state(cfg, &store).await?;
    let engine = app::engine_with_cloud(cfg, store.clone()).await?;
    let report = reconcile::run(&engine, &store, false, &LogProgress).await;
    app::count_looker_calls(cfg, &engine).await;
    let report = report?;
    let modes = cfg.reconcile.mode;
    let mut out = std::io::stdout().lock();
    let mut withheld = Vec::with_capacity(report.plans.len());
    for p in &report.plans {
        withheld.push(
            engine
                .withheld(p.email.as_deref(), p.looker.as_ref(), &p.cloud)
                .await,
        );
    }
    if json {
        let people: Vec<_> = report
            .plans
            .iter()
            .zip(&withheld)
            .map(|(p, w)| serde_json::json!({ "plan": p, "withheld": w }))
            .collect();
        let v = serde_json::json!({
            "people": report.people, "reads": report.reads, "modes": {
                "looker": format!("{:?}", modes.looker).to_lowercase(),
                "aws": format!("{:?}", modes.aws).to_lowercase(),
                "gcp": format!("{:?}", modes.gcp).to_lowercase(),
            },
            "dry_run": engine.is_dry_run(), "plans": people,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let text = reconcile::render_text(&report);
    // The per-person blocks of the reconcile report, each followed by what is withheld.
    let mut lines = text.lines();
    if let Some(head) = lines.next() {
        writeln!(out, "{head}")?;
    }
    writeln!(
        out,
        "modes: looker {:?}, aws {:?}, gcp {:?} (report: ledgered as drift_reported, never written)",
        modes.looker, modes.aws, modes.gcp
    )?;
    for (p, w) in report.plans.iter().zip(&withheld) {
        writeln!(
            out,
            "{} ({}):",
            p.email.as_deref().unwrap_or("<no email>"),
            p.subject
        )?;
        if let Some(l) = &p.looker
            && !l.is_empty()
        {
            write!(out, "{}", l.render_text())?;
        }
        write!(out, "{}", p.cloud.render_text())?;
        write!(out, "{}", render_withheld(w))?;
    }
    let n: usize = withheld.iter().map(Vec::len).sum();
    writeln!(
        out,
        "plan only: nothing changed; {} steps for {} people, {n} withheld by the safety rails",
        report.plans.iter().map(|p| p.calls()).sum::<usize>(),
        report.plans.len()
    )?;
    Ok(())
}

/// A progress bar on a terminal.
struct Bar(indicatif::ProgressBar);

impl gatehouse_engine::reconcile::Progress for Bar {
    fn phase(&self, name: &str, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(0);
        self.0.set_message(name.to_string());
    }
    fn advance(&self, n: usize) {
        self.0.inc(n as u64);
    }
}

async fn reconcile(cfg: &Config, apply: bool, json: bool, estimate: bool) -> anyhow::Result<()> {
    use gatehouse_domain::ports::Directory;
    use gatehouse_engine::reconcile::{self, LogProgress, Progress};
    use gatehouse_engine::reconcile_budget as rb;
    use std::io::IsTerminal;
    let store = gatehouse_store::sqlite::Sqlite::open(&cfg.data_dir).await?;
    let store = app::open_state(cfg, &store).await?;
    let engine = app::engine_with_cloud(cfg, store.clone()).await?;
    let identities: Vec<_> = store.subjects().await?.into_iter().map(|s| s.identity).collect();
    let budget = rb::check(
        &engine,
        &store,
        &identities,
        &cfg.reconcile,
        cfg.looker.budget.monthly_call_quota,
    )
    .await?;
    if estimate {
        let opts = rb::read_options(&cfg.reconcile, 0);
        let e = rb::estimate(
            engine.policy(),
            &identities,
            engine.looker().is_some(),
            &rb::shape_of(&engine),
            &opts,
            gatehouse_domain::clock::now(),
        );
        let mut out = std::io::stdout().lock();
        if json {
            let v = serde_json::json!({ "people": identities.len(), "calls": e, "budget": budget });
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        } else {
            write!(
                out,
                "{}",
                rb::render_estimate(identities.len(), &e, &opts, budget.as_ref())
            )?;
        }
        return Ok(());
    }
    if let Some(b) = budget.filter(|b| !b.covers()) {
        // A scheduled reconcile would be skipped; one asked for by hand runs, and says so.
        eprintln!(
            "{} (the scheduled reconcile skips; this one runs because it was asked for)",
            b.render()
        );
    }
    // The next slice of the rolling attribute audit, as a scheduled run would read.
    let run = rb::read_options(
        &cfg.reconcile,
        gatehouse_domain::schedule::ReconcileSchedule::next_audit_run(&store).await?,
    );
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:12} {bar:40} {pos}/{len} {elapsed}")
        {
            b.set_style(style);
        }
        Bar(b)
    });
    let progress: &dyn Progress = match &bar {
        Some(b) => b,
        None => &LogProgress,
    };
    let report = reconcile::run_full(
        &engine,
        &store,
        apply,
        &run,
        cfg.reconcile.orphan_mode()?,
        progress,
    )
    .await;
    app::count_looker_calls(cfg, &engine).await;
    let report = report?;
    reconcile::record(&store, &report, cfg.reconcile.snapshot_retention()).await?;
    if let Some(b) = &bar {
        b.0.finish_and_clear();
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", reconcile::render_text(&report))?;
    }
    Ok(())
}
