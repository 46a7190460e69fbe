"""Stack settings: typed, validated, read from Pulumi config (namespace `gatehouse`) through an
injected getter so tests never touch the real Pulumi config. Errors name the key."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

#: Every key the program reads from the `gatehouse` config namespace (unknown keys are rejected).
KEYS = (
    "namePrefix",
    "enableAws",
    "enableGcp",
    "gcpProject",
    "maxReceiveCount",
    "visibilityTimeoutSeconds",
    "messageRetentionSeconds",
    "dlqRetentionSeconds",
    "auditQueueFifo",
    "auditMessageGroupId",
    "auditReadOnlyEvents",
    "forwardIamEventsFromUsEast1",
    "assumeRoleService",
    "awsManagedUserPath",
    "awsManagedGroups",
    "awsRotatedUsers",
    "awsSecrets",
    "ackDeadlineSeconds",
    "maxDeliveryAttempts",
    "gcpSecrets",
    "gcpManagedProjects",
    "gcpManagedServiceAccounts",
    "gcpRotatedServiceAccounts",
    "gcpGroupBindings",
)


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key if ':' in key else 'gatehouse:' + key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class GcpSecret:
    """A GCP Secret Manager secret the rotator keeps, with its rotation schedule."""

    name: str
    #: Seconds between SECRET_ROTATE notifications (Secret Manager: at least 3600).
    rotation_period_seconds: int = 30 * 24 * 3600


@dataclass(frozen=True)
class GroupBinding:
    """A role bound once to a Google group on a project (`group:EMAIL`): Gatehouse manages who is
    in the group (rules' `gcp_groups`), never this binding (docs/cloud-iam.md "Google groups")."""

    group: str
    project: str
    role: str


@dataclass(frozen=True)
class Settings:
    """Everything the program declares depends on these values (see infra/README.md)."""

    stack: str
    name_prefix: str
    enable_aws: bool = True
    enable_gcp: bool = True
    gcp_project: Optional[str] = None
    aws_region: str = "us-east-1"
    #: SQS redrive: receives before SQS moves a message to the DLQ (above the processor's
    #: `max_attempts`, default 5, so Gatehouse's own retries run first).
    max_receive_count: int = 10
    visibility_timeout_seconds: int = 60
    message_retention_seconds: int = 4 * 24 * 3600
    dlq_retention_seconds: int = 14 * 24 * 3600
    audit_queue_fifo: bool = True
    audit_message_group_id: str = "cloudtrail"
    #: Also route read-only calls (Secrets Manager GetSecretValue): needs the rule state
    #: ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS.
    audit_read_only_events: bool = True
    #: IAM is global: its CloudTrail events reach only us-east-1's default bus. When the stack's
    #: region is another one, a rule in us-east-1 forwards them to this region's default bus.
    forward_iam_events_from_us_east_1: bool = True
    assume_role_service: str = "ecs-tasks.amazonaws.com"
    aws_managed_user_path: str = "/gatehouse/"
    aws_managed_groups: tuple[str, ...] = ()
    aws_rotated_users: tuple[str, ...] = ()
    aws_secrets: tuple[str, ...] = ("looker-api3-key",)
    ack_deadline_seconds: int = 60
    max_delivery_attempts: int = 10
    gcp_secrets: tuple[GcpSecret, ...] = (GcpSecret("looker-api3-key"),)
    gcp_managed_projects: tuple[str, ...] = ()
    gcp_managed_service_accounts: tuple[str, ...] = ()
    gcp_rotated_service_accounts: tuple[str, ...] = ()
    gcp_group_bindings: tuple[GroupBinding, ...] = ()

    def name(self, suffix: str) -> str:
        """A resource name prefixed per stack: `gatehouse-prod-events`."""
        return f"{self.name_prefix}-{suffix}"

    def role_id(self, suffix: str) -> str:
        """A GCP custom role id (letters, digits, `_` and `.` only)."""
        return re.sub(r"[^A-Za-z0-9_.]", "_", f"{self.name_prefix}_{suffix}")

    @staticmethod
    def parse(stack: str, get: Callable[[str], Optional[str]], other: Callable[[str], Optional[str]]) -> "Settings":
        """Read settings: `get(key)` returns the raw `gatehouse:key` value (or None), `other(full)`
        a provider key such as `aws:region` or `gcp:project`. Unknown keys are rejected by
        [`check_keys`]."""
        d = Settings(stack=stack, name_prefix=f"gatehouse-{stack}")

        def text(key: str, default: str, pattern: str = r".+") -> str:
            v = get(key)
            if v is None:
                return default
            if not re.fullmatch(pattern, v):
                raise SettingsError(key, f"{v!r} does not match {pattern}")
            return v

        def boolean(key: str, default: bool) -> bool:
            v = get(key)
            if v is None:
                return default
            if v.lower() in ("true", "false"):
                return v.lower() == "true"
            raise SettingsError(key, f"{v!r} is not true or false")

        def integer(key: str, default: int, lo: int, hi: int) -> int:
            v = get(key)
            if v is None:
                return default
            try:
                n = int(v)
            except ValueError:
                raise SettingsError(key, f"{v!r} is not an integer") from None
            if not lo <= n <= hi:
                raise SettingsError(key, f"{n} is outside {lo}..{hi}")
            return n

        def names(key: str, default: tuple[str, ...], pattern: str) -> tuple[str, ...]:
            v = get(key)
            if v is None:
                return default
            items = _json_list(key, v)
            for item in items:
                if not isinstance(item, str) or not re.fullmatch(pattern, item):
                    raise SettingsError(key, f"{item!r} does not match {pattern}")
            if len(set(items)) != len(items):
                raise SettingsError(key, "has duplicates")
            return tuple(items)

        prefix = text("namePrefix", d.name_prefix, r"[a-z][a-z0-9-]{1,38}[a-z0-9]")
        enable_aws = boolean("enableAws", True)
        enable_gcp = boolean("enableGcp", True)
        if not (enable_aws or enable_gcp):
            raise SettingsError("enableAws", "enableAws and enableGcp are both false: nothing to declare")
        project = get("gcpProject") or other("gcp:project")
        if enable_gcp and not project:
            raise SettingsError("gcpProject", "required when enableGcp is true (or set gcp:project)")
        region = other("aws:region")
        if enable_aws and not region:
            raise SettingsError("aws:region", "required when enableAws is true (the region of every AWS resource)")
        region = region or d.aws_region
        user_path = text("awsManagedUserPath", d.aws_managed_user_path, r"/([\w+=,.@-]+/)*")
        if user_path == "/":
            raise SettingsError(
                "awsManagedUserPath", "\"/\" would let the processor change every IAM user; use a path"
            )
        gcp_secrets = d.gcp_secrets
        raw = get("gcpSecrets")
        if raw is not None:
            gcp_secrets = tuple(_gcp_secret(item) for item in _json_list("gcpSecrets", raw))
            if len({s.name for s in gcp_secrets}) != len(gcp_secrets):
                raise SettingsError("gcpSecrets", "has duplicate names")
        iam_name = r"[\w+=,.@-]{1,64}"
        sa_email = r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com"
        return Settings(
            stack=stack,
            name_prefix=prefix,
            enable_aws=enable_aws,
            enable_gcp=enable_gcp,
            gcp_project=project,
            aws_region=region,
            max_receive_count=integer("maxReceiveCount", d.max_receive_count, 1, 1000),
            visibility_timeout_seconds=integer("visibilityTimeoutSeconds", d.visibility_timeout_seconds, 0, 43200),
            message_retention_seconds=integer("messageRetentionSeconds", d.message_retention_seconds, 60, 1209600),
            dlq_retention_seconds=integer("dlqRetentionSeconds", d.dlq_retention_seconds, 60, 1209600),
            audit_queue_fifo=boolean("auditQueueFifo", d.audit_queue_fifo),
            audit_message_group_id=text("auditMessageGroupId", d.audit_message_group_id, r"[\x21-\x7e]{1,128}"),
            audit_read_only_events=boolean("auditReadOnlyEvents", d.audit_read_only_events),
            forward_iam_events_from_us_east_1=boolean(
                "forwardIamEventsFromUsEast1", d.forward_iam_events_from_us_east_1
            ),
            assume_role_service=text("assumeRoleService", d.assume_role_service, r"[a-z0-9.-]+\.amazonaws\.com"),
            aws_managed_user_path=user_path,
            aws_managed_groups=names("awsManagedGroups", (), iam_name),
            aws_rotated_users=names("awsRotatedUsers", (), iam_name),
            aws_secrets=names("awsSecrets", d.aws_secrets, r"[\w/+=.@-]{1,512}"),
            ack_deadline_seconds=integer("ackDeadlineSeconds", d.ack_deadline_seconds, 10, 600),
            max_delivery_attempts=integer("maxDeliveryAttempts", d.max_delivery_attempts, 5, 100),
            gcp_secrets=gcp_secrets,
            gcp_managed_projects=names("gcpManagedProjects", (), r"[a-z][a-z0-9-]{4,28}[a-z0-9]"),
            gcp_managed_service_accounts=names("gcpManagedServiceAccounts", (), sa_email),
            gcp_rotated_service_accounts=names("gcpRotatedServiceAccounts", (), sa_email),
            gcp_group_bindings=_group_bindings(get("gcpGroupBindings")),
        )


def check_keys(present: list[str]) -> None:
    """Reject `gatehouse:` keys the program does not know (a typo would silently keep a default)."""
    for key in present:
        if key not in KEYS:
            raise SettingsError(key, f"unknown key; known keys: {', '.join(KEYS)}")


def _json_list(key: str, raw: str) -> list[Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SettingsError(key, f"is not JSON: {e}") from None
    if not isinstance(value, list):
        raise SettingsError(key, "must be a list")
    return value


def _group_bindings(raw: Optional[str]) -> tuple[GroupBinding, ...]:
    if raw is None:
        return ()
    key = "gcpGroupBindings"
    out = []
    for item in _json_list(key, raw):
        if not isinstance(item, dict) or set(item) != {"group", "project", "role"}:
            raise SettingsError(key, f"{item!r} is not an object with exactly group, project and role")
        group, project, role = item["group"], item["project"], item["role"]
        if not isinstance(group, str) or not re.fullmatch(r"[\w.'+-]+@[\w-]+(\.[\w-]+)+", group):
            raise SettingsError(key, f"group {group!r} is not a group email")
        if not isinstance(project, str) or not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", project):
            raise SettingsError(key, f"project {project!r} is not a project id")
        if not isinstance(role, str) or not re.fullmatch(r"(roles|projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/roles)/[\w.]+", role):
            raise SettingsError(key, f"role {role!r} is not roles/NAME or projects/P/roles/NAME")
        if role in ("roles/owner", "roles/editor"):
            raise SettingsError(key, f"{role} is a basic role: bind a predefined or custom role")
        out.append(GroupBinding(group=group.lower(), project=project, role=role))
    if len(set(out)) != len(out):
        raise SettingsError(key, "has duplicates")
    return tuple(out)


def _gcp_secret(item: Any) -> GcpSecret:
    if not isinstance(item, dict):
        raise SettingsError("gcpSecrets", f"{item!r} is not an object with name and rotationDays")
    unknown = set(item) - {"name", "rotationDays"}
    if unknown:
        raise SettingsError("gcpSecrets", f"unknown field(s) {sorted(unknown)}; known: name, rotationDays")
    name = item.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[\w-]{1,255}", name):
        raise SettingsError("gcpSecrets", f"name {name!r} is not a secret id ([A-Za-z0-9_-], 1-255)")
    days = item.get("rotationDays", 30)
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650:
        raise SettingsError("gcpSecrets", f"rotationDays of {name} must be an integer in 1..3650")
    return GcpSecret(name=name, rotation_period_seconds=days * 24 * 3600)


def parse_settings(stack: str, own: dict[str, str], other: dict[str, Optional[str]]) -> Settings:
    """Settings from the `gatehouse:` keys (`own`, without the namespace) and the provider keys
    `aws:region` / `gcp:project` (`other`); values are text, as `pulumi config set` stores them."""
    check_keys(list(own))
    return Settings.parse(stack, get=own.get, other=other.get)
