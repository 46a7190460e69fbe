//! Looker (Google Cloud core), issue 14 item 5. Pure.
//!
//! In core, Looker users are not created through the API: a person's account is created on
//! their first login through the instance's identity provider (Google OAuth or workforce
//! identity federation), and signing in needs the IAM permission `looker.instances.login`, which
//! `roles/looker.instanceUser` grants on the instance's project. So, in core:
//!
//! - the login binding is a GCP grant like any other: [`Policy::set_looker_core`] adds one rule
//!   ([`RULE`], `when = "everyone"`) granting it to every active person in the allowed email
//!   domains, so the existing GCP target grants it at onboarding, removes it at offboarding
//!   (`gcp.offboarding.remove_bindings`) and reconcile restores it, through the one apply loop
//!   (screen, breaker, ledger);
//! - the Looker plan never creates a user nor changes a user's email credentials
//!   ([`Platform::Core`] in `plan::diff_on`): a person the policy gives an account whose user
//!   does not exist yet is *pending first login* (no Looker write, no error);
//! - a frequent cheap run (the engine's `looker_core` module) finds the users created since its
//!   last run and converges those people at once.
//!
//! Google: "Manage users within Looker (Google Cloud core)",
//! <https://cloud.google.com/looker/docs/looker-core-user-management>; "Authentication and
//! authorization with OAuth and IAM",
//! <https://cloud.google.com/looker/docs/looker-core-oauth-authentication>.

use crate::policy::{Condition, Policy, Rule};

/// The predefined role that lets a principal sign in to Looker (Google Cloud core) instances
/// (`looker.instances.get` + `looker.instances.login`).
pub const INSTANCE_USER_ROLE: &str = "roles/looker.instanceUser";

/// The rule name the login binding is granted under (cited by the ledger and `gatehouse plan`).
pub const RULE: &str = "looker.core.instance_user";

/// Which Looker Gatehouse talks to (`[looker] platform`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Platform {
    /// Looker (original): users are created with `POST /users` and their email credentials.
    #[default]
    Original,
    /// Looker (Google Cloud core): users appear at their first login; IAM grants the login.
    Core,
}

impl Platform {
    pub fn is_core(self) -> bool {
        self == Platform::Core
    }
}

pub use crate::policy::LookerCore;

/// A Looker user as the first-login run reads it (`fields=id,email`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenUser {
    pub id: String,
    pub email: Option<String>,
}

impl SeenUser {
    /// The id as a number (Looker's user ids are numeric strings; `None` otherwise).
    pub fn number(&self) -> Option<u64> {
        self.id.parse().ok()
    }
}

impl Policy {
    /// Configure the policy for Looker (Google Cloud core), or (`None`) for Looker (original).
    /// With `onboarding.create_users` on (the default) one rule is added that grants the login
    /// binding to everyone the policy would give a Looker account (every active person in the
    /// allowed email domains). With it off, Gatehouse neither grants nor removes the binding
    /// (somebody else decides who may sign in), as in original it creates no user.
    pub fn set_looker_core(&mut self, core: Option<LookerCore>) {
        self.rules.retain(|r| r.name != RULE);
        if let Some(c) = &core
            && self.onboarding.create_users
        {
            self.rules.push(Rule {
                name: RULE.to_string(),
                when: Condition::Everyone,
                looker_groups: Vec::new(),
                looker_roles: Vec::new(),
                looker_attributes: Default::default(),
                aws_groups: Vec::new(),
                aws_tags: Default::default(),
                gcp_bindings: vec![c.grant()],
                identity_center: Default::default(),
                gcp_groups: Vec::new(),
                priority: None,
            });
        }
        self.looker_core = core;
    }

    /// Which Looker the policy plans for.
    pub fn looker_platform(&self) -> Platform {
        match self.looker_core {
            Some(_) => Platform::Core,
            None => Platform::Original,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn core() -> LookerCore {
        LookerCore {
            project: "projects/looker-prod".into(),
            role: INSTANCE_USER_ROLE.into(),
        }
    }

    fn person(email: &str) -> Identity {
        let mut id = Identity::new("00u1");
        id.status = crate::identity::Status::Active;
        let stamp = crate::identity::Stamp {
            at: crate::clock::now(),
            id: crate::envelope::EnvelopeId("e1".into()),
        };
        id.profile.insert(
            "email".into(),
            crate::identity::Stamped {
                value: email.into(),
                stamp,
                source: None,
            },
        );
        id
    }

    #[test]
    fn core_grants_the_login_binding_to_every_active_allowed_person_and_manages_it() {
        let mut p = Policy::default();
        p.set_looker_core(Some(core()));
        assert_eq!(p.looker_platform(), Platform::Core);
        let grant = core().grant();
        assert!(p.managed_gcp_grants().contains(&grant));
        let d = crate::cloud::evaluate(&p, &person("a@x.io"), None, true, crate::clock::now());
        let gcp = d.gcp.expect("gcp part");
        assert_eq!(gcp.bindings.get(&grant).map(String::as_str), Some(RULE));
        assert_eq!(gcp.member, "user:a@x.io");
        // Outside the allowed domains: managed, not granted.
        p.allowed_email_domains = Some(["corp.io".to_string()].into());
        let d = crate::cloud::evaluate(&p, &person("a@x.io"), None, true, crate::clock::now());
        let gcp = d.gcp.expect("gcp part");
        assert!(gcp.managed.contains(&grant) && gcp.bindings.is_empty());
    }

    #[test]
    fn setting_it_twice_adds_one_rule_and_original_removes_it() {
        let mut p = Policy::default();
        p.set_looker_core(Some(core()));
        p.set_looker_core(Some(core()));
        assert_eq!(p.rules.iter().filter(|r| r.name == RULE).count(), 1);
        p.set_looker_core(None);
        assert!(p.rules.is_empty());
        assert_eq!(p.looker_platform(), Platform::Original);
    }

    #[test]
    fn without_create_users_the_binding_is_left_alone() {
        let mut p = Policy::default();
        p.onboarding.create_users = false;
        p.set_looker_core(Some(core()));
        assert!(p.managed_gcp_grants().is_empty());
        assert_eq!(p.looker_platform(), Platform::Core);
    }
}
