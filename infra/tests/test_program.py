"""The entry point: settings from the stack's Pulumi config, and the stack outputs Gatehouse's
configuration is filled from."""

from __future__ import annotations

import pulumi
import pytest
from conftest import declare, settled
from gatehouse_infra import aws, gcp, program
from gatehouse_infra.settings import SettingsError
from helpers import sqs_url


@pytest.fixture
def stack_config():
    """Pulumi's runtime config for one test, restored afterwards."""
    from pulumi.runtime import config as runtime_config

    saved = dict(runtime_config.CONFIG.get())
    yield runtime_config.set_all_config
    runtime_config.set_all_config(saved)


def test_settings_come_from_the_stack_config(stack_config):
    stack_config(
        {
            "gatehouse:maxReceiveCount": "3",
            "gatehouse:awsManagedGroups": '["analysts"]',
            "gcp:project": "acme-prod",
            "aws:region": "eu-west-1",
        }
    )
    s = program.settings_from_pulumi()
    assert (s.max_receive_count, s.aws_managed_groups, s.gcp_project, s.aws_region) == (
        3,
        ("analysts",),
        "acme-prod",
        "eu-west-1",
    )
    assert s.name_prefix == f"gatehouse-{pulumi.get_stack()}"


def test_a_misspelt_stack_config_key_is_an_error_naming_it(stack_config):
    stack_config({"gatehouse:maxRecieveCount": "3", "gcp:project": "acme-prod", "aws:region": "us-east-1"})
    with pytest.raises(SettingsError) as e:
        program.settings_from_pulumi()
    assert e.value.key == "maxRecieveCount"


@pulumi.runtime.test
def test_outputs_are_what_gatehouse_config_needs():
    stack, _ = declare()
    out: dict[str, pulumi.Output] = {}
    aws.exports(stack.aws, export=lambda k, v: out.__setitem__(k, pulumi.Output.from_input(v)))
    gcp.exports(stack.gcp, export=lambda k, v: out.__setitem__(k, pulumi.Output.from_input(v)))
    keys = sorted(out)

    def check(values):
        got = dict(zip(keys, values))
        assert got["sqsQueueUrl"] == sqs_url("gatehouse-test-events.fifo")  # GATEHOUSE_SQS_QUEUE_URL
        assert got["sqsAuditQueueUrl"] == sqs_url("gatehouse-test-audit.fifo")  # GATEHOUSE_SQS_AUDIT_QUEUE_URL
        # GATEHOUSE_SQS_ROTATION_QUEUE_URL
        assert got["sqsRotationQueueUrl"] == sqs_url("gatehouse-test-rotation.fifo")
        p = "projects/gh-test-project"
        assert got["pubsubTopic"] == f"{p}/topics/gatehouse-test-events"  # GATEHOUSE_PUBSUB_TOPIC
        assert got["pubsubSubscription"] == f"{p}/subscriptions/gatehouse-test-events"
        assert got["pubsubAuditSubscription"] == f"{p}/subscriptions/gatehouse-test-audit"
        # GATEHOUSE_PUBSUB_ROTATION_TOPIC, GATEHOUSE_PUBSUB_ROTATION_SUBSCRIPTION
        assert got["pubsubRotationTopic"] == f"{p}/topics/gatehouse-test-rotation"
        assert got["pubsubRotationSubscription"] == f"{p}/subscriptions/gatehouse-test-rotation"
        assert got["pubsubDeadLetterTopic"] == f"{p}/topics/gatehouse-test-events-dlq"
        assert got["processorRoleArn"].endswith(":role/gatehouse-test-processor")
        assert got["rotatorServiceAccount"] == "gh-test-rotator@gh-test-project.iam.gserviceaccount.com"

    return settled(stack, lambda: None).apply(lambda _: pulumi.Output.all(*[out[k] for k in keys]).apply(check))
