"""Least privilege: each service's AWS role and GCP service account may do exactly what its code
calls, on the named resources, and nothing of another service; nothing in the program grants a
wildcard, an admin role or a managed policy. Expected grants are written out here by hand (not
taken from gatehouse_infra.permissions), so a change to the program has to be made twice."""

from __future__ import annotations

import json

import pulumi
from conftest import declare, settled
from helpers import all_of, doc, grants_of, one, sqs_arn
from mocks import ACCOUNT, Registered
from privilege import violations

P = "gh-test-project"


def aws_grants(mocks, svc: str) -> set[tuple[str, str]]:
    return grants_of(doc(one(mocks, "aws:iam/rolePolicy:RolePolicy", f"role-{svc}-policy").inputs["policy"]))


def expected_aws() -> dict[str, set[tuple[str, str]]]:
    events, audit = sqs_arn("gatehouse-test-events.fifo"), sqs_arn("gatehouse-test-audit.fifo")
    rotation, rotation_dlq = sqs_arn("gatehouse-test-rotation.fifo"), sqs_arn("gatehouse-test-rotation-dlq.fifo")
    dlqs = [sqs_arn("gatehouse-test-events-dlq.fifo"), sqs_arn("gatehouse-test-audit-dlq.fifo")]
    users = f"arn:aws:iam::{ACCOUNT}:user/people/*"
    groups = [f"arn:aws:iam::{ACCOUNT}:group/looker-admins", f"arn:aws:iam::{ACCOUNT}:group/analysts"]
    secrets = [
        f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:gatehouse-test-looker-api3-key-AbCdEf",
        f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:gatehouse-test-warehouse-password-AbCdEf",
    ]
    rotated = f"arn:aws:iam::{ACCOUNT}:user/svc-looker"
    consume = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]
    user_actions = [
        "iam:GetUser",
        "iam:ListGroupsForUser",
        "iam:ListUserTags",
        "iam:TagUser",
        "iam:UntagUser",
        "iam:ListAccessKeys",
        "iam:UpdateAccessKey",
        "iam:DeleteAccessKey",
        "iam:GetLoginProfile",
        "iam:DeleteLoginProfile",
    ]
    secret_actions = [
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
        "secretsmanager:DescribeSecret",
        "secretsmanager:ListSecretVersionIds",
    ]
    key_actions = ["iam:CreateAccessKey", "iam:ListAccessKeys", "iam:UpdateAccessKey", "iam:DeleteAccessKey"]
    return {
        "ingress": {("sqs:SendMessage", events)},
        "processor": {(a, q) for a in consume for q in (events, audit)}
        | {("sqs:SendMessage", events)}
        | {(a, q) for a in ("sqs:SendMessage", "sqs:GetQueueUrl") for q in dlqs}
        # Rotation requests: publish only (issue 12, item 4).
        | {("sqs:SendMessage", rotation)}
        | {(a, users) for a in user_actions}
        | {(a, g) for a in ("iam:AddUserToGroup", "iam:RemoveUserFromGroup", "iam:GetGroup") for g in groups},
        "rotator": {(a, s) for a in secret_actions for s in secrets}
        | {(a, rotated) for a in key_actions}
        # The rotation queue: consume, and dead-letter poison to its DLQ.
        | {(a, rotation) for a in consume}
        | {(a, rotation_dlq) for a in ("sqs:SendMessage", "sqs:GetQueueUrl")},
    }


@pulumi.runtime.test
def test_each_aws_role_grants_exactly_what_its_service_calls_on_named_resources():
    stack, mocks = declare()

    def check():
        expected = expected_aws()
        for svc in ("ingress", "processor", "rotator"):
            got = aws_grants(mocks, svc)
            assert got == expected[svc], (
                f"{svc}: extra {sorted(got - expected[svc])}, missing {sorted(expected[svc] - got)}"
            )

    return settled(stack, check)


@pulumi.runtime.test
def test_no_aws_role_holds_another_services_permissions():
    stack, mocks = declare()

    def check():
        g = {svc: aws_grants(mocks, svc) for svc in ("ingress", "processor", "rotator")}
        # The one shared grant, on purpose: the processor's audit translator publishes the
        # envelopes it made onto the events queue, as the ingress does (intake/src/audit.rs).
        shared_on_purpose = {("sqs:SendMessage", sqs_arn("gatehouse-test-events.fifo"))}
        assert g["ingress"] & g["processor"] == shared_on_purpose
        assert g["ingress"] & g["rotator"] == set()
        assert g["processor"] & g["rotator"] == set()
        # Only the processor reads the events and audit queues, the rotator only the rotation
        # queue, which the processor may only publish to: the two meet through it, nothing else
        # (issue 12, item 4). Only the rotator touches secrets or creates keys.
        rotation = sqs_arn("gatehouse-test-rotation.fifo")
        assert not any(a == "sqs:ReceiveMessage" for a, _ in g["ingress"])
        assert {q for a, q in g["rotator"] if a == "sqs:ReceiveMessage"} == {rotation}
        assert {a for a, q in g["processor"] if q == rotation} == {"sqs:SendMessage"}
        assert not any(q == rotation for _, q in g["ingress"])
        assert not any(a.startswith("secretsmanager:") for a, _ in g["ingress"] | g["processor"])
        assert not any(a == "iam:CreateAccessKey" for a, _ in g["ingress"] | g["processor"])
        assert not any(a.startswith(("sqs:", "iam:")) and "Group" in a for a, _ in g["rotator"])

    return settled(stack, check)


def gcp_grants(mocks) -> dict[str, set[tuple[str, str]]]:
    """Per member: (permission, resource) pairs, custom roles expanded to their permissions."""
    roles = {
        f"projects/{r.inputs['project']}/roles/{r.inputs['roleId']}": r.inputs["permissions"]
        for r in all_of(mocks, "gcp:projects/iAMCustomRole:IAMCustomRole")
    }
    resource_of = {
        "gcp:pubsub/topicIAMMember:TopicIAMMember": lambda i: f"topic/{i['topic']}",
        "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": lambda i: f"subscription/{i['subscription']}",
        "gcp:projects/iAMMember:IAMMember": lambda i: f"project/{i['project']}",
        "gcp:serviceaccount/iAMMember:IAMMember": lambda i: i["serviceAccountId"],
        "gcp:secretmanager/secretIamMember:SecretIamMember": lambda i: f"secret/{i['secretId']}",
    }
    out: dict[str, set[tuple[str, str]]] = {}
    for r in mocks.resources:
        if r.typ in resource_of:
            perms = roles.get(r.inputs["role"], [r.inputs["role"]])
            out.setdefault(r.inputs["member"], set()).update((p, resource_of[r.typ](r.inputs)) for p in perms)
    return out


def sa(svc: str) -> str:
    return f"serviceAccount:gh-test-{svc}@{P}.iam.gserviceaccount.com"


@pulumi.runtime.test
def test_each_service_account_holds_exactly_what_its_service_calls_on_single_resources():
    stack, mocks = declare()

    def check():
        got = gcp_grants(mocks)
        etl = f"projects/{P}/serviceAccounts/etl-runner@{P}.iam.gserviceaccount.com"
        sync = f"projects/{P}/serviceAccounts/looker-sync@{P}.iam.gserviceaccount.com"
        versions = ["access", "add", "destroy", "disable", "enable", "get", "list"]
        secret_perms = ["secretmanager.secrets.get", *(f"secretmanager.versions.{v}" for v in versions)]
        key_perms = [f"iam.serviceAccountKeys.{v}" for v in ("create", "delete", "disable", "enable", "get", "list")]
        expected = {
            sa("ingress"): {("pubsub.topics.publish", "topic/gatehouse-test-events")},
            sa("processor"): {
                ("pubsub.subscriptions.consume", "subscription/gatehouse-test-events"),
                ("pubsub.subscriptions.consume", "subscription/gatehouse-test-audit"),
                ("pubsub.topics.publish", "topic/gatehouse-test-events"),
                ("pubsub.topics.publish", "topic/gatehouse-test-events-dlq"),
                # Rotation requests: publish only (issue 12, item 4).
                ("pubsub.topics.publish", "topic/gatehouse-test-rotation"),
                ("resourcemanager.projects.getIamPolicy", "project/analytics-prod"),
                ("resourcemanager.projects.setIamPolicy", "project/analytics-prod"),
                ("iam.serviceAccounts.getIamPolicy", etl),
                ("iam.serviceAccounts.setIamPolicy", etl),
            },
            sa("rotator"): {(p, f"secret/gatehouse-test-{s}") for p in secret_perms for s in ("looker-api3-key", "bq-sa-key")}
            | {(p, sync) for p in key_perms}
            # The rotation subscription, and poison to the dead-letter topic `gatehouse dlq` reads.
            | {
                ("pubsub.subscriptions.consume", "subscription/gatehouse-test-rotation"),
                ("pubsub.topics.publish", "topic/gatehouse-test-events-dlq"),
            },
        }
        for member, want in expected.items():
            have = got.get(member, set())
            assert have == want, f"{member}: extra {sorted(have - want)}, missing {sorted(want - have)}"
        # No identity other than ours and Google's three agents holds anything.
        agents = {m for m in got if m.startswith(f"serviceAccount:service-")}
        assert set(got) - agents == set(expected)
        assert len(agents) == 3

    return settled(stack, check)


@pulumi.runtime.test
def test_nothing_in_the_program_grants_wildcards_admin_roles_or_managed_policies():
    stack, mocks = declare()

    def check():
        assert violations(mocks.resources) == []

    return settled(stack, check)


def test_the_scanner_catches_sqs_star_a_star_resource_an_admin_policy_and_basic_roles():
    """The scanner above must not pass by accident: each of these additions is reported."""

    def role_policy(statement: dict) -> Registered:
        body = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **statement}]}
        return Registered("aws:iam/rolePolicy:RolePolicy", "bad", {"policy": json.dumps(body)}, None)

    q = sqs_arn("gatehouse-test-events.fifo")
    cases = {
        "wildcard action sqs:*": role_policy({"Action": ["sqs:*"], "Resource": [q]}),
        "wildcard action *": role_policy({"Action": "*", "Resource": [q]}),
        "wildcard resource *": role_policy({"Action": ["sqs:SendMessage"], "Resource": "*"}),
        "uses NotAction": role_policy({"NotAction": ["iam:*"], "Resource": [q]}),
        "attaches a managed policy": Registered(
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
            "admin",
            {"role": "gatehouse-test-processor", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
            None,
        ),
        "managed policies": Registered(
            "aws:iam/role:Role", "r", {"managedPolicyArns": ["arn:aws:iam::aws:policy/AdministratorAccess"]}, None
        ),
        "predefined role roles/owner": Registered(
            "gcp:projects/iAMMember:IAMMember", "owner", {"project": P, "role": "roles/owner", "member": sa("processor")}, None
        ),
        "predefined role roles/pubsub.admin": Registered(
            "gcp:pubsub/topicIAMMember:TopicIAMMember",
            "t",
            {"topic": "x", "role": "roles/pubsub.admin", "member": sa("ingress")},
            None,
        ),
        "roles/pubsub.subscriber on a whole project": Registered(
            "gcp:projects/iAMMember:IAMMember", "s", {"project": P, "role": "roles/pubsub.subscriber", "member": "x"}, None
        ),
        "wildcard permission": Registered(
            "gcp:projects/iAMCustomRole:IAMCustomRole", "c", {"project": P, "roleId": "c", "permissions": ["pubsub.*"]}, None
        ),
        "does not know": Registered("gcp:storage/bucketIAMMember:BucketIAMMember", "b", {"role": "roles/x"}, None),
    }
    for expected, record in cases.items():
        found = violations([record])
        assert any(expected in v for v in found), f"{expected!r} not reported; got {found}"
    # And the allowed shapes are not reported: a user-path wildcard and a named queue.
    ok = role_policy(
        {"Action": ["iam:GetUser"], "Resource": [f"arn:aws:iam::{ACCOUNT}:user/people/*", q]}
    )
    assert violations([ok]) == []
