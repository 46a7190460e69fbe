//! The leaver sweep's IAM calls: reading what an offboarded user holds (directly attached and
//! inline policies, SSH public keys, service-specific credentials, signing certificates, MFA
//! devices, Gatehouse's deny policy) and the writes that take it away.

use super::{AwsIam, PAGE, classify};
use aws_sdk_iam::types::StatusType;
use gatehouse_domain::cloud::sweep::{self, AwsHeld, CredentialKind, HeldCredential};
use gatehouse_domain::cloud::{AwsIamOp, CloudError, Target};
use gatehouse_domain::looker::ErrorKind;

impl AwsIam {
    /// What the sweep looks at for one user. Service-specific credentials only when asked (the
    /// call exists for CodeCommit/Keyspaces users and not every IAM emulator has it).
    pub async fn read_held(&self, name: &str, service_specific: bool) -> Result<AwsHeld, CloudError> {
        let c = &self.client;
        let mut held = AwsHeld::default();

        let mut pages = c
            .list_attached_user_policies()
            .user_name(name)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListAttachedUserPolicies", e))?;
            held.attached_policies.extend(
                r.attached_policies()
                    .iter()
                    .filter_map(|p| p.policy_arn().map(str::to_string)),
            );
        }

        let mut pages = c
            .list_user_policies()
            .user_name(name)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListUserPolicies", e))?;
            held.inline_policies.extend(r.policy_names().iter().cloned());
        }
        if held.inline_policies.iter().any(|n| n == sweep::DENY_POLICY_NAME) {
            self.read();
            let r = c
                .get_user_policy()
                .user_name(name)
                .policy_name(sweep::DENY_POLICY_NAME)
                .send()
                .await
                .map_err(|e| classify("GetUserPolicy", e))?;
            held.deny_before = sweep::deny_time(r.policy_document());
        }

        let mut pages = c
            .list_ssh_public_keys()
            .user_name(name)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListSSHPublicKeys", e))?;
            held.credentials
                .extend(r.ssh_public_keys().iter().map(|k| HeldCredential {
                    kind: CredentialKind::SshPublicKey,
                    id: k.ssh_public_key_id().to_string(),
                    active: *k.status() == StatusType::Active,
                }));
        }

        if service_specific {
            self.read();
            let r = c
                .list_service_specific_credentials()
                .user_name(name)
                .send()
                .await
                .map_err(|e| classify("ListServiceSpecificCredentials", e))?;
            held.credentials
                .extend(r.service_specific_credentials().iter().map(|k| HeldCredential {
                    kind: CredentialKind::ServiceSpecificCredential,
                    id: k.service_specific_credential_id().to_string(),
                    active: *k.status() == StatusType::Active,
                }));
        }

        let mut pages = c
            .list_signing_certificates()
            .user_name(name)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListSigningCertificates", e))?;
            held.credentials
                .extend(r.certificates().iter().map(|k| HeldCredential {
                    kind: CredentialKind::SigningCertificate,
                    id: k.certificate_id().to_string(),
                    active: *k.status() == StatusType::Active,
                }));
        }

        let mut pages = c
            .list_mfa_devices()
            .user_name(name)
            .max_items(PAGE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            self.read();
            let r = page.map_err(|e| classify("ListMFADevices", e))?;
            held.mfa_devices
                .extend(r.mfa_devices().iter().map(|d| d.serial_number().to_string()));
        }
        Ok(held)
    }

    /// One sweep write (no retry).
    pub(super) async fn execute_sweep(&self, user: &str, op: &AwsIamOp) -> Result<(), CloudError> {
        let c = &self.client;
        let action = op.action();
        let inactive = StatusType::Inactive;
        match op {
            AwsIamOp::DetachUserPolicy { policy_arn } => c
                .detach_user_policy()
                .user_name(user)
                .policy_arn(policy_arn)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            AwsIamOp::DeleteUserPolicy { policy_name } => c
                .delete_user_policy()
                .user_name(user)
                .policy_name(policy_name)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            AwsIamOp::DeactivateCredential { kind, id } => match kind {
                CredentialKind::SshPublicKey => c
                    .update_ssh_public_key()
                    .user_name(user)
                    .ssh_public_key_id(id)
                    .status(inactive)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(action, e)),
                CredentialKind::ServiceSpecificCredential => c
                    .update_service_specific_credential()
                    .user_name(user)
                    .service_specific_credential_id(id)
                    .status(inactive)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(action, e)),
                CredentialKind::SigningCertificate => c
                    .update_signing_certificate()
                    .user_name(user)
                    .certificate_id(id)
                    .status(inactive)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(action, e)),
            },
            AwsIamOp::DeleteCredential { kind, id } => match kind {
                CredentialKind::SshPublicKey => c
                    .delete_ssh_public_key()
                    .user_name(user)
                    .ssh_public_key_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(action, e)),
                CredentialKind::ServiceSpecificCredential => c
                    .delete_service_specific_credential()
                    .user_name(user)
                    .service_specific_credential_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(action, e)),
                CredentialKind::SigningCertificate => c
                    .delete_signing_certificate()
                    .user_name(user)
                    .certificate_id(id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify(action, e)),
            },
            AwsIamOp::DeactivateMfaDevice { serial } => c
                .deactivate_mfa_device()
                .user_name(user)
                .serial_number(serial)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            AwsIamOp::PutUserPolicy {
                policy_name,
                document,
            } => c
                .put_user_policy()
                .user_name(user)
                .policy_name(policy_name)
                .policy_document(document)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(action, e)),
            _ => Err(CloudError {
                target: Target::Aws,
                kind: ErrorKind::Permanent,
                status: None,
                message: format!("{action}: not a leaver sweep call"),
                retry_after: None,
                source: None,
            }),
        }
    }
}
