"""What the cloud audit trails must deliver: the CloudTrail event names and the GCP audit-log
filter that `shared/domain/src/cloud_audit.rs` reads (docs/cloud-audit.md)."""

from __future__ import annotations

API_CALL = "AWS API Call via CloudTrail"
SERVICE_EVENT = "AWS Service Event via CloudTrail"

#: IAM calls the translator turns into drift (users, groups, user and role policies) or into a
#: rotation request (CreateAccessKey).
IAM_EVENTS = (
    "CreateUser",
    "DeleteUser",
    "AddUserToGroup",
    "RemoveUserFromGroup",
    "CreateAccessKey",
    "AttachUserPolicy",
    "DetachUserPolicy",
    "PutUserPolicy",
    "DeleteUserPolicy",
    "AttachRolePolicy",
    "DetachRolePolicy",
    "PutRolePolicy",
    "DeleteRolePolicy",
)
#: Secrets Manager calls (write).
SECRETS_MANAGER_CALLS = ("RotateSecret",)
#: Secrets Manager read calls: delivered only by a rule in state
#: ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS.
SECRETS_MANAGER_READS = ("GetSecretValue",)
#: Secrets Manager's own rotation results ("AWS Service Event via CloudTrail").
SECRETS_MANAGER_ROTATION_RESULTS = ("RotationStarted", "RotationSucceeded", "RotationFailed", "RotationAbandoned")


def audit_event_pattern(read_only_events: bool) -> dict:
    """EventBridge pattern of the audit rule: IAM and Secrets Manager events by name."""
    names = [*IAM_EVENTS, *SECRETS_MANAGER_CALLS, *SECRETS_MANAGER_ROTATION_RESULTS]
    if read_only_events:
        names += SECRETS_MANAGER_READS
    return {
        "source": ["aws.iam", "aws.secretsmanager"],
        "detail-type": [API_CALL, SERVICE_EVENT],
        "detail": {
            "eventSource": ["iam.amazonaws.com", "secretsmanager.amazonaws.com"],
            "eventName": sorted(names),
        },
    }


def iam_forward_pattern() -> dict:
    """Pattern of the us-east-1 rule that forwards IAM events to the stack's region."""
    return {
        "source": ["aws.iam"],
        "detail-type": [API_CALL],
        "detail": {"eventSource": ["iam.amazonaws.com"], "eventName": sorted(IAM_EVENTS)},
    }


#: GCP methods the translator reads (`SetIamPolicy` of every service, `SetIAMPolicy` of IAM admin:
#: the `:` operator of the Logging query language is case-insensitive).
GCP_AUDIT_METHODS = ("SetIamPolicy", "CreateServiceAccountKey", "DeleteServiceAccountKey")


def gcp_audit_filter() -> str:
    """Cloud Logging filter of the audit-log sink: Admin Activity audit logs of those methods."""
    methods = " OR ".join(f'protoPayload.methodName:"{m}"' for m in GCP_AUDIT_METHODS)
    return f'logName:"cloudaudit.googleapis.com%2Factivity" AND ({methods})'
