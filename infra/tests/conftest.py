"""Pulumi's mocks are installed here, before the program is imported anywhere (DESIGN.md,
"Pulumi (infra/)"). Every test runs fully offline: no Pulumi CLI, no provider plugin, no cloud."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pulumi

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mocks import Mocks  # noqa: E402

pulumi.runtime.set_mocks(Mocks(region="eu-west-1"), project="gatehouse", stack="test", preview=False)

from gatehouse_infra import program  # noqa: E402
from gatehouse_infra.settings import GcpSecret, Settings  # noqa: E402

#: The clock the rotation schedules are anchored to in tests.
NOW = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)

#: A stack with every optional part switched on: another region than us-east-1 (so IAM events are
#: forwarded), managed IAM groups, rotated users, managed GCP projects and service accounts.
FULL = Settings(
    stack="test",
    name_prefix="gatehouse-test",
    gcp_project="gh-test-project",
    aws_region="eu-west-1",
    max_receive_count=7,
    ack_deadline_seconds=90,
    max_delivery_attempts=12,
    aws_managed_user_path="/people/",
    aws_managed_groups=("looker-admins", "analysts"),
    aws_rotated_users=("svc-looker",),
    aws_secrets=("looker-api3-key", "warehouse-password"),
    gcp_secrets=(GcpSecret("looker-api3-key", 7 * 24 * 3600), GcpSecret("bq-sa-key")),
    gcp_managed_projects=("analytics-prod",),
    gcp_managed_service_accounts=("etl-runner@gh-test-project.iam.gserviceaccount.com",),
    gcp_rotated_service_accounts=("looker-sync@gh-test-project.iam.gserviceaccount.com",),
)


def declare(settings: Settings = FULL) -> tuple[program.Stack, Mocks]:
    """Fresh mocks, then the program for `settings`: each test sees only its own resources."""
    mocks = Mocks(region=settings.aws_region)
    pulumi.runtime.set_mocks(mocks, project="gatehouse", stack=settings.stack, preview=False)
    return program.declare(settings, now=NOW), mocks


def settled(stack: program.Stack, check) -> pulumi.Output:
    """An Output that runs `check()` once every resource of `stack` is registered; a
    `@pulumi.runtime.test` test returns it, so a failing assertion fails the test."""
    return pulumi.Output.all(*[r.urn for r in stack.resources()]).apply(lambda _: check())
