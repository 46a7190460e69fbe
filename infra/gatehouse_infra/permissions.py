"""What each Gatehouse service may do: pure functions from resource names/ARNs to IAM policy
documents (AWS) and permission lists (GCP custom roles). The Rust code is the source of truth:
every action below names the call that needs it."""

from __future__ import annotations

# --- AWS: SQS ---------------------------------------------------------------------------------

#: ingress: `SqsQueue::publish` = SendMessageBatch (authorised as sqs:SendMessage).
INGRESS_QUEUE_ACTIONS = ("sqs:SendMessage",)

#: processor on the events and audit queues: `receive` (ReceiveMessage), `ack` (DeleteMessage),
#: `release`/`extend` (ChangeMessageVisibility), the RedrivePolicy lookup and `depth`
#: (GetQueueAttributes).
PROCESSOR_CONSUME_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
)
#: processor → events queue: the audit translator publishes the envelopes it made
#: (`runtime::audit::Translator` publishes onto the main queue).
PROCESSOR_REPUBLISH_ACTIONS = ("sqs:SendMessage",)
#: processor → DLQs: `dead_letter` finds the DLQ by name (GetQueueUrl) and sends the message
#: there itself with the reason attribute (SendMessage).
PROCESSOR_DLQ_ACTIONS = ("sqs:GetQueueUrl", "sqs:SendMessage")
#: processor → rotation queue (issue 12, item 4): `Engine::publish_rotations` = SendMessageBatch.
#: The processor never reads it.
PROCESSOR_ROTATION_PUBLISH_ACTIONS = ("sqs:SendMessage",)
#: rotator on the rotation queue: `Rotator::receive_requests` receives (ReceiveMessage), acks
#: once the request is in its inbox (DeleteMessage), releases a request it could not record
#: (ChangeMessageVisibility), and finds the DLQ from the RedrivePolicy (GetQueueAttributes).
ROTATOR_CONSUME_ACTIONS = (
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:ReceiveMessage",
)
#: rotator → the rotation DLQ: poison is dead-lettered with the reason (GetQueueUrl, SendMessage).
ROTATOR_DLQ_ACTIONS = ("sqs:GetQueueUrl", "sqs:SendMessage")

# --- AWS: IAM (issue 5) and Secrets Manager / access keys (issue 6) ----------------------------

#: processor on managed IAM users (under `awsManagedUserPath`): converge tags and groups, and
#: offboard (deactivate then delete access keys, delete the login profile).
PROCESSOR_IAM_USER_ACTIONS = (
    "iam:DeleteAccessKey",
    "iam:DeleteLoginProfile",
    "iam:GetLoginProfile",
    "iam:GetUser",
    "iam:ListAccessKeys",
    "iam:ListGroupsForUser",
    "iam:ListUserTags",
    "iam:TagUser",
    "iam:UntagUser",
    "iam:UpdateAccessKey",
)
#: processor on managed IAM groups (the group is the resource of these calls).
PROCESSOR_IAM_GROUP_ACTIONS = ("iam:AddUserToGroup", "iam:GetGroup", "iam:RemoveUserFromGroup")

#: rotator on the declared Secrets Manager secrets: staging labels AWSPENDING → AWSCURRENT →
#: AWSPREVIOUS, ClientRequestToken as the idempotency key.
ROTATOR_SECRET_ACTIONS = (
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:ListSecretVersionIds",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
)
#: rotator on the declared IAM users whose access keys it rotates (two-keys limit: list first).
ROTATOR_ACCESS_KEY_ACTIONS = (
    "iam:CreateAccessKey",
    "iam:DeleteAccessKey",
    "iam:ListAccessKeys",
    "iam:UpdateAccessKey",
)

# --- GCP custom roles -------------------------------------------------------------------------

#: ingress on the events topic (`PubsubQueue::publish`); processor on the events topic (audit
#: translator), the rotation topic (rotation requests) and the dead-letter topic (`dead_letter`);
#: rotator on the dead-letter topic (poison on the rotation subscription).
PUBLISH_PERMISSIONS = ("pubsub.topics.publish",)
#: processor on the events and audit subscriptions, rotator on the rotation subscription:
#: streaming pull, ack, modifyAckDeadline.
CONSUME_PERMISSIONS = ("pubsub.subscriptions.consume",)
#: processor on each managed project (issue 5: getIamPolicy → modify → setIamPolicy with etag).
PROJECT_IAM_PERMISSIONS = ("resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy")
#: processor on each managed service account (bindings on the service account resource).
SERVICE_ACCOUNT_IAM_PERMISSIONS = ("iam.serviceAccounts.getIamPolicy", "iam.serviceAccounts.setIamPolicy")
#: rotator on each rotated service account: create, test, disable old, delete after grace.
SA_KEY_PERMISSIONS = (
    "iam.serviceAccountKeys.create",
    "iam.serviceAccountKeys.delete",
    "iam.serviceAccountKeys.disable",
    "iam.serviceAccountKeys.enable",
    "iam.serviceAccountKeys.get",
    "iam.serviceAccountKeys.list",
)
#: rotator on each declared Secret Manager secret: add a version, read it back, disable the old
#: one after grace, destroy later.
SECRET_VERSION_PERMISSIONS = (
    "secretmanager.secrets.get",
    "secretmanager.versions.access",
    "secretmanager.versions.add",
    "secretmanager.versions.destroy",
    "secretmanager.versions.disable",
    "secretmanager.versions.enable",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
)


def statement(sid: str, actions: tuple[str, ...], resources: list[str]) -> dict:
    """One Allow statement; actions and resources sorted so the document is stable."""
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": sorted(resources)}


def document(statements: list[dict]) -> dict:
    """An IAM policy document (statements with no resource are dropped)."""
    return {"Version": "2012-10-17", "Statement": [s for s in statements if s["Resource"]]}


def ingress_policy(events_queue: str) -> dict:
    """The ingress role: send to the events queue, nothing else."""
    return document([statement("SendEvents", INGRESS_QUEUE_ACTIONS, [events_queue])])


def processor_policy(
    events_queue: str,
    audit_queue: str,
    dead_letter_queues: list[str],
    managed_users: list[str],
    managed_groups: list[str],
    rotation_queue: str,
) -> dict:
    """The processor role: consume both queues, re-publish translated audit events, dead-letter,
    publish rotation requests, and change the managed IAM users and groups."""
    return document(
        [
            statement("ConsumeQueues", PROCESSOR_CONSUME_ACTIONS, [events_queue, audit_queue]),
            statement("PublishTranslatedAuditEvents", PROCESSOR_REPUBLISH_ACTIONS, [events_queue]),
            statement("DeadLetter", PROCESSOR_DLQ_ACTIONS, dead_letter_queues),
            statement("PublishRotationRequests", PROCESSOR_ROTATION_PUBLISH_ACTIONS, [rotation_queue]),
            statement("ManagedUsers", PROCESSOR_IAM_USER_ACTIONS, managed_users),
            statement("ManagedGroups", PROCESSOR_IAM_GROUP_ACTIONS, managed_groups),
        ]
    )


def rotator_policy(
    secrets: list[str], rotated_users: list[str], rotation_queue: str, rotation_dead_letter_queue: str
) -> dict:
    """The rotator role: consume the rotation queue (dead-letter poison), the declared secrets
    and the access keys of the declared users."""
    return document(
        [
            statement("ConsumeRotationRequests", ROTATOR_CONSUME_ACTIONS, [rotation_queue]),
            statement("DeadLetterRotationRequests", ROTATOR_DLQ_ACTIONS, [rotation_dead_letter_queue]),
            statement("RotateSecrets", ROTATOR_SECRET_ACTIONS, secrets),
            statement("RotateAccessKeys", ROTATOR_ACCESS_KEY_ACTIONS, rotated_users),
        ]
    )


def assume_role_policy(service: str) -> dict:
    """Trust policy: the compute service the Gatehouse containers run on may assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        ],
    }


def audit_queue_policy(queue_arn: str, rule_arn: str) -> dict:
    """The audit queue's resource policy: EventBridge may send, only on behalf of our rule."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EventBridgeAuditRule",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arn}},
            }
        ],
    }


def put_events_policy(bus_arn: str) -> dict:
    """The us-east-1 forwarding rule's role: put events on this region's default bus only."""
    return document([statement("ForwardIamEvents", ("events:PutEvents",), [bus_arn])])
