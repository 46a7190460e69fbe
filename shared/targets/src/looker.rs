//! Looker as a [`Target`]: the person is found through their durable link first (issue 16:
//! `GET /users/{id}` for every linked user), else by email (one `GET /users/search`, every
//! letter case); the catalog names groups, roles and attributes; the plan is `plan::diff` for
//! the person's user, plus one per other account of theirs when they are offboarded;
//! `CreateUser` goes first (the other calls need its id) and `DeleteUser` last. Without a client
//! (no Looker configured) the read is `Unknown` and the plan lists every call that may apply
//! (dry run).
//!
//! Resolution, in order: the linked users that still exist; without one, the users whose email
//! is the person's (any case), the user holding the SSO credential `[identity.looker_sso]` names
//! (`GET /users/credential/{type}/{id}`), then the users with a previous email of the person.
//! Several candidates and no link: onboarding and updates refuse to
//! guess (an alert); offboarding closes every one. A linked user whose email differs gets it
//! updated (`PATCH /users/{id}/credentials_email`), never a second user.

use super::vouched::Vouched;
use super::{RetryPolicy, retry_read};
use chrono::{DateTime, Utc};
use gatehouse_domain::handover::{self, ContentNeeds, LookerContent};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::{
    Catalog, ErrorKind, HttpCall, LookerError, LookerOp, LookerUser, Method, ReadNeeds, UserRef,
};
use gatehouse_domain::plan::{self, Actual, Plan, Platform, Resolution};
use gatehouse_domain::policy::{self, DesiredLooker, Policy, Presence};
use gatehouse_domain::ports::LookerPort;
use gatehouse_domain::sso::{SsoCredential, SsoLookup};
use gatehouse_domain::target::{Link, Order, Planned, SendError, Sent, Target, TargetName};
use std::collections::BTreeSet;

/// Looker, through a [`LookerPort`] client (none: dry run).
pub struct LookerTarget<L> {
    client: Option<L>,
    retry: RetryPolicy,
    /// `[identity] allowed_email_domains`: at offboarding, the person's schedules and alerts
    /// mailing outside them are disabled (issue 19). `None`: no such reads or steps.
    delivery_domains: Option<BTreeSet<String>>,
    /// `[identity.looker_sso]` (issue 16): the SSO credential an unlinked person is looked up
    /// by after their email. `None`: no such read.
    sso: Option<SsoLookup>,
    /// `[inactivity]` is set: an active person's user is read with its login times, so the
    /// event's plan can apply `gatehouse_domain::inactivity::hold` like reconcile's.
    login_times: bool,
    /// Looker (Google Cloud core) plans no user creation and no email change (issue 14).
    platform: Platform,
}

/// What Looker holds for one person: the catalog (`None` in a dry run) and the user.
#[derive(Debug, Clone)]
pub struct LookerActual {
    pub catalog: Option<Catalog>,
    pub user: Actual,
    /// The person's other Looker accounts (linked or matching their email in another case).
    pub others: Vec<LookerUser>,
    /// How `user` was found, in words.
    pub how: Vec<String>,
    /// Several candidates and no link: nobody is picked (`user` is `Absent`).
    pub ambiguous: Vec<String>,
    /// The person was linked before, and no account of theirs exists now.
    pub lost_links: Vec<String>,
    /// The person's scheduled plans and alerts, read only at offboarding when allowed email
    /// domains are configured and the user exists.
    pub deliveries: Option<LookerContent>,
}

impl LookerActual {
    fn of(catalog: Option<Catalog>, user: Actual) -> Self {
        LookerActual {
            catalog,
            user,
            others: Vec::new(),
            how: Vec::new(),
            ambiguous: Vec::new(),
            lost_links: Vec::new(),
            deliveries: None,
        }
    }
}

fn permanent(message: &str) -> LookerError {
    LookerError {
        kind: ErrorKind::Permanent,
        status: None,
        message: message.into(),
        retry_after: None,
        source: None,
    }
}

impl<L: LookerPort> LookerTarget<L> {
    pub fn new(client: Option<L>, retry: RetryPolicy) -> Self {
        LookerTarget {
            client,
            retry,
            delivery_domains: None,
            sso: None,
            login_times: false,
            platform: Platform::Original,
        }
    }

    /// Plan for this Looker platform (`[looker] platform`).
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// The Looker platform plans are made for.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// Look a person with no linked user up by this SSO credential too (after the email).
    pub fn with_sso(mut self, sso: Option<SsoLookup>) -> Self {
        self.sso = sso;
        self
    }

    /// The user holding SSO credential `credential` `id`, with retries (`None` when none, or
    /// without a client).
    pub async fn user_for_credential(
        &self,
        credential: SsoCredential,
        id: &str,
        needs: &ReadNeeds,
    ) -> Result<Option<LookerUser>, LookerError> {
        let Some(l) = &self.client else { return Ok(None) };
        retry_read(
            &self.retry,
            |_| false,
            || l.user_for_credential(credential, id, needs),
        )
        .await
    }

    /// Read an active person's user with its login times (`[inactivity]` is set).
    pub fn with_login_times(mut self, login_times: bool) -> Self {
        self.login_times = login_times;
        self
    }

    /// Disable, at offboarding, the person's schedules and alerts that mail outside `domains`.
    pub fn with_delivery_domains(mut self, domains: Option<BTreeSet<String>>) -> Self {
        self.delivery_domains = domains;
        self
    }

    /// What Looker user `user_id` owns, with retries (`None` without a client).
    pub async fn content(
        &self,
        user_id: &str,
        needs: ContentNeeds,
    ) -> Result<Option<LookerContent>, LookerError> {
        let Some(l) = &self.client else { return Ok(None) };
        retry_read(&self.retry, |_| false, || l.content(user_id, needs))
            .await
            .map(Some)
    }

    /// Offboarding only, and only with allowed domains configured: the person's deliveries.
    async fn deliveries(
        &self,
        desired: &DesiredLooker,
        found: Option<&LookerUser>,
    ) -> Result<Option<LookerContent>, LookerError> {
        match (&desired.presence, found, &self.delivery_domains) {
            (Presence::Offboarded { .. }, Some(u), Some(_)) => {
                self.content(&u.id, ContentNeeds::Deliveries).await
            }
            _ => Ok(None),
        }
    }

    /// The client, `None` in a dry run.
    pub fn client(&self) -> Option<&L> {
        self.client.as_ref()
    }

    /// The catalog, with retries (empty without a client).
    pub async fn catalog(&self) -> Result<Catalog, LookerError> {
        match &self.client {
            Some(l) => retry_read(&self.retry, |_| false, || l.catalog()).await,
            None => Ok(Catalog::default()),
        }
    }

    /// Every user with the email in any case, with retries (none without a client).
    pub async fn find_users(&self, email: &str, needs: &ReadNeeds) -> Result<Vec<LookerUser>, LookerError> {
        let Some(l) = &self.client else {
            return Ok(Vec::new());
        };
        retry_read(
            &self.retry,
            |e: &LookerError| e.kind == ErrorKind::NotFound,
            || l.find_users(email, needs),
        )
        .await
    }

    /// One page of the people's users, newest first (Looker (Google Cloud core)'s first-login
    /// run), with retries (none without a client).
    pub async fn newest_users(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<gatehouse_domain::looker_core::SeenUser>, LookerError> {
        let Some(l) = &self.client else {
            return Ok(Vec::new());
        };
        retry_read(&self.retry, |_| false, || l.newest_users(offset, limit)).await
    }

    /// One user by id, with retries (`None` when gone, or without a client).
    pub async fn user(&self, id: &str, needs: &ReadNeeds) -> Result<Option<LookerUser>, LookerError> {
        let Some(l) = &self.client else { return Ok(None) };
        retry_read(&self.retry, |_| false, || l.user(id, needs)).await
    }

    /// Resolve a person (issue 16): their linked users that still exist first; then, when none
    /// is found or `every` (offboarding: every account of theirs is closed), the users with
    /// their email in any case, the user holding the configured SSO credential
    /// (`[identity.looker_sso]`), then those with one of their previous emails. Returns the
    /// accounts found (linked first, each once), how each was found, and the linked ids Looker
    /// no longer has.
    ///
    /// The SSO read is made only when no linked user was found (or at offboarding), and then
    /// even when the email found one: a person whose email and SSO credential name two different
    /// users has several candidates, and nobody is guessed.
    pub async fn resolve(
        &self,
        email: Option<&str>,
        link: &Link,
        needs: &ReadNeeds,
        every: bool,
    ) -> Result<(Vec<(LookerUser, String)>, Vec<String>), LookerError> {
        // Offboarding searches by email anyway: the linked users that search finds are not read
        // again one by one (issue 14); only a linked user under another email is.
        let mut by_email = match (email, every) {
            (Some(e), true) => Some(self.find_users(e, needs).await?),
            _ => None,
        };
        let searched = |id: &String| by_email.iter().flatten().find(|u| &u.id == id).cloned();
        let unsearched: Vec<&String> = link.accounts.iter().filter(|id| searched(id).is_none()).collect();
        let read = futures::future::try_join_all(unsearched.iter().map(|id| self.user(id, needs))).await?;
        let mut read: std::collections::HashMap<&String, Option<LookerUser>> =
            unsearched.into_iter().zip(read).collect();
        let mut found: Vec<(LookerUser, String)> = Vec::new();
        let mut gone = Vec::new();
        for id in &link.accounts {
            match searched(id).or_else(|| read.remove(id).flatten()) {
                Some(u) => found.push((u, format!("linked looker user {id}"))),
                None => gone.push(id.clone()),
            }
        }
        let linked_found = !found.is_empty();
        if let Some(email) = email
            && (found.is_empty() || every)
        {
            let users = match by_email.take() {
                Some(users) => users,
                None => self.find_users(email, needs).await?,
            };
            for u in users {
                if !found.iter().any(|(f, _)| f.id == u.id) {
                    let how = format!(
                        "looker user {} by its email {}",
                        u.id,
                        u.email.as_deref().unwrap_or(email)
                    );
                    found.push((u, how));
                }
            }
        }
        // The SSO credential the instance uses: a person whose Looker user has another email.
        if let Some(sso) = &self.sso
            && (!linked_found || every)
            && let Some(cid) = sso.credential_id(link, email)
            && let Some(u) = self.user_for_credential(sso.credential, &cid, needs).await?
            && !found.iter().any(|(f, _)| f.id == u.id)
        {
            let how = format!(
                "looker user {} via its {} credential ({} {cid})",
                u.id,
                sso.credential,
                sso.credential.id_field()
            );
            found.push((u, how));
        }
        // The person's earlier emails the directory knows: a renamed person's unlinked user.
        for previous in &link.previous_emails {
            if !(found.is_empty() || every) {
                break;
            }
            for u in self.find_users(previous, needs).await? {
                if !found.iter().any(|(f, _)| f.id == u.id) {
                    let how = format!("looker user {} by the person's previous email {previous}", u.id);
                    found.push((u, how));
                }
            }
        }
        Ok((found, gone))
    }

    /// [`Target::read`], with what the last converged state vouches for (issue 14): given
    /// `vouched` and a linked user, the managed attributes are not read but taken from it.
    pub async fn read_vouched(
        &self,
        desired: &DesiredLooker,
        link: &Link,
        vouched: Option<&Vouched>,
    ) -> Result<LookerActual, LookerError> {
        let mut vouched = vouched;
        let mut needs = ReadNeeds::default();
        if self.client.is_none() {
            return Ok(LookerActual::of(None, Actual::Unknown));
        }
        if desired.email.is_none() && link.accounts.is_empty() {
            return Ok(LookerActual::of(Some(self.catalog().await?), Actual::Absent));
        }
        let email = desired.email.as_deref();
        let offboarding = matches!(desired.presence, Presence::Offboarded { .. });
        let (catalog, (found, gone)) = if offboarding {
            // Offboarding needs nothing from the catalog to read the users: both at once, so a
            // cold start is login → (catalog ∥ reads) → revocations.
            let no_needs = ReadNeeds::default();
            let (c, f) = futures::join!(self.catalog(), self.resolve(email, link, &no_needs, true));
            (c?, f?)
        } else {
            let c = self.catalog().await?;
            needs = plan::read_needs(desired, &c);
            needs.logins = self.login_times;
            // Issue 14: the converged state vouches for a linked user's managed attributes.
            vouched = vouched.filter(|v| !link.accounts.is_empty() && v.covers(desired));
            let light = ReadNeeds {
                attribute_ids: match vouched {
                    Some(_) => Vec::new(),
                    None => needs.attribute_ids.clone(),
                },
                ..needs.clone()
            };
            let f = self.resolve(email, link, &light, false).await?;
            (c, f)
        };
        let mut actual = LookerActual::of(Some(catalog), Actual::Absent);
        let linked_found = found.iter().any(|(u, _)| link.accounts.contains(&u.id));
        if found.is_empty() && !gone.is_empty() && gone.len() == link.accounts.len() {
            actual.lost_links = gone;
        }
        let mut found = found.into_iter();
        match found.next() {
            None => {}
            // Several candidates, none linked: onboarding and updates do not guess.
            Some((_, how)) if !linked_found && !offboarding && !found.as_slice().is_empty() => {
                actual.ambiguous = std::iter::once(how).chain(found.map(|(_, h)| h)).collect();
            }
            Some((first, how)) => {
                actual.how.push(how);
                for (u, how) in found {
                    actual.how.push(how);
                    actual.others.push(u);
                }
                actual.user = Actual::Present(first);
            }
        }
        if let (Some(v), Actual::Present(u)) = (vouched, &mut actual.user)
            && !needs.attribute_ids.is_empty()
        {
            if link.accounts.contains(&u.id) {
                u.user_attribute_values =
                    Some(v.values(actual.catalog.as_ref().unwrap_or(&Catalog::default())));
            } else if let Some(read) = self.user(&u.id, &needs).await? {
                // Found by email, not through the link the converged state is about: read.
                *u = read;
            }
        }
        let primary = match &actual.user {
            Actual::Present(u) => Some(u),
            _ => None,
        };
        actual.deliveries = self.deliveries(desired, primary).await?;
        Ok(actual)
    }

    /// One user search, with retries (`None` without a client).
    pub async fn find_user(&self, email: &str, needs: &ReadNeeds) -> Result<Option<LookerUser>, LookerError> {
        let Some(l) = &self.client else { return Ok(None) };
        // A NotFound here means the user vanished between the search and a follow-up read: a
        // fresh search settles it.
        retry_read(
            &self.retry,
            |e: &LookerError| e.kind == ErrorKind::NotFound,
            || l.find_user(email, needs),
        )
        .await
    }
}

impl<L: LookerPort> Target for LookerTarget<L> {
    type Desired = DesiredLooker;
    type Actual = LookerActual;
    type Plan = Plan;
    type Op = LookerOp;
    type Account = UserRef;
    type Error = LookerError;

    fn name(&self) -> TargetName {
        TargetName::LOOKER
    }

    fn desired(&self, policy: &Policy, identity: &Identity, _now: DateTime<Utc>) -> Option<DesiredLooker> {
        Some(policy::evaluate(policy, identity))
    }

    async fn read(&self, desired: &DesiredLooker, link: &Link) -> Result<LookerActual, LookerError> {
        self.read_vouched(desired, link, None).await
    }

    fn linked(&self, actual: &LookerActual) -> Vec<String> {
        match &actual.user {
            // The person's user and every account offboarding closed as theirs.
            Actual::Present(u) => std::iter::once(u.id.clone())
                .chain(actual.others.iter().map(|o| o.id.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn link_key(&self, account: &UserRef) -> Option<String> {
        match account {
            UserRef::Id(id) => Some(id.clone()),
            _ => None,
        }
    }

    fn diff(&self, desired: &DesiredLooker, actual: &LookerActual) -> Plan {
        let mut p = plan_for_on(desired, actual, self.platform);
        if let (Some(content), Some(domains)) = (&actual.deliveries, &self.delivery_domains) {
            p.steps.extend(handover::outside_delivery_steps(content, domains));
        }
        p
    }

    fn account(&self, plan: &Plan) -> UserRef {
        plan.user.clone()
    }

    fn steps<'p>(&self, plan: &'p Plan) -> Vec<Planned<'p, LookerOp>> {
        plan.steps
            .iter()
            .map(|s| Planned {
                op: &s.op,
                rule: &s.rule,
                order: match s.op {
                    LookerOp::CreateUser { .. } => Order::Create,
                    LookerOp::DeleteUser => Order::Last,
                    _ => Order::Change,
                },
            })
            .collect()
    }

    fn call(&self, account: &UserRef, op: &LookerOp) -> HttpCall {
        op.http(account)
    }

    /// The Looker user id (`None` for a user the plan creates, or offline).
    fn principal(&self, account: &UserRef, _op: &LookerOp) -> Option<String> {
        match account {
            UserRef::Id(id) => Some(id.clone()),
            UserRef::New | UserRef::Email(_) => None,
        }
    }

    /// Revocations, and what may remove access: replacing the roles, deleting an attribute value.
    fn revokes(&self, op: &LookerOp) -> bool {
        op.is_revoking() || matches!(op, LookerOp::SetRoles { .. } | LookerOp::DeleteAttribute { .. })
    }

    /// A 404 on a `DELETE` means it is already gone.
    fn not_found_is_done(&self, op: &LookerOp) -> bool {
        op.http(&UserRef::New).method == Method::Delete
    }

    async fn send(
        &self,
        account: &UserRef,
        ops: &[&LookerOp],
    ) -> Result<Sent<UserRef>, SendError<LookerError>> {
        let (Some(l), [op]) = (&self.client, ops) else {
            return Err(SendError::Write(permanent(
                "one looker call per write, and only with a client",
            )));
        };
        // Defence in depth (the plan never holds them in core): what core forbids is not sent.
        if self.platform.is_core()
            && matches!(
                op,
                LookerOp::CreateUser { .. }
                    | LookerOp::CreateEmailCredentials { .. }
                    | LookerOp::UpdateEmail { .. }
            )
        {
            return Err(SendError::Write(permanent(
                "looker (google cloud core) creates users at their first login and takes emails from the identity provider: not sent",
            )));
        }
        let id = l.execute(account, op).await.map_err(SendError::Write)?;
        match (op, id) {
            (LookerOp::CreateUser { .. }, Some(id)) => Ok(Sent::Written {
                account: Some(UserRef::Id(id)),
                status: None,
            }),
            (LookerOp::CreateUser { .. }, None) => {
                Err(SendError::Write(permanent("create user returned no id")))
            }
            _ => Ok(Sent::Written {
                account: None,
                status: None,
            }),
        }
    }
}

/// The plan for one person from what their resolution found (pure): refused when several
/// candidates and no link; the person's user's plan, plus one per other account of theirs when
/// they are offboarded (their duplicates reported otherwise); unresolved when an offboarding
/// found no account of a person linked before.
pub fn plan_for(desired: &DesiredLooker, actual: &LookerActual) -> Plan {
    plan_for_on(desired, actual, Platform::Original)
}

/// [`plan_for`] for one Looker platform (`plan::diff_on`).
pub fn plan_for_on(desired: &DesiredLooker, actual: &LookerActual, platform: Platform) -> Plan {
    let cat = actual.catalog.as_ref();
    let offboarding = matches!(desired.presence, Presence::Offboarded { .. });
    if !actual.ambiguous.is_empty() {
        let why = format!(
            "several looker users could be this person and none is linked to them ({}); not guessing: link one (or merge them) and replay",
            actual.ambiguous.join("; ")
        );
        let mut p = plan::diff_on(desired, &Actual::Absent, cat, platform);
        p.steps.clear();
        p.user = UserRef::Email(desired.email.clone().unwrap_or_default());
        p.notes = vec![why.clone()];
        p.resolution.refused = Some(why);
        return p;
    }
    let mut p = plan::diff_on(desired, &actual.user, cat, platform);
    let mut r = Resolution {
        how: actual.how.clone(),
        ..Resolution::default()
    };
    if offboarding {
        r.others = actual
            .others
            .iter()
            .map(|o| plan::diff_on(desired, &Actual::Present(o.clone()), cat, platform))
            .collect();
        if !actual.lost_links.is_empty() {
            r.unresolved = Some(format!(
                "the person was linked to looker user(s) {} and none exists now, nor any user with their email: offboarding cannot be confirmed",
                actual.lost_links.join(", ")
            ));
        }
    } else {
        r.duplicates = actual
            .others
            .iter()
            .map(|o| {
                format!(
                    "looker user {} ({}) also looks like this person; not changed",
                    o.id,
                    o.email.as_deref().unwrap_or("no email")
                )
            })
            .collect();
    }
    p.resolution = r;
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn desired(presence: Presence) -> DesiredLooker {
        DesiredLooker {
            email: Some("john.d@example.com".into()),
            first_name: None,
            last_name: None,
            presence,
            groups: Default::default(),
            roles: Default::default(),
            attributes: Default::default(),
            managed_groups: BTreeSet::new(),
            managed_roles: BTreeSet::new(),
            managed_attributes: BTreeSet::new(),
        }
    }

    fn offboarded() -> Presence {
        Presence::Offboarded {
            disable: true,
            revoke_sessions: true,
            revoke_api_keys: true,
            delete_after_days: None,
        }
    }

    fn user(id: &str, email: &str) -> LookerUser {
        LookerUser {
            id: id.into(),
            is_disabled: false,
            email: Some(email.into()),
            group_ids: Default::default(),
            session_ids: vec![format!("s{id}")],
            api3_key_ids: vec![],
            direct_role_ids: None,
            user_attribute_values: None,
            logins: None,
        }
    }

    fn found(users: &[LookerUser]) -> LookerActual {
        let mut a = LookerActual::of(Some(Catalog::default()), Actual::Present(users[0].clone()));
        a.others = users[1..].to_vec();
        a.how = users.iter().map(|u| format!("looker user {}", u.id)).collect();
        a
    }

    #[test]
    fn offboarding_plans_every_account_of_the_person() {
        let a = found(&[
            user("101", "john.doe@example.com"),
            user("1002", "john.d@example.com"),
        ]);
        let p = plan_for(&desired(offboarded()), &a);
        assert_eq!(p.user, UserRef::Id("101".into()));
        assert_eq!(p.resolution.others.len(), 1);
        let other = &p.resolution.others[0];
        assert_eq!(other.user, UserRef::Id("1002".into()));
        for plan in [&p, other] {
            assert!(
                plan.steps
                    .iter()
                    .any(|s| s.op == LookerOp::SetDisabled { disabled: true })
            );
            assert!(
                plan.steps
                    .iter()
                    .any(|s| matches!(s.op, LookerOp::DeleteSession { .. }))
            );
        }
        assert!(
            p.render_text().contains("other looker user 1002"),
            "{}",
            p.render_text()
        );
    }

    #[test]
    fn onboarding_acts_on_the_person_user_and_reports_the_others() {
        let a = found(&[
            user("101", "john.d@example.com"),
            user("1002", "john.d@example.com"),
        ]);
        let p = plan_for(&desired(Presence::Active { create: true }), &a);
        assert!(p.resolution.others.is_empty());
        assert_eq!(p.resolution.duplicates.len(), 1, "{p:?}");
        assert!(p.resolution.duplicates[0].contains("1002"));
    }

    #[test]
    fn several_candidates_and_no_link_are_refused_not_guessed() {
        let mut a = LookerActual::of(Some(Catalog::default()), Actual::Absent);
        a.ambiguous = vec![
            "looker user 101 by its email".into(),
            "looker user 102 by its email".into(),
        ];
        let p = plan_for(&desired(Presence::Active { create: true }), &a);
        assert!(p.steps.is_empty(), "no create, no change: {p:?}");
        let why = p.resolution.refused.as_deref().unwrap_or_default();
        assert!(why.contains("101") && why.contains("102"), "{why}");
    }

    #[test]
    fn an_offboarding_that_finds_no_account_of_a_linked_person_is_unresolved() {
        let mut a = LookerActual::of(Some(Catalog::default()), Actual::Absent);
        a.lost_links = vec!["101".into()];
        let p = plan_for(&desired(offboarded()), &a);
        assert!(
            p.resolution
                .unresolved
                .as_deref()
                .is_some_and(|w| w.contains("101")),
            "{p:?}"
        );
        // Never linked: nothing to confirm, a note as before.
        let p = plan_for(
            &desired(offboarded()),
            &LookerActual::of(Some(Catalog::default()), Actual::Absent),
        );
        assert!(p.resolution.unresolved.is_none());
    }
}
