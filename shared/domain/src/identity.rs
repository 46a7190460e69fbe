//! The directory record of one person, folded from events.
//!
//! Delivery is at-least-once and unordered, so every fact carries the stamp (occurred-at, envelope
//! id) of the event that set it, and an event only changes a fact whose stamp is older: the record
//! is a last-writer-wins map per field. Folding the same events in any order, any number of times,
//! gives the same record — an older event never undoes a newer one.

use crate::envelope::{Envelope, EnvelopeId, IdentityEvent, Source};
use crate::vec_map::VecMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Orders facts: the event's time, then its id to break ties deterministically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    pub id: EnvelopeId,
}

impl Stamp {
    pub fn of(env: &Envelope) -> Self {
        Stamp {
            at: env.occurred_at,
            id: env.id.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Seen only through non-lifecycle events (e.g. a group membership).
    Unknown,
    Active,
    Suspended,
    Deactivated,
    Deleted,
}

impl Status {
    /// Whether the person should have access at all.
    pub fn is_offboarded(self) -> bool {
        matches!(self, Status::Suspended | Status::Deactivated | Status::Deleted)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    pub value: T,
    pub stamp: Stamp,
    /// The intake that asserted the value (`None`: recorded before sources were kept). Policy
    /// conditions may require one (`source = "okta"`).
    #[serde(default)]
    pub source: Option<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub name: String,
    pub member: bool,
    pub stamp: Stamp,
    /// The intake that asserted the membership (see [`Stamped::source`]).
    #[serde(default)]
    pub source: Option<Source>,
}

/// One person as the directory knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub key: String,
    pub status: Status,
    pub status_stamp: Option<Stamp>,
    /// IdP profile attributes (`email`, `login`, `displayName`, `firstName`, ...). A [`VecMap`]
    /// (sorted pairs), not a `BTreeMap`: a directory holds one per person (bench/reconcile.md).
    pub profile: VecMap<String, Stamped<String>>,
    /// IdP group id → membership (kept after removal, so an older add cannot resurrect it).
    pub groups: VecMap<String, Membership>,
    /// Emails the person had before (oldest first, each once, none equal to the current one in
    /// any case): issue 16 finds a renamed person's unlinked accounts by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_emails: Vec<String>,
}

fn asserted_by(source: Option<Source>, allowed: Option<&[Source]>) -> bool {
    allowed.is_none_or(|allowed| source.is_some_and(|s| allowed.contains(&s)))
}

/// What folding one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldOutcome {
    /// At least one fact changed.
    Changed,
    /// Every fact the event speaks of is already as it says (e.g. a replay).
    Unchanged,
    /// The event is older than the facts it speaks of; it changed nothing.
    Stale,
}

impl Identity {
    pub fn new(key: impl Into<String>) -> Self {
        Identity {
            key: key.into(),
            status: Status::Unknown,
            status_stamp: None,
            profile: VecMap::new(),
            groups: VecMap::new(),
            previous_emails: Vec::new(),
        }
    }

    pub fn email(&self) -> Option<&str> {
        self.profile.get("email").map(|s| s.value.as_str())
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.profile.get(name).map(|s| s.value.as_str())
    }

    /// Names of the IdP groups the person is a member of now.
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.values().filter(|m| m.member).map(|m| m.name.as_str())
    }

    pub fn is_member(&self, group: &str) -> bool {
        self.is_member_by(group, None)
    }

    /// Member of `group` (name or id), asserted by one of `sources` (`None`: any source).
    pub fn is_member_by(&self, group: &str, sources: Option<&[Source]>) -> bool {
        self.groups
            .iter()
            .any(|(id, m)| m.member && (m.name == group || id == group) && asserted_by(m.source, sources))
    }

    /// The profile attribute, if asserted by one of `sources` (`None`: any source).
    pub fn attribute_by(&self, name: &str, sources: Option<&[Source]>) -> Option<&str> {
        self.profile
            .get(name)
            .filter(|s| asserted_by(s.source, sources))
            .map(|s| s.value.as_str())
    }

    /// Fold one envelope into the record (last writer wins per fact).
    pub fn fold(&mut self, env: &Envelope) -> FoldOutcome {
        let stamp = Stamp::of(env);
        let mut changed = false;
        let mut stale = false;

        // The subject's email counts as a profile fact when the event carries none.
        let subject_email = env
            .subject
            .email
            .as_ref()
            .filter(|_| !env.profile.contains_key("email"))
            .map(|e| ("email".to_string(), e.clone()));
        for (name, value) in env
            .profile
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(subject_email)
        {
            let (name, value) = (&name, &value);
            match self.profile.get(name) {
                Some(cur) if cur.stamp >= stamp => stale |= cur.stamp > stamp && cur.value != *value,
                Some(cur) if cur.value == *value && cur.source == Some(env.source) => {
                    // Same value, newer stamp: keep the newer stamp so later stale checks hold.
                    self.profile.insert(
                        name.clone(),
                        Stamped {
                            value: value.clone(),
                            stamp: stamp.clone(),
                            source: Some(env.source),
                        },
                    );
                }
                _ => {
                    // A new value, or the same one now asserted by another source.
                    if name == "email"
                        && let Some(old) = self.profile.get(name)
                        && !old.value.eq_ignore_ascii_case(value)
                        && !self
                            .previous_emails
                            .iter()
                            .any(|p| p.eq_ignore_ascii_case(&old.value))
                    {
                        self.previous_emails.push(old.value.clone());
                    }
                    if name == "email" {
                        self.previous_emails.retain(|p| !p.eq_ignore_ascii_case(value));
                    }
                    self.profile.insert(
                        name.clone(),
                        Stamped {
                            value: value.clone(),
                            stamp: stamp.clone(),
                            source: Some(env.source),
                        },
                    );
                    changed = true;
                }
            }
        }

        let status = match &env.event {
            IdentityEvent::UserCreated | IdentityEvent::UserActivated | IdentityEvent::UserUnsuspended => {
                Some(Status::Active)
            }
            IdentityEvent::UserSuspended => Some(Status::Suspended),
            IdentityEvent::UserDeactivated => Some(Status::Deactivated),
            IdentityEvent::UserDeleted => Some(Status::Deleted),
            _ => None,
        };
        if let Some(status) = status {
            match &self.status_stamp {
                Some(cur) if *cur >= stamp => stale |= *cur > stamp && self.status != status,
                _ => {
                    changed |= self.status != status;
                    self.status = status;
                    self.status_stamp = Some(stamp.clone());
                }
            }
        }

        let membership = match &env.event {
            IdentityEvent::GroupMemberAdded { group } => Some((group, true)),
            IdentityEvent::GroupMemberRemoved { group } => Some((group, false)),
            _ => None,
        };
        if let Some((group, member)) = membership {
            match self.groups.get(&group.id) {
                Some(cur) if cur.stamp >= stamp => stale |= cur.stamp > stamp && cur.member != member,
                cur => {
                    changed |= cur
                        .map(|c| c.member != member || c.name != group.name || c.source != Some(env.source))
                        .unwrap_or(true);
                    self.groups.insert(
                        group.id.clone(),
                        Membership {
                            name: group.name.clone(),
                            member,
                            stamp: stamp.clone(),
                            source: Some(env.source),
                        },
                    );
                }
            }
        }

        if changed {
            FoldOutcome::Changed
        } else if stale {
            FoldOutcome::Stale
        } else {
            FoldOutcome::Unchanged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{GroupRef, Profile, Source, Subject};
    use proptest::prelude::*;

    fn env(id: &str, secs: i64, event: IdentityEvent) -> Envelope {
        Envelope {
            trace_parent: None,
            version: 1,
            id: EnvelopeId(id.into()),
            source: Source::Manual,
            subject: Subject {
                key: "k".into(),
                email: Some("a@b.c".into()),
                display_name: None,
            },
            occurred_at: DateTime::from_timestamp(secs, 0).unwrap(),
            received_at: DateTime::from_timestamp(0, 0).unwrap(),
            event,
            profile: Profile::from([("email".to_string(), "a@b.c".to_string())]),
            source_event_type: "test".into(),
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn older_activate_does_not_undo_newer_deactivate() {
        let mut id = Identity::new("k");
        assert_eq!(
            id.fold(&env("2", 20, IdentityEvent::UserDeactivated)),
            FoldOutcome::Changed
        );
        assert_eq!(
            id.fold(&env("1", 10, IdentityEvent::UserActivated)),
            FoldOutcome::Stale
        );
        assert_eq!(id.status, Status::Deactivated);
    }

    #[test]
    fn replay_is_unchanged() {
        let mut id = Identity::new("k");
        let e = env("1", 10, IdentityEvent::UserActivated);
        assert_eq!(id.fold(&e), FoldOutcome::Changed);
        assert_eq!(id.fold(&e), FoldOutcome::Unchanged);
    }

    fn arb_event() -> impl Strategy<Value = IdentityEvent> {
        let g = prop_oneof![Just("g1"), Just("g2")].prop_map(|g| GroupRef {
            id: g.to_string(),
            name: g.to_uppercase(),
        });
        prop_oneof![
            Just(IdentityEvent::UserActivated),
            Just(IdentityEvent::UserDeactivated),
            Just(IdentityEvent::UserSuspended),
            g.clone()
                .prop_map(|group| IdentityEvent::GroupMemberAdded { group }),
            g.prop_map(|group| IdentityEvent::GroupMemberRemoved { group }),
        ]
    }

    const SKEW: std::time::Duration = crate::envelope::DEFAULT_MAX_CLOCK_SKEW;
    const SKEW_SECS: i64 = 300;

    /// An envelope as the processor folds it: its claimed time bounded by its receipt.
    fn received(id: &str, occurred: i64, received: i64, event: IdentityEvent) -> Envelope {
        let mut e = env(id, occurred, event);
        e.received_at = DateTime::from_timestamp(received, 0).unwrap();
        e.bound_time(SKEW);
        e
    }

    fn fold_all<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Identity {
        let mut id = Identity::new("k");
        for e in events {
            id.fold(e);
        }
        id
    }

    fn shuffle<T>(v: &mut [T], mut s: u64) {
        for i in (1..v.len()).rev() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.swap(i, (s >> 33) as usize % (i + 1));
        }
    }

    #[test]
    fn an_activate_dated_2099_does_not_outrank_a_later_real_deactivate() {
        let now = 1_800_000_000;
        let year_2099 = 4_070_908_800;
        let forged = received("forged", year_2099, now, IdentityEvent::UserActivated);
        assert_eq!(forged.occurred_at.timestamp(), now, "clamped to its receipt");
        let real = received("real", now + 1, now + 2, IdentityEvent::UserDeactivated);
        for order in [[&forged, &real], [&real, &forged]] {
            assert_eq!(fold_all(order).status, Status::Deactivated);
        }
    }

    #[test]
    fn claims_within_the_skew_and_in_the_past_are_kept() {
        let mut e = env("1", 1_000 + SKEW_SECS, IdentityEvent::UserActivated);
        e.received_at = DateTime::from_timestamp(1_000, 0).unwrap();
        assert_eq!(e.bound_time(SKEW), None);
        assert_eq!(e.occurred_at.timestamp(), 1_000 + SKEW_SECS);
        let mut old = env("2", 10, IdentityEvent::UserActivated);
        old.received_at = DateTime::from_timestamp(1_000_000, 0).unwrap();
        assert_eq!(old.bound_time(SKEW), None);
        assert_eq!(old.occurred_at.timestamp(), 10);
        let mut ahead = env("3", 1_000 + SKEW_SECS + 1, IdentityEvent::UserActivated);
        ahead.received_at = DateTime::from_timestamp(1_000, 0).unwrap();
        assert_eq!(
            ahead.bound_time(SKEW).map(|t| t.timestamp()),
            Some(1_000 + SKEW_SECS + 1)
        );
        assert_eq!(ahead.occurred_at.timestamp(), 1_000);
    }

    proptest! {
        /// Honest deliveries (each event's clock within the bound of its receipt, delivered late,
        /// out of order, twice): the bound changes no time, and any order folds to the record
        /// folding them in time order gives.
        #[test]
        fn honest_out_of_order_deliveries_fold_as_in_order(
            events in prop::collection::vec((0i64..10_000, -SKEW_SECS..=SKEW_SECS, 0i64..3_600, arb_event()), 1..25),
            seed in any::<u64>(),
        ) {
            // (occurred, clock error of the sender, delivery delay): received = occurred - error + delay
            let envs: Vec<Envelope> = events.iter().enumerate()
                .map(|(i, (t, err, delay, e))| received(&format!("e{i}"), *t, t - err + delay, e.clone()))
                .collect();
            for (e, (t, ..)) in envs.iter().zip(&events) {
                prop_assert_eq!(e.occurred_at.timestamp(), *t, "an honest time was changed");
            }
            let mut by_time: Vec<&Envelope> = envs.iter().collect();
            by_time.sort_by_key(|e| Stamp::of(e));
            let in_order = fold_all(by_time);
            let mut shuffled: Vec<&Envelope> = envs.iter().chain(envs.iter().step_by(3)).collect();
            shuffle(&mut shuffled, seed);
            prop_assert_eq!(in_order, fold_all(shuffled));
        }

        /// A fact dated beyond the bound (any future up to the year 9999) followed by a real event
        /// that happened after the forged one arrived: the real event wins, whatever the order
        /// of delivery, and honest events before and after keep their order.
        #[test]
        fn a_future_dated_fact_loses_to_a_later_real_event(
            received_at in 1_000_000i64..2_000_000_000,
            ahead in (SKEW_SECS + 1)..250_000_000_000i64,
            later in 1i64..1_000_000,
            delay in 0i64..3_600,
            forged_kind in arb_event(),
            seed in any::<u64>(),
        ) {
            let forged = received("forged", received_at + ahead, received_at, forged_kind.clone());
            let real_kind = match &forged_kind {
                IdentityEvent::UserActivated => IdentityEvent::UserDeactivated,
                IdentityEvent::UserDeactivated | IdentityEvent::UserSuspended => IdentityEvent::UserActivated,
                IdentityEvent::GroupMemberAdded { group } => IdentityEvent::GroupMemberRemoved { group: group.clone() },
                IdentityEvent::GroupMemberRemoved { group } => IdentityEvent::GroupMemberAdded { group: group.clone() },
                other => other.clone(),
            };
            let real = received("real", received_at + later, received_at + later + delay, real_kind.clone());
            let mut order = vec![&forged, &real];
            shuffle(&mut order, seed);
            let got = fold_all(order);
            match &real_kind {
                IdentityEvent::UserActivated => prop_assert_eq!(got.status, Status::Active),
                IdentityEvent::UserDeactivated => prop_assert_eq!(got.status, Status::Deactivated),
                IdentityEvent::GroupMemberAdded { group } => prop_assert!(got.groups[&group.id].member),
                IdentityEvent::GroupMemberRemoved { group } => prop_assert!(!got.groups[&group.id].member),
                other => unreachable!("arb_event made {other:?}"),
            }
        }

        /// The record depends only on the set of events, never on delivery order or duplicates.
        #[test]
        fn fold_is_order_and_duplicate_insensitive(
            events in prop::collection::vec((0i64..50, arb_event()), 1..25),
            seed in any::<u64>(),
        ) {
            let envs: Vec<Envelope> = events.iter().enumerate()
                .map(|(i, (t, e))| env(&format!("e{i}"), *t, e.clone())).collect();
            let mut in_order = Identity::new("k");
            for e in &envs { in_order.fold(e); }
            // a deterministic shuffle with duplicates
            let mut shuffled: Vec<&Envelope> = envs.iter().chain(envs.iter().step_by(2)).collect();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut other = Identity::new("k");
            for e in shuffled { other.fold(e); }
            prop_assert_eq!(in_order, other);
        }
    }

    /// Issue 16: a changed email is kept as a previous one (once, whatever its case), and an
    /// email that comes back is current again, not previous.
    #[test]
    fn previous_emails_are_kept_as_the_email_changes() {
        use crate::envelope::{Envelope, EnvelopeId, IdentityEvent, Profile, Source, Subject};
        let ev = |n: i64, email: &str| Envelope {
            trace_parent: None,
            version: 1,
            id: EnvelopeId(format!("e{n}")),
            source: Source::Manual,
            subject: Subject {
                key: "k".into(),
                email: Some(email.into()),
                display_name: None,
            },
            occurred_at: chrono::DateTime::from_timestamp(n, 0).unwrap(),
            received_at: chrono::DateTime::from_timestamp(n, 0).unwrap(),
            event: IdentityEvent::ProfileUpdated,
            profile: Profile::new(),
            source_event_type: "t".into(),
            raw: serde_json::Value::Null,
        };
        let mut p = Identity::new("k");
        p.fold(&ev(1, "john.doe@x.io"));
        assert!(p.previous_emails.is_empty());
        p.fold(&ev(2, "John.Doe@x.io"));
        assert!(p.previous_emails.is_empty(), "a case change is the same email");
        p.fold(&ev(3, "john.d@x.io"));
        p.fold(&ev(4, "jd@y.io"));
        assert_eq!(p.previous_emails, vec!["John.Doe@x.io", "john.d@x.io"]);
        p.fold(&ev(5, "john.d@x.io"));
        assert_eq!(p.previous_emails, vec!["John.Doe@x.io", "jd@y.io"]);
        assert_eq!(p.email(), Some("john.d@x.io"));
    }
}
