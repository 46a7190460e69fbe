"""AWS: SQS FIFO queues with DLQs, the EventBridge audit rule, Secrets Manager secrets and one
least-privilege IAM role per service."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from . import events, permissions
from .settings import Settings

SERVICES = ("ingress", "processor", "rotator")


@dataclass
class Queue:
    """A queue and its dead-letter queue."""

    queue: aws.sqs.Queue
    dlq: aws.sqs.Queue
    redrive_allow: aws.sqs.RedriveAllowPolicy


@dataclass
class AwsStack:
    """Every AWS resource the program declares, by role."""

    events: Queue
    audit: Queue
    #: Rotation requests, processor → rotator (issue 12, item 4).
    rotation: Queue
    audit_rule: aws.cloudwatch.EventRule
    audit_target: aws.cloudwatch.EventTarget
    audit_queue_policy: aws.sqs.QueuePolicy
    secrets: dict[str, aws.secretsmanager.Secret]
    roles: dict[str, aws.iam.Role]
    role_policies: dict[str, aws.iam.RolePolicy]
    forward: list[pulumi.Resource] = field(default_factory=list)

    def resources(self) -> list[pulumi.Resource]:
        """All of them, for tests that wait for every registration."""
        out: list[pulumi.Resource] = []
        for q in (self.events, self.audit, self.rotation):
            out += [q.queue, q.dlq, q.redrive_allow]
        out += [self.audit_rule, self.audit_target, self.audit_queue_policy]
        out += [*self.secrets.values(), *self.roles.values(), *self.role_policies.values(), *self.forward]
        return out


def _json(value: pulumi.Input) -> pulumi.Output[str]:
    return pulumi.Output.from_input(value).apply(lambda v: json.dumps(v, sort_keys=True))


def _queue(s: Settings, base: str, fifo: bool, content_dedup: bool, tags: dict) -> Queue:
    suffix = ".fifo" if fifo else ""
    dlq = aws.sqs.Queue(
        f"{base}-dlq",
        name=s.name(f"{base}-dlq") + suffix,
        fifo_queue=fifo or None,
        # The processor sends dead letters with its own deduplication id (hash of the body).
        content_based_deduplication=(content_dedup if fifo else None),
        message_retention_seconds=s.dlq_retention_seconds,
        sqs_managed_sse_enabled=True,
        tags=tags,
    )
    queue = aws.sqs.Queue(
        base,
        name=s.name(base) + suffix,
        fifo_queue=fifo or None,
        content_based_deduplication=(content_dedup if fifo else None),
        visibility_timeout_seconds=s.visibility_timeout_seconds,
        message_retention_seconds=s.message_retention_seconds,
        receive_wait_time_seconds=20,
        sqs_managed_sse_enabled=True,
        redrive_policy=_json(
            dlq.arn.apply(lambda arn: {"deadLetterTargetArn": arn, "maxReceiveCount": s.max_receive_count})
        ),
        tags=tags,
    )
    # Only this queue may use the DLQ as its dead-letter target.
    allow = aws.sqs.RedriveAllowPolicy(
        f"{base}-dlq-allow",
        queue_url=dlq.url,
        redrive_allow_policy=_json(
            queue.arn.apply(lambda arn: {"redrivePermission": "byQueue", "sourceQueueArns": [arn]})
        ),
    )
    return Queue(queue=queue, dlq=dlq, redrive_allow=allow)


def deploy(s: Settings) -> AwsStack:
    """Declare the AWS side of a stack."""
    tags = {"app": "gatehouse", "stack": s.stack}
    identity = aws.get_caller_identity_output()
    partition = aws.get_partition_output().partition
    account = identity.account_id

    # Envelopes: FIFO, group = subject, dedup id = envelope id (set by the adapter).
    events_q = _queue(s, "events", fifo=True, content_dedup=False, tags=tags)
    # CloudTrail via EventBridge: a FIFO target needs content-based deduplication.
    audit_q = _queue(s, "audit", fifo=s.audit_queue_fifo, content_dedup=True, tags=tags)
    # Rotation requests, processor → rotator: the two services meet only here (issue 12, item 4).
    # FIFO like the events queue: dedup id = envelope id, so a republished request is dropped.
    rotation_q = _queue(s, "rotation", fifo=True, content_dedup=False, tags=tags)

    rule = aws.cloudwatch.EventRule(
        "audit-rule",
        name=s.name("audit"),
        description="IAM and Secrets Manager CloudTrail events Gatehouse reads, to its audit queue",
        event_pattern=json.dumps(events.audit_event_pattern(s.audit_read_only_events), sort_keys=True),
        state=("ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS" if s.audit_read_only_events else "ENABLED"),
        tags=tags,
    )
    queue_policy = aws.sqs.QueuePolicy(
        "audit-queue-policy",
        queue_url=audit_q.queue.url,
        policy=_json(
            pulumi.Output.all(audit_q.queue.arn, rule.arn).apply(
                lambda a: permissions.audit_queue_policy(a[0], a[1])
            )
        ),
    )
    target = aws.cloudwatch.EventTarget(
        "audit-target",
        rule=rule.name,
        target_id="gatehouse-audit-queue",
        arn=audit_q.queue.arn,
        # The SQS body is the EventBridge event itself: no input transformer (cloud_audit.rs).
        sqs_target=({"message_group_id": s.audit_message_group_id} if s.audit_queue_fifo else None),
        opts=pulumi.ResourceOptions(depends_on=[queue_policy]),
    )

    forward: list[pulumi.Resource] = []
    if s.aws_region != "us-east-1" and s.forward_iam_events_from_us_east_1:
        forward = _forward_iam_events(s, partition, account, tags)

    secrets = {
        name: aws.secretsmanager.Secret(
            f"secret-{name}",
            name=s.name(name),
            description=f"Gatehouse rotator: {name}",
            recovery_window_in_days=7,
            tags=tags,
        )
        for name in s.aws_secrets
    }

    user_path = s.aws_managed_user_path
    managed_users = pulumi.Output.concat("arn:", partition, ":iam::", account, f":user{user_path}*")

    def arns(kind: str, names: tuple[str, ...]) -> pulumi.Output[list[str]]:
        return pulumi.Output.all(partition, account).apply(
            lambda pa: [f"arn:{pa[0]}:iam::{pa[1]}:{kind}/{n}" for n in names]
        )

    policies = {
        "ingress": events_q.queue.arn.apply(permissions.ingress_policy),
        "processor": pulumi.Output.all(
            events_q.queue.arn,
            audit_q.queue.arn,
            events_q.dlq.arn,
            audit_q.dlq.arn,
            managed_users,
            arns("group", s.aws_managed_groups),
            rotation_q.queue.arn,
        ).apply(
            lambda a: permissions.processor_policy(
                events_queue=a[0],
                audit_queue=a[1],
                dead_letter_queues=[a[2], a[3]],
                managed_users=[a[4]],
                managed_groups=a[5],
                rotation_queue=a[6],
            )
        ),
        "rotator": pulumi.Output.all(
            pulumi.Output.all(*[sec.arn for sec in secrets.values()]),
            arns("user", s.aws_rotated_users),
            rotation_q.queue.arn,
            rotation_q.dlq.arn,
        ).apply(
            lambda a: permissions.rotator_policy(
                secrets=list(a[0]),
                rotated_users=a[1],
                rotation_queue=a[2],
                rotation_dead_letter_queue=a[3],
            )
        ),
    }

    roles: dict[str, aws.iam.Role] = {}
    role_policies: dict[str, aws.iam.RolePolicy] = {}
    for svc in SERVICES:
        roles[svc] = aws.iam.Role(
            f"role-{svc}",
            name=s.name(svc),
            description=f"Gatehouse {svc}: least privilege",
            assume_role_policy=json.dumps(permissions.assume_role_policy(s.assume_role_service)),
            max_session_duration=3600,
            tags=tags,
        )
        role_policies[svc] = aws.iam.RolePolicy(
            f"role-{svc}-policy",
            name=s.name(svc),
            role=roles[svc].id,
            policy=_json(policies[svc]),
        )

    return AwsStack(
        events=events_q,
        audit=audit_q,
        rotation=rotation_q,
        audit_rule=rule,
        audit_target=target,
        audit_queue_policy=queue_policy,
        secrets=secrets,
        roles=roles,
        role_policies=role_policies,
        forward=forward,
    )


def _forward_iam_events(
    s: Settings, partition: pulumi.Output[str], account: pulumi.Output[str], tags: dict
) -> list[pulumi.Resource]:
    """IAM is global and its CloudTrail events reach only us-east-1: forward them to the default
    bus of the stack's region, where the audit rule picks them up."""
    east = aws.Provider("us-east-1", region="us-east-1")
    bus = pulumi.Output.concat("arn:", partition, ":events:", s.aws_region, ":", account, ":event-bus/default")
    role = aws.iam.Role(
        "iam-forward-role",
        name=s.name("iam-forward"),
        description="EventBridge in us-east-1 forwards IAM events to the Gatehouse region",
        assume_role_policy=json.dumps(permissions.assume_role_policy("events.amazonaws.com")),
        tags=tags,
    )
    policy = aws.iam.RolePolicy(
        "iam-forward-policy",
        name=s.name("iam-forward"),
        role=role.id,
        policy=_json(bus.apply(permissions.put_events_policy)),
    )
    rule = aws.cloudwatch.EventRule(
        "iam-forward-rule",
        name=s.name("iam-forward"),
        description="IAM CloudTrail events Gatehouse reads, to the Gatehouse region",
        event_pattern=json.dumps(events.iam_forward_pattern(), sort_keys=True),
        tags=tags,
        opts=pulumi.ResourceOptions(provider=east),
    )
    target = aws.cloudwatch.EventTarget(
        "iam-forward-target",
        rule=rule.name,
        target_id="gatehouse-region-bus",
        arn=bus,
        role_arn=role.arn,
        opts=pulumi.ResourceOptions(provider=east, depends_on=[policy]),
    )
    return [east, role, policy, rule, target]


def exports(st: AwsStack, export: Optional[callable] = None) -> None:
    """Stack outputs: what Gatehouse's config needs (GATEHOUSE_SQS_* and role ARNs)."""
    export = export or pulumi.export
    export("sqsQueueUrl", st.events.queue.url)
    export("sqsAuditQueueUrl", st.audit.queue.url)
    export("sqsDeadLetterQueueUrl", st.events.dlq.url)
    export("sqsAuditDeadLetterQueueUrl", st.audit.dlq.url)
    export("sqsRotationQueueUrl", st.rotation.queue.url)
    export("sqsRotationDeadLetterQueueUrl", st.rotation.dlq.url)
    for svc, role in st.roles.items():
        export(f"{svc}RoleArn", role.arn)
    export("awsSecretArns", {k: v.arn for k, v in st.secrets.items()})
