//! `[aws.identity_center]`: AWS IAM Identity Center as a target (issue 20). Present = on.
//! Credentials come from the AWS SDK's chain like `[aws]`'s; the region and endpoint default
//! to `[aws]`'s.

use super::{ConfigError, Mode};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityCenterConfig {
    /// The Identity Store (`d-1234567890`, or its ARN).
    pub identity_store_id: String,
    /// The Identity Center instance (`arn:aws:sso:::instance/ssoins-…`); required when the
    /// policy lists `[[identity_center.assignments]]`.
    #[serde(default)]
    pub instance_arn: Option<String>,
    /// The instance's home region; default `[aws] region`, then the SDK's chain.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override (a test server); default `[aws] endpoint_url`, then the SDK's.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// The `ExternalId` issuer the IdP's SCIM provisioning writes (e.g. Okta's or Entra's);
    /// when set, a person is first looked up by (issuer, the IdP's user id).
    #[serde(default)]
    pub external_id_issuer: Option<String>,
    /// `enforce` (apply) or `report` (ledger `drift_reported` rows, change nothing) for
    /// reconcile and drift; IdP events (offboarding) always apply.
    #[serde(default)]
    pub mode: Mode,
    /// How long an account assignment's creation may stay `IN_PROGRESS` before the step
    /// fails (and is retried by the next delivery).
    #[serde(default = "default_assignment_timeout", with = "humantime_serde")]
    pub assignment_timeout: Duration,
}

fn default_assignment_timeout() -> Duration {
    Duration::from_secs(120)
}

impl IdentityCenterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id = self.identity_store_id.trim();
        let plain = id.len() == 12 && id.starts_with("d-") && id[2..].bytes().all(|b| b.is_ascii_hexdigit());
        let arn = id.starts_with("arn:") && id.contains(":identitystore::") && id.contains("/d-");
        if !plain && !arn {
            return Err(ConfigError::new(
                "aws.identity_center.identity_store_id",
                format!("{id:?} is not an identity store id (d-1234567890) or its arn"),
            ));
        }
        if let Some(a) = &self.instance_arn
            && !(a.starts_with("arn:") && a.contains(":sso:::instance/"))
        {
            return Err(ConfigError::new(
                "aws.identity_center.instance_arn",
                format!("{a:?} is not arn:aws:sso:::instance/ssoins-…"),
            ));
        }
        if let Some(r) = &self.region
            && (r.trim().is_empty() || r.contains(char::is_whitespace))
        {
            return Err(ConfigError::new(
                "aws.identity_center.region",
                format!("{r:?} is not a region"),
            ));
        }
        if let Some(i) = &self.external_id_issuer
            && i.trim().is_empty()
        {
            return Err(ConfigError::new(
                "aws.identity_center.external_id_issuer",
                "is empty",
            ));
        }
        if self.assignment_timeout.is_zero() {
            return Err(ConfigError::new(
                "aws.identity_center.assignment_timeout",
                "must be more than 0",
            ));
        }
        super::cloud::check_url("aws.identity_center.endpoint_url", self.endpoint_url.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> IdentityCenterConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn a_bad_field_is_named() {
        for (text, field) in [
            (
                "identity_store_id = \"store\"",
                "aws.identity_center.identity_store_id",
            ),
            (
                "identity_store_id = \"d-1234567890\"\ninstance_arn = \"ssoins-1\"",
                "aws.identity_center.instance_arn",
            ),
            (
                "identity_store_id = \"d-1234567890\"\nregion = \"\"",
                "aws.identity_center.region",
            ),
            (
                "identity_store_id = \"d-1234567890\"\nendpoint_url = \"localhost\"",
                "aws.identity_center.endpoint_url",
            ),
            (
                "identity_store_id = \"d-1234567890\"\nexternal_id_issuer = \" \"",
                "aws.identity_center.external_id_issuer",
            ),
        ] {
            assert_eq!(parse(text).validate().unwrap_err().field, field, "{text}");
        }
        parse("identity_store_id = \"d-1234567890\"\ninstance_arn = \"arn:aws:sso:::instance/ssoins-1\"\nregion = \"eu-west-1\"")
            .validate()
            .unwrap();
        assert!(
            toml::from_str::<IdentityCenterConfig>("identity_store_id = \"d-1234567890\"\nbogus = 1")
                .is_err()
        );
    }
}
