//! `[safety]`: who Gatehouse never disables, revokes or removes (issue 19). Gatehouse's own
//! credentials are protected without being listed (see `gatehouse_targets::safety`).

use super::ConfigError;
use serde::Deserialize;

/// `[safety]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Principals events never disable, revoke or remove (break-glass administrators, service
    /// accounts): `alice@example.com` (the person, in every target), `looker:user:42`,
    /// `looker:group:NAME` / `looker:role:NAME` (every holder, direct or through a group),
    /// `aws:user:NAME` (an IAM user), `gcp:MEMBER` (`gcp:user:a@b.c`,
    /// `gcp:serviceAccount:x@p.iam.gserviceaccount.com`, `gcp:group:g@b.c`). A step that would
    /// is withheld: a `withheld: …` ledger row and a warning, never sent.
    #[serde(default)]
    pub protected: Vec<String>,
    /// `[safety.breaker]`: the mass-change circuit breaker (off when absent).
    #[serde(default)]
    pub breaker: Option<super::breaker::BreakerConfig>,
}

/// One `[safety] protected` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protected {
    /// A person's email (lowercase).
    Email(String),
    LookerUser(String),
    LookerGroup(String),
    LookerRole(String),
    AwsUser(String),
    /// A GCP IAM member, `type:id` (the email part lowercase).
    GcpMember(String),
}

/// GCP member types a binding can name (IAM policy reference).
const GCP_MEMBER_TYPES: &[&str] = &[
    "user",
    "serviceAccount",
    "group",
    "domain",
    "principal",
    "principalSet",
];

impl Protected {
    /// Parse one entry; the error says what is wrong (the caller names the field).
    pub fn parse(entry: &str) -> Result<Protected, String> {
        let e = entry.trim();
        if e.is_empty() {
            return Err("is empty".into());
        }
        let nonempty = |v: &str, what: &str| {
            let v = v.trim();
            if v.is_empty() {
                Err(format!("{e:?} names no {what}"))
            } else {
                Ok(v.to_string())
            }
        };
        if let Some(id) = e.strip_prefix("looker:user:") {
            let id = nonempty(id, "looker user id")?;
            if !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{e:?}: a looker user id is a number"));
            }
            return Ok(Protected::LookerUser(id));
        }
        if let Some(n) = e.strip_prefix("looker:group:") {
            return Ok(Protected::LookerGroup(nonempty(n, "looker group")?));
        }
        if let Some(n) = e.strip_prefix("looker:role:") {
            return Ok(Protected::LookerRole(nonempty(n, "looker role")?));
        }
        if let Some(n) = e.strip_prefix("aws:user:") {
            let n = nonempty(n, "iam user name")?;
            // IAM user names: 1-64 of [A-Za-z0-9+=,.@_-].
            let ok = n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b));
            if !ok {
                return Err(format!(
                    "{e:?}: not an iam user name (1-64 of A-Z a-z 0-9 + = , . @ _ -)"
                ));
            }
            return Ok(Protected::AwsUser(n));
        }
        if let Some(m) = e.strip_prefix("gcp:") {
            let Some((kind, id)) = m.split_once(':') else {
                return Err(format!(
                    "{e:?}: a gcp member is gcp:TYPE:ID, e.g. gcp:user:a@example.com"
                ));
            };
            if !GCP_MEMBER_TYPES.contains(&kind) {
                return Err(format!(
                    "{e:?}: {kind:?} is not a gcp member type ({})",
                    GCP_MEMBER_TYPES.join(", ")
                ));
            }
            let id = nonempty(id, "gcp member")?;
            return Ok(Protected::GcpMember(format!(
                "{kind}:{}",
                id.to_ascii_lowercase()
            )));
        }
        if let Some((local, domain)) = e.split_once('@')
            && !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !e.contains(char::is_whitespace)
            && !domain.contains('@')
        {
            return Ok(Protected::Email(e.to_ascii_lowercase()));
        }
        Err(format!(
            "{e:?} is not an email, looker:user:ID, looker:group:NAME, looker:role:NAME, aws:user:NAME or gcp:TYPE:ID"
        ))
    }
}

impl SafetyConfig {
    /// The parsed entries (valid after [`SafetyConfig::validate`]).
    pub fn protected(&self) -> Vec<Protected> {
        self.protected
            .iter()
            .filter_map(|e| Protected::parse(e).ok())
            .collect()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (i, e) in self.protected.iter().enumerate() {
            Protected::parse(e).map_err(|m| ConfigError::new(format!("safety.protected[{i}]"), m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_by_their_prefix() {
        for (e, want) in [
            ("Alice@Example.com", Protected::Email("alice@example.com".into())),
            ("looker:user:42", Protected::LookerUser("42".into())),
            (
                "looker:group:Break glass",
                Protected::LookerGroup("Break glass".into()),
            ),
            ("looker:role:Admin", Protected::LookerRole("Admin".into())),
            ("aws:user:breakglass", Protected::AwsUser("breakglass".into())),
            (
                "gcp:serviceAccount:Ops@p.iam.gserviceaccount.com",
                Protected::GcpMember("serviceAccount:ops@p.iam.gserviceaccount.com".into()),
            ),
        ] {
            assert_eq!(Protected::parse(e), Ok(want), "{e}");
        }
        for bad in [
            "",
            "  ",
            "alice",
            "alice@localhost",
            "looker:user:abc",
            "looker:user:",
            "looker:role:",
            "aws:user:",
            "aws:user:has space",
            "gcp:alice@example.com",
            "gcp:robot:x@y.z",
            "okta:user:1",
        ] {
            assert!(Protected::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    /// A bad entry stops the start (exit 64) naming the entry.
    #[test]
    fn a_bad_entry_is_a_config_error_naming_it() {
        let cfg: super::super::Config =
            toml::from_str("[safety]\nprotected = [\"root@example.com\", \"looker:user:admin\"]\n").unwrap();
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.field, "safety.protected[1]", "{e}");
        assert!(e.message.contains("number"), "{e}");
        let cfg: super::super::Config =
            toml::from_str("[safety]\nprotected = [\"root@example.com\", \"looker:role:Admin\"]\n").unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.safety.protected().len(), 2);
    }
}
