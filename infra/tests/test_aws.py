"""AWS resources and their wiring: queues + DLQs + redrive, the EventBridge audit rule, its
target and the queue policy, the us-east-1 forwarding of IAM events, Secrets Manager secrets."""

from __future__ import annotations

import dataclasses

import pulumi
from conftest import FULL, declare, settled
from helpers import all_of, doc, one, sqs_arn, sqs_url
from mocks import ACCOUNT

QUEUE = "aws:sqs/queue:Queue"
RULE = "aws:cloudwatch/eventRule:EventRule"
TARGET = "aws:cloudwatch/eventTarget:EventTarget"


@pulumi.runtime.test
def test_events_audit_and_rotation_queues_are_fifo_with_a_fifo_dlq_and_redrive_to_its_arn():
    stack, mocks = declare()

    def check():
        names = sorted(q.inputs["name"] for q in all_of(mocks, QUEUE))
        assert names == [
            "gatehouse-test-audit-dlq.fifo",
            "gatehouse-test-audit.fifo",
            "gatehouse-test-events-dlq.fifo",
            "gatehouse-test-events.fifo",
            "gatehouse-test-rotation-dlq.fifo",
            "gatehouse-test-rotation.fifo",
        ]
        for base in ("events", "audit", "rotation"):
            q, dlq = one(mocks, QUEUE, base).inputs, one(mocks, QUEUE, f"{base}-dlq").inputs
            assert q["fifoQueue"] is True and dlq["fifoQueue"] is True
            assert q["sqsManagedSseEnabled"] is True and dlq["sqsManagedSseEnabled"] is True
            redrive = doc(q["redrivePolicy"])
            assert redrive == {
                "deadLetterTargetArn": sqs_arn(f"gatehouse-test-{base}-dlq.fifo"),
                "maxReceiveCount": FULL.max_receive_count,
            }
            assert q["visibilityTimeoutSeconds"] == 60
            assert dlq["messageRetentionSeconds"] == 14 * 24 * 3600
            allow = one(mocks, "aws:sqs/redriveAllowPolicy:RedriveAllowPolicy", f"{base}-dlq-allow").inputs
            assert allow["queueUrl"] == sqs_url(f"gatehouse-test-{base}-dlq.fifo")
            assert doc(allow["redriveAllowPolicy"]) == {
                "redrivePermission": "byQueue",
                "sourceQueueArns": [sqs_arn(f"gatehouse-test-{base}.fifo")],
            }
        # The adapter sets MessageDeduplicationId = envelope id; EventBridge needs content-based
        # deduplication on a FIFO target.
        assert one(mocks, QUEUE, "events").inputs["contentBasedDeduplication"] is False
        assert one(mocks, QUEUE, "audit").inputs["contentBasedDeduplication"] is True
        # Rotation requests (issue 12, item 4): dedup id = envelope id, set by the adapter.
        assert one(mocks, QUEUE, "rotation").inputs["contentBasedDeduplication"] is False

    return settled(stack, check)


@pulumi.runtime.test
def test_audit_rule_matches_every_event_gatehouse_reads_and_targets_the_audit_queue():
    stack, mocks = declare()

    def check():
        rule = one(mocks, RULE, "audit-rule").inputs
        pattern = doc(rule["eventPattern"])
        assert pattern["source"] == ["aws.iam", "aws.secretsmanager"]
        assert set(pattern["detail-type"]) == {"AWS API Call via CloudTrail", "AWS Service Event via CloudTrail"}
        names = set(pattern["detail"]["eventName"])
        for needed in (
            "CreateUser",
            "DeleteUser",
            "AddUserToGroup",
            "RemoveUserFromGroup",
            "CreateAccessKey",
            "AttachRolePolicy",
            "RotateSecret",
            "GetSecretValue",
            "RotationSucceeded",
            "RotationFailed",
        ):
            assert needed in names, needed
        # GetSecretValue is a read-only call: only this state delivers it.
        assert rule["state"] == "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"

        target = one(mocks, TARGET, "audit-target").inputs
        assert target["rule"] == "gatehouse-test-audit"
        assert target["arn"] == sqs_arn("gatehouse-test-audit.fifo")
        assert target["sqsTarget"] == {"messageGroupId": "cloudtrail"}
        # The body must be the EventBridge event itself (cloud_audit.rs rejects a bare record).
        for key in ("input", "inputPath", "inputTransformer"):
            assert key not in target

    return settled(stack, check)


@pulumi.runtime.test
def test_audit_queue_policy_lets_only_eventbridge_on_behalf_of_the_rule_send():
    stack, mocks = declare()

    def check():
        policies = all_of(mocks, "aws:sqs/queuePolicy:QueuePolicy")
        assert len(policies) == 1, "only the audit queue has a resource policy"
        p = policies[0].inputs
        assert p["queueUrl"] == sqs_url("gatehouse-test-audit.fifo")
        assert doc(p["policy"])["Statement"] == [
            {
                "Sid": "EventBridgeAuditRule",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": sqs_arn("gatehouse-test-audit.fifo"),
                "Condition": {
                    "ArnEquals": {"aws:SourceArn": f"arn:aws:events:eu-west-1:{ACCOUNT}:rule/gatehouse-test-audit"}
                },
            }
        ]

    return settled(stack, check)


@pulumi.runtime.test
def test_iam_events_are_forwarded_from_us_east_1_when_the_stack_lives_elsewhere():
    stack, mocks = declare()

    def check():
        provider = one(mocks, "pulumi:providers:aws", "us-east-1").inputs
        assert provider["region"] == "us-east-1"
        rule = one(mocks, RULE, "iam-forward-rule")
        assert rule.provider and "::us-east-1::" in rule.provider
        pattern = doc(rule.inputs["eventPattern"])
        assert pattern["source"] == ["aws.iam"]
        assert "CreateAccessKey" in pattern["detail"]["eventName"]
        target = one(mocks, TARGET, "iam-forward-target")
        assert target.provider and "::us-east-1::" in target.provider
        bus = f"arn:aws:events:eu-west-1:{ACCOUNT}:event-bus/default"
        assert target.inputs["arn"] == bus
        assert target.inputs["roleArn"] == f"arn:aws:iam::{ACCOUNT}:role/gatehouse-test-iam-forward"
        policy = doc(one(mocks, "aws:iam/rolePolicy:RolePolicy", "iam-forward-policy").inputs["policy"])
        assert [(s["Action"], s["Resource"]) for s in policy["Statement"]] == [(["events:PutEvents"], [bus])]
        trust = doc(one(mocks, "aws:iam/role:Role", "iam-forward-role").inputs["assumeRolePolicy"])
        assert trust["Statement"][0]["Principal"] == {"Service": "events.amazonaws.com"}

    return settled(stack, check)


@pulumi.runtime.test
def test_no_forwarding_in_us_east_1_and_a_standard_audit_queue_when_asked():
    s = dataclasses.replace(FULL, aws_region="us-east-1", audit_queue_fifo=False, audit_read_only_events=False)
    stack, mocks = declare(s)

    def check():
        assert stack.aws.forward == []
        assert [r.name for r in all_of(mocks, RULE)] == ["audit-rule"]
        assert all_of(mocks, "pulumi:providers:aws") == []
        audit = one(mocks, QUEUE, "audit").inputs
        assert audit["name"] == "gatehouse-test-audit" and "fifoQueue" not in audit
        assert doc(audit["redrivePolicy"])["deadLetterTargetArn"] == sqs_arn(
            "gatehouse-test-audit-dlq", region="us-east-1"
        )
        target = one(mocks, TARGET, "audit-target").inputs
        assert "sqsTarget" not in target
        rule = one(mocks, RULE, "audit-rule").inputs
        assert rule["state"] == "ENABLED"
        assert "GetSecretValue" not in doc(rule["eventPattern"])["detail"]["eventName"]

    return settled(stack, check)


@pulumi.runtime.test
def test_secrets_manager_secrets_are_declared_with_stack_prefixed_names():
    stack, mocks = declare()

    def check():
        secrets = all_of(mocks, "aws:secretsmanager/secret:Secret")
        assert sorted(s.inputs["name"] for s in secrets) == [
            "gatehouse-test-looker-api3-key",
            "gatehouse-test-warehouse-password",
        ]
        for s in secrets:
            assert s.inputs["recoveryWindowInDays"] == 7

    return settled(stack, check)


@pulumi.runtime.test
def test_one_role_per_service_with_one_inline_policy_and_no_managed_policy():
    stack, mocks = declare()

    def check():
        roles = {r.name: r.inputs for r in all_of(mocks, "aws:iam/role:Role")}
        for svc in ("ingress", "processor", "rotator"):
            role = roles[f"role-{svc}"]
            assert role["name"] == f"gatehouse-test-{svc}"
            assert "managedPolicyArns" not in role and "inlinePolicies" not in role
            trust = doc(role["assumeRolePolicy"])
            assert trust["Statement"] == [
                {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ]
            policy = one(mocks, "aws:iam/rolePolicy:RolePolicy", f"role-{svc}-policy").inputs
            assert policy["role"] == f"gatehouse-test-{svc}"
        assert set(roles) == {"role-ingress", "role-processor", "role-rotator", "iam-forward-role"}

    return settled(stack, check)
