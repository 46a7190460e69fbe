//! Issue 16, the SSO step of Looker resolution: when a person has no linked Looker user, after
//! the email search, the user holding the SSO credential the instance uses is looked up
//! (`GET /users/credential/{type}/{id}` in the 4.0 API). Which credential, and which of the
//! person's ids is its id, is configured (`[identity.looker_sso]`); off by default.

use crate::link::Link;
use std::fmt;

/// The Looker credential types an SSO login creates (the spec's `user_for_credential` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SsoCredential {
    /// `credentials_saml`, matched on `saml_user_id` (the SAML NameID).
    Saml,
    /// `credentials_oidc`, matched on `oidc_user_id` (the OIDC `sub`, or the claim configured).
    Oidc,
    /// `credentials_google`, matched on `google_user_id`.
    Google,
    /// `credentials_ldap`, matched on `ldap_id`.
    Ldap,
}

impl SsoCredential {
    pub const ALL: [SsoCredential; 4] = [
        SsoCredential::Saml,
        SsoCredential::Oidc,
        SsoCredential::Google,
        SsoCredential::Ldap,
    ];

    /// The `credential_type` path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            SsoCredential::Saml => "saml",
            SsoCredential::Oidc => "oidc",
            SsoCredential::Google => "google",
            SsoCredential::Ldap => "ldap",
        }
    }

    /// The `User` field holding the credential (`credentials_saml`, ...).
    pub fn user_field(self) -> &'static str {
        match self {
            SsoCredential::Saml => "credentials_saml",
            SsoCredential::Oidc => "credentials_oidc",
            SsoCredential::Google => "credentials_google",
            SsoCredential::Ldap => "credentials_ldap",
        }
    }

    /// The credential's field Looker matches the id on (`saml_user_id`, ...).
    pub fn id_field(self) -> &'static str {
        match self {
            SsoCredential::Saml => "saml_user_id",
            SsoCredential::Oidc => "oidc_user_id",
            SsoCredential::Google => "google_user_id",
            SsoCredential::Ldap => "ldap_id",
        }
    }

    pub fn parse(s: &str) -> Option<SsoCredential> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for SsoCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of the person's ids the IdP puts in the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsoId {
    /// `idp_user_id`: the IdP's own user id, the part of the person key after the intake's
    /// prefix (`okta:00u1abc` → `00u1abc`; Graph object id; Google Workspace: the email).
    IdpUserId,
    /// `email`: the person's current email.
    Email,
    /// `login`: the IdP login (Okta login, SCIM `userName`, Entra `userPrincipalName`).
    Login,
    /// `attribute:NAME`: an IdP profile attribute, e.g. `attribute:externalId` (SCIM) or
    /// `attribute:employeeNumber`.
    Attribute(String),
}

impl SsoId {
    pub fn parse(s: &str) -> Option<SsoId> {
        match s {
            "idp_user_id" => Some(SsoId::IdpUserId),
            "email" => Some(SsoId::Email),
            "login" => Some(SsoId::Login),
            _ => s
                .strip_prefix("attribute:")
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(|a| SsoId::Attribute(a.to_owned())),
        }
    }
}

impl fmt::Display for SsoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SsoId::IdpUserId => f.write_str("idp_user_id"),
            SsoId::Email => f.write_str("email"),
            SsoId::Login => f.write_str("login"),
            SsoId::Attribute(a) => write!(f, "attribute:{a}"),
        }
    }
}

/// `[identity.looker_sso]`: look unlinked people up by this credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoLookup {
    pub credential: SsoCredential,
    pub id: SsoId,
}

impl SsoLookup {
    /// The credential id for the person `link` is about, whose current email is `email`
    /// (`None`: the person has no such id, so there is nothing to look up).
    pub fn credential_id(&self, link: &Link, email: Option<&str>) -> Option<String> {
        let id = match &self.id {
            SsoId::IdpUserId => link.person.split_once(':').map(|(_, id)| id),
            SsoId::Email => email,
            SsoId::Login => link.profile.get("login").map(String::as_str),
            SsoId::Attribute(a) => link.profile.get(a).map(String::as_str),
        };
        id.map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link {
            person: "okta:00u1abc".into(),
            profile: [
                ("login".to_string(), "jdoe".to_string()),
                ("externalId".to_string(), "E-42".to_string()),
            ]
            .into_iter()
            .collect(),
            ..Link::default()
        }
    }

    #[test]
    fn every_mapping_names_its_id() {
        let id = |s: &str| {
            SsoLookup {
                credential: SsoCredential::Saml,
                id: SsoId::parse(s).unwrap(),
            }
            .credential_id(&link(), Some("j@example.com"))
        };
        assert_eq!(id("idp_user_id").as_deref(), Some("00u1abc"));
        assert_eq!(id("email").as_deref(), Some("j@example.com"));
        assert_eq!(id("login").as_deref(), Some("jdoe"));
        assert_eq!(id("attribute:externalId").as_deref(), Some("E-42"));
        assert_eq!(
            id("attribute:employeeNumber"),
            None,
            "no such attribute: no lookup"
        );
    }

    #[test]
    fn parsing_round_trips_and_refuses_the_unknown() {
        for c in SsoCredential::ALL {
            assert_eq!(SsoCredential::parse(c.as_str()), Some(c));
        }
        assert_eq!(SsoCredential::parse("embed"), None);
        assert_eq!(SsoCredential::parse("SAML"), None);
        for s in ["idp_user_id", "email", "login", "attribute:externalId"] {
            assert_eq!(SsoId::parse(s).unwrap().to_string(), s);
        }
        for s in ["", "attribute:", "attribute: ", "userid"] {
            assert_eq!(SsoId::parse(s), None, "{s:?}");
        }
    }
}
