//! The complete AWS leaver sweep for an IAM user, beyond groups, access keys and the login
//! profile: managed and inline user policies, SSH public keys, service-specific credentials,
//! signing certificates, MFA devices, and a deny-all inline policy for every token issued before
//! the offboarding time (`aws:TokenIssueTime`, AWS's documented way to revoke live STS sessions).
//! Pure: what to do ([`AwsSweep`]), what IAM holds ([`AwsHeld`]) and the plan ([`plan`]).

use super::{AwsIamOp, AwsStep, KeyAction};
use crate::policy::AwsOffboarding;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

/// Name of the inline policy that revokes sessions issued before the offboarding.
pub const DENY_POLICY_NAME: &str = "gatehouse-offboarding-deny-older-sessions";

/// Rule names of the sweep's steps (as the plan and the ledger show them).
pub mod rules {
    pub const DETACH_POLICIES: &str = "aws.offboarding.detach_user_policies";
    pub const INLINE_POLICIES: &str = "aws.offboarding.delete_inline_policies";
    pub const SSH_KEYS: &str = "aws.offboarding.ssh_public_keys";
    pub const SERVICE_CREDENTIALS: &str = "aws.offboarding.service_specific_credentials";
    pub const SIGNING_CERTIFICATES: &str = "aws.offboarding.signing_certificates";
    pub const MFA: &str = "aws.offboarding.deactivate_mfa_devices";
    pub const REVOKE_SESSIONS: &str = "aws.offboarding.revoke_sessions";
}

/// A credential kind that has an `Update…` (Status=Inactive) and a `Delete…` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    SshPublicKey,
    ServiceSpecificCredential,
    SigningCertificate,
}

impl CredentialKind {
    pub fn deactivate_action(self) -> &'static str {
        match self {
            CredentialKind::SshPublicKey => "UpdateSSHPublicKey",
            CredentialKind::ServiceSpecificCredential => "UpdateServiceSpecificCredential",
            CredentialKind::SigningCertificate => "UpdateSigningCertificate",
        }
    }
    pub fn delete_action(self) -> &'static str {
        match self {
            CredentialKind::SshPublicKey => "DeleteSSHPublicKey",
            CredentialKind::ServiceSpecificCredential => "DeleteServiceSpecificCredential",
            CredentialKind::SigningCertificate => "DeleteSigningCertificate",
        }
    }
    /// The Query API parameter naming the credential.
    pub fn id_param(self) -> &'static str {
        match self {
            CredentialKind::SshPublicKey => "SSHPublicKeyId",
            CredentialKind::ServiceSpecificCredential => "ServiceSpecificCredentialId",
            CredentialKind::SigningCertificate => "CertificateId",
        }
    }
    fn rule(self) -> &'static str {
        match self {
            CredentialKind::SshPublicKey => rules::SSH_KEYS,
            CredentialKind::ServiceSpecificCredential => rules::SERVICE_CREDENTIALS,
            CredentialKind::SigningCertificate => rules::SIGNING_CERTIFICATES,
        }
    }
    pub const ALL: [CredentialKind; 3] = [
        CredentialKind::SshPublicKey,
        CredentialKind::ServiceSpecificCredential,
        CredentialKind::SigningCertificate,
    ];
}

/// What the sweep does for one offboarded person (all off when not offboarded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsSweep {
    pub detach_user_policies: bool,
    pub delete_inline_policies: bool,
    pub ssh_public_keys: KeyAction,
    pub service_specific_credentials: KeyAction,
    pub signing_certificates: KeyAction,
    pub deactivate_mfa_devices: bool,
    /// Deny tokens issued before this instant (whole seconds, rounded up); `None`: no deny.
    pub revoke_sessions_before: Option<DateTime<Utc>>,
}

impl Default for AwsSweep {
    fn default() -> Self {
        AwsSweep {
            detach_user_policies: false,
            delete_inline_policies: false,
            ssh_public_keys: KeyAction::Keep,
            service_specific_credentials: KeyAction::Keep,
            signing_certificates: KeyAction::Keep,
            deactivate_mfa_devices: false,
            revoke_sessions_before: None,
        }
    }
}

impl AwsSweep {
    /// The sweep the policy asks for; `offboarded_at` `None` (not offboarded) sweeps nothing.
    pub fn from_policy(o: &AwsOffboarding, offboarded_at: Option<DateTime<Utc>>) -> Self {
        let Some(at) = offboarded_at else {
            return AwsSweep::default();
        };
        // Whole seconds (the condition's format), rounded up so a token issued in the same
        // second as the offboarding is denied too.
        let floor = at.trunc_subsecs(0);
        let at = if floor < at {
            floor + chrono::Duration::seconds(1)
        } else {
            floor
        };
        AwsSweep {
            detach_user_policies: o.detach_user_policies,
            delete_inline_policies: o.delete_inline_policies,
            ssh_public_keys: o.ssh_public_keys,
            service_specific_credentials: o.service_specific_credentials,
            signing_certificates: o.signing_certificates,
            deactivate_mfa_devices: o.deactivate_mfa_devices,
            revoke_sessions_before: o.revoke_sessions.then_some(at),
        }
    }

    pub fn action(&self, kind: CredentialKind) -> KeyAction {
        match kind {
            CredentialKind::SshPublicKey => self.ssh_public_keys,
            CredentialKind::ServiceSpecificCredential => self.service_specific_credentials,
            CredentialKind::SigningCertificate => self.signing_certificates,
        }
    }

    /// Whether any step applies (then the user's policies and credentials are read).
    pub fn any(&self) -> bool {
        *self != AwsSweep::default()
    }
}

/// One credential as its `List…` call returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCredential {
    pub kind: CredentialKind,
    pub id: String,
    pub active: bool,
}

/// What the user holds that the sweep looks at (read only while offboarding).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsHeld {
    /// ARNs of the managed policies attached to the user directly.
    pub attached_policies: Vec<String>,
    /// Names of the user's inline policies (Gatehouse's deny policy included).
    pub inline_policies: Vec<String>,
    pub credentials: Vec<HeldCredential>,
    /// Serial numbers (ARNs for virtual devices) of the user's MFA devices.
    pub mfa_devices: Vec<String>,
    /// The `aws:TokenIssueTime` of Gatehouse's deny policy, when the user has it.
    pub deny_before: Option<DateTime<Utc>>,
}

/// The deny-all policy document for tokens issued before `before`.
pub fn deny_document(before: DateTime<Utc>) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "GatehouseOffboardingDenyOlderSessions",
            "Effect": "Deny",
            "Action": "*",
            "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": before.format("%Y-%m-%dT%H:%M:%SZ").to_string()}}
        }]
    })
    .to_string()
}

/// The `aws:TokenIssueTime` of a deny document Gatehouse wrote (`None`: not one of ours, or
/// unreadable: it is written again). Accepts the URL-encoded form `GetUserPolicy` returns.
pub fn deny_time(document: &str) -> Option<DateTime<Utc>> {
    let decoded;
    let text = if document.trim_start().starts_with('{') {
        document
    } else {
        decoded = percent_encoding::percent_decode_str(document)
            .decode_utf8()
            .ok()?;
        &decoded
    };
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let s = v.pointer("/Statement/0")?;
    if s.get("Effect")?.as_str()? != "Deny" {
        return None;
    }
    let t = s
        .pointer("/Condition/DateLessThan/aws:TokenIssueTime")?
        .as_str()?;
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Query API parameters of a sweep op (besides `Action`, `UserName` and `Version`).
pub fn params(op: &AwsIamOp) -> Vec<(String, String)> {
    match op {
        AwsIamOp::DetachUserPolicy { policy_arn } => vec![("PolicyArn".into(), policy_arn.clone())],
        AwsIamOp::DeleteUserPolicy { policy_name } => vec![("PolicyName".into(), policy_name.clone())],
        AwsIamOp::DeactivateCredential { kind, id } => vec![
            (kind.id_param().into(), id.clone()),
            ("Status".into(), "Inactive".into()),
        ],
        AwsIamOp::DeleteCredential { kind, id } => vec![(kind.id_param().into(), id.clone())],
        AwsIamOp::DeactivateMfaDevice { serial } => vec![("SerialNumber".into(), serial.clone())],
        AwsIamOp::PutUserPolicy {
            policy_name,
            document,
        } => vec![
            ("PolicyName".into(), policy_name.clone()),
            ("PolicyDocument".into(), document.clone()),
        ],
        _ => Vec::new(),
    }
}

fn step(op: AwsIamOp, rule: &str) -> AwsStep {
    AwsStep {
        op,
        rule: rule.to_string(),
    }
}

/// The sweep's calls. `held` `None`: IAM's state is unknown (offline plan, or a reconcile that
/// did not read it): with `offline`, every call that may apply is listed with `{each}`;
/// otherwise nothing is planned.
pub fn plan(s: &AwsSweep, held: Option<&AwsHeld>, offline: bool) -> Vec<AwsStep> {
    let mut out = Vec::new();
    let Some(h) = held else {
        if !offline {
            return out;
        }
        let each = || "{each}".to_string();
        if s.detach_user_policies {
            out.push(step(
                AwsIamOp::DetachUserPolicy { policy_arn: each() },
                rules::DETACH_POLICIES,
            ));
        }
        if s.delete_inline_policies {
            out.push(step(
                AwsIamOp::DeleteUserPolicy { policy_name: each() },
                rules::INLINE_POLICIES,
            ));
        }
        for kind in CredentialKind::ALL {
            match s.action(kind) {
                KeyAction::Keep => {}
                KeyAction::Deactivate => out.push(step(
                    AwsIamOp::DeactivateCredential { kind, id: each() },
                    kind.rule(),
                )),
                KeyAction::Delete => {
                    out.push(step(AwsIamOp::DeleteCredential { kind, id: each() }, kind.rule()))
                }
            }
        }
        if s.deactivate_mfa_devices {
            out.push(step(AwsIamOp::DeactivateMfaDevice { serial: each() }, rules::MFA));
        }
        if let Some(t) = s.revoke_sessions_before {
            out.push(deny_step(t));
        }
        return out;
    };
    if s.detach_user_policies {
        for arn in &h.attached_policies {
            out.push(step(
                AwsIamOp::DetachUserPolicy {
                    policy_arn: arn.clone(),
                },
                rules::DETACH_POLICIES,
            ));
        }
    }
    if s.delete_inline_policies {
        for name in h.inline_policies.iter().filter(|n| *n != DENY_POLICY_NAME) {
            out.push(step(
                AwsIamOp::DeleteUserPolicy {
                    policy_name: name.clone(),
                },
                rules::INLINE_POLICIES,
            ));
        }
    }
    for c in &h.credentials {
        let (kind, id) = (c.kind, c.id.clone());
        match s.action(kind) {
            KeyAction::Deactivate if c.active => {
                out.push(step(AwsIamOp::DeactivateCredential { kind, id }, kind.rule()))
            }
            KeyAction::Delete => out.push(step(AwsIamOp::DeleteCredential { kind, id }, kind.rule())),
            _ => {}
        }
    }
    if s.deactivate_mfa_devices {
        for serial in &h.mfa_devices {
            out.push(step(
                AwsIamOp::DeactivateMfaDevice {
                    serial: serial.clone(),
                },
                rules::MFA,
            ));
        }
    }
    if let Some(t) = s.revoke_sessions_before {
        // A deny already as late (or later) covers these sessions: no call.
        if h.deny_before.is_none_or(|have| have < t) {
            out.push(deny_step(t));
        }
    }
    out
}

fn deny_step(before: DateTime<Utc>) -> AwsStep {
    step(
        AwsIamOp::PutUserPolicy {
            policy_name: DENY_POLICY_NAME.into(),
            document: deny_document(before),
        },
        rules::REVOKE_SESSIONS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn full() -> AwsSweep {
        AwsSweep::from_policy(
            &AwsOffboarding {
                delete_inline_policies: true,
                ..AwsOffboarding::default()
            },
            Some(at("2026-12-06T10:00:00.250Z")),
        )
    }

    #[test]
    fn defaults_never_lose_data_and_round_the_time_up() {
        let s = AwsSweep::from_policy(&AwsOffboarding::default(), Some(at("2026-12-06T10:00:00.250Z")));
        assert!(s.detach_user_policies && s.deactivate_mfa_devices);
        assert!(!s.delete_inline_policies, "inline documents would be lost");
        for k in CredentialKind::ALL {
            assert_eq!(s.action(k), KeyAction::Deactivate, "{k:?}");
        }
        assert_eq!(s.revoke_sessions_before, Some(at("2026-12-06T10:00:01Z")));
        let exact = AwsSweep::from_policy(&AwsOffboarding::default(), Some(at("2026-12-06T10:00:00Z")));
        assert_eq!(exact.revoke_sessions_before, Some(at("2026-12-06T10:00:00Z")));
        assert!(!AwsSweep::from_policy(&AwsOffboarding::default(), None).any());
    }

    #[test]
    fn the_example_policy_shows_the_defaults_and_bad_values_are_refused() {
        let p = crate::policy::Policy::from_toml(include_str!("../../../../examples/policy.toml")).unwrap();
        assert_eq!(p.aws.offboarding, AwsOffboarding::default());
        let e = crate::policy::Policy::from_toml("[aws.offboarding]\nssh_public_keys = \"remove\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssh_public_keys") || e.contains("remove"), "{e}");
    }

    #[test]
    fn deny_document_round_trips_plain_and_url_encoded() {
        let t = at("2026-12-06T10:00:01Z");
        let doc = deny_document(t);
        assert!(
            doc.contains(r#""DateLessThan":{"aws:TokenIssueTime":"2026-12-06T10:00:01Z"}"#),
            "{doc}"
        );
        assert_eq!(deny_time(&doc), Some(t));
        let encoded =
            percent_encoding::utf8_percent_encode(&doc, percent_encoding::NON_ALPHANUMERIC).to_string();
        assert_eq!(deny_time(&encoded), Some(t));
        assert_eq!(deny_time(&doc.replace("Deny", "Allow")), None);
        assert_eq!(deny_time("not json"), None);
    }

    #[test]
    fn everything_held_is_swept_and_the_deny_policy_is_kept() {
        let h = AwsHeld {
            attached_policies: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()],
            inline_policies: vec!["hand-made".into(), DENY_POLICY_NAME.into()],
            credentials: vec![
                HeldCredential {
                    kind: CredentialKind::SshPublicKey,
                    id: "APKA1".into(),
                    active: true,
                },
                HeldCredential {
                    kind: CredentialKind::SigningCertificate,
                    id: "C1".into(),
                    active: false,
                },
            ],
            mfa_devices: vec!["arn:aws:iam::123456789012:mfa/pat".into()],
            deny_before: None,
        };
        let steps = plan(&full(), Some(&h), false);
        let rules: Vec<&str> = steps.iter().map(|s| s.rule.as_str()).collect();
        assert_eq!(
            rules,
            [
                rules::DETACH_POLICIES,
                rules::INLINE_POLICIES,
                rules::SSH_KEYS,
                rules::MFA,
                rules::REVOKE_SESSIONS
            ]
        );
        assert!(
            !steps.iter().any(|s| matches!(&s.op, AwsIamOp::DeleteUserPolicy { policy_name } if policy_name == DENY_POLICY_NAME)),
            "the sweep must not delete its own deny policy"
        );
        // Unknown state: nothing in a reconcile, every call with {each} offline.
        assert!(plan(&full(), None, false).is_empty());
        assert_eq!(plan(&full(), None, true).len(), 7);
    }

    fn held() -> impl Strategy<Value = AwsHeld> {
        let cred = (0..3usize, "[A-Z0-9]{4}", any::<bool>()).prop_map(|(k, id, active)| HeldCredential {
            kind: CredentialKind::ALL[k],
            id,
            active,
        });
        (
            prop::collection::vec("arn:aws:iam::aws:policy/[A-Za-z]{3}", 0..3),
            prop::collection::vec(prop_oneof![Just(DENY_POLICY_NAME.to_string()), "[a-z]{3}"], 0..3),
            prop::collection::vec(cred, 0..5),
            prop::collection::vec("arn:aws:iam::1:mfa/[a-z]{3}", 0..2),
            prop::option::of(0i64..100),
        )
            .prop_map(
                |(attached_policies, inline_policies, credentials, mfa_devices, deny)| AwsHeld {
                    attached_policies,
                    inline_policies,
                    credentials,
                    mfa_devices,
                    deny_before: deny.map(|s| at("2026-12-06T09:59:00Z") + chrono::Duration::seconds(s)),
                },
            )
    }

    fn key_action() -> impl Strategy<Value = KeyAction> {
        prop_oneof![
            Just(KeyAction::Keep),
            Just(KeyAction::Deactivate),
            Just(KeyAction::Delete)
        ]
    }

    /// What IAM holds after the plan's calls.
    fn simulate(mut h: AwsHeld, steps: &[AwsStep]) -> AwsHeld {
        for s in steps {
            match &s.op {
                AwsIamOp::DetachUserPolicy { policy_arn } => h.attached_policies.retain(|a| a != policy_arn),
                AwsIamOp::DeleteUserPolicy { policy_name } => h.inline_policies.retain(|a| a != policy_name),
                AwsIamOp::DeactivateCredential { kind, id } => h
                    .credentials
                    .iter_mut()
                    .filter(|c| c.kind == *kind && c.id == *id)
                    .for_each(|c| c.active = false),
                AwsIamOp::DeleteCredential { kind, id } => {
                    h.credentials.retain(|c| !(c.kind == *kind && c.id == *id))
                }
                AwsIamOp::DeactivateMfaDevice { serial } => h.mfa_devices.retain(|m| m != serial),
                AwsIamOp::PutUserPolicy { document, .. } => h.deny_before = deny_time(document),
                other => panic!("not a sweep op: {other:?}"),
            }
        }
        h
    }

    proptest! {
        /// A sweep converges in one pass (a second plan is empty), leaves alone what a disabled
        /// step covers, and only ever deactivates or deletes.
        #[test]
        fn sweep_converges_and_respects_disabled_steps(
            h in held(),
            policies in any::<bool>(), inline in any::<bool>(), mfa in any::<bool>(), deny in any::<bool>(),
            ssh in key_action(), svc in key_action(), cert in key_action(),
        ) {
            let s = AwsSweep {
                detach_user_policies: policies,
                delete_inline_policies: inline,
                ssh_public_keys: ssh,
                service_specific_credentials: svc,
                signing_certificates: cert,
                deactivate_mfa_devices: mfa,
                revoke_sessions_before: deny.then(|| at("2026-12-06T10:00:00Z")),
            };
            let steps = plan(&s, Some(&h), false);
            let after = simulate(h.clone(), &steps);
            prop_assert!(plan(&s, Some(&after), false).is_empty(), "not idempotent: {after:?}");
            if !policies { prop_assert_eq!(&after.attached_policies, &h.attached_policies); } else { prop_assert!(after.attached_policies.is_empty()); }
            if !mfa { prop_assert_eq!(&after.mfa_devices, &h.mfa_devices); } else { prop_assert!(after.mfa_devices.is_empty()); }
            let others: Vec<_> = h.inline_policies.iter().filter(|n| *n != DENY_POLICY_NAME).collect();
            prop_assert_eq!(after.inline_policies.iter().filter(|n| *n != DENY_POLICY_NAME).count(), if inline { 0 } else { others.len() });
            for c in &h.credentials {
                let now = after.credentials.iter().find(|x| x.kind == c.kind && x.id == c.id);
                match s.action(c.kind) {
                    KeyAction::Keep => prop_assert_eq!(now, Some(c)),
                    KeyAction::Deactivate => prop_assert!(now.is_some_and(|x| !x.active)),
                    KeyAction::Delete => prop_assert!(now.is_none()),
                }
            }
            if deny {
                prop_assert!(after.deny_before >= Some(at("2026-12-06T10:00:00Z")));
            } else {
                prop_assert_eq!(after.deny_before, h.deny_before);
            }
        }
    }
}
