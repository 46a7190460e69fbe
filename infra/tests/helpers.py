"""Lookups over what the mocks recorded."""

from __future__ import annotations

import json
from typing import Any

from mocks import ACCOUNT, Mocks, Registered

REGION = "eu-west-1"


def all_of(mocks: Mocks, typ: str) -> list[Registered]:
    return [r for r in mocks.resources if r.typ == typ]


def one(mocks: Mocks, typ: str, name: str) -> Registered:
    found = [r for r in mocks.resources if r.typ == typ and r.name == name]
    assert len(found) == 1, f"expected one {typ} named {name}, found {len(found)}"
    return found[0]


def doc(value: Any) -> Any:
    """A JSON document input (policies, patterns arrive as strings)."""
    assert isinstance(value, str), f"expected a JSON string, got {type(value).__name__}"
    return json.loads(value)


def sqs_arn(name: str, region: str = REGION) -> str:
    return f"arn:aws:sqs:{region}:{ACCOUNT}:{name}"


def sqs_url(name: str, region: str = REGION) -> str:
    return f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{name}"


def as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def grants_of(policy: dict) -> set[tuple[str, str]]:
    """(action, resource) pairs an IAM policy document allows."""
    out = set()
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow"
        for a in as_list(st["Action"]):
            for r in as_list(st["Resource"]):
                out.add((a, r))
    return out
