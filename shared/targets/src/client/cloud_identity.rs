//! Google groups over the Cloud Identity Groups API v1 (REST): `groups:lookup` (a group's
//! resource name from its email, cached), `groups.memberships.list` (paged with
//! `pageToken`), `memberships:lookup`, `memberships.create` (role MEMBER) and
//! `memberships.delete`. One attempt per method: the caller owns retries (the one
//! `RetryPolicy`). Failures are classified once, with the GCP IAM client's table.

use super::gcp_iam::{TokenSource, authorize, classify, google_error};
use gatehouse_domain::cloud::{CloudError, GroupHeld, Target, groups::membership_body};
use gatehouse_domain::looker::ErrorKind;
use gatehouse_platform::http::parse_retry_after;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The scope the Groups API needs for memberships (reads and writes).
pub const GROUPS_SCOPE: &str = "https://www.googleapis.com/auth/cloud-identity.groups";

/// Base URL (no trailing slash), token and limits.
#[derive(Clone)]
pub struct CloudIdentityConfig {
    /// `https://cloudidentity.googleapis.com`.
    pub url: String,
    pub token: TokenSource,
    pub timeout: Duration,
    /// Memberships per `memberships.list` page (1..=1000 for the BASIC view).
    pub page_size: u32,
}

/// The Cloud Identity Groups client. Cheap to clone (the group-name cache is shared). Its
/// `Debug` never shows the token.
#[derive(Clone)]
pub struct CloudIdentity {
    http: reqwest::Client,
    cfg: CloudIdentityConfig,
    /// Group email (lowercased) → `groups/ID`: a group's name never changes.
    names: Arc<Mutex<HashMap<String, String>>>,
    /// Read calls made (for reconcile's report).
    reads: Arc<AtomicUsize>,
}

impl std::fmt::Debug for CloudIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudIdentity")
            .field("url", &self.cfg.url)
            .finish_non_exhaustive()
    }
}

/// What a create found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The membership was made (200, a done `Operation`).
    Created,
    /// 409 `ALREADY_EXISTS`: the person was already a member.
    AlreadyMember,
}

fn err(kind: ErrorKind, status: Option<u16>, message: impl Into<String>) -> CloudError {
    CloudError {
        target: Target::Gcp,
        kind,
        status,
        message: message.into(),
        retry_after: None,
        source: None,
    }
}

impl CloudIdentity {
    pub fn new(cfg: CloudIdentityConfig) -> Result<Self, CloudError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| {
                err(
                    ErrorKind::Permanent,
                    None,
                    format!("cannot build http client: {e}"),
                )
            })?;
        Ok(CloudIdentity {
            http,
            cfg,
            names: Arc::default(),
            reads: Arc::default(),
        })
    }

    /// Application Default Credentials for the `cloud-identity.groups` scope.
    pub fn adc() -> Result<TokenSource, CloudError> {
        google_cloud_auth::credentials::Builder::default()
            .with_scopes([GROUPS_SCOPE])
            .build()
            .map(TokenSource::Adc)
            .map_err(|e| {
                err(
                    ErrorKind::Unauthorized,
                    None,
                    format!("no application default credentials: {e}"),
                )
            })
    }

    /// Read calls made so far (lookups and list pages).
    pub fn read_calls(&self) -> usize {
        self.reads.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.cfg.url.trim_end_matches('/'))
    }

    /// One request; the JSON answer on 2xx, else the classified error.
    async fn call(&self, what: &str, req: reqwest::RequestBuilder) -> Result<serde_json::Value, CloudError> {
        let req = authorize(&self.cfg.token, req).await?;
        if what.starts_with("groups:lookup")
            || what.starts_with("memberships:lookup")
            || what.starts_with("memberships.list")
        {
            self.reads.fetch_add(1, Ordering::Relaxed);
        }
        let resp = req.send().await.map_err(|e| CloudError {
            source: Some(Arc::new(e.without_url())),
            ..err(ErrorKind::Transient, None, what.to_string())
        })?;
        let status = resp.status().as_u16();
        tracing::Span::current().record("http.response.status_code", status);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, gatehouse_domain::clock::now()));
        let text = resp.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            if text.trim().is_empty() {
                return Ok(serde_json::Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| {
                err(
                    ErrorKind::Permanent,
                    Some(status),
                    format!("{what}: not json: {e}"),
                )
            });
        }
        let (message, code_name) = google_error(&text);
        let kind = match code_name.as_deref() {
            // A duplicate create is not a lost race to retry: it is the answer.
            Some("ALREADY_EXISTS") => ErrorKind::Conflict,
            c => classify(status, c),
        };
        let mut e = err(kind, Some(status), format!("{what}: {message}"));
        e.retry_after = retry_after;
        Err(e)
    }

    /// `GET /v1/groups:lookup?groupKey.id=EMAIL` → `groups/ID`, cached for the process.
    #[tracing::instrument(name = "gcp.groups", skip_all, fields(
        otel.name = "groups.lookup", otel.kind = "client", group = %group,
        http.response.status_code = tracing::field::Empty,
    ))]
    pub async fn group_name(&self, group: &str) -> Result<String, CloudError> {
        let key = group.to_ascii_lowercase();
        if let Some(n) = self
            .names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(n.clone());
        }
        let v = self
            .call(
                &format!("groups:lookup {group}"),
                self.http
                    .get(self.url("groups:lookup"))
                    .query(&[("groupKey.id", &key)]),
            )
            .await?;
        let name = name_of(&v, "groups/", &format!("groups:lookup {group}"))?;
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, name.clone());
        Ok(name)
    }

    /// `GET /v1/{group}/memberships:lookup?memberKey.id=EMAIL` → the membership's name, or
    /// `None` when the member is not in the group (404).
    #[tracing::instrument(name = "gcp.groups", skip_all, fields(
        otel.name = "memberships.lookup", otel.kind = "client", group = %group_name,
        http.response.status_code = tracing::field::Empty,
    ))]
    pub async fn lookup_membership(
        &self,
        group_name: &str,
        member: &str,
    ) -> Result<Option<String>, CloudError> {
        let what = format!("memberships:lookup {group_name}");
        let r = self
            .call(
                &what,
                self.http
                    .get(self.url(&format!("{group_name}/memberships:lookup")))
                    .query(&[("memberKey.id", member)]),
            )
            .await;
        match r {
            Ok(v) => name_of(&v, &format!("{group_name}/memberships/"), &what).map(Some),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of `GET /v1/{group}/memberships` (`pageSize`, `pageToken`): member email
    /// (lowercased) → membership name, and the next page's token.
    #[tracing::instrument(name = "gcp.groups", skip_all, fields(
        otel.name = "memberships.list", otel.kind = "client", group = %group_name,
        http.response.status_code = tracing::field::Empty,
    ))]
    pub async fn list_page(
        &self,
        group_name: &str,
        page_token: Option<&str>,
    ) -> Result<(BTreeMap<String, String>, Option<String>), CloudError> {
        let mut q = vec![("pageSize", self.cfg.page_size.to_string())];
        if let Some(t) = page_token {
            q.push(("pageToken", t.to_string()));
        }
        let what = format!("memberships.list {group_name}");
        let v = self
            .call(
                &what,
                self.http
                    .get(self.url(&format!("{group_name}/memberships")))
                    .query(&q),
            )
            .await?;
        let mut out = BTreeMap::new();
        for m in v["memberships"].as_array().into_iter().flatten() {
            let (Some(name), Some(id)) = (m["name"].as_str(), m["preferredMemberKey"]["id"].as_str()) else {
                return Err(err(
                    ErrorKind::Permanent,
                    None,
                    format!("{what}: a membership without name or member"),
                ));
            };
            out.insert(id.to_ascii_lowercase(), name.to_string());
        }
        let next = v["nextPageToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        Ok((out, next))
    }

    /// `POST /v1/{group}/memberships` with the member by email and role MEMBER. 409
    /// `ALREADY_EXISTS` means already a member.
    #[tracing::instrument(name = "gcp.groups", skip_all, fields(
        otel.name = "memberships.create", otel.kind = "client", group = %group_name,
        http.response.status_code = tracing::field::Empty,
    ))]
    pub async fn create_membership(&self, group_name: &str, member: &str) -> Result<Created, CloudError> {
        let r = self
            .call(
                &format!("memberships.create {group_name}"),
                self.http
                    .post(self.url(&format!("{group_name}/memberships")))
                    .json(&membership_body(member)),
            )
            .await;
        match r {
            Ok(op) => {
                operation_done(&op, &format!("memberships.create {group_name}")).map(|()| Created::Created)
            }
            Err(e) if e.status == Some(409) => Ok(Created::AlreadyMember),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /v1/{membership}`. A 404 (already gone) comes back as `NotFound`.
    #[tracing::instrument(name = "gcp.groups", skip_all, fields(
        otel.name = "memberships.delete", otel.kind = "client", membership = %membership,
        http.response.status_code = tracing::field::Empty,
    ))]
    pub async fn delete_membership(&self, membership: &str) -> Result<(), CloudError> {
        let what = format!("memberships.delete {membership}");
        let op = self.call(&what, self.http.delete(self.url(membership))).await?;
        operation_done(&op, &what)
    }

    /// A group as held by everyone: its name and every membership (all pages).
    pub async fn list_group(&self, group: &str) -> Result<GroupHeld, CloudError> {
        let name = self.group_name(group).await?;
        let mut memberships = BTreeMap::new();
        let mut token = None;
        loop {
            let (page, next) = self.list_page(&name, token.as_deref()).await?;
            memberships.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        Ok(GroupHeld { name, memberships })
    }
}

/// `{"name": "PREFIX…"}` → the name.
fn name_of(v: &serde_json::Value, prefix: &str, what: &str) -> Result<String, CloudError> {
    v["name"]
        .as_str()
        .filter(|n| n.starts_with(prefix) && n.len() > prefix.len())
        .map(str::to_string)
        .ok_or_else(|| {
            err(
                ErrorKind::Permanent,
                None,
                format!("{what}: no {prefix}… name in the answer"),
            )
        })
}

/// A long-running `Operation` that ended in an error is a failure; a done one (or one
/// still running, which Cloud Identity finishes on its own) is success.
fn operation_done(op: &serde_json::Value, what: &str) -> Result<(), CloudError> {
    match op.get("error") {
        Some(e) if !e.is_null() => {
            // `code` is a google.rpc.Code, not an HTTP status.
            Err(err(
                ErrorKind::Permanent,
                None,
                format!(
                    "{what}: operation failed (code {}): {}",
                    e["code"],
                    e["message"].as_str().unwrap_or("no message")
                ),
            ))
        }
        _ => Ok(()),
    }
}
