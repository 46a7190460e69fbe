//! The deprovisioning SLA (issue 15): how long each offboarding took from the IdP's event to
//! the last revoking call in every target, from the kept offboarding times and the ledger alone.
//! Pure: `gatehouse report deprovisioning` reads the state store and renders this.
//!
//! - A **revoking call** of an offboarding is a ledger row of its envelope that was made and
//!   succeeded (`ok`, a 2xx status, or `404 already gone`) in a target (rows of the operator's
//!   decision, target `gatehouse`, are not calls). Failed attempts, dry-run, report-mode and
//!   withheld rows are not revocations.
//! - Per target, the offboarding's **last** revoking call (highest `seq`) ends it there.
//! - Percentiles are nearest-rank (p50 of 1, 2, 3, 4 is 2; p95 of 20 values is the 19th).
//! - A **breach** is a target whose last revoking call came more than the SLA after the event.

use crate::ports::{LedgerRow, OffboardingTimes};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Ledger target of rows that record a decision, not a call (`gatehouse offboard`, the breaker).
pub const DECISION_TARGET: &str = "gatehouse";

/// Whether a ledger status says the call was made and its revocation holds.
pub fn is_revoked(status: &str) -> bool {
    status == "ok"
        || status.starts_with("404 already gone")
        || status.parse::<u16>().is_ok_and(|s| (200..300).contains(&s))
}

/// One target's last revoking call of one offboarding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastRevoke {
    pub target: String,
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub hash: String,
    pub rule: String,
    /// `METHOD path` of the call.
    pub call: String,
    /// From the IdP's event to this call, in milliseconds.
    pub event_to_revoke_ms: i64,
    pub breach: bool,
}

/// One offboarding with its durations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offboarding {
    #[serde(flatten)]
    pub times: OffboardingTimes,
    /// From the IdP's event to the intake accepting it, in milliseconds.
    pub event_to_receive_ms: i64,
    /// One per target that was called, by target name.
    pub revokes: Vec<LastRevoke>,
}

/// Event → last revoke, per target, over the offboardings of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStats {
    pub target: String,
    pub offboardings: usize,
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub max_ms: i64,
    pub breaches: usize,
}

/// A revocation that came later than the SLA: its ledger row, to check with `gatehouse audit verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub envelope_id: String,
    pub person: String,
    pub email: Option<String>,
    pub target: String,
    pub seq: i64,
    pub hash: String,
    pub at: DateTime<Utc>,
    pub event_to_revoke_ms: i64,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub sla_ms: i64,
    pub offboardings: Vec<Offboarding>,
    /// Event → receive over every offboarding (the intake's share), like a target's stats.
    pub receive: Option<Stats>,
    pub targets: Vec<TargetStats>,
    pub breaches: Vec<Breach>,
}

/// p50, p95 and max of some durations (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub count: usize,
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub max_ms: i64,
}

/// Nearest-rank percentile `p` (0 < p ≤ 100) of ascending `sorted` (not empty).
fn nearest_rank(sorted: &[i64], p: u32) -> i64 {
    let n = sorted.len();
    let rank = (n * p as usize).div_ceil(100).max(1);
    sorted[rank.min(n) - 1]
}

/// p50/p95/max of `values`; `None` when there are none.
pub fn stats(values: &[i64]) -> Option<Stats> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let max = *v.last()?;
    Some(Stats {
        count: v.len(),
        p50_ms: nearest_rank(&v, 50),
        p95_ms: nearest_rank(&v, 95),
        max_ms: max,
    })
}

fn ms(d: TimeDelta) -> i64 {
    d.num_milliseconds()
}

/// Build the report from the offboardings of `[since, until)` and ledger rows that include
/// every row of their envelopes (rows of other envelopes are ignored).
pub fn report(
    offboardings: &[OffboardingTimes],
    ledger: &[LedgerRow],
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    sla: TimeDelta,
) -> Report {
    // envelope id → target → last revoking row
    let mut last: BTreeMap<&str, BTreeMap<&str, &LedgerRow>> = BTreeMap::new();
    for row in ledger {
        let e = &row.entry;
        if e.target == DECISION_TARGET || !is_revoked(&e.status) {
            continue;
        }
        let slot = last
            .entry(e.envelope_id.as_str())
            .or_default()
            .entry(e.target.as_str())
            .or_insert(row);
        if row.seq > slot.seq {
            *slot = row;
        }
    }
    let sla_ms = ms(sla);
    let mut rows = Vec::new();
    let mut per_target: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut breaches = Vec::new();
    for t in offboardings
        .iter()
        .filter(|t| t.occurred_at >= since && t.occurred_at < until)
    {
        let revokes: Vec<LastRevoke> = last
            .get(t.envelope_id.as_str())
            .into_iter()
            .flatten()
            .map(|(target, row)| {
                let took = ms(row.entry.at - t.occurred_at);
                LastRevoke {
                    target: target.to_string(),
                    seq: row.seq,
                    at: row.entry.at,
                    hash: row.hash.clone(),
                    rule: row.entry.rule.clone(),
                    call: format!("{} {}", row.entry.call.method, row.entry.call.path),
                    event_to_revoke_ms: took,
                    breach: took > sla_ms,
                }
            })
            .collect();
        for r in &revokes {
            per_target
                .entry(r.target.clone())
                .or_default()
                .push(r.event_to_revoke_ms);
            if r.breach {
                breaches.push(Breach {
                    envelope_id: t.envelope_id.clone(),
                    person: t.person.clone(),
                    email: t.email.clone(),
                    target: r.target.clone(),
                    seq: r.seq,
                    hash: r.hash.clone(),
                    at: r.at,
                    event_to_revoke_ms: r.event_to_revoke_ms,
                });
            }
        }
        rows.push(Offboarding {
            times: t.clone(),
            event_to_receive_ms: ms(t.received_at - t.occurred_at),
            revokes,
        });
    }
    rows.sort_by(|a, b| {
        (a.times.occurred_at, &a.times.envelope_id).cmp(&(b.times.occurred_at, &b.times.envelope_id))
    });
    breaches.sort_by_key(|b| b.seq);
    let receive: Vec<i64> = rows.iter().map(|r| r.event_to_receive_ms).collect();
    let targets = per_target
        .into_iter()
        .filter_map(|(target, v)| {
            let s = stats(&v)?;
            Some(TargetStats {
                breaches: v.iter().filter(|d| **d > sla_ms).count(),
                target,
                offboardings: s.count,
                p50_ms: s.p50_ms,
                p95_ms: s.p95_ms,
                max_ms: s.max_ms,
            })
        })
        .collect();
    Report {
        since,
        until,
        sla_ms,
        offboardings: rows,
        receive: stats(&receive),
        targets,
        breaches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = stats(&[4, 1, 3, 2]).unwrap();
        assert_eq!((s.count, s.p50_ms, s.p95_ms, s.max_ms), (4, 2, 4, 4));
        let twenty: Vec<i64> = (1..=20).collect();
        let s = stats(&twenty).unwrap();
        assert_eq!((s.p50_ms, s.p95_ms, s.max_ms), (10, 19, 20));
        let s = stats(&[7]).unwrap();
        assert_eq!((s.p50_ms, s.p95_ms, s.max_ms), (7, 7, 7));
        assert_eq!(stats(&[]), None);
    }

    #[test]
    fn revoked_statuses() {
        for done in ["ok", "200", "204", "404 already gone"] {
            assert!(is_revoked(done), "{done}");
        }
        for not in [
            "dry_run",
            "drift_reported",
            "withheld: own user",
            "429",
            "500",
            "error: Throttled",
            "ok: by ann",
        ] {
            assert!(!is_revoked(not), "{not}");
        }
    }
}
