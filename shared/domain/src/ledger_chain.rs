//! The hash chain over the ledger: every row stores the hash of the row before it (`prev_hash`)
//! and its own `hash` = SHA-256 over a canonical encoding of its contents and `prev_hash`. A
//! one-row chain head (the last row's seq and hash) is updated in the same transaction as every
//! append, so removing rows at the end is seen as well. Pure: the stores compute and verify with
//! these functions.

use crate::ports::{BackendError, LedgerEntry, LedgerRow, StateStore};
use chrono::SecondsFormat;
use sha2::{Digest, Sha256};
use std::fmt;

/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub use crate::ports::ChainHead;

/// The canonical encoding hashed for one row: a JSON array of the row's fields in a fixed order
/// (time as RFC 3339 with milliseconds and `Z`, the call as its JSON), then `prev_hash`.
///
/// Versioned: a row with a policy digest or an actor is encoded as `gatehouse-ledger-v2`, which
/// adds both (so changing either breaks the chain); a row with neither (written before they were
/// recorded) keeps its `gatehouse-ledger-v1` encoding and still verifies. Removing both from a
/// v2 row changes its encoding, so that is seen too.
pub fn canonical(seq: i64, entry: &LedgerEntry, prev_hash: &str) -> String {
    let call = serde_json::to_value(&entry.call).unwrap_or(serde_json::Value::Null);
    let at = entry.at.to_rfc3339_opts(SecondsFormat::Millis, true);
    if entry.policy_digest.is_none() && entry.actor.is_none() {
        return serde_json::json!([
            "gatehouse-ledger-v1",
            seq,
            at,
            entry.envelope_id,
            entry.subject,
            entry.event,
            entry.rule,
            call,
            entry.status,
            entry.target,
            prev_hash,
        ])
        .to_string();
    }
    serde_json::json!([
        "gatehouse-ledger-v2",
        seq,
        at,
        entry.envelope_id,
        entry.subject,
        entry.event,
        entry.rule,
        call,
        entry.status,
        entry.target,
        entry.policy_digest,
        entry.actor,
        prev_hash,
    ])
    .to_string()
}

/// SHA-256 (lower-case hex) of the row's canonical encoding.
pub fn row_hash(seq: i64, entry: &LedgerEntry, prev_hash: &str) -> String {
    Sha256::digest(canonical(seq, entry, prev_hash).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `verify` found wrong, naming the first bad row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// The row's contents (or its seq) no longer match its hash.
    #[error("ledger row {seq} was altered: its hash does not match its contents")]
    Altered { seq: i64 },
    /// The row names a predecessor that is not the row before it, and no row has that hash.
    #[error("the ledger row before row {seq} was removed or replaced: its previous hash matches no row")]
    Removed { seq: i64 },
    /// The row's predecessor exists but elsewhere: rows were moved.
    #[error("ledger row {seq} is out of order: its previous row is row {found_after}")]
    Reordered { seq: i64, found_after: i64 },
    /// The chain head names a later row than the last one present.
    #[error("ledger rows after row {last_seq} were removed: the chain head names row {head_seq}")]
    Truncated { last_seq: i64, head_seq: i64 },
    /// The chain head does not match the last row (head forged or rows appended around it).
    #[error("the ledger chain head does not match row {seq}")]
    HeadMismatch { seq: i64 },
}

impl ChainBreak {
    /// The first bad row's seq.
    pub fn seq(&self) -> i64 {
        match self {
            ChainBreak::Altered { seq }
            | ChainBreak::Removed { seq }
            | ChainBreak::Reordered { seq, .. }
            | ChainBreak::HeadMismatch { seq } => *seq,
            ChainBreak::Truncated { last_seq, .. } => last_seq + 1,
        }
    }
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub rows: usize,
    /// The last row (`None` for an empty ledger): record its hash elsewhere to anchor the chain.
    pub head: Option<ChainHead>,
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.head {
            None => write!(f, "ledger ok: empty"),
            Some(h) => write!(
                f,
                "ledger ok: {} rows, head seq {} hash {}",
                self.rows, h.seq, h.hash
            ),
        }
    }
}

/// Check every row of the ledger, in seq order, against its hash and its predecessor, and the last
/// one against the chain head.
pub fn verify(rows: &[LedgerRow], head: Option<&ChainHead>) -> Result<Verified, ChainBreak> {
    let mut prev = GENESIS.to_string();
    for (i, row) in rows.iter().enumerate() {
        if row.hash != row_hash(row.seq, &row.entry, &row.prev_hash) {
            return Err(ChainBreak::Altered { seq: row.seq });
        }
        if row.prev_hash != prev {
            return Err(match rows.iter().position(|r| r.hash == row.prev_hash) {
                Some(j) if j != i => ChainBreak::Reordered {
                    seq: row.seq,
                    found_after: rows[j].seq,
                },
                _ => ChainBreak::Removed { seq: row.seq },
            });
        }
        prev = row.hash.clone();
    }
    let last = rows.last().map(|r| ChainHead {
        seq: r.seq,
        hash: r.hash.clone(),
    });
    match (head, &last) {
        (None, None) => {}
        (Some(h), None) => {
            return Err(ChainBreak::Truncated {
                last_seq: 0,
                head_seq: h.seq,
            });
        }
        (None, Some(l)) => return Err(ChainBreak::HeadMismatch { seq: l.seq }),
        (Some(h), Some(l)) => {
            if h.seq > l.seq {
                return Err(ChainBreak::Truncated {
                    last_seq: l.seq,
                    head_seq: h.seq,
                });
            }
            if h != l {
                return Err(ChainBreak::HeadMismatch { seq: l.seq });
            }
        }
    }
    Ok(Verified {
        rows: rows.len(),
        head: last,
    })
}

/// What `verify --against` found wrong: the ledger no longer holds an exported chain head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnchorBreak {
    /// No row has the exported head's seq (rows removed, or the ledger rebuilt shorter).
    #[error("the exported head names ledger row {seq}, which the ledger no longer holds")]
    Missing { seq: i64 },
    /// The row is there but its hash differs: history up to it was rewritten.
    #[error(
        "ledger row {seq} has hash {found}, but the exported head recorded {exported}: the ledger was rewritten"
    )]
    HashMismatch {
        seq: i64,
        exported: String,
        found: String,
    },
    /// The chain from the exported head on is broken.
    #[error(transparent)]
    Chain(#[from] ChainBreak),
}

/// Check `rows` against a chain head exported earlier: the row with the head's seq must still
/// have the head's hash, and the chain from there to the last row (and the store's `head`)
/// must be intact. A ledger rewritten wholesale (a row altered and every hash after it
/// recomputed) passes [`verify`] but fails this.
pub fn verify_against(
    rows: &[LedgerRow],
    head: Option<&ChainHead>,
    exported: &ChainHead,
) -> Result<Verified, AnchorBreak> {
    let ok = verify(rows, head)?;
    let row = rows
        .iter()
        .find(|r| r.seq == exported.seq)
        .ok_or(AnchorBreak::Missing { seq: exported.seq })?;
    if row.hash != exported.hash {
        return Err(AnchorBreak::HashMismatch {
            seq: row.seq,
            exported: exported.hash.clone(),
            found: row.hash.clone(),
        });
    }
    Ok(ok)
}

/// Read a store's whole ledger and chain head and verify them. The outer error is the store
/// failing; the inner one is the chain being broken.
///
/// Rows are read before the head (the head moves in the same transaction as each append), so a
/// row present without the head naming it or a later one is a forgery. A head ahead of the rows
/// read may be an append that committed in between: the rows are read again, a few times, before
/// that counts as rows removed.
pub async fn verify_store<S: StateStore>(store: &S) -> Result<Result<Verified, ChainBreak>, BackendError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let rows = store.ledger_since(None).await?;
        let head = store.ledger_head().await?;
        let last = rows.last().map(|r| r.seq).unwrap_or(0);
        let head_ahead = head.as_ref().is_some_and(|h| h.seq > last);
        if !head_ahead || tries >= 3 {
            return Ok(verify(&rows, head.as_ref()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::looker::{HttpCall, Method};
    use chrono::DateTime;

    fn entry(n: i64) -> LedgerEntry {
        LedgerEntry {
            at: DateTime::from_timestamp_millis(1_700_000_000_000 + n).unwrap(),
            envelope_id: format!("e{n}"),
            subject: "okta:1".into(),
            event: "user_deactivated".into(),
            rule: "offboarding.disable".into(),
            call: HttpCall {
                method: Method::Patch,
                path: "/users/7".into(),
                body: Some(serde_json::json!({"is_disabled": true})),
            },
            status: "ok".into(),
            target: "looker".into(),
            policy_digest: Some("ab".repeat(32)),
            actor: Some("event:okta:e1".into()),
        }
    }

    fn chain(n: i64) -> (Vec<LedgerRow>, ChainHead) {
        let mut prev = GENESIS.to_string();
        let mut rows = Vec::new();
        for seq in 1..=n {
            let e = entry(seq);
            let hash = row_hash(seq, &e, &prev);
            rows.push(LedgerRow {
                seq,
                entry: e,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            });
            prev = hash;
        }
        let head = ChainHead { seq: n, hash: prev };
        (rows, head)
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let (rows, head) = chain(5);
        let ok = verify(&rows, Some(&head)).unwrap();
        assert_eq!(ok.rows, 5);
        assert_eq!(ok.head, Some(head));
        assert_eq!(verify(&[], None).unwrap().rows, 0);
    }

    #[test]
    fn the_hash_covers_every_field_and_the_previous_hash() {
        let e = entry(1);
        let base = row_hash(1, &e, GENESIS);
        assert_eq!(base.len(), 64);
        let mut variants = vec![row_hash(2, &e, GENESIS), row_hash(1, &e, &"1".repeat(64))];
        let edits: Vec<fn(&mut LedgerEntry)> = vec![
            |e| e.at += chrono::Duration::milliseconds(1),
            |e| e.envelope_id.push('x'),
            |e| e.subject.push('x'),
            |e| e.event.push('x'),
            |e| e.rule.push('x'),
            |e| e.call.path.push('x'),
            |e| e.call.body = None,
            |e| e.call.method = Method::Delete,
            |e| e.status = "dry_run".into(),
            |e| e.target = "aws".into(),
            |e| e.policy_digest = Some("cd".repeat(32)),
            |e| e.policy_digest = None,
            |e| e.actor = Some("operator:mallory".into()),
            |e| e.actor = None,
            |e| {
                e.policy_digest = None;
                e.actor = None;
            },
        ];
        for edit in edits {
            let mut changed = e.clone();
            edit(&mut changed);
            variants.push(row_hash(1, &changed, GENESIS));
        }
        for v in variants {
            assert_ne!(v, base);
        }
    }

    /// Rows written before the digest and the actor were recorded (neither set) keep their v1
    /// encoding: a ledger mixing them with v2 rows verifies.
    #[test]
    fn rows_without_digest_or_actor_keep_the_v1_encoding_and_verify() {
        let mut old = entry(1);
        old.policy_digest = None;
        old.actor = None;
        assert!(canonical(1, &old, GENESIS).starts_with("[\"gatehouse-ledger-v1\""));
        // The v1 encoding as it was hashed before v2 existed: unchanged.
        assert_eq!(
            canonical(1, &old, GENESIS),
            format!(
                "[\"gatehouse-ledger-v1\",1,\"2023-11-14T22:13:20.001Z\",\"e1\",\"okta:1\",\"user_deactivated\",\"offboarding.disable\",{},\"ok\",\"looker\",\"{GENESIS}\"]",
                serde_json::to_value(&old.call).unwrap()
            )
        );
        assert!(canonical(1, &entry(1), GENESIS).starts_with("[\"gatehouse-ledger-v2\""));
        let (mut rows, _) = chain(3);
        let h1 = row_hash(1, &old, GENESIS);
        rows[0] = LedgerRow {
            seq: 1,
            entry: old,
            prev_hash: GENESIS.into(),
            hash: h1.clone(),
        };
        let h2 = row_hash(2, &rows[1].entry, &h1);
        rows[1].prev_hash = h1;
        rows[1].hash = h2.clone();
        let h3 = row_hash(3, &rows[2].entry, &h2);
        rows[2].prev_hash = h2;
        rows[2].hash = h3.clone();
        let head = ChainHead { seq: 3, hash: h3 };
        assert_eq!(verify(&rows, Some(&head)).unwrap().rows, 3);
        // A v2 row whose actor was changed is seen.
        rows[1].entry.actor = Some("operator:mallory".into());
        assert_eq!(verify(&rows, Some(&head)), Err(ChainBreak::Altered { seq: 2 }));
    }

    #[test]
    fn an_exported_head_catches_a_rewritten_history() {
        let (rows, head) = chain(5);
        let exported = ChainHead {
            seq: 3,
            hash: rows[2].hash.clone(),
        };
        assert_eq!(verify_against(&rows, Some(&head), &exported).unwrap().rows, 5);
        // Rewrite: alter row 2 and recompute every hash after it (and the head).
        let mut forged = rows.clone();
        forged[1].entry.status = "forged".into();
        let mut prev = forged[0].hash.clone();
        for r in forged.iter_mut().skip(1) {
            r.prev_hash = prev.clone();
            r.hash = row_hash(r.seq, &r.entry, &prev);
            prev = r.hash.clone();
        }
        let forged_head = ChainHead { seq: 5, hash: prev };
        assert!(verify(&forged, Some(&forged_head)).is_ok());
        let e = verify_against(&forged, Some(&forged_head), &exported).unwrap_err();
        assert!(matches!(e, AnchorBreak::HashMismatch { seq: 3, .. }), "{e}");
        assert!(e.to_string().contains("ledger row 3"), "{e}");
        // Truncated below the exported seq, chain and head rebuilt: the row is missing.
        let mut short = rows.clone();
        short.truncate(2);
        let short_head = ChainHead {
            seq: 2,
            hash: short[1].hash.clone(),
        };
        assert_eq!(
            verify_against(&short, Some(&short_head), &exported),
            Err(AnchorBreak::Missing { seq: 3 })
        );
        // A broken chain after the exported head is reported as such.
        let mut broken = rows.clone();
        broken[4].entry.status = "forged".into();
        assert_eq!(
            verify_against(&broken, Some(&head), &exported),
            Err(AnchorBreak::Chain(ChainBreak::Altered { seq: 5 }))
        );
    }

    #[test]
    fn an_altered_row_is_named() {
        let (mut rows, head) = chain(5);
        rows[2].entry.status = "forged".into();
        assert_eq!(verify(&rows, Some(&head)), Err(ChainBreak::Altered { seq: 3 }));
    }

    #[test]
    fn a_removed_row_is_named_by_its_successor() {
        let (mut rows, head) = chain(5);
        rows.remove(1);
        let e = verify(&rows, Some(&head)).unwrap_err();
        assert_eq!(e, ChainBreak::Removed { seq: 3 });
        assert!(e.to_string().contains("before row 3 was removed"), "{e}");
    }

    #[test]
    fn removed_rows_at_the_end_are_seen_through_the_head() {
        let (mut rows, head) = chain(5);
        rows.truncate(3);
        assert_eq!(
            verify(&rows, Some(&head)),
            Err(ChainBreak::Truncated {
                last_seq: 3,
                head_seq: 5
            })
        );
        assert_eq!(
            verify(&[], Some(&head)),
            Err(ChainBreak::Truncated {
                last_seq: 0,
                head_seq: 5
            })
        );
        let (rows, _) = chain(2);
        assert_eq!(verify(&rows, None), Err(ChainBreak::HeadMismatch { seq: 2 }));
    }

    #[test]
    fn reordered_rows_are_named() {
        let (mut rows, head) = chain(5);
        rows.swap(1, 2);
        // Row 3 now comes second: it names row 2 as its predecessor, found later on.
        assert_eq!(
            verify(&rows, Some(&head)),
            Err(ChainBreak::Reordered {
                seq: 3,
                found_after: 2
            })
        );
    }

    #[test]
    fn a_rehashed_forgery_still_breaks_the_link_to_the_next_row() {
        let (mut rows, head) = chain(4);
        rows[1].entry.status = "forged".into();
        rows[1].hash = row_hash(2, &rows[1].entry, &rows[1].prev_hash);
        assert_eq!(verify(&rows, Some(&head)), Err(ChainBreak::Removed { seq: 3 }));
    }
}
