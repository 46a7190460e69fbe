//! `gatehouse report deprovisioning`: the deprovisioning SLA (issue 15) from the state store
//! alone — the offboarding times kept per envelope and the ledger's revoking calls. Never calls
//! a target. The numbers come from `gatehouse_domain::deprovisioning`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use gatehouse_app::AppError;
use gatehouse_domain::deprovisioning::{self, Report};
use gatehouse_domain::ports::{OffboardingLog, StateStore};
use gatehouse_platform::config::{Config, ConfigError};
use std::io::Write;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: summary, per-target percentiles, offboardings, breaches.
    Text,
    /// The whole report as one JSON document.
    Json,
    /// One row per offboarding and target (RFC 4180).
    Csv,
}

/// `--sla 15m`, `--sla 1h30m`: a humantime duration.
pub fn parse_sla(s: &str) -> Result<Duration, String> {
    let d = humantime_serde::re::humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

pub async fn deprovisioning(
    cfg: &Config,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    sla: Duration,
    format: Format,
) -> anyhow::Result<()> {
    let until = until.unwrap_or_else(gatehouse_domain::clock::now);
    if since >= until {
        return Err(AppError::Config(ConfigError::new("--since", "must be before --until")).into());
    }
    let sla = chrono::TimeDelta::from_std(sla).context("the sla is too long")?;
    let store = crate::ops::state(cfg).await?;
    let report = async {
        let offboardings = store.offboardings(since, until).await?;
        // Every revoking call of these offboardings comes after their receipt (and their event,
        // within the allowed clock skew): the ledger from the earliest of those on holds them.
        let from = offboardings
            .iter()
            .map(|o| o.occurred_at.min(o.received_at))
            .min();
        let ledger = match from {
            Some(from) => store.ledger_since(Some(from)).await?,
            None => Vec::new(),
        };
        anyhow::Ok(deprovisioning::report(&offboardings, &ledger, since, until, sla))
    }
    .await;
    store.close().await;
    let report = report?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Csv => write_csv(&mut out, &report)?,
        Format::Text => write_text(&mut out, &report)?,
    }
    out.flush()?;
    Ok(())
}

/// `1m 30s`, `250ms`, `-2s` (a revocation stamped before the event's claimed time).
fn dur(ms: i64) -> String {
    let d = humantime_serde::re::humantime::format_duration(Duration::from_millis(ms.unsigned_abs()));
    if ms < 0 { format!("-{d}") } else { d.to_string() }
}

fn t(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn write_text(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "Deprovisioning SLA {} .. {} (SLA {})",
        t(r.since),
        t(r.until),
        dur(r.sla_ms)
    )?;
    writeln!(out, "offboardings: {}", r.offboardings.len())?;
    if let Some(s) = r.receive {
        writeln!(
            out,
            "event → receive: p50 {}, p95 {}, max {}",
            dur(s.p50_ms),
            dur(s.p95_ms),
            dur(s.max_ms)
        )?;
    }
    writeln!(out, "\nevent → last revoking call, per target:")?;
    writeln!(
        out,
        "  {:<10} {:>5} {:>14} {:>14} {:>14} {:>8}",
        "target", "n", "p50", "p95", "max", "breaches"
    )?;
    for s in &r.targets {
        writeln!(
            out,
            "  {:<10} {:>5} {:>14} {:>14} {:>14} {:>8}",
            s.target,
            s.offboardings,
            dur(s.p50_ms),
            dur(s.p95_ms),
            dur(s.max_ms),
            s.breaches
        )?;
    }
    writeln!(out, "\noffboardings:")?;
    for o in &r.offboardings {
        let ti = &o.times;
        writeln!(
            out,
            "  {} {} {} ({} {}, {})",
            t(ti.occurred_at),
            ti.person,
            ti.email.as_deref().unwrap_or("-"),
            ti.source,
            ti.event,
            ti.envelope_id
        )?;
        writeln!(
            out,
            "    received +{}, finished +{}",
            dur(o.event_to_receive_ms),
            dur((ti.finished_at - ti.occurred_at).num_milliseconds())
        )?;
        if o.revokes.is_empty() {
            writeln!(out, "    no revoking call (nothing to revoke)")?;
        }
        for v in &o.revokes {
            writeln!(
                out,
                "    {:<8} +{:<14} seq {:<6} {} {}{}",
                v.target,
                dur(v.event_to_revoke_ms),
                v.seq,
                &v.hash,
                v.call,
                if v.breach { "  BREACH" } else { "" }
            )?;
        }
    }
    writeln!(
        out,
        "\nbreaches ({}; check the rows with `gatehouse audit verify` and `gatehouse audit export`):",
        r.breaches.len()
    )?;
    for b in &r.breaches {
        writeln!(
            out,
            "  seq {} hash {} {} {} ({}) event → revoke {} > {} [{}]",
            b.seq,
            b.hash,
            b.target,
            b.person,
            b.email.as_deref().unwrap_or("-"),
            dur(b.event_to_revoke_ms),
            dur(r.sla_ms),
            b.envelope_id
        )?;
    }
    Ok(())
}

/// One CSV field (RFC 4180: quoted when it holds a comma, a quote or a line break).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const CSV_HEADER: &str = "envelope_id,person,email,source,event,event_time,receive_time,finish_time,\
event_to_receive_ms,target,last_revoke_seq,last_revoke_time,last_revoke_hash,last_revoke_call,\
event_to_revoke_ms,breach";

fn write_csv(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(out, "{CSV_HEADER}")?;
    for o in &r.offboardings {
        let ti = &o.times;
        let head = [
            ti.envelope_id.clone(),
            ti.person.clone(),
            ti.email.clone().unwrap_or_default(),
            ti.source.clone(),
            ti.event.clone(),
            t(ti.occurred_at),
            t(ti.received_at),
            t(ti.finished_at),
            o.event_to_receive_ms.to_string(),
        ];
        let tails: Vec<[String; 7]> = if o.revokes.is_empty() {
            vec![Default::default()]
        } else {
            o.revokes
                .iter()
                .map(|v| {
                    [
                        v.target.clone(),
                        v.seq.to_string(),
                        t(v.at),
                        v.hash.clone(),
                        v.call.clone(),
                        v.event_to_revoke_ms.to_string(),
                        v.breach.to_string(),
                    ]
                })
                .collect()
        };
        for tail in tails {
            let line: Vec<String> = head.iter().chain(tail.iter()).map(|s| field(s)).collect();
            writeln!(out, "{}", line.join(","))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn the_sla_is_a_positive_duration() {
        assert_eq!(parse_sla("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_sla("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_sla("0s").is_err());
        assert!(parse_sla("soon").is_err());
    }
}
