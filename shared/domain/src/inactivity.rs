//! License reclamation (issue 15): managed Looker users with no login for `[inactivity]
//! disable_after_days` are listed (`mode = "report"`, the default) or disabled (`"enforce"`) by
//! reconcile, from the credentials' `logged_in_at` its paged `GET /users` already reads. Pure.
//!
//! - **Last activity** is the latest `logged_in_at` of any of the user's credentials (email,
//!   SAML, Google, OIDC, LDAP, Looker OpenID, workforce). A user who never logged in counts
//!   from the earliest `created_at` of those credentials (Looker's `User` has no creation time
//!   of its own); a user with neither is never counted as inactive (its age is unknown).
//! - **Exempt**: a person in any of `exempt_groups`, by IdP group name or Looker group name.
//! - Only users reconcile resolves to a person of the directory (managed users) are considered.
//! - **One rule for every plan**: [`hold`] is applied to reconcile's plans and to each IdP
//!   event's plan (the per-event search reads the same login times when `[inactivity]` is set),
//!   so an event about an inactivity-disabled person never enables their user again.
//! - **Ending a hold**: nothing records that a user was disabled for inactivity; the rule is
//!   re-evaluated from the login times on every plan. A user stays held (and is disabled again
//!   if enabled) until it is no longer inactive past the limit: raise `disable_after_days`, add
//!   the person to an `exempt_groups` group, or let them log in once (an admin enables the user
//!   in Looker and the person logs in before the next reconcile or event about them; until that
//!   login the next plan disables the user again).

use crate::identity::Identity;
use crate::looker::{Catalog, LookerOp, LookerUser};
use crate::plan::{Actual, Plan, Step};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

/// The ledger rule of an inactivity disable.
pub const RULE: &str = "inactivity.disable";

pub use crate::looker::Logins;
pub use crate::policy::inactivity::{Inactivity, InactivityMode};

/// A managed user inactive past the limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InactiveUser {
    pub subject: String,
    pub email: Option<String>,
    pub looker_user_id: String,
    /// `None`: never logged in (counted from `active_at`, the first credential).
    pub last_login_at: Option<DateTime<Utc>>,
    pub active_at: DateTime<Utc>,
    pub inactive_days: i64,
    /// Already disabled (by an earlier enforce run, or by hand): a seat already reclaimed.
    pub disabled: bool,
}

impl Inactivity {
    pub fn validate(&self) -> Result<(), String> {
        if self.disable_after_days == 0 {
            return Err("[inactivity] disable_after_days must be at least 1".into());
        }
        if let Some(g) = self.exempt_groups.iter().find(|g| g.trim().is_empty()) {
            return Err(format!("[inactivity] exempt_groups has an empty name {g:?}"));
        }
        Ok(())
    }

    /// Whether `identity` (with Looker user `user`) is in an exempt group.
    pub fn exempt(&self, identity: &Identity, user: &LookerUser, catalog: &Catalog) -> bool {
        identity
            .groups
            .values()
            .any(|m| m.member && self.exempt_groups.contains(&m.name))
            || catalog
                .groups
                .iter()
                .any(|(name, id)| self.exempt_groups.contains(name) && user.group_ids.contains(id))
    }

    /// `user` (the one reconcile resolved to `identity`) when it is inactive past the limit at
    /// `now` and not exempt. The caller decides whether it is active in the directory.
    pub fn check(
        &self,
        identity: &Identity,
        email: Option<&str>,
        user: &LookerUser,
        catalog: &Catalog,
        now: DateTime<Utc>,
    ) -> Option<InactiveUser> {
        let logins = user.logins.as_deref()?;
        let active_at = logins.active_at()?;
        let limit = TimeDelta::days(i64::from(self.disable_after_days));
        let idle = now - active_at;
        if idle <= limit || self.exempt(identity, user, catalog) {
            return None;
        }
        Some(InactiveUser {
            subject: identity.key.clone(),
            email: email.map(str::to_string),
            looker_user_id: user.id.clone(),
            last_login_at: logins.last_login_at,
            active_at,
            inactive_days: idle.num_days(),
            disabled: user.is_disabled,
        })
    }
}

/// The inactivity rule of one Looker plan, reconcile's or an event's (the one place both apply
/// it): `actual` is the person's user as read with its login times. In enforce mode, a user of
/// an active (not offboarded) person inactive past the limit and not exempt is never enabled by
/// `plan`, and is disabled (rule [`RULE`]) if enabled; every other step of the plan stays.
/// Returns the inactive user (in either mode), `None` when the rule is off or does not apply.
pub fn hold(
    rule: Option<&Inactivity>,
    plan: &mut Plan,
    identity: &Identity,
    email: Option<&str>,
    actual: &Actual,
    catalog: &Catalog,
    now: DateTime<Utc>,
) -> Option<InactiveUser> {
    let (Some(rule), Actual::Present(user)) = (rule, actual) else {
        return None;
    };
    // Offboarded people are the offboarding's (it disables them anyway).
    if identity.status.is_offboarded() {
        return None;
    }
    let inactive = rule.check(identity, email, user, catalog, now)?;
    if rule.mode == InactivityMode::Enforce {
        plan.steps
            .retain(|s| s.op != LookerOp::SetDisabled { disabled: false });
        if !user.is_disabled {
            plan.steps.push(Step {
                op: LookerOp::SetDisabled { disabled: true },
                rule: RULE.to_string(),
            });
        }
    }
    Some(inactive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    fn user(last: Option<i64>, created: Option<i64>, groups: &[&str]) -> LookerUser {
        let at = |d: i64| DateTime::from_timestamp(1_800_000_000 - d * 86_400, 0).unwrap();
        LookerUser {
            id: "7".into(),
            is_disabled: false,
            email: Some("a@x.io".into()),
            group_ids: groups.iter().map(|g| g.to_string()).collect(),
            session_ids: vec![],
            api3_key_ids: vec![],
            direct_role_ids: None,
            user_attribute_values: None,
            logins: Some(Box::new(Logins {
                last_login_at: last.map(at),
                first_credential_at: created.map(at),
            })),
        }
    }

    #[test]
    fn inactive_past_the_limit_unless_exempt_or_unknown() {
        let p =
            Policy::from_toml("[inactivity]\ndisable_after_days = 90\nexempt_groups = [\"VIP\"]\n").unwrap();
        let rule = p.inactivity.unwrap();
        assert_eq!(rule.mode, InactivityMode::Report, "report first");
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut catalog = Catalog::default();
        catalog.groups.insert("VIP".into(), "5".into());
        let id = Identity::new("okta:1");
        let check = |u: &LookerUser| rule.check(&id, Some("a@x.io"), u, &catalog, now);
        assert_eq!(
            check(&user(Some(120), Some(400), &[])).unwrap().inactive_days,
            120
        );
        assert!(
            check(&user(Some(90), Some(400), &[])).is_none(),
            "exactly the limit is not past it"
        );
        assert!(
            check(&user(Some(120), Some(400), &["5"])).is_none(),
            "looker group exempt"
        );
        let never = check(&user(None, Some(120), &[])).unwrap();
        assert_eq!((never.last_login_at, never.inactive_days), (None, 120));
        assert!(
            check(&user(None, None, &[])).is_none(),
            "age unknown: never counted"
        );
        let mut unread = user(Some(500), None, &[]);
        unread.logins = None;
        assert!(check(&unread).is_none(), "not read: never counted");
    }

    #[test]
    fn hold_keeps_an_inactive_user_disabled_in_enforce_mode_only() {
        use crate::identity::Status;
        use crate::looker::UserRef;
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let step = |disabled: bool, rule: &str| Step {
            op: LookerOp::SetDisabled { disabled },
            rule: rule.into(),
        };
        let add = Step {
            op: LookerOp::AddToGroup {
                group: crate::looker::Named {
                    name: "Analysts".into(),
                    id: Some("11".into()),
                },
            },
            rule: "analytics".into(),
        };
        let plan = || Plan {
            user: UserRef::Id("7".into()),
            steps: vec![step(false, "policy.active"), add.clone()],
            notes: vec![],
            resolution: Default::default(),
        };
        let mut id = Identity::new("okta:1");
        let catalog = Catalog::default();
        let mut idle = user(Some(120), Some(400), &[]);
        idle.is_disabled = true;
        let held = |rule: &Inactivity, id: &Identity, u: &LookerUser| {
            let mut p = plan();
            let inactive = hold(
                Some(rule),
                &mut p,
                id,
                None,
                &Actual::Present(u.clone()),
                &catalog,
                now,
            );
            (inactive.is_some(), p.steps)
        };
        let enforce =
            Policy::from_toml("[inactivity]\ndisable_after_days = 90\nmode = \"enforce\"\n").unwrap();
        let enforce = enforce.inactivity.unwrap();
        // Disabled and inactive: not enabled; the other steps stay.
        assert_eq!(held(&enforce, &id, &idle), (true, vec![add.clone()]));
        // Enabled (by hand) and still inactive: disabled again.
        let mut enabled = idle.clone();
        enabled.is_disabled = false;
        assert_eq!(
            held(&enforce, &id, &enabled),
            (true, vec![add.clone(), step(true, RULE)])
        );
        // Logged in recently: the plan is untouched.
        let mut recent = idle.clone();
        recent.logins = user(Some(3), Some(400), &[]).logins;
        assert_eq!(held(&enforce, &id, &recent), (false, plan().steps));
        // Report mode lists it and changes nothing.
        let report = Inactivity {
            mode: InactivityMode::Report,
            ..enforce.clone()
        };
        assert_eq!(held(&report, &id, &idle), (true, plan().steps));
        // Offboarded: the offboarding's, not this rule's.
        id.status = Status::Deactivated;
        assert_eq!(held(&enforce, &id, &idle), (false, plan().steps));
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            "[inactivity]\ndisable_after_days = 0\n",
            "[inactivity]\ndisable_after_days = 9\nmode = \"delete\"\n",
            "[inactivity]\ndisable_after_days = 9\nexempt_groups = [\" \"]\n",
            "[inactivity]\ndisable_after_dayz = 9\n",
        ] {
            assert!(Policy::from_toml(bad).is_err(), "{bad}");
        }
        assert!(
            Policy::from_toml("").unwrap().inactivity.is_none(),
            "off unless set"
        );
    }
}
