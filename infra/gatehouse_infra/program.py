"""Entry point of `pulumi up`: read the stack's settings, declare AWS and/or GCP, export what
Gatehouse's configuration needs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

import pulumi

from . import aws, gcp
from .settings import Settings, parse_settings


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
    from pulumi.runtime import config as runtime_config

    keys = {*runtime_config.CONFIG.get(), *runtime_config.get_config_env()}
    own = {k.split(":", 1)[1]: runtime_config.get_config(k) for k in keys if k.startswith("gatehouse:")}
    other = {"aws:region": pulumi.Config("aws").get("region"), "gcp:project": pulumi.Config("gcp").get("project")}
    return parse_settings(pulumi.get_stack(), own, other)


def main() -> Stack:
    """Declare the stack and export its outputs."""
    st = declare(settings_from_pulumi())
    if st.aws:
        aws.exports(st.aws)
    if st.gcp:
        gcp.exports(st.gcp)
    return st
