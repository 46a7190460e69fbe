//! Okta directory import and hook enrichment (issue 18), with the System Log's API client.
//!
//! Hook and System Log events carry a person's login and display name only, so a policy that
//! maps Okta profile attributes (`department`, `costCenter`, ...) to Looker user attributes, or
//! grants by Okta group, cannot be served from them, and a new installation knows nobody's
//! groups. Two remedies, both publishing ordinary Okta envelopes that the processor folds into
//! the directory exactly like a hook's (the intake never writes the directory itself):
//!
//! * **Import** ([`DirectoryImport`]), at start and every `okta.api.import_interval`:
//!   `GET /api/v1/users` (paged), `GET /api/v1/groups` (paged, to find the ids of the groups
//!   the policy names) and `GET /api/v1/groups/{id}/users` (paged) for those groups only. That
//!   is `⌈users/limit⌉ + ⌈groups/limit⌉ + Σ ⌈members/limit⌉` calls; asking each user's groups
//!   (`/api/v1/users/{id}/groups`) would be one call per person, far more for any org with more
//!   people than the policy names groups. Only what differs from the directory is published: a
//!   `ProfileUpdated` carrying the profile attributes the policy names, and a membership added or
//!   removed per named group — an unchanged org publishes nothing.
//! * **Enrichment** ([`Enricher`]): a hook event of an active person whose profile lacks an
//!   attribute the policy names gets the person's current profile (`GET /api/v1/users/{id}`)
//!   before it is enqueued. Answers are cached (`okta.api.enrich_ttl`, at most
//!   `okta.api.enrich_cache` people, least recently used evicted); while Okta's rate-limit window
//!   is spent no call is made and the event goes on as it came (the next import fills the gap).

use super::okta_api::{OktaApi, OktaApiError};
use chrono::{DateTime, SecondsFormat, Utc};
use gatehouse_domain::envelope::{Envelope, EnvelopeId, GroupRef, IdentityEvent, Profile, Source, Subject};
use gatehouse_domain::identity::Identity;
use gatehouse_domain::policy::{Condition, Policy};
use gatehouse_domain::ports::{BackendError, Directory, QueueProducer};
use gatehouse_platform::config::Config;
use gatehouse_platform::events::{self, EnrichResult, OktaApiUse};
use gatehouse_platform::shutdown::Shutdown;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const USERS: &str = "/api/v1/users";
const GROUPS: &str = "/api/v1/groups";
/// Okta's ceiling for `limit` on the Users and Groups listings.
pub const MAX_DIRECTORY_PAGE: u32 = 200;
/// Pages followed at most in one listing (a loop guard).
const MAX_PAGES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("okta directory import: {0}")]
    Api(#[from] OktaApiError),
    #[error("okta directory import: {0}")]
    Store(#[from] BackendError),
    #[error("okta directory import could not enqueue: {0}")]
    Enqueue(String),
}

/// The Okta profile attributes and groups a policy names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub attributes: BTreeSet<String>,
    /// Group names (or ids) from `idp_group` conditions.
    pub groups: BTreeSet<String>,
}

impl Needs {
    pub fn of(policy: &Policy) -> Needs {
        let mut n = Needs::default();
        for m in &policy.attributes {
            n.attributes.insert(m.idp_attribute.clone());
        }
        for r in &policy.rules {
            match &r.when {
                Condition::IdpGroup { group, .. } => {
                    n.groups.insert(group.clone());
                }
                Condition::Attribute { name, .. } => {
                    n.attributes.insert(name.clone());
                }
                Condition::Everyone => {}
            }
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty() && self.groups.is_empty()
    }
}

/// An Okta profile value as a directory string (strings as they are; numbers and booleans
/// printed; arrays joined with `,`; null or objects: none).
fn profile_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().filter_map(profile_value).collect();
            (!parts.is_empty()).then(|| parts.join(","))
        }
        _ => None,
    }
}

/// The directory facts of an Okta user object (`id`, `profile`): the subject and the profile
/// Gatehouse keeps (login, email, names, and the attributes named in `attributes`).
pub fn user_facts(user: &Value, attributes: &BTreeSet<String>) -> Option<(Subject, Profile)> {
    let id = user.get("id")?.as_str().filter(|i| !i.is_empty())?;
    let p = user.get("profile")?;
    let mut profile = Profile::new();
    for k in ["login", "email", "firstName", "lastName"]
        .into_iter()
        .map(str::to_string)
        .chain(attributes.iter().cloned())
    {
        if let Some(v) = p.get(&k).and_then(profile_value) {
            profile.insert(k, v);
        }
    }
    let display = match (profile.get("firstName"), profile.get("lastName")) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        _ => p.get("displayName").and_then(profile_value),
    };
    if let Some(d) = &display {
        profile.insert("displayName".into(), d.clone());
    }
    let email = profile
        .get("email")
        .or_else(|| profile.get("login"))
        .filter(|e| e.contains('@'))
        .cloned();
    Some((
        Subject {
            key: format!("okta:{id}"),
            email,
            display_name: display,
        },
        profile,
    ))
}

/// `okta:<org>:import-<digest>`: one id per import round, person and fact, so a replay of the
/// round is applied once and a later round saying the same again is a new event.
fn import_id(org: &str, round: DateTime<Utc>, parts: &[&str]) -> Result<EnvelopeId, String> {
    let mut h = Sha256::new();
    h.update(round.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    let digest: String = h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect();
    EnvelopeId::namespaced(Source::Okta, org, "import id", &format!("import-{digest}"))
}

fn envelope(
    id: EnvelopeId,
    subject: &Subject,
    at: DateTime<Utc>,
    event: IdentityEvent,
    profile: Profile,
    kind: &str,
) -> Envelope {
    Envelope {
        version: Envelope::VERSION,
        id,
        source: Source::Okta,
        subject: subject.clone(),
        occurred_at: at,
        received_at: at,
        event,
        profile,
        source_event_type: kind.to_string(),
        raw: Value::Null,
        trace_parent: None,
    }
}

/// What one import round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub users: usize,
    pub groups: usize,
    pub calls: usize,
    /// Envelopes published (only facts that differ from the directory).
    pub published: usize,
    pub skipped: usize,
}

/// The directory import of one org.
pub struct DirectoryImport<Q, D> {
    api: Arc<OktaApi>,
    queue: Q,
    directory: D,
    org: String,
    needs: Needs,
    page_size: u32,
}

impl<Q: QueueProducer, D: Directory> DirectoryImport<Q, D> {
    pub fn new(api: Arc<OktaApi>, queue: Q, directory: D, org: String, needs: Needs, page_size: u32) -> Self {
        DirectoryImport {
            api,
            queue,
            directory,
            org,
            needs,
            page_size: page_size.clamp(1, MAX_DIRECTORY_PAGE),
        }
    }

    /// Every item of a paged listing starting at `path`.
    async fn list(&self, path: &str, calls: &mut usize) -> Result<Vec<Value>, OktaApiError> {
        let limit = self.page_size.to_string();
        let mut url = self.api.url(path, &[("limit", limit.as_str())]);
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let page = self.api.get_page(&url).await?;
            *calls += 1;
            let empty = page.items.is_empty();
            all.extend(page.items);
            match page.next {
                Some(next) if !empty => url = next,
                _ => break,
            }
        }
        Ok(all)
    }

    /// Read users, the named groups' members and the named attributes; publish what differs
    /// from the directory.
    pub async fn import_once(&self, round: DateTime<Utc>) -> Result<ImportReport, ImportError> {
        let mut report = ImportReport::default();
        let users = self.list(USERS, &mut report.calls).await?;
        report.users = users.len();
        // The named groups: their ids, names and members.
        let mut groups: Vec<(GroupRef, BTreeSet<String>)> = Vec::new();
        if !self.needs.groups.is_empty() {
            for g in self.list(GROUPS, &mut report.calls).await? {
                let Some(id) = g.get("id").and_then(Value::as_str) else {
                    continue;
                };
                let name = g
                    .pointer("/profile/name")
                    .and_then(Value::as_str)
                    .unwrap_or(id)
                    .to_string();
                if !(self.needs.groups.contains(&name) || self.needs.groups.contains(id)) {
                    continue;
                }
                if !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    tracing::warn!(group = %name, "okta group id has unexpected characters; not imported");
                    continue;
                }
                let members = self
                    .list(&format!("{GROUPS}/{id}/users"), &mut report.calls)
                    .await?
                    .iter()
                    .filter_map(|u| u.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect();
                groups.push((
                    GroupRef {
                        id: id.to_string(),
                        name,
                    },
                    members,
                ));
            }
            report.groups = groups.len();
        }
        let known: BTreeMap<String, Identity> = self
            .directory
            .subjects()
            .await?
            .into_iter()
            .map(|s| (s.identity.key.clone(), s.identity))
            .collect();
        let mut out = Vec::new();
        for user in &users {
            let Some((subject, profile)) = user_facts(user, &self.needs.attributes) else {
                report.skipped += 1;
                continue;
            };
            if let Some(e) = &subject.email
                && gatehouse_domain::email::validate(e).is_err()
            {
                report.skipped += 1;
                tracing::warn!(subject = %subject.key, "okta user skipped by the import: invalid email");
                continue;
            }
            let okta_id = subject.key.trim_start_matches("okta:").to_string();
            let have = known.get(&subject.key);
            let differs = profile
                .iter()
                .any(|(k, v)| have.and_then(|i| i.attribute(k)) != Some(v.as_str()));
            if differs {
                let facts = serde_json::to_string(&profile).unwrap_or_default();
                let id = import_id(&self.org, round, &[&okta_id, "profile", &facts]);
                match id {
                    Ok(id) => out.push(envelope(
                        id,
                        &subject,
                        round,
                        IdentityEvent::ProfileUpdated,
                        profile,
                        "gatehouse.import.profile",
                    )),
                    Err(reason) => {
                        report.skipped += 1;
                        tracing::warn!(reason, "okta user skipped by the import");
                        continue;
                    }
                }
            }
            for (g, members) in &groups {
                let member = members.contains(&okta_id);
                let known_member = have
                    .and_then(|i| i.groups.get(&g.id))
                    .map(|m| m.member && m.name == g.name);
                // Published when it differs; a non-member the directory never saw in the group
                // needs nothing.
                let publish = match known_member {
                    Some(m) => m != member,
                    None => member,
                };
                if !publish {
                    continue;
                }
                let (event, kind) = if member {
                    (IdentityEvent::GroupMemberAdded { group: g.clone() }, "added")
                } else {
                    (IdentityEvent::GroupMemberRemoved { group: g.clone() }, "removed")
                };
                if let Ok(id) = import_id(&self.org, round, &[&okta_id, kind, &g.id, &g.name]) {
                    out.push(envelope(
                        id,
                        &subject,
                        round,
                        event,
                        Profile::new(),
                        &format!("gatehouse.import.membership.{kind}"),
                    ));
                }
            }
        }
        for chunk in out.chunks(100) {
            self.queue
                .publish(chunk)
                .await
                .map_err(|e| ImportError::Enqueue(e.to_string()))?;
        }
        report.published = out.len();
        events::okta_import_published(out.len() as u64);
        events::okta_api_calls(OktaApiUse::Import, report.calls as u64);
        Ok(report)
    }

    /// Import now, then every `every`, until shutdown.
    pub async fn run(self, every: Duration, shutdown: Shutdown) {
        loop {
            tokio::select! {
                r = self.import_once(gatehouse_domain::clock::now()) => match r {
                    Ok(r) => tracing::info!(org = %self.org, users = r.users, groups = r.groups, calls = r.calls, published = r.published, skipped = r.skipped, "okta directory imported"),
                    Err(e) => {
                        events::okta_import_failed(&self.org, &e);
                    }
                },
                _ = shutdown.wait() => return,
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// What the policy file (`policy`) names; nothing when there is none or it cannot be read (the
/// processor refuses such a policy loudly at its start).
pub fn needs_of_config(cfg: &Config) -> Needs {
    let Some(path) = &cfg.policy else {
        return Needs::default();
    };
    match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| Policy::from_toml(&t).map_err(|e| e.to_string()))
    {
        Ok(p) => Needs::of(&p),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "policy unreadable: no okta directory import or enrichment");
            Needs::default()
        }
    }
}

/// The API client for the import and enrichment, when `[okta.api]` is configured.
fn api_of(cfg: &Config) -> Option<Arc<OktaApi>> {
    match OktaApi::from_config(&cfg.okta.api) {
        Ok(Some(api)) => Some(Arc::new(api)),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "okta api client cannot be built: no directory import or enrichment");
            None
        }
    }
}

/// The hook's enricher, when `[okta.api]` is configured and the policy names an attribute.
pub fn enricher_of_config(cfg: &Config) -> Option<Arc<Enricher>> {
    let needs = needs_of_config(cfg);
    let api = api_of(cfg)?;
    Enricher::new(api, &needs, cfg.okta.api.enrich_ttl, cfg.okta.api.enrich_cache).map(Arc::new)
}

/// Start the import (now, then every `okta.api.import_interval`) when `[okta.api]` is
/// configured and the policy names an Okta group or attribute.
pub fn spawn<Q, D>(cfg: &Config, queue: Q, directory: D, shutdown: &Shutdown) -> Option<JoinHandle<()>>
where
    Q: QueueProducer + 'static,
    D: Directory + 'static,
{
    let needs = needs_of_config(cfg);
    if needs.is_empty() {
        return None;
    }
    let api = api_of(cfg)?;
    tracing::info!(org = %cfg.okta.org, attributes = ?needs.attributes, groups = ?needs.groups, "okta directory import on");
    let import = DirectoryImport::new(
        api,
        queue,
        directory,
        cfg.okta.org.clone(),
        needs,
        MAX_DIRECTORY_PAGE,
    );
    Some(tokio::spawn(
        import.run(cfg.okta.api.import_interval, shutdown.clone()),
    ))
}

/// Fills the profile attributes the policy names into hook events that lack them.
pub struct Enricher {
    api: Arc<OktaApi>,
    attributes: BTreeSet<String>,
    ttl: Duration,
    cache: Mutex<hashlink::LruCache<String, (Instant, Profile)>>,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("attributes", &self.attributes)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Enricher {
    /// `None` when the policy names no attribute (nothing to enrich).
    pub fn new(api: Arc<OktaApi>, needs: &Needs, ttl: Duration, capacity: usize) -> Option<Enricher> {
        if needs.attributes.is_empty() {
            return None;
        }
        Some(Enricher {
            api,
            attributes: needs.attributes.clone(),
            ttl,
            cache: Mutex::new(hashlink::LruCache::new(capacity.max(1))),
        })
    }

    fn wants(&self, env: &Envelope) -> bool {
        let onboarding_side = matches!(
            env.event,
            IdentityEvent::UserCreated
                | IdentityEvent::UserActivated
                | IdentityEvent::UserUnsuspended
                | IdentityEvent::ProfileUpdated
                | IdentityEvent::GroupMemberAdded { .. }
                | IdentityEvent::GroupMemberRemoved { .. }
        );
        onboarding_side
            && env.source == Source::Okta
            && env.subject.key.starts_with("okta:")
            && self.attributes.iter().any(|a| !env.profile.contains_key(a))
    }

    fn cached(&self, key: &str) -> Option<Profile> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match c.get(key) {
            Some((at, p)) if at.elapsed() < self.ttl => Some(p.clone()),
            Some(_) => {
                c.remove(key);
                None
            }
            None => None,
        }
    }

    /// The named attributes of the person, from the cache or `GET /api/v1/users/{id}`.
    async fn profile_of(&self, key: &str) -> Result<Profile, OktaApiError> {
        if let Some(p) = self.cached(key) {
            events::okta_enrich(EnrichResult::Cached);
            return Ok(p);
        }
        let id = key.trim_start_matches("okta:");
        let mut url = self.api.url(USERS, &[]);
        url.push('/');
        url.push_str(&percent_encoding_path(id));
        let user = self.api.get_object_now(&url).await?;
        events::okta_api_calls(OktaApiUse::Enrich, 1);
        let facts = user_facts(&user, &self.attributes)
            .map(|(_, p)| p)
            .unwrap_or_default();
        let profile: Profile = facts
            .into_iter()
            .filter(|(k, _)| self.attributes.contains(k))
            .collect();
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), (Instant::now(), profile.clone()));
        events::okta_enrich(EnrichResult::Fetched);
        Ok(profile)
    }

    /// Add the missing named attributes to every event that needs them (the event's own
    /// values win). A failure leaves the event as it came: it is logged, never fatal.
    pub async fn enrich(&self, envelopes: &mut [Envelope]) {
        for env in envelopes.iter_mut() {
            if !self.wants(env) {
                continue;
            }
            match self.profile_of(&env.subject.key).await {
                Ok(p) => {
                    for (k, v) in p {
                        env.profile.entry(k).or_insert(v);
                    }
                }
                Err(e) => {
                    events::okta_enrich(EnrichResult::Failed);
                    tracing::warn!(envelope_id = %env.id, subject = %env.subject.key, error = %e, "okta hook event not enriched; the next import fills the profile");
                }
            }
        }
    }
}

/// `id` as one path segment (Okta ids are `[0-9A-Za-z]`; anything else is escaped).
fn percent_encoding_path(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_needs_are_the_attributes_and_groups_the_policy_names() {
        let p = Policy::from_toml(
            r#"
[[rule]]
name = "eng"
when = { idp_group = "Engineering" }
looker_groups = ["Engineers"]
[[rule]]
name = "emea"
when = { attribute = { name = "region", equals = "emea" } }
looker_groups = ["EMEA"]
[[attribute]]
idp_attribute = "department"
looker_attribute = "dept"
[attributes.dept]
deny_value = "__none__"
"#,
        )
        .unwrap();
        let n = Needs::of(&p);
        assert_eq!(n.groups, BTreeSet::from(["Engineering".to_string()]));
        assert_eq!(
            n.attributes,
            BTreeSet::from(["department".to_string(), "region".to_string()])
        );
    }

    #[test]
    fn user_facts_keep_the_named_attributes_and_print_non_strings() {
        let u = serde_json::json!({"id": "00u1", "profile": {
            "login": "ann@example.com", "email": "ann@example.com", "firstName": "Ann", "lastName": "Lee",
            "department": "Finance", "costCenter": 42, "secret": "not named"}});
        let names = BTreeSet::from(["department".to_string(), "costCenter".to_string()]);
        let (s, p) = user_facts(&u, &names).unwrap();
        assert_eq!(s.key, "okta:00u1");
        assert_eq!(s.email.as_deref(), Some("ann@example.com"));
        assert_eq!(p.get("department").map(String::as_str), Some("Finance"));
        assert_eq!(p.get("costCenter").map(String::as_str), Some("42"));
        assert_eq!(p.get("displayName").map(String::as_str), Some("Ann Lee"));
        assert!(!p.contains_key("secret"));
    }
}
