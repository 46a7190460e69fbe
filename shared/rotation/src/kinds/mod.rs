//! Kinds: the credential a secret holds and the provider API that issues it. Each kind creates a
//! key, tests it, disables and deletes old ones, and lists keys (to find orphans and respect
//! key-count limits).

use crate::credential::{Credential, KeyInfo};
use crate::error::RotationError;
use futures::future::BoxFuture;

pub mod aws_iam;
pub mod gcp_sa;
pub mod looker;

/// Result of a kind or store call.
pub type Res<T> = Result<T, RotationError>;

/// A credential kind (dyn-compatible, so declared secrets can mix kinds).
pub trait Kind: Send + Sync {
    /// Short name for logs and the ledger (`looker_api3`, `aws_access_key`, ...).
    fn name(&self) -> &'static str;
    /// The principal the keys belong to (Looker user id, IAM user name, service-account email).
    fn principal(&self) -> &str;
    /// The meter of the Looker calls this kind makes (they count against the Looker admin-API
    /// budget); `None` for kinds that do not call Looker.
    fn call_meter(&self) -> Option<gatehouse_targets::client::looker::CallMeter> {
        None
    }
    /// How many keys the principal may hold at once (AWS: 2), if limited.
    fn max_keys(&self) -> Option<usize> {
        None
    }
    /// Every key of the principal, oldest first.
    fn list(&self) -> BoxFuture<'_, Res<Vec<KeyInfo>>>;
    /// Issue a new key. The secret is only ever returned here.
    fn create(&self) -> BoxFuture<'_, Res<Credential>>;
    /// Use the credential: `Ok` only if the provider accepts it as the principal.
    fn test<'a>(&'a self, credential: &'a Credential) -> BoxFuture<'a, Res<()>>;
    /// Make a key unusable but recoverable (where the provider can; Looker deletes).
    fn disable<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Res<()>>;
    /// Delete a key; a key already gone counts as deleted.
    fn delete<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Res<()>>;
    /// Parse a stored document back into a credential (to learn the current key id).
    fn parse(&self, value: secrecy::SecretString) -> Res<Credential>;
}

/// `Ok` for a delete whose target is already gone.
pub(crate) fn gone_is_done(r: Res<()>) -> Res<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Read `field` of a stored JSON document as the key id.
pub(crate) fn parse_json_key(value: secrecy::SecretString, field: &str) -> Res<Credential> {
    use secrecy::ExposeSecret;
    let v: serde_json::Value = serde_json::from_str(value.expose_secret())
        .map_err(|_| RotationError::permanent("the stored value is not a json document"))?;
    let id = v
        .get(field)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| RotationError::permanent(format!("the stored document has no {field}")))?
        .to_string();
    Ok(Credential::new(id, value))
}
