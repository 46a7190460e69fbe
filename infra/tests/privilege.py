"""A scanner for privilege that nobody in Gatehouse needs: wildcards, admin roles, managed or
project-wide grants. It reads every resource the mocks recorded, so a grant added anywhere in the
program (not only in the roles the other tests look at) is caught."""

from __future__ import annotations

import json
import re

from mocks import Registered

#: AWS resource types that carry an identity policy document.
AWS_POLICY_DOCS = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
}
#: AWS resource types that attach a (managed) policy: none is needed, so any is a violation.
AWS_ATTACHMENTS = {
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
    "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive",
}
#: The one resource wildcard that cannot be replaced by names: managed users are all the users
#: under a path (people come and go; naming each one would need a deploy per hire).
ALLOWED_RESOURCE_WILDCARD = re.compile(r"^arn:aws:iam::\d{12}:user/[\w+=,.@/-]+/\*$")

#: GCP IAM grant types and whether they bind on a whole project/folder/organization.
GCP_GRANTS = {
    "gcp:projects/iAMMember:IAMMember": True,
    "gcp:projects/iAMBinding:IAMBinding": True,
    "gcp:projects/iAMPolicy:IAMPolicy": True,
    "gcp:organizations/iAMMember:IAMMember": True,
    "gcp:organizations/iAMBinding:IAMBinding": True,
    "gcp:folder/iAMMember:IAMMember": True,
    "gcp:folder/iAMBinding:IAMBinding": True,
    "gcp:pubsub/topicIAMMember:TopicIAMMember": False,
    "gcp:pubsub/topicIAMBinding:TopicIAMBinding": False,
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": False,
    "gcp:pubsub/subscriptionIAMBinding:SubscriptionIAMBinding": False,
    "gcp:secretmanager/secretIamMember:SecretIamMember": False,
    "gcp:secretmanager/secretIamBinding:SecretIamBinding": False,
    "gcp:serviceaccount/iAMMember:IAMMember": False,
    "gcp:serviceaccount/iAMBinding:IAMBinding": False,
}
#: Predefined roles a grant may use: only for Google's service agents, on single resources.
PREDEFINED_ALLOWED = {"roles/pubsub.publisher", "roles/pubsub.subscriber"}
#: The only permissions a project-wide grant may carry (the processor's IAM-policy role on the
#: projects it is configured to manage, issue 5).
PROJECT_WIDE_ALLOWED = {"resourcemanager.projects.getIamPolicy", "resourcemanager.projects.setIamPolicy"}


def violations(resources: list[Registered]) -> list[str]:
    """Every grant broader than Gatehouse needs, as readable lines (empty = none)."""
    out: list[str] = []
    custom_roles = {
        f"projects/{r.inputs['project']}/roles/{r.inputs['roleId']}": r.inputs.get("permissions", [])
        for r in resources
        if r.typ == "gcp:projects/iAMCustomRole:IAMCustomRole"
    }
    for r in resources:
        where = f"{r.typ} {r.name}"
        if r.typ in AWS_POLICY_DOCS:
            out += [f"{where}: {v}" for v in _aws_document(json.loads(r.inputs[AWS_POLICY_DOCS[r.typ]]))]
        elif r.typ in AWS_ATTACHMENTS:
            out.append(f"{where}: attaches a managed policy ({r.inputs.get('policyArn')})")
        elif r.typ == "aws:iam/role:Role":
            if r.inputs.get("managedPolicyArns"):
                out.append(f"{where}: managed policies {r.inputs['managedPolicyArns']}")
            for inline in r.inputs.get("inlinePolicies") or []:
                out += [f"{where}: {v}" for v in _aws_document(json.loads(inline.get("policy", "{}")))]
        elif r.typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
            for p in r.inputs.get("permissions", []):
                if "*" in p:
                    out.append(f"{where}: wildcard permission {p}")
        elif r.typ in GCP_GRANTS:
            role = r.inputs.get("role", "")
            project_wide = GCP_GRANTS[r.typ]
            if role.startswith("roles/"):
                if role not in PREDEFINED_ALLOWED:
                    out.append(f"{where}: predefined role {role}")
                elif project_wide:
                    out.append(f"{where}: {role} on a whole project")
            elif role not in custom_roles:
                out.append(f"{where}: role {role} is not declared here")
            elif project_wide and not set(custom_roles[role]) <= PROJECT_WIDE_ALLOWED:
                out.append(f"{where}: project-wide grant of {sorted(custom_roles[role])}")
        elif r.typ.startswith(("gcp:", "aws:")) and re.search(r"iam(member|binding|policy)", r.typ.lower()):
            out.append(f"{where}: an IAM grant type this scanner does not know; review it and add it here")
    return out


def _aws_document(doc: dict) -> list[str]:
    out = []
    for st in doc.get("Statement", []):
        for key in ("NotAction", "NotResource", "NotPrincipal"):
            if key in st:
                out.append(f"statement {st.get('Sid')} uses {key}")
        actions = st.get("Action", [])
        for a in actions if isinstance(actions, list) else [actions]:
            if "*" in a:
                out.append(f"wildcard action {a}")
        resources = st.get("Resource", [])
        for res in resources if isinstance(resources, list) else [resources]:
            if "*" in res and not ALLOWED_RESOURCE_WILDCARD.match(res):
                out.append(f"wildcard resource {res}")
    return out
