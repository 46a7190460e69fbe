//! Stores: where consumers read the credential. A store with staging (AWS Secrets Manager)
//! holds the new credential as pending before it is tested and promoted; a store without
//! (GCP Secret Manager, whose readers take `versions/latest`) gets the new credential only after
//! the test step, so what readers see is always a tested credential.

use crate::credential::{Credential, StoredVersion};
use crate::kinds::Res;
use futures::future::BoxFuture;

pub mod aws_sm;
pub mod gcp_sm;

/// A secret store (dyn-compatible).
pub trait SecretStore: Send + Sync {
    /// Short name for logs and the ledger.
    fn name(&self) -> &'static str;
    /// Whether a new version can be written without readers seeing it (AWS AWSPENDING). Decides
    /// the order of the steps: create → set → test → finish, or create → test → set → finish.
    fn stages(&self) -> bool;
    /// The version readers get now, if any. `parse` turns the stored document into a credential.
    fn current<'a>(
        &'a self,
        parse: &'a (dyn Fn(secrecy::SecretString) -> Res<Credential> + Send + Sync),
    ) -> BoxFuture<'a, Res<Option<StoredVersion>>>;
    /// Write the new credential (pending where the store stages). `token` is the rotation id:
    /// the same token writes the same version once (AWS ClientRequestToken).
    fn put<'a>(&'a self, token: &'a str, credential: &'a Credential) -> BoxFuture<'a, Res<String>>;
    /// The version a crashed `put` may have written for `token` holding `key_id`, with its value.
    fn find<'a>(
        &'a self,
        token: &'a str,
        key_id: &'a str,
        parse: &'a (dyn Fn(secrecy::SecretString) -> Res<Credential> + Send + Sync),
    ) -> BoxFuture<'a, Res<Option<StoredVersion>>>;
    /// Make `new` what readers get (AWS: move AWSCURRENT, the old one becomes AWSPREVIOUS).
    fn promote<'a>(&'a self, new: &'a str, old: Option<&'a str>) -> BoxFuture<'a, Res<()>>;
    /// Roll back a `put` that was never promoted (AWS: remove AWSPENDING).
    fn discard<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Res<()>>;
    /// After the grace period: the old version is no longer readable (GCP: disable).
    fn retire<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Res<()>>;
    /// Later: the old version's data is gone (GCP: destroy).
    fn destroy<'a>(&'a self, version: &'a str) -> BoxFuture<'a, Res<()>>;
}
