"""GCP: Pub/Sub topics and subscriptions (ordering, dead letters), the Cloud Audit Logs sink,
Secret Manager secrets with rotation schedules, and one least-privilege service account per
service (custom roles bound on single resources, never on the project, except the IAM-policy role
on the projects Gatehouse is told to manage)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_gcp as gcp

from . import events, permissions
from .settings import Settings

SERVICES = ("ingress", "processor", "rotator")
PUBLISHER = "roles/pubsub.publisher"
SUBSCRIBER = "roles/pubsub.subscriber"


@dataclass
class Channel:
    """A topic, its subscription, and the dead-letter topic with its own subscription (so dead
    letters are kept until an operator reads or redrives them)."""

    topic: gcp.pubsub.Topic
    subscription: gcp.pubsub.Subscription
    dead_letter_topic: gcp.pubsub.Topic
    dead_letter_subscription: gcp.pubsub.Subscription


@dataclass
class GcpStack:
    """Every GCP resource the program declares, by role."""

    events: Channel
    audit: Channel
    #: Rotation requests, processor → rotator (issue 12, item 4).
    rotation: Channel
    sink: gcp.logging.ProjectSink
    secrets: dict[str, gcp.secretmanager.Secret]
    accounts: dict[str, gcp.serviceaccount.Account]
    custom_roles: dict[str, gcp.projects.IAMCustomRole]
    #: Every IAM grant, Google's service agents included.
    grants: list[pulumi.Resource] = field(default_factory=list)
    agents: dict[str, gcp.projects.ServiceIdentity] = field(default_factory=dict)

    def resources(self) -> list[pulumi.Resource]:
        """All of them, for tests that wait for every registration."""
        out: list[pulumi.Resource] = []
        for c in (self.events, self.audit, self.rotation):
            out += [c.topic, c.subscription, c.dead_letter_topic, c.dead_letter_subscription]
        out += [self.sink, *self.secrets.values(), *self.accounts.values(), *self.custom_roles.values()]
        return out + [*self.agents.values(), *self.grants]


def _channel(s: Settings, base: str, project: str, ordering: bool, labels: dict) -> Channel:
    dlt = gcp.pubsub.Topic(f"{base}-dlq-topic", name=s.name(f"{base}-dlq"), project=project, labels=labels)
    dls = gcp.pubsub.Subscription(
        f"{base}-dlq-subscription",
        name=s.name(f"{base}-dlq"),
        project=project,
        topic=dlt.id,
        ack_deadline_seconds=s.ack_deadline_seconds,
        message_retention_duration="604800s",
        expiration_policy={"ttl": ""},
        labels=labels,
    )
    topic = gcp.pubsub.Topic(f"{base}-topic", name=s.name(base), project=project, labels=labels)
    sub = gcp.pubsub.Subscription(
        f"{base}-subscription",
        name=s.name(base),
        project=project,
        topic=topic.id,
        ack_deadline_seconds=s.ack_deadline_seconds,
        enable_message_ordering=ordering,
        dead_letter_policy={"dead_letter_topic": dlt.id, "max_delivery_attempts": s.max_delivery_attempts},
        retry_policy={"minimum_backoff": "10s", "maximum_backoff": "600s"},
        message_retention_duration="604800s",
        expiration_policy={"ttl": ""},  # never expires while idle
        labels=labels,
    )
    return Channel(topic=topic, subscription=sub, dead_letter_topic=dlt, dead_letter_subscription=dls)


def deploy(s: Settings, now: Optional[dt.datetime] = None) -> GcpStack:
    """Declare the GCP side of a stack. `now` anchors the first rotation time (tests pass one)."""
    assert s.gcp_project, "Settings.parse requires gcpProject when GCP is enabled"
    project = s.gcp_project
    labels = {"app": "gatehouse", "stack": s.stack}
    grants: list[pulumi.Resource] = []

    events_c = _channel(s, "events", project, ordering=True, labels=labels)
    audit_c = _channel(s, "audit", project, ordering=True, labels=labels)
    # Rotation requests, processor → rotator: the two services meet only here (issue 12, item 4).
    # Published without ordering keys: a request stands alone.
    rotation_c = _channel(s, "rotation", project, ordering=False, labels=labels)

    # Google's service agents: Pub/Sub moves dead letters, Secret Manager publishes notifications.
    agents = {
        "pubsub": gcp.projects.ServiceIdentity("pubsub-agent", project=project, service="pubsub.googleapis.com"),
        "secretmanager": gcp.projects.ServiceIdentity(
            "secretmanager-agent", project=project, service="secretmanager.googleapis.com"
        ),
    }
    pubsub_agent = agents["pubsub"].member
    for c, base in ((events_c, "events"), (audit_c, "audit"), (rotation_c, "rotation")):
        grants.append(
            gcp.pubsub.TopicIAMMember(
                f"{base}-dlq-pubsub-agent-publish",
                project=project,
                topic=c.dead_letter_topic.name,
                role=PUBLISHER,
                member=pubsub_agent,
            )
        )
        grants.append(
            gcp.pubsub.SubscriptionIAMMember(
                f"{base}-pubsub-agent-subscribe",
                project=project,
                subscription=c.subscription.name,
                role=SUBSCRIBER,
                member=pubsub_agent,
            )
        )

    # Cloud Audit Logs → the audit topic; the sink's own writer identity may publish there only.
    sink = gcp.logging.ProjectSink(
        "audit-sink",
        name=s.name("audit"),
        project=project,
        destination=pulumi.Output.concat("pubsub.googleapis.com/", audit_c.topic.id),
        filter=events.gcp_audit_filter(),
        unique_writer_identity=True,
        description="IAM policy changes and service-account key events for Gatehouse",
    )
    grants.append(
        gcp.pubsub.TopicIAMMember(
            "audit-sink-publish",
            project=project,
            topic=audit_c.topic.name,
            role=PUBLISHER,
            member=sink.writer_identity,
        )
    )

    # Secret Manager: rotation schedules notify the audit topic (SECRET_ROTATE), which the
    # processor's audit translator turns into rotation requests for the rotator.
    sm_publish = gcp.pubsub.TopicIAMMember(
        "audit-secretmanager-agent-publish",
        project=project,
        topic=audit_c.topic.name,
        role=PUBLISHER,
        member=agents["secretmanager"].member,
    )
    grants.append(sm_publish)
    anchor = (now or dt.datetime.now(dt.timezone.utc)).replace(microsecond=0)
    secrets: dict[str, gcp.secretmanager.Secret] = {}
    for sec in s.gcp_secrets:
        first = anchor + dt.timedelta(seconds=sec.rotation_period_seconds)
        secrets[sec.name] = gcp.secretmanager.Secret(
            f"gcp-secret-{sec.name}",
            secret_id=s.name(sec.name),
            project=project,
            replication={"auto": {}},
            topics=[{"name": audit_c.topic.id}],
            rotation={
                "rotation_period": f"{sec.rotation_period_seconds}s",
                "next_rotation_time": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            labels=labels,
            opts=pulumi.ResourceOptions(
                depends_on=[sm_publish],
                # Secret Manager moves nextRotationTime itself after every rotation.
                ignore_changes=["rotation.nextRotationTime"],
            ),
        )

    accounts = {
        svc: gcp.serviceaccount.Account(
            f"sa-{svc}",
            account_id=_account_id(s, svc),
            project=project,
            display_name=f"Gatehouse {svc}",
            description=f"Gatehouse {svc}: least privilege",
        )
        for svc in SERVICES
    }
    member = {svc: acct.member for svc, acct in accounts.items()}

    def role(key: str, perms: tuple[str, ...], title: str, in_project: str = project) -> gcp.projects.IAMCustomRole:
        return gcp.projects.IAMCustomRole(
            f"role-{key}",
            project=in_project,
            role_id=s.role_id(key.replace("-", "_")),
            title=f"Gatehouse {title}",
            permissions=sorted(perms),
            stage="GA",
        )

    roles = {
        "ingress-publish": role("ingress-publish", permissions.PUBLISH_PERMISSIONS, "ingress: publish events"),
        "processor-publish": role(
            "processor-publish", permissions.PUBLISH_PERMISSIONS, "processor: publish translated events, dead letters"
        ),
        "processor-consume": role("processor-consume", permissions.CONSUME_PERMISSIONS, "processor: consume"),
        "rotator-consume": role(
            "rotator-consume", permissions.CONSUME_PERMISSIONS, "rotator: consume rotation requests"
        ),
        "rotator-publish": role("rotator-publish", permissions.PUBLISH_PERMISSIONS, "rotator: dead letters"),
    }
    if secrets:
        roles["rotator-secrets"] = role(
            "rotator-secrets", permissions.SECRET_VERSION_PERMISSIONS, "rotator: secret versions"
        )
    if s.gcp_managed_service_accounts:
        roles["processor-sa-iam"] = role(
            "processor-sa-iam", permissions.SERVICE_ACCOUNT_IAM_PERMISSIONS, "processor: service-account IAM"
        )
    if s.gcp_rotated_service_accounts:
        roles["rotator-sa-keys"] = role("rotator-sa-keys", permissions.SA_KEY_PERMISSIONS, "rotator: SA keys")
    for p in s.gcp_managed_projects:
        # A project's custom role can only be granted in that project.
        roles[f"processor-project-iam-{p}"] = role(
            f"processor-project-iam-{p}", permissions.PROJECT_IAM_PERMISSIONS, "processor: project IAM", in_project=p
        )

    # ingress: publish to the events topic, nothing else.
    grants.append(
        gcp.pubsub.TopicIAMMember(
            "ingress-publish-events",
            project=project,
            topic=events_c.topic.name,
            role=roles["ingress-publish"].name,
            member=member["ingress"],
        )
    )
    # processor: consume events + audit; publish translated audit events and dead letters
    # (app.rs gives the audit consumer the events topic and its dead-letter topic).
    for c, base in ((events_c, "events"), (audit_c, "audit")):
        grants.append(
            gcp.pubsub.SubscriptionIAMMember(
                f"processor-consume-{base}",
                project=project,
                subscription=c.subscription.name,
                role=roles["processor-consume"].name,
                member=member["processor"],
            )
        )
    for topic, key in (
        (events_c.topic, "events"),
        (events_c.dead_letter_topic, "events-dlq"),
        # Rotation requests (issue 12, item 4): publish only, never consume.
        (rotation_c.topic, "rotation"),
    ):
        grants.append(
            gcp.pubsub.TopicIAMMember(
                f"processor-publish-{key}",
                project=project,
                topic=topic.name,
                role=roles["processor-publish"].name,
                member=member["processor"],
            )
        )
    # rotator: consume the rotation subscription; poison goes to the configured dead-letter
    # topic (queue.dead_letter_topic, the events' one, where `gatehouse dlq` looks).
    grants.append(
        gcp.pubsub.SubscriptionIAMMember(
            "rotator-consume-rotation",
            project=project,
            subscription=rotation_c.subscription.name,
            role=roles["rotator-consume"].name,
            member=member["rotator"],
        )
    )
    grants.append(
        gcp.pubsub.TopicIAMMember(
            "rotator-publish-events-dlq",
            project=project,
            topic=events_c.dead_letter_topic.name,
            role=roles["rotator-publish"].name,
            member=member["rotator"],
        )
    )
    for p in s.gcp_managed_projects:
        grants.append(
            gcp.projects.IAMMember(
                f"processor-project-iam-{p}",
                project=p,
                role=roles[f"processor-project-iam-{p}"].name,
                member=member["processor"],
            )
        )
    for email in s.gcp_managed_service_accounts:
        grants.append(
            gcp.serviceaccount.IAMMember(
                f"processor-sa-iam-{email.split('@')[0]}",
                service_account_id=f"projects/{_project_of(email, project)}/serviceAccounts/{email}",
                role=roles["processor-sa-iam"].name,
                member=member["processor"],
            )
        )
    # rotator: the declared secrets' versions and the declared service accounts' keys.
    for name, sec in secrets.items():
        grants.append(
            gcp.secretmanager.SecretIamMember(
                f"rotator-secret-{name}",
                project=project,
                secret_id=sec.secret_id,
                role=roles["rotator-secrets"].name,
                member=member["rotator"],
            )
        )
    for email in s.gcp_rotated_service_accounts:
        grants.append(
            gcp.serviceaccount.IAMMember(
                f"rotator-sa-keys-{email.split('@')[0]}",
                service_account_id=f"projects/{_project_of(email, project)}/serviceAccounts/{email}",
                role=roles["rotator-sa-keys"].name,
                member=member["rotator"],
            )
        )

    # People's access through Google groups: one binding per (group, project, role), declared once;
    # Gatehouse manages only the memberships (docs/cloud-iam.md "Google groups").
    for b in s.gcp_group_bindings:
        grants.append(
            gcp.projects.IAMMember(
                f"group-binding-{b.project}-{b.role.rsplit('/', 1)[-1]}-{b.group.split('@')[0]}",
                project=b.project,
                role=b.role,
                member=f"group:{b.group}",
            )
        )

    return GcpStack(
        events=events_c,
        audit=audit_c,
        rotation=rotation_c,
        sink=sink,
        secrets=secrets,
        accounts=accounts,
        custom_roles=roles,
        grants=grants,
        agents=agents,
    )


def _account_id(s: Settings, svc: str) -> str:
    """Service account ids are 6-30 characters: `gh-<stack>-<service>`, cut to fit."""
    stem = s.name_prefix.replace("gatehouse", "gh", 1)[: 30 - len(svc) - 1].rstrip("-")
    return f"{stem}-{svc}"


def _project_of(email: str, default: str) -> str:
    """The project of `name@PROJECT.iam.gserviceaccount.com` (else the stack's)."""
    domain = email.split("@", 1)[1]
    return domain.split(".iam.gserviceaccount.com")[0] if domain.endswith(".iam.gserviceaccount.com") else default


def exports(st: GcpStack, export=None) -> None:
    """Stack outputs: what Gatehouse's config needs (GATEHOUSE_PUBSUB_*)."""
    export = export or pulumi.export
    export("pubsubTopic", st.events.topic.id)
    export("pubsubSubscription", st.events.subscription.id)
    export("pubsubDeadLetterTopic", st.events.dead_letter_topic.id)
    export("pubsubAuditSubscription", st.audit.subscription.id)
    export("pubsubRotationTopic", st.rotation.topic.id)
    export("pubsubRotationSubscription", st.rotation.subscription.id)
    for svc, acct in st.accounts.items():
        export(f"{svc}ServiceAccount", acct.email)
