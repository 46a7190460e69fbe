"""Pulumi mocks for offline tests: a stateful record of every resource the program registers,
with the outputs the real providers compute (ARNs, URLs, ids, emails) added only where the
program did not set an input. Inputs arrive as the engine sees them: camelCase keys, numbers as
floats, JSON documents as strings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi

ACCOUNT = "123456789012"
PROJECT_NUMBER = "987654321098"


@dataclass
class Registered:
    """One resource as the engine received it."""

    typ: str
    name: str
    inputs: dict[str, Any]
    provider: Optional[str]


class Mocks(pulumi.runtime.Mocks):
    """Records registrations; computes provider outputs without overwriting real inputs."""

    def __init__(self, region: str):
        self.region = region
        self.resources: list[Registered] = []
        self.providers: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        self.resources.append(Registered(args.typ, args.name, inputs, args.provider))
        computed, rid = self._computed(args.typ, args.name, inputs, args.provider)
        state = {**computed, **inputs}  # a real input always wins over a made-up output
        if args.typ.startswith("pulumi:providers:"):
            self.providers[args.name] = inputs
        return [rid, state]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/deployer",
                "userId": "AIDAEXAMPLE",
                "id": ACCOUNT,
            }
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        raise NotImplementedError(f"the program called {args.token}, which these mocks do not model")

    def region_of(self, provider: Optional[str]) -> str:
        """The region of an explicit provider (a reference is `URN::ID`, the URN ends in its
        name), else the stack's."""
        if provider:
            parts = provider.split("::")
            name = parts[3] if len(parts) >= 5 else parts[-1]
            return self.providers.get(name, {}).get("region", self.region)
        return self.region

    def _computed(self, typ: str, name: str, i: dict, provider: Optional[str]) -> tuple[dict, str]:
        region = self.region_of(provider)
        if typ == "aws:sqs/queue:Queue":
            n = i["name"]
            url = f"https://sqs.{region}.amazonaws.com/{ACCOUNT}/{n}"
            return {"arn": f"arn:aws:sqs:{region}:{ACCOUNT}:{n}", "url": url}, url
        if typ == "aws:cloudwatch/eventRule:EventRule":
            return {"arn": f"arn:aws:events:{region}:{ACCOUNT}:rule/{i['name']}"}, i["name"]
        if typ == "aws:iam/role:Role":
            return {"arn": f"arn:aws:iam::{ACCOUNT}:role/{i['name']}", "uniqueId": "AROAEXAMPLE"}, i["name"]
        if typ == "aws:secretsmanager/secret:Secret":
            arn = f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{i['name']}-AbCdEf"
            return {"arn": arn}, arn
        if typ == "gcp:pubsub/topic:Topic":
            return {}, f"projects/{i['project']}/topics/{i['name']}"
        if typ == "gcp:pubsub/subscription:Subscription":
            return {}, f"projects/{i['project']}/subscriptions/{i['name']}"
        if typ == "gcp:serviceaccount/account:Account":
            email = f"{i['accountId']}@{i['project']}.iam.gserviceaccount.com"
            return (
                {
                    "email": email,
                    "member": f"serviceAccount:{email}",
                    "name": f"projects/{i['project']}/serviceAccounts/{email}",
                    "uniqueId": "1000000000000000000",
                },
                f"projects/{i['project']}/serviceAccounts/{email}",
            )
        if typ == "gcp:projects/serviceIdentity:ServiceIdentity":
            agent = i["service"].split(".")[0]
            email = f"service-{PROJECT_NUMBER}@gcp-sa-{agent}.iam.gserviceaccount.com"
            return {"email": email, "member": f"serviceAccount:{email}"}, f"{i['project']}/{i['service']}"
        if typ == "gcp:logging/projectSink:ProjectSink":
            writer = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-logging.iam.gserviceaccount.com"
            return {"writerIdentity": writer}, f"projects/{i['project']}/sinks/{i['name']}"
        if typ == "gcp:secretmanager/secret:Secret":
            return (
                {"name": f"projects/{PROJECT_NUMBER}/secrets/{i['secretId']}"},
                f"projects/{i['project']}/secrets/{i['secretId']}",
            )
        if typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
            rid = f"projects/{i['project']}/roles/{i['roleId']}"
            return {"name": rid}, rid
        return {}, f"{name}-id"
