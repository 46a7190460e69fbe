//! Reconcile's bulk read of Looker users (issue 14): `GET /users` in pages of at most 1,000
//! (`limit`/`offset`, the spec's non-deprecated paging; `sorts=id` so pages do not overlap), only
//! the fields a plan needs, direct roles from `role_ids` (no per-user `GET /users/{id}/roles`).
//! User-set attribute values have no bulk source in API 4.0: they stay one
//! `GET /users/{id}/attribute_values` per user, which reconcile spends only on its rolling audit.

use crate::client::looker::{LookerClient, bad_body};
use chrono::{DateTime, Utc};
use gatehouse_domain::inactivity::Logins;
use gatehouse_domain::looker::{LookerError, LookerUser};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest page Gatehouse asks for (Looker answers at most what `limit` says).
pub const MAX_PAGE: usize = 1000;

/// The `fields` of one page: what a reconcile plan needs, nothing else.
/// The credentials' `logged_in_at` and `created_at` feed license reclamation (issue 15,
/// `gatehouse_domain::inactivity`) at no extra call.
pub const PAGE_FIELDS: &str = "id,email,is_disabled,group_ids,role_ids,\
credentials_email(email,logged_in_at,created_at),credentials_saml(logged_in_at,created_at),\
credentials_google(logged_in_at,created_at),credentials_oidc(logged_in_at,created_at),\
credentials_ldap(logged_in_at,created_at),credentials_looker_openid(logged_in_at,created_at),\
credentials_api3(id),sessions(id)";

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

/// `credentials_email` of a user: its email and login times.
#[derive(Deserialize)]
pub(crate) struct EmailCredential {
    #[serde(default)]
    pub(crate) email: Option<String>,
    #[serde(flatten)]
    times: LoginTimes,
}

/// The login times of a user's credentials other than `credentials_email` (reconcile's pages
/// and, with `[inactivity]`, the per-event search read the same ones).
#[derive(Deserialize, Default)]
pub(crate) struct OtherCredentials {
    #[serde(default)]
    credentials_saml: Option<LoginTimes>,
    #[serde(default)]
    credentials_google: Option<LoginTimes>,
    #[serde(default)]
    credentials_oidc: Option<LoginTimes>,
    #[serde(default)]
    credentials_ldap: Option<LoginTimes>,
    #[serde(default)]
    credentials_looker_openid: Option<LoginTimes>,
}

impl OtherCredentials {
    /// The user's logins over `email` and these credentials (see [`logins`]).
    pub(crate) fn logins(&self, email: Option<&EmailCredential>) -> Option<Logins> {
        logins(
            email
                .map(|c| &c.times)
                .into_iter()
                .chain(self.credentials_saml.iter())
                .chain(self.credentials_google.iter())
                .chain(self.credentials_oidc.iter())
                .chain(self.credentials_ldap.iter())
                .chain(self.credentials_looker_openid.iter()),
        )
    }
}

/// `logged_in_at` and `created_at` of one credential (every kind has both in the 4.0 spec).
#[derive(Deserialize, Default)]
struct LoginTimes {
    #[serde(default)]
    logged_in_at: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

/// A `User` as [`PAGE_FIELDS`] returns it.
#[derive(Deserialize)]
struct PagedUser {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    is_disabled: bool,
    #[serde(default)]
    group_ids: Option<Vec<String>>,
    #[serde(default)]
    role_ids: Option<Vec<String>>,
    #[serde(default)]
    credentials_email: Option<EmailCredential>,
    #[serde(flatten)]
    others: OtherCredentials,
    #[serde(default)]
    credentials_api3: Option<Vec<IdOnly>>,
    #[serde(default)]
    sessions: Option<Vec<IdOnly>>,
}

/// The latest login and the first credential over `creds`; `None` when a time does not parse
/// (an unknown login time must never make a user look inactive).
fn logins<'a>(creds: impl Iterator<Item = &'a LoginTimes>) -> Option<Logins> {
    let parse = |t: &Option<String>| -> Result<Option<DateTime<Utc>>, ()> {
        t.as_deref()
            .map(|s| {
                DateTime::parse_from_rfc3339(s)
                    .map(|d| d.to_utc())
                    .map_err(|_| ())
            })
            .transpose()
    };
    let mut out = Logins::default();
    for c in creds {
        if let Some(at) = parse(&c.logged_in_at).ok()? {
            out.last_login_at = out.last_login_at.max(Some(at));
        }
        if let Some(at) = parse(&c.created_at).ok()? {
            out.first_credential_at = Some(out.first_credential_at.map_or(at, |f| f.min(at)));
        }
    }
    Some(out)
}

impl PagedUser {
    fn into_user(self) -> Result<LookerUser, LookerError> {
        crate::client::looker::check_segment(&self.id).map_err(|m| bad_body("/users", m))?;
        let logins = self.others.logins(self.credentials_email.as_ref());
        let email = self
            .email
            .or_else(|| self.credentials_email.and_then(|c| c.email));
        Ok(LookerUser {
            id: self.id,
            is_disabled: self.is_disabled,
            email,
            group_ids: self.group_ids.unwrap_or_default().into_iter().collect(),
            session_ids: self
                .sessions
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.id)
                .collect(),
            api3_key_ids: self
                .credentials_api3
                .unwrap_or_default()
                .into_iter()
                .map(|k| k.id)
                .collect(),
            // `role_ids` of a User are its direct roles (group roles are not listed there).
            direct_role_ids: Some(self.role_ids.unwrap_or_default().into_iter().collect()),
            user_attribute_values: None,
            logins: logins.map(Box::new),
        })
    }
}

impl LookerClient {
    /// One page of users (`GET /users?limit=&offset=&sorts=id&fields=`): at most `limit` users
    /// (capped at [`MAX_PAGE`]) after skipping `offset`. A page shorter than `limit` is the last.
    pub async fn read_users_page(&self, offset: usize, limit: usize) -> Result<Vec<LookerUser>, LookerError> {
        let limit = limit.clamp(1, MAX_PAGE).to_string();
        let offset = offset.to_string();
        let page: Vec<PagedUser> = self
            .get_json(
                "/users",
                &[
                    ("fields", PAGE_FIELDS),
                    ("sorts", "id"),
                    ("limit", &limit),
                    ("offset", &offset),
                ],
            )
            .await?;
        page.into_iter().map(PagedUser::into_user).collect()
    }

    /// The values user `user_id` holds on its own (source `user`) of `attribute_ids`: one call.
    pub async fn read_attribute_values(
        &self,
        user_id: &str,
        attribute_ids: &[String],
    ) -> Result<BTreeMap<String, String>, LookerError> {
        crate::client::looker::check_segment(user_id)
            .map_err(|m| bad_body("/users/{id}/attribute_values", m))?;
        self.user_set_attributes(user_id, attribute_ids).await
    }
}

#[cfg(test)]
mod login_tests {
    use super::*;

    fn paged(v: serde_json::Value) -> LookerUser {
        serde_json::from_value::<PagedUser>(v)
            .unwrap()
            .into_user()
            .unwrap()
    }

    #[test]
    fn the_latest_login_of_any_credential_and_the_first_credential() {
        let u = paged(serde_json::json!({
            "id": "1",
            "credentials_email": {"email": "a@x.io", "logged_in_at": "2026-01-01T00:00:00.000+00:00",
                                  "created_at": "2025-01-01T00:00:00.000+00:00"},
            "credentials_saml": {"logged_in_at": "2026-06-01T10:00:00.000+00:00",
                                 "created_at": "2025-03-01T00:00:00.000+00:00"},
            "credentials_google": null,
        }));
        let l = u.logins.unwrap();
        assert_eq!(l.last_login_at.unwrap().to_rfc3339(), "2026-06-01T10:00:00+00:00");
        assert_eq!(
            l.first_credential_at.unwrap().to_rfc3339(),
            "2025-01-01T00:00:00+00:00"
        );
        assert_eq!(u.email.as_deref(), Some("a@x.io"));

        let never = paged(serde_json::json!({
            "id": "2", "credentials_email": {"email": "b@x.io", "logged_in_at": null,
                                             "created_at": "2025-01-01T00:00:00Z"}}));
        assert_eq!(never.logins.unwrap().last_login_at, None);
        // A login time that does not parse must not make the user look inactive.
        let bad = paged(serde_json::json!({
            "id": "3", "credentials_saml": {"logged_in_at": "yesterday", "created_at": "2020-01-01T00:00:00Z"}}));
        assert_eq!(bad.logins, None);
    }

    #[test]
    fn the_per_event_search_reads_the_login_times_the_pages_read() {
        use crate::client::looker::{SEARCH_FIELDS, SEARCH_FIELDS_WITH_LOGINS};
        let with = SEARCH_FIELDS_WITH_LOGINS;
        assert!(with.starts_with(&format!("{SEARCH_FIELDS},")), "{with}");
        let kinds = ["saml", "google", "oidc", "ldap", "looker_openid"];
        for k in kinds {
            let f = format!("credentials_{k}(logged_in_at,created_at)");
            assert!(PAGE_FIELDS.contains(&f) && with.contains(&f), "{f}");
        }
        // No other kind in the pages (plus `credentials_email`, read whole by the search).
        assert_eq!(PAGE_FIELDS.matches("logged_in_at").count(), kinds.len() + 1);
        assert_eq!(with.matches("logged_in_at").count(), kinds.len());
        assert!(
            !SEARCH_FIELDS.contains("logged_in_at"),
            "without [inactivity] nothing more"
        );
    }
}
