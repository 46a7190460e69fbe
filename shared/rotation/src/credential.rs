//! A credential as it travels between a kind and a store: a public key id and a secret value.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// A credential. `value` is the JSON document consumers read from the store (e.g.
/// `{"key_id":…,"client_id":…,"client_secret":…}`); it never appears in `Debug`.
#[derive(Clone)]
pub struct Credential {
    /// The provider's id of the key (Looker API3 credential id, AWS access key id, GCP key id).
    pub key_id: String,
    pub value: SecretString,
}

impl Credential {
    pub fn new(key_id: impl Into<String>, value: SecretString) -> Self {
        Credential {
            key_id: key_id.into(),
            value,
        }
    }

    /// The stored document, parsed.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.value.expose_secret()).ok()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("key_id", &self.key_id)
            .field("value", &"[redacted]")
            .finish()
    }
}

/// One key as the provider lists it (no secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    /// RFC 3339 or provider format; used only to order keys.
    pub created: String,
    pub active: bool,
}

/// A version in a store, with the credential it holds.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub version: String,
    pub credential: Credential,
}
