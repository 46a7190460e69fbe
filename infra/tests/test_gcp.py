"""GCP resources and their wiring: topics, subscriptions with ordering and dead letters, the audit
log sink and its writer identity, Secret Manager secrets with rotation and notifications."""

from __future__ import annotations

import pulumi
import dataclasses

from conftest import FULL, declare, settled
from gatehouse_infra.settings import GroupBinding
from privilege import violations
from helpers import all_of, one
from mocks import PROJECT_NUMBER

P = "gh-test-project"
TOPIC = "gcp:pubsub/topic:Topic"
SUB = "gcp:pubsub/subscription:Subscription"
TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUB_MEMBER = "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember"
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"
SM_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-secretmanager.iam.gserviceaccount.com"
SINK_WRITER = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-logging.iam.gserviceaccount.com"


def topic_id(name: str) -> str:
    return f"projects/{P}/topics/gatehouse-test-{name}"


@pulumi.runtime.test
def test_topics_and_subscriptions_with_ordering_dead_letters_and_ack_deadline():
    stack, mocks = declare()

    def check():
        topics = sorted(t.inputs["name"] for t in all_of(mocks, TOPIC))
        assert topics == [
            "gatehouse-test-audit",
            "gatehouse-test-audit-dlq",
            "gatehouse-test-events",
            "gatehouse-test-events-dlq",
            "gatehouse-test-rotation",
            "gatehouse-test-rotation-dlq",
        ]
        for base in ("events", "audit", "rotation"):
            sub = one(mocks, SUB, f"{base}-subscription").inputs
            assert sub["name"] == f"gatehouse-test-{base}"
            assert sub["topic"] == topic_id(base)
            # Rotation requests stand alone: published without ordering keys (issue 12, item 4).
            assert sub["enableMessageOrdering"] is (base != "rotation")
            assert sub["ackDeadlineSeconds"] == FULL.ack_deadline_seconds
            assert sub["deadLetterPolicy"] == {
                "deadLetterTopic": topic_id(f"{base}-dlq"),
                "maxDeliveryAttempts": FULL.max_delivery_attempts,
            }
            assert sub["expirationPolicy"] == {"ttl": ""}
            # Dead letters are kept: the dead-letter topic has its own subscription.
            dls = one(mocks, SUB, f"{base}-dlq-subscription").inputs
            assert dls["topic"] == topic_id(f"{base}-dlq")
            assert "deadLetterPolicy" not in dls

    return settled(stack, check)


@pulumi.runtime.test
def test_pubsub_service_agent_may_move_dead_letters_and_nothing_more():
    stack, mocks = declare()

    def check():
        publish = {(m.inputs["topic"], m.inputs["role"]) for m in all_of(mocks, TOPIC_MEMBER) if m.inputs["member"] == PUBSUB_AGENT}
        assert publish == {
            ("gatehouse-test-events-dlq", "roles/pubsub.publisher"),
            ("gatehouse-test-audit-dlq", "roles/pubsub.publisher"),
            ("gatehouse-test-rotation-dlq", "roles/pubsub.publisher"),
        }
        subscribe = {
            (m.inputs["subscription"], m.inputs["role"]) for m in all_of(mocks, SUB_MEMBER) if m.inputs["member"] == PUBSUB_AGENT
        }
        assert subscribe == {
            ("gatehouse-test-events", "roles/pubsub.subscriber"),
            ("gatehouse-test-audit", "roles/pubsub.subscriber"),
            ("gatehouse-test-rotation", "roles/pubsub.subscriber"),
        }

    return settled(stack, check)


@pulumi.runtime.test
def test_audit_log_sink_filters_iam_methods_into_the_audit_topic_and_its_writer_publishes_only_there():
    stack, mocks = declare()

    def check():
        sinks = all_of(mocks, "gcp:logging/projectSink:ProjectSink")
        assert len(sinks) == 1
        sink = sinks[0].inputs
        assert sink["destination"] == f"pubsub.googleapis.com/{topic_id('audit')}"
        assert sink["uniqueWriterIdentity"] is True
        f = sink["filter"]
        assert 'logName:"cloudaudit.googleapis.com%2Factivity"' in f
        for method in ("SetIamPolicy", "CreateServiceAccountKey", "DeleteServiceAccountKey"):
            assert f'protoPayload.methodName:"{method}"' in f
        writer = [
            (m.inputs["topic"], m.inputs["role"])
            for m in mocks.resources
            if m.typ.startswith("gcp:") and m.inputs.get("member") == SINK_WRITER
        ]
        assert writer == [("gatehouse-test-audit", "roles/pubsub.publisher")]

    return settled(stack, check)


@pulumi.runtime.test
def test_secret_manager_secrets_rotate_on_schedule_and_notify_the_audit_topic():
    stack, mocks = declare()

    def check():
        secrets = {s.inputs["secretId"]: s.inputs for s in all_of(mocks, "gcp:secretmanager/secret:Secret")}
        assert set(secrets) == {"gatehouse-test-looker-api3-key", "gatehouse-test-bq-sa-key"}
        weekly = secrets["gatehouse-test-looker-api3-key"]
        assert weekly["topics"] == [{"name": topic_id("audit")}]
        assert weekly["rotation"] == {"rotationPeriod": "604800s", "nextRotationTime": "2030-01-08T12:00:00Z"}
        monthly = secrets["gatehouse-test-bq-sa-key"]
        assert monthly["rotation"] == {"rotationPeriod": "2592000s", "nextRotationTime": "2030-01-31T12:00:00Z"}
        assert monthly["replication"] == {"auto": {}}
        # Secret Manager's service agent may publish the notifications, to that topic only.
        agent = [
            (m.inputs["topic"], m.inputs["role"])
            for m in mocks.resources
            if m.typ.startswith("gcp:") and m.inputs.get("member") == SM_AGENT
        ]
        assert agent == [("gatehouse-test-audit", "roles/pubsub.publisher")]

    return settled(stack, check)


@pulumi.runtime.test
def test_one_service_account_per_service():
    stack, mocks = declare()

    def check():
        ids = sorted(a.inputs["accountId"] for a in all_of(mocks, "gcp:serviceaccount/account:Account"))
        assert ids == ["gh-test-ingress", "gh-test-processor", "gh-test-rotator"]
        assert all(6 <= len(i) <= 30 for i in ids)

    return settled(stack, check)


@pulumi.runtime.test
def test_a_google_group_is_bound_once_per_project_and_role():
    """Issue 20: people reach a resource through a group Gatehouse keeps the members of; the
    binding names the group, never a person, and grants nothing to Gatehouse's accounts."""
    binding = GroupBinding(group="data-analysts@example.com", project="analytics-prod", role="roles/bigquery.dataViewer")
    stack, mocks = declare(dataclasses.replace(FULL, gcp_group_bindings=(binding,)))

    def check():
        grants = [
            r.inputs
            for r in all_of(mocks, "gcp:projects/iAMMember:IAMMember")
            if r.inputs["member"].startswith("group:")
        ]
        assert grants == [
            {"project": "analytics-prod", "role": "roles/bigquery.dataViewer", "member": "group:data-analysts@example.com"}
        ]
        # The stack's own identities keep exactly their grants: only the group binding is new.
        assert [v for v in violations(mocks.resources) if "group-binding" not in v] == []

    return settled(stack, check)
