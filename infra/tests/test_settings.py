"""Stack settings from Pulumi config: defaults, validation, errors that name the key."""

from __future__ import annotations

import pytest
from gatehouse_infra.settings import GcpSecret, SettingsError, check_keys, parse_settings


def parse(own: dict, other: dict | None = None):
    return parse_settings(
        "prod", own, other if other is not None else {"gcp:project": "acme-prod", "aws:region": "us-east-1"}
    )


def test_defaults_are_prefixed_per_stack_and_sane():
    s = parse({})
    assert s.name_prefix == "gatehouse-prod"
    assert s.name("events") == "gatehouse-prod-events"
    assert s.gcp_project == "acme-prod"
    assert s.aws_region == "us-east-1"
    assert s.max_receive_count == 10  # above the processor's default max_attempts (5)
    assert s.ack_deadline_seconds == 60  # the Pub/Sub adapter's ack_deadline
    assert s.aws_managed_user_path == "/gatehouse/"
    assert s.gcp_secrets == (GcpSecret("looker-api3-key", 30 * 24 * 3600),)
    assert s.role_id("ingress_publish") == "gatehouse_prod_ingress_publish"


def test_values_are_read_and_typed():
    s = parse(
        {
            "maxReceiveCount": "4",
            "awsManagedGroups": '["a", "b"]',
            "gcpSecrets": '[{"name": "k", "rotationDays": 7}]',
            "auditQueueFifo": "false",
        },
        {"gcp:project": "acme-prod", "aws:region": "eu-central-1"},
    )
    assert s.max_receive_count == 4
    assert s.aws_managed_groups == ("a", "b")
    assert s.gcp_secrets == (GcpSecret("k", 7 * 24 * 3600),)
    assert s.audit_queue_fifo is False
    assert s.aws_region == "eu-central-1"


@pytest.mark.parametrize(
    "own, other, key, words",
    [
        ({"maxReceiveCount": "0"}, None, "maxReceiveCount", "outside 1..1000"),
        ({"maxReceiveCount": "many"}, None, "maxReceiveCount", "not an integer"),
        ({"ackDeadlineSeconds": "5"}, None, "ackDeadlineSeconds", "outside 10..600"),
        ({"maxDeliveryAttempts": "101"}, None, "maxDeliveryAttempts", "outside 5..100"),
        ({"auditQueueFifo": "yes"}, None, "auditQueueFifo", "not true or false"),
        ({"awsManagedGroups": "admins"}, None, "awsManagedGroups", "not JSON"),
        ({"awsManagedGroups": '["a*"]'}, None, "awsManagedGroups", "does not match"),
        ({"awsManagedGroups": '["a", "a"]'}, None, "awsManagedGroups", "duplicates"),
        ({"awsManagedUserPath": "/"}, None, "awsManagedUserPath", "every IAM user"),
        ({"awsManagedUserPath": "people"}, None, "awsManagedUserPath", "does not match"),
        ({"gcpSecrets": '[{"name": "k", "days": 7}]'}, None, "gcpSecrets", "unknown field"),
        ({"gcpSecrets": '[{"name": "k", "rotationDays": 0}]'}, None, "gcpSecrets", "1..3650"),
        ({"gcpManagedServiceAccounts": '["someone@gmail.com"]'}, None, "gcpManagedServiceAccounts", "does not match"),
        ({}, {"aws:region": "us-east-1"}, "gcpProject", "required"),
        ({}, {"gcp:project": "acme-prod"}, "aws:region", "required"),
        ({"enableAws": "false", "enableGcp": "false"}, None, "enableAws", "nothing to declare"),
        ({"namePrefix": "Gatehouse_Prod"}, None, "namePrefix", "does not match"),
        ({"gcpGroupBindings": '[{"group": "da@x.io", "project": "acme-prod"}]'}, None, "gcpGroupBindings", "exactly"),
        (
            {"gcpGroupBindings": '[{"group": "da", "project": "acme-prod", "role": "roles/viewer"}]'},
            None,
            "gcpGroupBindings",
            "not a group email",
        ),
        (
            {"gcpGroupBindings": '[{"group": "da@x.io", "project": "acme-prod", "role": "roles/owner"}]'},
            None,
            "gcpGroupBindings",
            "basic role",
        ),
    ],
)
def test_bad_values_are_rejected_naming_the_key(own, other, key, words):
    with pytest.raises(SettingsError) as e:
        parse(own, other)
    assert e.value.key == key
    assert str(e.value).startswith(f"{key}: " if ":" in key else f"gatehouse:{key}: ")
    assert words in str(e.value)


def test_gcp_may_be_switched_off_and_then_needs_no_project():
    s = parse({"enableGcp": "false"}, {"aws:region": "us-east-1"})
    assert s.enable_gcp is False and s.gcp_project is None


def test_unknown_keys_are_rejected():
    check_keys(["maxReceiveCount", "gcpSecrets"])
    with pytest.raises(SettingsError) as e:
        check_keys(["maxRecieveCount"])
    assert e.value.key == "maxRecieveCount" and "unknown key" in str(e.value)
