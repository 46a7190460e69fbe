//! Operations subcommands: `audit export|verify` on the configured state store, and
//! `dlq list|show|redrive` on the configured queue backend's dead letters.

use anyhow::{Context, bail};
use gatehouse_app::AppError;
use gatehouse_domain::ledger_chain;
use gatehouse_domain::ports::StateStore;
use gatehouse_platform::config::{Config, ConfigError, QueueConfig, StateConfig};
use gatehouse_store::dlq::{DeadMessage, Redrive};
#[cfg(feature = "postgres")]
use gatehouse_store::postgres::Postgres;
#[cfg(feature = "pubsub")]
use gatehouse_store::pubsub::PubsubDeadLetters;
use gatehouse_store::sqlite::Sqlite;
#[cfg(feature = "sqs")]
use gatehouse_store::sqs::{SqsDeadLetters, SqsQueue};
use gatehouse_store::state::AnyState;
use std::io::Write;

/// The configured state store, without opening SQLite when the state is in PostgreSQL.
pub(crate) async fn state(cfg: &Config) -> anyhow::Result<AnyState> {
    Ok(match &cfg.state {
        StateConfig::Sqlite => AnyState::Sqlite(Sqlite::open(&cfg.data_dir).await?),
        #[cfg(feature = "postgres")]
        StateConfig::Postgres(p) => {
            let url = p.url.as_ref().ok_or_else(|| {
                AppError::Config(ConfigError::new(
                    "state.url (GATEHOUSE_DATABASE_URL)",
                    "is required",
                ))
            })?;
            AnyState::Postgres(Postgres::connect(url, p.max_connections.min(2)).await?)
        }
        #[cfg(not(feature = "postgres"))]
        StateConfig::Postgres(_) => {
            return Err(AppError::Config(gatehouse_store::backends::POSTGRES.missing()).into());
        }
    })
}

/// `gatehouse audit export [--since]`: the ledger as JSON lines, hashes included.
pub async fn audit_export(cfg: &Config, since: Option<chrono::DateTime<chrono::Utc>>) -> anyhow::Result<()> {
    let store = state(cfg).await?;
    let rows = store.ledger_since(since).await?;
    let mut out = std::io::stdout().lock();
    for row in rows {
        writeln!(out, "{}", serde_json::to_string(&row)?)?;
    }
    store.close().await;
    Ok(())
}

/// `gatehouse audit verify`: walk the hash chain; fail naming the first bad row.
pub async fn audit_verify(cfg: &Config) -> anyhow::Result<()> {
    let store = state(cfg).await?;
    let result = ledger_chain::verify_store(&store).await?;
    store.close().await;
    match result {
        Ok(ok) => {
            writeln!(std::io::stdout().lock(), "{ok}")?;
            Ok(())
        }
        Err(broken) => bail!("ledger verification failed: {broken}"),
    }
}

/// The dead letters of the configured queue backend.
enum DeadLetters {
    Embedded(Sqlite),
    #[cfg(feature = "sqs")]
    Sqs(SqsDeadLetters),
    #[cfg(feature = "pubsub")]
    Pubsub(PubsubDeadLetters),
}

impl DeadLetters {
    async fn open(cfg: &Config) -> anyhow::Result<Self> {
        Ok(match &cfg.queue {
            QueueConfig::Embedded => DeadLetters::Embedded(Sqlite::open(&cfg.data_dir).await?),
            #[cfg(feature = "sqs")]
            QueueConfig::Sqs(s) => {
                let queue = SqsQueue::connect(&s.queue_url, s.wait_time).await?;
                DeadLetters::Sqs(SqsDeadLetters::new(queue, s.dead_letter_queue_url.clone()).await?)
            }
            #[cfg(not(feature = "sqs"))]
            QueueConfig::Sqs(_) => {
                return Err(AppError::Config(gatehouse_store::backends::SQS.missing()).into());
            }
            #[cfg(feature = "pubsub")]
            QueueConfig::Pubsub(p) => {
                let sub = p.dead_letter_subscription.as_deref().ok_or_else(|| {
                    AppError::Config(ConfigError::new(
                        "queue.dead_letter_subscription",
                        "is required for `gatehouse dlq` on pubsub: a subscription on the dead-letter topic",
                    ))
                })?;
                DeadLetters::Pubsub(
                    PubsubDeadLetters::connect(&p.topic, sub, p.emulator_host.as_deref()).await?,
                )
            }
            #[cfg(not(feature = "pubsub"))]
            QueueConfig::Pubsub(_) => {
                return Err(AppError::Config(gatehouse_store::backends::PUBSUB.missing()).into());
            }
        })
    }

    async fn list(&self) -> anyhow::Result<Vec<DeadMessage>> {
        Ok(match self {
            DeadLetters::Embedded(s) => s.dlq_list().await?,
            #[cfg(feature = "sqs")]
            DeadLetters::Sqs(s) => s.list().await?,
            #[cfg(feature = "pubsub")]
            DeadLetters::Pubsub(p) => p.list().await?,
        })
    }

    async fn redrive(&self, which: &Redrive) -> anyhow::Result<usize> {
        Ok(match self {
            DeadLetters::Embedded(s) => s.dlq_redrive(which).await?,
            #[cfg(feature = "sqs")]
            DeadLetters::Sqs(s) => s.redrive(which).await?,
            #[cfg(feature = "pubsub")]
            DeadLetters::Pubsub(p) => p.redrive(which).await?,
        })
    }

    async fn close(self) {
        match self {
            DeadLetters::Embedded(s) => s.close().await,
            #[cfg(feature = "sqs")]
            DeadLetters::Sqs(_) => {}
            #[cfg(feature = "pubsub")]
            DeadLetters::Pubsub(p) => p.shutdown().await,
        }
    }
}

/// What `gatehouse dlq` was asked to do.
pub enum DlqAction {
    List,
    Show(String),
    Redrive(Redrive),
}

/// `gatehouse dlq list|show ID|redrive ID|--all`.
pub async fn dlq(cfg: &Config, action: DlqAction) -> anyhow::Result<()> {
    let dl = DeadLetters::open(cfg).await?;
    let result = run_dlq(&dl, action).await;
    dl.close().await;
    result
}

async fn run_dlq(dl: &DeadLetters, action: DlqAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        DlqAction::List => {
            for m in dl.list().await? {
                writeln!(
                    out,
                    "{}\t{}\tattempts={}\t{}",
                    m.id,
                    m.at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into()),
                    m.attempts.map(|a| a.to_string()).unwrap_or_else(|| "?".into()),
                    m.reason
                        .as_deref()
                        .unwrap_or("(moved by the queue after its maximum deliveries)")
                )?;
            }
        }
        DlqAction::Show(id) => {
            let m = dl
                .list()
                .await?
                .into_iter()
                .find(|m| m.id == id)
                .with_context(|| format!("no dead letter with id {id}"))?;
            writeln!(out, "{}", serde_json::to_string_pretty(&m)?)?;
        }
        DlqAction::Redrive(which) => {
            let n = dl.redrive(&which).await?;
            if let (Redrive::One(id), 0) = (&which, n) {
                bail!("no dead letter with id {id}");
            }
            writeln!(out, "redriven {n}")?;
        }
    }
    Ok(())
}

/// What `gatehouse safety` does.
pub enum SafetyAction {
    Status { json: bool },
    Release(Option<String>),
    Discard(Option<String>),
}

/// The operator: `--actor`, else the OS user; refused when neither names anyone.
fn actor(explicit: Option<&str>) -> anyhow::Result<String> {
    gatehouse_engine::breaker::actor(explicit, |k| std::env::var(k).ok()).ok_or_else(|| {
        AppError::Config(ConfigError::new(
            "--actor",
            "is required: no OS user (USER, LOGNAME) names who runs this",
        ))
        .into()
    })
}

/// `gatehouse safety status|release|discard`.
pub async fn safety(cfg: &Config, action: SafetyAction, actor_flag: Option<&str>) -> anyhow::Result<()> {
    use gatehouse_engine::breaker as safety;
    let mut out = std::io::stdout().lock();
    match action {
        SafetyAction::Status { json } => {
            let store = state(cfg).await?;
            let s = safety::status(&store).await;
            store.close().await;
            let s = s?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
                return Ok(());
            }
            if cfg.safety.breaker.is_none() {
                writeln!(out, "breaker: not configured ([safety.breaker])")?;
            }
            if s.trips.is_empty() {
                writeln!(out, "trips: none")?;
            }
            for t in &s.trips {
                writeln!(
                    out,
                    "tripped {} {} (source {}): {} in the window, limit {}",
                    t.at.to_rfc3339(),
                    t.kind.as_str(),
                    t.scope,
                    t.count,
                    t.limit
                )?;
            }
            writeln!(out, "held: {}", s.held.len())?;
            for h in &s.held {
                writeln!(
                    out,
                    "  #{} {} {} {} {} {}",
                    h.seq,
                    h.held_at.to_rfc3339(),
                    h.kind.as_str(),
                    h.source,
                    h.subject,
                    h.envelope_id
                )?;
            }
            Ok(())
        }
        SafetyAction::Release(source) => {
            let who = actor(actor_flag)?;
            let store = gatehouse_store::sqlite::Sqlite::open(&cfg.data_dir).await?;
            let engine =
                gatehouse_app::engine_with_cloud(cfg, gatehouse_app::open_state(cfg, &store).await?).await?;
            let r = gatehouse_engine::operator::release(&engine, source.as_deref(), &who).await;
            gatehouse_app::count_looker_calls(cfg, &engine).await;
            let r = r?;
            writeln!(
                out,
                "released by {who}: {} trip(s) closed, {} held change(s) applied",
                r.trips_closed, r.changes
            )?;
            Ok(())
        }
        SafetyAction::Discard(source) => {
            let who = actor(actor_flag)?;
            let store = state(cfg).await?;
            let r = gatehouse_engine::operator::discard(&store, source.as_deref(), &who).await;
            store.close().await;
            let r = r?;
            writeln!(
                out,
                "discarded by {who}: {} trip(s) closed, {} held change(s) dropped",
                r.trips_closed, r.changes
            )?;
            Ok(())
        }
    }
}

/// `gatehouse offboard EMAIL [--reason] [--actor]`.
pub async fn offboard(
    cfg: &Config,
    email: &str,
    reason: Option<&str>,
    actor_flag: Option<&str>,
) -> anyhow::Result<()> {
    if !email.contains('@') || email.trim().len() < 3 {
        return Err(AppError::Config(ConfigError::new(
            "EMAIL",
            format!("{email:?} is not an email address"),
        ))
        .into());
    }
    let who = actor(actor_flag)?;
    let store = gatehouse_store::sqlite::Sqlite::open(&cfg.data_dir).await?;
    let engine = gatehouse_app::engine_with_cloud(cfg, gatehouse_app::open_state(cfg, &store).await?)
        .await?
        .with_full_offboarding();
    let r = gatehouse_engine::operator::offboard(&engine, email, reason.unwrap_or(""), &who).await;
    gatehouse_app::count_looker_calls(cfg, &engine).await;
    let r = r?;
    writeln!(
        std::io::stdout().lock(),
        "offboarded {} ({}) by {who}: {:?}",
        email.trim().to_lowercase(),
        r.subject,
        r.handled
    )?;
    Ok(())
}
