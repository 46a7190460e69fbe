//! Reconcile's bulk read of Looker users (issue 14): `GET /users` in pages of at most 1,000
//! (`limit`/`offset`, the spec's non-deprecated paging; `sorts=id` so pages do not overlap), only
//! the fields a plan needs, direct roles from `role_ids` (no per-user `GET /users/{id}/roles`).
//! User-set attribute values have no bulk source in API 4.0: they stay one
//! `GET /users/{id}/attribute_values` per user, which reconcile spends only on its rolling audit.

use crate::client::looker::{LookerClient, bad_body};
use gatehouse_domain::looker::{LookerError, LookerUser};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest page Gatehouse asks for (Looker answers at most what `limit` says).
pub const MAX_PAGE: usize = 1000;

/// The `fields` of one page: what a reconcile plan needs, nothing else.
pub const PAGE_FIELDS: &str = "id,email,is_disabled,group_ids,role_ids,credentials_email(email,logged_in_at),credentials_api3(id),sessions(id)";

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct EmailCredential {
    #[serde(default)]
    email: Option<String>,
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
    #[serde(default)]
    credentials_api3: Option<Vec<IdOnly>>,
    #[serde(default)]
    sessions: Option<Vec<IdOnly>>,
}

impl PagedUser {
    fn into_user(self) -> Result<LookerUser, LookerError> {
        crate::client::looker::check_segment(&self.id).map_err(|m| bad_body("/users", m))?;
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
