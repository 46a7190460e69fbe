"""Entry point of `pulumi up`: read the stack's settings, declare AWS and/or GCP, export what
Gatehouse's configuration needs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

import pulumi

from . import aws, gcp
from .settings import Settings, check_keys


@dataclass
class Stack:
    """What one stack declares."""

    settings: Settings
    aws: Optional[aws.AwsStack]
    gcp: Optional[gcp.GcpStack]

    def resources(self) -> list[pulumi.Resource]:
        """Every declared resource (tests wait for all of them to be registered)."""
        return [*(self.aws.resources() if self.aws else []), *(self.gcp.resources() if self.gcp else [])]


def declare(s: Settings, now: Optional[dt.datetime] = None) -> Stack:
    """Declare the resources for settings `s`."""
    return Stack(
        settings=s,
        aws=aws.deploy(s) if s.enable_aws else None,
        gcp=gcp.deploy(s, now=now) if s.enable_gcp else None,
    )


def settings_from_pulumi() -> Settings:
    """Settings from the stack's Pulumi config (`gatehouse:*`, `aws:region`, `gcp:project`)."""
    own = pulumi.Config("gatehouse")
    present = [k.split(":", 1)[1] for k in pulumi.runtime.get_config_env() if k.startswith("gatehouse:")]
    check_keys(present)
    return Settings.parse(
        pulumi.get_stack(),
        get=own.get,
        other=lambda full: pulumi.Config(full.split(":")[0]).get(full.split(":")[1]),
    )


def main() -> Stack:
    """Declare the stack and export its outputs."""
    st = declare(settings_from_pulumi())
    if st.aws:
        aws.exports(st.aws)
    if st.gcp:
        gcp.exports(st.gcp)
    return st
