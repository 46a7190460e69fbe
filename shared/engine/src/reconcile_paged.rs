//! Reconcile's Looker read at the API floor (issue 14): the catalog once, every user in pages
//! of at most 1,000 (`GET /users` with `limit`/`offset` and only the fields a plan needs; direct
//! roles come from `role_ids`), and per-user reads only where Looker has no bulk source: the
//! user-set values of managed attributes, read by a rolling audit that covers everyone every
//! `k` runs. For N people: `ceil((N + 1) / page)` pages + 3 catalog lists + the login, plus
//! `≈ N / k` audit reads when attributes are managed.
//!
//! People the audit does not cover this run are taken to hold the values the policy wants
//! (their events converge them; the audit finds hand-made changes within `k` runs). Groups,
//! direct roles, sessions, API3 keys and the disabled flag are read for everyone every run.

use crate::engine::{Engine, ProcessError};
use crate::reconcile_model::Progress;
use futures::StreamExt;
use gatehouse_domain::identity::Identity;
use gatehouse_domain::looker::{Catalog, LookerUser};
use gatehouse_domain::plan;
use gatehouse_domain::policy;
use gatehouse_domain::ports::{LookerPort, StateStore};
use gatehouse_domain::target::TargetName;
use std::collections::HashMap;

/// Calls the catalog costs (`/groups`, `/roles`, `/user_attributes`).
pub const CATALOG_CALLS: usize = 3;

/// How reconcile reads Looker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Users per page (1..=1000).
    pub page_size: usize,
    /// The attribute audit covers everyone every this many runs (1: every run).
    pub audit_every: u32,
    /// This run's number (which slice the audit reads).
    pub audit_run: u64,
}

impl Default for ReadOptions {
    /// Pages of 1,000; every user's attribute values every run (no run counter needed).
    fn default() -> Self {
        ReadOptions {
            page_size: 1000,
            audit_every: 1,
            audit_run: 0,
        }
    }
}

impl ReadOptions {
    /// Whether this run's audit reads `subject`'s attribute values. A stable hash of the
    /// person, so everyone falls in exactly one of the `audit_every` slices whoever else joins.
    pub fn audits(&self, subject: &str) -> bool {
        let k = u64::from(self.audit_every.max(1));
        k == 1 || fnv1a(subject) % k == self.audit_run % k
    }
}

/// FNV-1a (64 bit): stable across processes and releases, unlike `std`'s hasher.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the paged read found.
pub struct LookerRead {
    pub catalog: Catalog,
    /// Lowercased email → the person's user.
    pub users: crate::reconcile_model::LookerUsers,
    /// Looker calls made (login not included: the client logs in when its token is old).
    pub calls: usize,
    pub duplicates: usize,
    /// People whose attribute values were read this run.
    pub audited: usize,
    /// Users that are nobody's in the directory: not resolved to a person, and no person's
    /// email or previous email (issue 15: orphan candidates, found in the same pages).
    pub unmatched: Vec<LookerUser>,
}

/// Every user, page by page (with retries per page).
async fn all_users<S: StateStore, L: LookerPort>(
    engine: &Engine<S, L>,
    looker: &L,
    page_size: usize,
) -> Result<(Vec<LookerUser>, usize), ProcessError> {
    let page_size = page_size.clamp(1, 1000);
    let (mut users, mut calls) = (Vec::new(), 0);
    loop {
        let offset = users.len();
        let page = gatehouse_targets::retry_read(
            engine.retry_policy(),
            |_: &gatehouse_domain::looker::LookerError| false,
            || looker.users_page(offset, page_size),
        )
        .await?;
        calls += 1;
        let last = page.len() < page_size;
        users.extend(page);
        if last {
            return Ok((users, calls));
        }
    }
}

/// Read Looker for `identities` at the API floor.
pub async fn read_looker<S: StateStore, L: LookerPort>(
    engine: &Engine<S, L>,
    identities: &[Identity],
    opts: &ReadOptions,
    progress: &dyn Progress,
) -> Result<Option<LookerRead>, ProcessError> {
    let Some(looker) = engine.looker() else {
        return Ok(None);
    };
    progress.phase("read looker", identities.len());
    let catalog = engine.catalog().await?;
    let (all, pages) = all_users(engine, looker, opts.page_size).await?;
    let mut by_email: HashMap<String, Vec<usize>> = HashMap::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (i, u) in all.iter().enumerate() {
        by_id.insert(u.id.as_str(), i);
        if let Some(e) = &u.email {
            by_email.entry(e.to_lowercase()).or_default().push(i);
        }
    }
    let (all, by_id, by_email, catalog_ref) = (&all, &by_id, &by_email, &catalog);
    let people = identities.iter().filter_map(|id| {
        let d = policy::evaluate(engine.policy(), id);
        let email = d.email.clone()?;
        Some((id, email, d))
    });
    let people: Vec<_> = people.collect();
    let directory_emails: std::collections::HashSet<String> = people
        .iter()
        .flat_map(|(id, email, _)| {
            std::iter::once(email.as_str()).chain(id.previous_emails.iter().map(String::as_str))
        })
        .map(str::to_lowercase)
        .collect();
    let reads: Vec<_> = people
        .into_iter()
        .map(|(id, email, d)| async move {
            let (user, others) = resolve(engine, id, &email, all, by_id, by_email).await?;
            let needs = plan::read_needs(&d, catalog_ref);
            let mut calls = 0;
            let mut audited = false;
            let user = match user {
                Some(mut u) if !needs.attribute_ids.is_empty() => {
                    if opts.audits(&id.key) {
                        let values = gatehouse_targets::retry_read(
                            engine.retry_policy(),
                            |_: &gatehouse_domain::looker::LookerError| false,
                            || looker.attribute_values(&u.id, &needs.attribute_ids),
                        )
                        .await?;
                        calls += 1;
                        audited = true;
                        u.user_attribute_values = Some(values);
                    } else {
                        // Not audited this run: taken to hold what the policy wants.
                        u.user_attribute_values = Some(
                            d.attributes
                                .iter()
                                .filter_map(|(name, (value, _))| {
                                    Some((catalog_ref.user_attributes.get(name)?.clone(), value.clone()))
                                })
                                .collect(),
                        );
                    }
                    Some(u)
                }
                u => u,
            };
            progress.advance(1);
            Ok(Found {
                email: email.to_ascii_lowercase(),
                user,
                calls,
                duplicates: others,
                audited,
            })
        })
        .collect();
    let found: Vec<Result<Found, ProcessError>> =
        futures::stream::iter(reads).buffer_unordered(8).collect().await;
    let mut read = LookerRead {
        catalog: catalog.clone(),
        users: Default::default(),
        calls: CATALOG_CALLS + pages,
        duplicates: 0,
        audited: 0,
        unmatched: Vec::new(),
    };
    let mut users = Vec::with_capacity(found.len());
    for f in found {
        let f = f?;
        read.calls += f.calls;
        read.duplicates += f.duplicates;
        read.audited += usize::from(f.audited);
        users.push((f.email, f.user));
    }
    read.users = crate::reconcile_model::looker_users(users);
    let resolved: std::collections::HashSet<&str> =
        read.users.values().flatten().map(|u| u.id.as_str()).collect();
    let unmatched: Vec<LookerUser> = all
        .iter()
        .filter(|u| {
            !resolved.contains(u.id.as_str())
                && u.email
                    .as_ref()
                    .is_none_or(|e| !directory_emails.contains(&e.to_lowercase()))
        })
        .cloned()
        .collect();
    read.unmatched = unmatched;
    Ok(Some(read))
}

struct Found {
    email: String,
    user: Option<LookerUser>,
    calls: usize,
    duplicates: usize,
    audited: bool,
}

/// One person's user among the pages, as `Engine::resolve_looker` resolves it (issue 16):
/// linked users first, else the users with their email, else with a previous email; several
/// candidates and no link: none (reported as duplicates). A user found by email is linked.
async fn resolve<S: StateStore, L: LookerPort>(
    engine: &Engine<S, L>,
    identity: &Identity,
    email: &str,
    all: &[LookerUser],
    by_id: &HashMap<&str, usize>,
    by_email: &HashMap<String, Vec<usize>>,
) -> Result<(Option<LookerUser>, usize), ProcessError> {
    let looker = TargetName::LOOKER.as_str();
    let person = identity.key.as_str();
    let links = engine.store().account_links(looker, person).await?;
    let mut found: Vec<usize> = links
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .collect();
    let linked = !found.is_empty();
    for e in std::iter::once(email).chain(identity.previous_emails.iter().map(String::as_str)) {
        if !found.is_empty() {
            break;
        }
        found.extend(by_email.get(&e.to_lowercase()).into_iter().flatten());
    }
    let Some((&first, others)) = found.split_first() else {
        return Ok((None, 0));
    };
    for &o in others {
        gatehouse_platform::events::reconcile_duplicate_user(&person, &all[o].id);
    }
    if !linked && !others.is_empty() {
        tracing::warn!(subject = %person, candidates = ?found.iter().map(|&i| &all[i].id).collect::<Vec<_>>(),
            "several looker users could be this person and none is linked; not linked, not changed");
        return Ok((None, found.len()));
    }
    if !linked {
        engine
            .store()
            .link_accounts(looker, person, std::slice::from_ref(&all[first].id))
            .await?;
    }
    Ok((Some(all[first].clone()), others.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_covers_everyone_once_every_k_runs() {
        let people: Vec<String> = (0..500).map(|i| format!("00u{i}")).collect();
        for k in [1u32, 3, 7] {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for run in 40..40 + u64::from(k) {
                let o = ReadOptions {
                    page_size: 1000,
                    audit_every: k,
                    audit_run: run,
                };
                for p in &people {
                    if o.audits(p) {
                        *seen.entry(p).or_default() += 1;
                    }
                }
            }
            assert_eq!(seen.len(), people.len(), "k = {k}: everyone audited");
            assert!(seen.values().all(|&n| n == 1), "k = {k}: once each");
        }
    }
}
