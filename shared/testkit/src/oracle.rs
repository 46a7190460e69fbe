//! The convergence oracle of the crash, replica and soak tests (issue 17): what Looker must hold
//! once every event is processed, computed from the events alone, and the two checks every such
//! test makes against a [`FakeLooker`]: its state equals that, and no state-changing write was
//! applied twice. One definition of "right" for every test that pushes events through real
//! queues and processes (docs/crash-test.md).
//!
//! Expected state: every person's envelopes are folded into an [`Identity`] (last writer wins per
//! fact, so the order the events were published or handled in does not matter), then
//! [`policy::evaluate`] gives the desired Looker state:
//! - active: the Looker user with that email exists, is enabled, and its managed groups and
//!   direct roles (the ones the policy names, by name) are exactly the desired ones;
//! - offboarded: the user is absent (every event before the offboarding was handled after it,
//!   so it was never created) or disabled with no managed group. Roles of an offboarded user are
//!   left alone by design and not compared.

use crate::{FakeLooker, RecordedCall};
use gatehouse_domain::envelope::Envelope;
use gatehouse_domain::identity::Identity;
use gatehouse_domain::policy::{self, Policy, Presence};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What Looker must hold for one email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Exists, enabled, with exactly these managed groups and direct roles (names).
    Active {
        groups: BTreeSet<String>,
        roles: BTreeSet<String>,
    },
    /// Absent, or disabled with no managed group.
    Offboarded,
}

/// The expected Looker state of a set of events under a policy.
#[derive(Debug, Clone)]
pub struct Oracle {
    want: BTreeMap<String, Expected>,
    managed_groups: BTreeSet<String>,
    managed_roles: BTreeSet<String>,
}

impl Oracle {
    /// Fold every subject's envelopes (in any order, duplicates included) and evaluate the
    /// policy.
    ///
    /// # Panics
    /// If a subject's identity ends without an email (the tests' events always carry one).
    pub fn from_events<'a>(policy: &Policy, events: impl IntoIterator<Item = &'a Envelope>) -> Self {
        let mut identities: BTreeMap<String, Identity> = BTreeMap::new();
        for env in events {
            identities
                .entry(env.subject.key.clone())
                .or_insert_with(|| Identity::new(&env.subject.key))
                .fold(env);
        }
        let want = identities
            .values()
            .map(|identity| {
                let desired = policy::evaluate(policy, identity);
                let e = match desired.presence {
                    Presence::Active { .. } => Expected::Active {
                        groups: desired.groups.keys().cloned().collect(),
                        roles: desired.roles.keys().cloned().collect(),
                    },
                    Presence::Offboarded { .. } => Expected::Offboarded,
                };
                let email = desired
                    .email
                    .unwrap_or_else(|| panic!("{}: no email in its events", identity.key));
                (email, e)
            })
            .collect();
        Oracle {
            want,
            managed_groups: policy.managed_groups(),
            managed_roles: policy.managed_roles(),
        }
    }

    /// Email → expected state.
    pub fn expected(&self) -> &BTreeMap<String, Expected> {
        &self.want
    }

    pub fn get(&self, email: &str) -> Option<&Expected> {
        self.want.get(email)
    }

    /// How many people end active and how many offboarded.
    pub fn counts(&self) -> (usize, usize) {
        let active = self
            .want
            .values()
            .filter(|e| matches!(e, Expected::Active { .. }))
            .count();
        (active, self.want.len() - active)
    }

    /// Every difference between the fake Looker and the expected state, one line per person
    /// (empty = converged).
    pub fn mismatches(&self, fake: &FakeLooker) -> Vec<String> {
        let group_names = fake.group_names();
        let role_names = fake.role_names();
        let managed = |names: &HashMap<String, String>, ids: &BTreeSet<String>, of: &BTreeSet<String>| {
            ids.iter()
                .filter_map(|id| names.get(id))
                .filter(|n| of.contains(*n))
                .cloned()
                .collect::<BTreeSet<String>>()
        };
        let mut out = Vec::new();
        for (email, e) in &self.want {
            match (e, fake.user_by_email(email)) {
                (Expected::Active { groups, roles }, Some(u)) => {
                    let have_groups = managed(&group_names, &u.group_ids, &self.managed_groups);
                    let have_roles = managed(&role_names, &u.direct_role_ids, &self.managed_roles);
                    if u.is_disabled || &have_groups != groups || &have_roles != roles {
                        out.push(format!(
                            "{email}: want enabled {groups:?} {roles:?}, have disabled={} {have_groups:?} {have_roles:?}",
                            u.is_disabled
                        ));
                    }
                }
                (Expected::Active { .. }, None) => out.push(format!("{email}: want active, missing")),
                (Expected::Offboarded, Some(u)) => {
                    let have_groups = managed(&group_names, &u.group_ids, &self.managed_groups);
                    if !u.is_disabled || !have_groups.is_empty() {
                        out.push(format!(
                            "{email}: want offboarded, have disabled={} managed groups {have_groups:?}",
                            u.is_disabled
                        ));
                    }
                }
                (Expected::Offboarded, None) => {}
            }
        }
        out
    }

    /// Panics with the first differences unless the fake equals the expected state.
    pub fn assert_converged(&self, fake: &FakeLooker) {
        let diff = self.mismatches(fake);
        assert!(
            diff.is_empty(),
            "not converged: {} people differ, e.g. {:?}",
            diff.len(),
            &diff[..diff.len().min(5)]
        );
    }

    /// The run exercised both outcomes (a generator change that made every user active would
    /// make a test prove less).
    pub fn assert_mixed(&self) {
        assert!(
            self.want.values().any(|e| matches!(e, Expected::Offboarded)),
            "no person ends offboarded"
        );
        assert!(
            self.want
                .values()
                .any(|e| matches!(e, Expected::Active { groups, .. } if !groups.is_empty())),
            "no person ends active with a managed group"
        );
    }
}

/// State-changing writes that changed nothing, on the fake's own call log (with the status it
/// answered). Every successful (2xx) write is replayed in order on a model of the users (email
/// credential, disabled flag, group set, role set; a user id first seen starts empty, as the
/// fake holds no users but its admin). Reported:
/// - a second `POST /users/{id}/credentials_email` for one user;
/// - a `PATCH /users/{id}` `is_disabled = x` when the model already says `x`;
/// - a `POST /groups/{g}/users` for a user already in `g`, or a `DELETE /groups/{g}/users/{u}`
///   for a user not in `g` (a 404 answer is not a successful write and is ignored);
/// - a `PUT /users/{id}/roles` with the set the user already has;
/// - a `PATCH /users/{id}/attribute_values/{a}` with the value already set, or a `DELETE` of
///   one not set;
/// - any write not listed above (`unexpected`; a 2xx session or API3 key delete is fine: it
///   was still there);
/// - more successful `POST /users` than Looker users, more Looker users than distinct emails,
///   or a user without an email (a crash between "create user" and its email credentials).
pub fn duplicate_writes(fake: &FakeLooker) -> Vec<String> {
    #[derive(Default)]
    struct Model {
        email: bool,
        disabled: bool,
        groups: BTreeSet<String>,
        roles: BTreeSet<String>,
        attributes: HashMap<String, serde_json::Value>,
    }
    fn id_of(v: &serde_json::Value) -> String {
        v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())
    }
    let mut users: HashMap<String, Model> = HashMap::new();
    let mut out = Vec::new();
    let calls: Vec<RecordedCall> = fake.calls();
    for c in calls
        .iter()
        .filter(|c| c.is_write && (200..300).contains(&c.status))
    {
        let parts: Vec<&str> = c.path.trim_start_matches('/').split('/').collect();
        let body = c.json_body().unwrap_or(serde_json::Value::Null);
        let what = format!("{} {} {}", c.method, c.path, c.body);
        match (c.method.as_str(), parts.as_slice()) {
            ("POST", ["users"]) => {}
            ("POST", ["users", u, "credentials_email"]) => {
                let m = users.entry(u.to_string()).or_default();
                if m.email {
                    out.push(format!("second email credential: {what}"));
                }
                m.email = true;
            }
            ("PATCH", ["users", u]) => {
                if let Some(d) = body.get("is_disabled").and_then(|d| d.as_bool()) {
                    let m = users.entry(u.to_string()).or_default();
                    if m.disabled == d {
                        out.push(format!("no-op write: {what}"));
                    }
                    m.disabled = d;
                }
            }
            ("POST", ["groups", g, "users"]) => {
                let u = body.get("user_id").map(id_of).unwrap_or_default();
                let m = users.entry(u).or_default();
                if !m.groups.insert(g.to_string()) {
                    out.push(format!("repeated group add: {what}"));
                }
            }
            ("DELETE", ["groups", g, "users", u]) => {
                let m = users.entry(u.to_string()).or_default();
                if !m.groups.remove(*g) {
                    out.push(format!("repeated group removal: {what}"));
                }
            }
            ("PUT", ["users", u, "roles"]) => {
                let roles: BTreeSet<String> = body
                    .as_array()
                    .map(|a| a.iter().map(id_of).collect())
                    .unwrap_or_default();
                let m = users.entry(u.to_string()).or_default();
                if m.roles == roles {
                    out.push(format!("no-op role write: {what}"));
                }
                m.roles = roles;
            }
            ("PATCH", ["users", u, "attribute_values", a]) => {
                let value = body.get("value").cloned().unwrap_or_default();
                let m = users.entry(u.to_string()).or_default();
                if m.attributes.insert(a.to_string(), value.clone()) == Some(value) {
                    out.push(format!("no-op attribute write: {what}"));
                }
            }
            ("DELETE", ["users", u, "attribute_values", a]) => {
                let m = users.entry(u.to_string()).or_default();
                if m.attributes.remove(*a).is_none() {
                    out.push(format!("repeated attribute removal: {what}"));
                }
            }
            // A 2xx delete of a session or API3 key means it was still there.
            ("DELETE", ["users", _, "sessions" | "credentials_api3", _]) => {}
            _ => out.push(format!("unexpected write: {what}")),
        }
    }
    // One Looker user per email, none orphaned by a crash between create and credentials.
    let created = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/users" && (200..300).contains(&c.status))
        .count();
    let people: Vec<_> = fake
        .users()
        .into_iter()
        .filter(|u| u.id != fake.admin_user_id())
        .collect();
    let emails: BTreeSet<_> = people.iter().filter_map(|u| u.email.clone()).collect();
    if created != people.len() || emails.len() != people.len() {
        out.push(format!(
            "{created} users created, {} users in looker, {} distinct emails (a user was created twice \
             or left without an email)",
            people.len(),
            emails.len()
        ));
    }
    out
}

/// Panics with the first duplicate writes, if any (see [`duplicate_writes`]).
pub fn assert_no_duplicate_writes(fake: &FakeLooker) {
    let dups = duplicate_writes(fake);
    assert!(
        dups.is_empty(),
        "{} duplicate writes, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use gatehouse_domain::envelope::{EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};

    const POLICY: &str = r#"
[offboarding]
disable = true
remove_managed_groups = true

[[rule]]
name = "everyone"
when = "everyone"
looker_roles = ["Viewer"]

[[rule]]
name = "engineering"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]
looker_roles = ["Developer"]
"#;

    fn env(person: &str, id: &str, secs: i64, event: IdentityEvent) -> Envelope {
        let email = format!("{person}@example.com");
        Envelope {
            trace_parent: None,
            version: Envelope::VERSION,
            id: EnvelopeId(id.into()),
            source: Source::Okta,
            subject: Subject {
                key: format!("okta:{person}"),
                email: Some(email.clone()),
                display_name: None,
            },
            occurred_at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            received_at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            event,
            profile: Profile::from([("email".to_string(), email)]),
            source_event_type: "test".into(),
            raw: serde_json::Value::Null,
        }
    }

    fn engineering(member: bool) -> IdentityEvent {
        let group = GroupRef {
            id: "00g-eng".into(),
            name: "Engineering".into(),
        };
        if member {
            IdentityEvent::GroupMemberAdded { group }
        } else {
            IdentityEvent::GroupMemberRemoved { group }
        }
    }

    #[tokio::test]
    async fn the_expected_state_comes_from_the_newest_facts_and_is_compared_on_managed_objects() {
        let policy = Policy::from_toml(POLICY).unwrap();
        let events = [
            env("ada", "a0", 0, IdentityEvent::UserCreated),
            env("ada", "a2", 2, engineering(true)),
            env("ada", "a1", 1, engineering(false)),
            env("bob", "b0", 0, IdentityEvent::UserCreated),
            env("bob", "b1", 1, IdentityEvent::UserDeactivated),
        ];
        let oracle = Oracle::from_events(&policy, &events);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let ada = Expected::Active {
            groups: names(&["Engineers"]),
            roles: names(&["Developer", "Viewer"]),
        };
        assert_eq!(
            oracle.get("ada@example.com"),
            Some(&ada),
            "t=2 add beats t=1 removal"
        );
        assert_eq!(oracle.get("bob@example.com"), Some(&Expected::Offboarded));
        assert_eq!(oracle.counts(), (1, 1));
        let reversed: Vec<Envelope> = events.iter().rev().cloned().collect();
        assert_eq!(
            Oracle::from_events(&policy, &reversed).expected(),
            oracle.expected(),
            "order does not matter"
        );

        let fake = FakeLooker::start().await;
        let engineers = fake.add_group("Engineers");
        let hand = fake.add_group("Hand Managed");
        let viewer = fake.add_role("Viewer");
        let developer = fake.add_role("Developer");
        assert_eq!(
            oracle.mismatches(&fake),
            ["ada@example.com: want active, missing"]
        );
        let a = fake.add_user("ada@example.com", "Ada", "L");
        fake.add_user_to_group(&a, &engineers);
        fake.add_user_to_group(&a, &hand);
        fake.set_direct_roles(&a, &[&viewer]);
        let diff = oracle.mismatches(&fake);
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].contains("Viewer\"}"), "a role missing: {diff:?}");
        fake.set_direct_roles(&a, &[&viewer, &developer]);
        assert!(
            oracle.mismatches(&fake).is_empty(),
            "unmanaged groups are not compared"
        );

        let b = fake.add_user("bob@example.com", "Bob", "B");
        fake.add_user_to_group(&b, &hand);
        assert_eq!(oracle.mismatches(&fake).len(), 1, "bob is enabled");
        fake.set_disabled(&b, true);
        assert!(oracle.mismatches(&fake).is_empty(), "disabled, no managed group");
        fake.add_user_to_group(&b, &engineers);
        assert_eq!(oracle.mismatches(&fake).len(), 1, "bob in a managed group");
    }
}
