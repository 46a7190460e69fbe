//! Safety rails (issue 19), as the [`Screen`] every step of every target passes before it is
//! sent ([`crate::apply`]):
//!
//! - **Gatehouse never acts on itself.** No step touches the Looker user that owns the API3 key
//!   Gatehouse logs in with (found with `GET /user`), the IAM user it calls AWS as
//!   (`sts:GetCallerIdentity`) or the identities listed in `[cloud_audit] gatehouse_principals`
//!   (its GCP service account). Keys the rotator manages (`[[rotator.secrets]]`) are changed only
//!   by the rotator.
//! - **Protected principals** (`[safety] protected`) are never disabled, revoked or removed:
//!   emails (the person in every target), Looker user ids, every holder of a listed Looker group
//!   or role (e.g. `Admin`, direct or through a group), IAM user names, GCP members.
//!
//! A withheld step gets a `withheld: REASON` ledger row, a warning and
//! `gatehouse_steps_withheld_total{target}`; it is never sent. What only the targets know is
//! learned in [`Screen::prepare`] (beside an event's reads, before a plan is screened): Gatehouse's
//! own Looker user and its AWS identity (once each). The holders of protected groups and roles
//! are learned in [`Screen::prepare_revocations`], only before a plan that revokes something in
//! Looker, and again at most every [`LOOKER_REFRESH`]: an event that only grants never pays for
//! them (issue 14: every call counts). Until its own Looker user, and the holders if any group or
//! role is protected, are known, Looker revocations wait (the event is tried again).

use crate::client::aws_iam::AwsIam;
use crate::client::looker::LookerClient;
use gatehouse_domain::looker::LookerError;
use gatehouse_domain::ports::LookerPort;
use gatehouse_domain::target::{Screen, Screened, TargetName};
use gatehouse_platform::config::{Config, KindConfig, Protected};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;
use std::time::Duration;
use tokio::time::Instant;

/// How long what Looker said about protected users is trusted.
pub const LOOKER_REFRESH: Duration = Duration::from_secs(300);

/// The safety screen. Built from the configuration ([`Safety::from_config`]), completed with
/// what only the targets can say (its own Looker user, its AWS identity).
#[derive(Default)]
pub struct Safety {
    rules: Rules,
    looker: RwLock<LookerIds>,
    /// IAM user names Gatehouse calls AWS as.
    own_aws: RwLock<BTreeSet<String>>,
    /// Where [`Screen::prepare`] learns them.
    looker_client: Option<LookerClient>,
    aws_client: Option<AwsIam>,
    /// What has been learned; held while learning (one at a time).
    learned: tokio::sync::Mutex<Learned>,
    /// How long the protected holders read from Looker are trusted ([`LOOKER_REFRESH`]).
    looker_refresh: Duration,
}

impl std::fmt::Debug for Safety {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Safety")
            .field("rules", &self.rules)
            .field("looker", &self.looker)
            .field("own_aws", &self.own_aws)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Clone)]
struct Rules {
    emails: BTreeSet<String>,
    looker_users: BTreeSet<String>,
    looker_groups: BTreeSet<String>,
    looker_roles: BTreeSet<String>,
    aws_users: BTreeSet<String>,
    gcp_members: BTreeSet<String>,
    /// GCP members Gatehouse calls GCP as (lowercase).
    own_gcp: BTreeSet<String>,
    /// Looker user id → the rotator's secret of its API3 key.
    rotated_looker: BTreeMap<String, String>,
    /// IAM user name → the rotator's secret of its access key.
    rotated_aws: BTreeMap<String, String>,
    /// A Looker connection is configured: its own user must be known before a revocation.
    looker_live: bool,
}

/// What Looker says about protected users.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LookerIds {
    /// The user owning the API3 key Gatehouse logs in with.
    pub own_user: Option<String>,
    /// Holder user id → what makes them protected (`looker role Admin`).
    pub holders: BTreeMap<String, String>,
    /// The holders were read at least once (or none are protected): until then a Looker
    /// revocation cannot be judged.
    pub holders_known: bool,
}

/// When each thing the screen learns from the targets was last learned.
#[derive(Debug, Default)]
struct Learned {
    /// The protected Looker holders were read then.
    holders_at: Option<Instant>,
    /// The AWS identity was read.
    aws: bool,
}

impl Safety {
    /// The rules the configuration states. Looker ids and the AWS identity come later.
    pub fn from_config(cfg: &Config) -> Self {
        let mut r = Rules {
            looker_live: cfg.looker.url.is_some(),
            ..Rules::default()
        };
        for p in cfg.safety.protected() {
            match p {
                Protected::Email(e) => r.emails.insert(e),
                Protected::LookerUser(id) => r.looker_users.insert(id),
                Protected::LookerGroup(g) => r.looker_groups.insert(g),
                Protected::LookerRole(n) => r.looker_roles.insert(n),
                Protected::AwsUser(n) => r.aws_users.insert(n),
                Protected::GcpMember(m) => r.gcp_members.insert(m),
            };
        }
        let mut own_aws = BTreeSet::new();
        for p in &cfg.cloud_audit.gatehouse_principals {
            if let Some(name) = iam_user_of_arn(p) {
                own_aws.insert(name);
            } else if p.ends_with(".gserviceaccount.com") {
                r.own_gcp
                    .insert(format!("serviceaccount:{}", p.to_ascii_lowercase()));
            }
        }
        for s in &cfg.rotator.secrets {
            match &s.kind {
                KindConfig::LookerApi3 { user_id } => {
                    r.rotated_looker.insert(user_id.clone(), s.name.clone());
                }
                KindConfig::AwsAccessKey { user_name } => {
                    r.rotated_aws.insert(user_name.clone(), s.name.clone());
                }
                // The GCP target changes bindings only, never service-account keys.
                KindConfig::GcpServiceAccountKey { .. } => {}
            }
        }
        if cfg.gcp.enabled && r.own_gcp.is_empty() {
            tracing::warn!(
                "gcp is enabled and no service account is listed in [cloud_audit] gatehouse_principals: \
                 list the one gatehouse runs as, or its own bindings are not protected"
            );
        }
        Safety {
            rules: r,
            own_aws: RwLock::new(own_aws),
            looker_refresh: LOOKER_REFRESH,
            ..Safety::default()
        }
    }

    /// Trust the protected holders read from Looker this long instead of [`LOOKER_REFRESH`].
    pub fn with_looker_refresh(mut self, every: Duration) -> Self {
        self.looker_refresh = every;
        self
    }

    /// Learn Gatehouse's own Looker user and the protected holders through this client.
    pub fn with_looker(mut self, client: Option<LookerClient>) -> Self {
        self.looker_client = client;
        self
    }

    /// Learn the AWS identity Gatehouse runs as through this client.
    pub fn with_aws(mut self, iam: Option<AwsIam>) -> Self {
        self.aws_client = iam;
        self
    }

    /// What [`Screen::prepare`] does, before every event: Gatehouse's own Looker user while it is
    /// not known (one `GET /user` a process: the owner of the API3 key Gatehouse logs in with
    /// does not change; read at every refresh it was up to 8,640 calls a month, most of
    /// Enterprise's 10,000) and its AWS identity once. A failure is logged and tried again next
    /// time; until Gatehouse's own Looker user is known, Looker revocations wait.
    pub async fn learn(&self) {
        let mut learned = self.learned.lock().await;
        if let Some(l) = &self.looker_client
            && self
                .looker
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .own_user
                .is_none()
            && let Err(e) = self.refresh_own_looker_user(l).await
        {
            tracing::warn!(error = %e,
                "cannot read gatehouse's own looker user; looker revocations are withheld until it can");
        }
        if let Some(a) = &self.aws_client
            && !learned.aws
        {
            match self.refresh_aws(a).await {
                Ok(()) => learned.aws = true,
                Err(e) => tracing::warn!(error = %e,
                    "cannot learn the aws identity gatehouse runs as (sts:GetCallerIdentity); list it in \
                     [cloud_audit] gatehouse_principals to protect it"),
            }
        }
    }

    /// What [`Screen::prepare_revocations`] does for Looker, before a plan that revokes there:
    /// read the holders of the protected groups and roles when they were never read or
    /// [`LOOKER_REFRESH`] ago (the catalog, cached by the client, then one member list per
    /// protected group or role; none listed, no call). On failure what was known stays.
    pub async fn learn_holders(&self) {
        let Some(l) = &self.looker_client else {
            return;
        };
        if !self.protects_holders() {
            return;
        }
        let mut learned = self.learned.lock().await;
        if learned
            .holders_at
            .is_some_and(|at| at.elapsed() < self.looker_refresh)
        {
            return;
        }
        match self.refresh_looker_holders(l).await {
            Ok(()) => learned.holders_at = Some(Instant::now()),
            Err(e) => tracing::warn!(error = %e,
                "cannot read the holders of the protected looker groups and roles; looker revocations \
                 wait until it can, or go on judged by the holders read before"),
        }
    }

    /// Some Looker group or role is protected: its holders must be read before a revocation.
    fn protects_holders(&self) -> bool {
        !(self.rules.looker_groups.is_empty() && self.rules.looker_roles.is_empty())
    }

    /// Learn Gatehouse's own Looker user and the holders of the protected groups and roles (what
    /// both `prepare`s learn, at once).
    pub async fn refresh_looker(&self, client: &LookerClient) -> Result<(), LookerError> {
        self.refresh_own_looker_user(client).await?;
        self.refresh_looker_holders(client).await
    }

    /// `GET /user`: the owner of the API3 key Gatehouse logs in with.
    async fn refresh_own_looker_user(&self, client: &LookerClient) -> Result<(), LookerError> {
        let own = client.whoami().await?;
        tracing::info!(own_user = %own, "gatehouse's own looker user resolved");
        self.looker.write().unwrap_or_else(|p| p.into_inner()).own_user = Some(own);
        Ok(())
    }

    /// The holders of the protected groups and roles (the catalog, then their member lists).
    async fn refresh_looker_holders(&self, client: &LookerClient) -> Result<(), LookerError> {
        let mut holders = BTreeMap::new();
        if self.protects_holders() {
            let catalog = client.catalog().await?;
            for g in &self.rules.looker_groups {
                match catalog.groups.get(g) {
                    Some(id) => {
                        for u in client.group_user_ids(id).await? {
                            holders
                                .entry(u)
                                .or_insert_with(|| format!("member of looker group {g}"));
                        }
                    }
                    None => tracing::warn!(group = %g, "protected looker group does not exist"),
                }
            }
            for n in &self.rules.looker_roles {
                match catalog.roles.get(n) {
                    Some(id) => {
                        for u in client.role_user_ids(id).await? {
                            holders
                                .entry(u)
                                .or_insert_with(|| format!("holder of looker role {n}"));
                        }
                    }
                    None => tracing::warn!(role = %n, "protected looker role does not exist"),
                }
            }
        }
        tracing::info!(
            protected_holders = holders.len(),
            "protected looker holders resolved"
        );
        let mut ids = self.looker.write().unwrap_or_else(|p| p.into_inner());
        ids.holders = holders;
        ids.holders_known = true;
        Ok(())
    }

    /// Learn the IAM user Gatehouse calls AWS as (`sts:GetCallerIdentity`; a role is no IAM user).
    pub async fn refresh_aws(&self, iam: &AwsIam) -> Result<(), gatehouse_domain::cloud::CloudError> {
        if let Some(name) = iam.caller_arn().await?.as_deref().and_then(iam_user_of_arn) {
            tracing::info!(iam_user = %name, "gatehouse calls aws as an iam user; it is protected");
            self.own_aws
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name);
        }
        Ok(())
    }

    pub fn set_looker(&self, ids: LookerIds) {
        *self.looker.write().unwrap_or_else(|p| p.into_inner()) = ids;
    }

    pub fn looker_ids(&self) -> LookerIds {
        self.looker.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn looker_reason(&self, s: &Screened<'_>) -> Option<String> {
        let ids = self.looker.read().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = s.principal {
            if ids.own_user.as_deref() == Some(p) {
                return Some(format!(
                    "gatehouse's own looker user {p} (owner of the api3 key it logs in with)"
                ));
            }
            if let Some(secret) = self.rules.rotated_looker.get(p)
                && s.call.path.contains("/credentials_api3")
            {
                return Some(format!(
                    "api3 keys of looker user {p} are changed only by the rotator (secret {secret})"
                ));
            }
        }
        if !s.revokes {
            return None;
        }
        let p = s.principal?;
        if self.rules.looker_users.contains(p) {
            return Some(format!("protected principal: looker user {p}"));
        }
        ids.holders
            .get(p)
            .map(|why| format!("protected principal: looker user {p}, {why}"))
    }

    fn aws_reason(&self, s: &Screened<'_>) -> Option<String> {
        let p = s.principal?;
        if self.own_aws.read().unwrap_or_else(|e| e.into_inner()).contains(p) {
            return Some(format!("gatehouse's own aws identity (iam user {p})"));
        }
        let action = s
            .call
            .body
            .as_ref()
            .and_then(|b| b.get("Action"))
            .and_then(|a| a.as_str())
            .unwrap_or_default();
        if let Some(secret) = self.rules.rotated_aws.get(p)
            && action.contains("AccessKey")
        {
            return Some(format!(
                "access keys of iam user {p} are changed only by the rotator (secret {secret})"
            ));
        }
        (s.revokes && self.rules.aws_users.contains(p)).then(|| format!("protected principal: iam user {p}"))
    }

    fn gcp_reason(&self, s: &Screened<'_>) -> Option<String> {
        let p = s.principal?;
        let lower = p.to_ascii_lowercase();
        if self.rules.own_gcp.contains(&lower) {
            return Some(format!("gatehouse's own gcp identity ({p})"));
        }
        // Members are compared with the type's case folded too (`serviceAccount:`).
        let protected = self
            .rules
            .gcp_members
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&lower));
        (s.revokes && protected).then(|| format!("protected principal: gcp member {p}"))
    }
}

impl Screen for Safety {
    fn prepare(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.learn())
    }

    fn prepare_revocations(
        &self,
        target: TargetName,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            if target == TargetName::LOOKER {
                self.learn_holders().await;
            }
        })
    }

    /// A Looker revocation while Gatehouse's own Looker user (`GET /user` failed) or the holders
    /// of a protected group or role were never read: it might be the one that locks Gatehouse
    /// out, or offboard a protected admin, so it waits, and the event is tried again.
    fn not_ready(&self, s: &Screened<'_>) -> Option<String> {
        if !(s.target == TargetName::LOOKER && s.revokes && self.rules.looker_live) {
            return None;
        }
        let ids = self.looker.read().unwrap_or_else(|p| p.into_inner());
        if ids.own_user.is_none() {
            return Some(
                "gatehouse's own looker user is not known yet (GET /user failed); revocations wait".into(),
            );
        }
        (self.protects_holders() && !ids.holders_known).then(|| {
            "the holders of the protected looker groups and roles are not known yet (reading them \
             failed); revocations wait"
                .into()
        })
    }

    fn withhold(&self, s: &Screened<'_>) -> Option<String> {
        let reason = match s.target {
            TargetName::LOOKER => self.looker_reason(s),
            TargetName::AWS => self.aws_reason(s),
            TargetName::GCP => self.gcp_reason(s),
            _ => None,
        };
        reason.or_else(|| {
            let email = s.email?.to_ascii_lowercase();
            (s.revokes && self.rules.emails.contains(&email))
                .then(|| format!("protected principal: {email} ([safety] protected)"))
        })
    }
}

/// `arn:aws:iam::123456789012:user/path/NAME` → `NAME`.
fn iam_user_of_arn(arn: &str) -> Option<String> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (_, resource) = rest.split_once(':')?;
    let path = resource.strip_prefix("user/")?;
    path.rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_domain::looker::{HttpCall, Method};

    fn cfg(toml: &str) -> Config {
        toml::from_str(toml).unwrap()
    }

    fn step<'a>(
        target: TargetName,
        call: &'a HttpCall,
        email: Option<&'a str>,
        principal: Option<&'a str>,
        revokes: bool,
    ) -> Screened<'a> {
        Screened {
            target,
            call,
            rule: "offboarding",
            email,
            principal,
            revokes,
        }
    }

    fn call(method: Method, path: &str) -> HttpCall {
        HttpCall {
            method,
            path: path.into(),
            body: None,
        }
    }

    fn aws(action: &str) -> HttpCall {
        HttpCall {
            method: Method::Post,
            path: "/".into(),
            body: Some(serde_json::json!({ "Action": action })),
        }
    }

    #[test]
    fn its_own_looker_user_is_never_touched_and_revocations_wait_until_it_is_known() {
        let s = Safety::from_config(&cfg(
            "[looker]\nurl = \"https://x.looker.com\"\nclient_id = \"id\"\nclient_secret = \"s\"\n",
        ));
        assert!(format!("{s:?}").starts_with("Safety"));
        let del_key = call(Method::Delete, "/users/101/credentials_api3/7001");
        let r = s.not_ready(&step(TargetName::LOOKER, &del_key, None, Some("101"), true));
        assert!(
            r.unwrap().contains("not known yet"),
            "unresolved: revocations wait"
        );
        assert_eq!(
            s.withhold(&step(TargetName::LOOKER, &del_key, None, Some("101"), true)),
            None,
            "waiting is not withholding for good"
        );
        s.set_looker(LookerIds {
            own_user: Some("101".into()),
            holders: BTreeMap::new(),
            holders_known: true,
        });
        let r = s.withhold(&step(TargetName::LOOKER, &del_key, None, Some("101"), true));
        assert!(r.unwrap().contains("own looker user 101"));
        let add = call(Method::Post, "/groups/5/users");
        assert!(
            s.withhold(&step(TargetName::LOOKER, &add, None, Some("101"), false))
                .is_some(),
            "no step at all on its own user"
        );
        let other = call(Method::Delete, "/users/102/credentials_api3/7002");
        assert_eq!(
            s.withhold(&step(TargetName::LOOKER, &other, None, Some("102"), true)),
            None
        );
    }

    #[test]
    fn protected_principals_are_never_revoked_but_may_be_granted() {
        let s = Safety::from_config(&cfg(
            "[safety]\nprotected = [\"Root@Example.com\", \"looker:user:7\", \"looker:role:Admin\", \
             \"aws:user:breakglass\", \"gcp:user:ops@example.com\"]\n",
        ));
        let mut holders = BTreeMap::new();
        holders.insert("8".to_string(), "holder of looker role Admin".to_string());
        s.set_looker(LookerIds {
            own_user: Some("1".into()),
            holders,
            holders_known: true,
        });
        let disable = call(Method::Patch, "/users/8");
        for (target, c, email, principal) in [
            (TargetName::LOOKER, &disable, None, Some("7")),
            (TargetName::LOOKER, &disable, None, Some("8")),
            (TargetName::LOOKER, &disable, Some("root@example.com"), Some("9")),
            (
                TargetName::AWS,
                &aws("RemoveUserFromGroup"),
                None,
                Some("breakglass"),
            ),
            (
                TargetName::AWS,
                &aws("DeleteLoginProfile"),
                Some("ROOT@example.com"),
                Some("root"),
            ),
            (TargetName::GCP, &disable, None, Some("user:Ops@example.com")),
        ] {
            let r = s.withhold(&step(target, c, email, principal, true));
            assert!(
                r.as_deref().is_some_and(|r| r.starts_with("protected principal")),
                "{target} {principal:?}: {r:?}"
            );
            assert_eq!(
                s.withhold(&step(target, c, email, principal, false)),
                None,
                "grants pass"
            );
        }
        assert!(
            s.withhold(&step(TargetName::LOOKER, &disable, None, Some("8"), true))
                .unwrap()
                .contains("role Admin")
        );
        assert_eq!(
            s.withhold(&step(
                TargetName::LOOKER,
                &disable,
                Some("bob@example.com"),
                Some("10"),
                true
            )),
            None
        );
        assert_eq!(
            s.withhold(&step(
                TargetName::AWS,
                &aws("RemoveUserFromGroup"),
                None,
                Some("bob"),
                true
            )),
            None
        );
    }

    #[test]
    fn its_own_cloud_identities_and_rotated_keys_are_left_alone() {
        let s = Safety::from_config(&cfg(
            "[cloud_audit]\ngatehouse_principals = [\"arn:aws:iam::123456789012:user/ops/gatehouse\", \
             \"gh@proj.iam.gserviceaccount.com\"]\n\
             [[rotator.secrets]]\nname = \"etl\"\nkind = { type = \"aws_access_key\", user_name = \"etl\" }\n\
             store = { type = \"aws_secrets_manager\", secret_id = \"etl\" }\n",
        ));
        let r = s.withhold(&step(
            TargetName::AWS,
            &aws("AddUserToGroup"),
            None,
            Some("gatehouse"),
            false,
        ));
        assert!(r.unwrap().contains("own aws identity"));
        let r = s.withhold(&step(
            TargetName::AWS,
            &aws("DeleteAccessKey"),
            None,
            Some("etl"),
            true,
        ));
        assert!(r.unwrap().contains("rotator (secret etl)"));
        assert_eq!(
            s.withhold(&step(
                TargetName::AWS,
                &aws("RemoveUserFromGroup"),
                None,
                Some("etl"),
                true
            )),
            None,
            "only the keys are the rotator's"
        );
        let c = call(Method::Post, "/v1/projects/p:setIamPolicy");
        let r = s.withhold(&step(
            TargetName::GCP,
            &c,
            None,
            Some("serviceAccount:GH@proj.iam.gserviceaccount.com"),
            true,
        ));
        assert!(r.unwrap().contains("own gcp identity"));
        assert_eq!(iam_user_of_arn("arn:aws:sts::1:assumed-role/r/s"), None);
        assert_eq!(iam_user_of_arn("arn:aws:iam::1:user/a"), Some("a".into()));
    }
}
