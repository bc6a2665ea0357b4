"""IAM policies on the query endpoint: managed policies and their versions, attaching them to
users and roles, and inline user and role policies. Documents go out URL-encoded (the XML
writer in `api/query.py` does that for every `policyDocumentType` member)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.api.query import Call, Handler, page
from lamina.store.iam_policies import PolicyStore
from lamina.store.iam_records import Owner, PolicyRecord, PolicyVersionRecord


def _iam(call: Call) -> PolicyStore:
    return call.platform.iam.policies


def _policy(policy: PolicyRecord, description: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "PolicyName": policy.name,
        "PolicyId": policy.policy_id,
        "Arn": policy.arn,
        "Path": policy.path,
        "DefaultVersionId": policy.default_version,
        "AttachmentCount": policy.attachment_count,
        "PermissionsBoundaryUsageCount": 0,
        "IsAttachable": True,
        "CreateDate": policy.created,
        "UpdateDate": policy.updated,
    }
    if description:
        out["Description"] = policy.description
    return out


def _version(version: PolicyVersionRecord, document: bool = True) -> dict[str, Any]:
    return {
        "Document": version.document if document else None,
        "VersionId": version.version_id,
        "IsDefaultVersion": version.is_default,
        "CreateDate": version.created,
    }


# -- managed policies -------------------------------------------------------------------------


def create_policy(call: Call) -> Mapping[str, Any]:
    p = call.params
    policy = _iam(call).create_policy(
        p["PolicyName"], p["PolicyDocument"], p.get("Path", "/"), p.get("Description")
    )
    return {"Policy": _policy(policy)}


def get_policy(call: Call) -> Mapping[str, Any]:
    return {"Policy": _policy(_iam(call).get_policy(call.params["PolicyArn"]), description=True)}


def list_policies(call: Call) -> Mapping[str, Any]:
    p = call.params
    found: list[PolicyRecord] = []
    if p.get("Scope", "All") != "AWS":  # lamina has no AWS-managed policies
        found = _iam(call).list_policies(p.get("PathPrefix", "/"), p.get("OnlyAttached", False))
    items = [_policy(x) for x in found]
    return page(items, lambda x: str(x["PolicyName"]).lower(), p, "Policies")


def delete_policy(call: Call) -> None:
    _iam(call).delete_policy(call.params["PolicyArn"])


def create_policy_version(call: Call) -> Mapping[str, Any]:
    p = call.params
    made = _iam(call).create_policy_version(
        p["PolicyArn"], p["PolicyDocument"], p.get("SetAsDefault", False)
    )
    return {"PolicyVersion": _version(made, document=False)}


def get_policy_version(call: Call) -> Mapping[str, Any]:
    p = call.params
    return {
        "PolicyVersion": _version(_iam(call).get_policy_version(p["PolicyArn"], p["VersionId"]))
    }


def list_policy_versions(call: Call) -> Mapping[str, Any]:
    versions = _iam(call).list_policy_versions(call.params["PolicyArn"])
    items = [_version(v, document=False) for v in versions]  # newest first
    return page(
        items, lambda v: f"{10**9 - int(str(v['VersionId'])[1:]):010d}", call.params, "Versions"
    )


def set_default_policy_version(call: Call) -> None:
    _iam(call).set_default_policy_version(call.params["PolicyArn"], call.params["VersionId"])


def delete_policy_version(call: Call) -> None:
    _iam(call).delete_policy_version(call.params["PolicyArn"], call.params["VersionId"])


# -- attached and inline policies of users and roles ------------------------------------------


def _owner_param(kind: Owner) -> str:
    return "UserName" if kind == "user" else "RoleName"


def _attach(kind: Owner) -> Handler:
    def handler(call: Call) -> None:
        _iam(call).attach(kind, call.params[_owner_param(kind)], call.params["PolicyArn"])

    return handler


def _detach(kind: Owner) -> Handler:
    def handler(call: Call) -> None:
        _iam(call).detach(kind, call.params[_owner_param(kind)], call.params["PolicyArn"])

    return handler


def _list_attached(kind: Owner) -> Handler:
    def handler(call: Call) -> Mapping[str, Any]:
        p = call.params
        found = _iam(call).attached(kind, p[_owner_param(kind)], p.get("PathPrefix", "/"))
        items = [{"PolicyName": x.name, "PolicyArn": x.arn} for x in found]
        return page(items, lambda x: str(x["PolicyName"]).lower(), p, "AttachedPolicies")

    return handler


def _put_inline(kind: Owner) -> Handler:
    def handler(call: Call) -> None:
        p = call.params
        _iam(call).put_inline(kind, p[_owner_param(kind)], p["PolicyName"], p["PolicyDocument"])

    return handler


def _get_inline(kind: Owner) -> Handler:
    def handler(call: Call) -> Mapping[str, Any]:
        p, owner = call.params, _owner_param(kind)
        found = _iam(call).get_inline(kind, p[owner], p["PolicyName"])
        iam = call.platform.iam
        name = iam.get_user(p[owner]).name if kind == "user" else iam.get_role(p[owner]).name
        return {owner: name, "PolicyName": p["PolicyName"], "PolicyDocument": found}

    return handler


def _list_inline(kind: Owner) -> Handler:
    def handler(call: Call) -> Mapping[str, Any]:
        names = _iam(call).list_inline(kind, call.params[_owner_param(kind)])
        return page(names, str, call.params, "PolicyNames")

    return handler


def _delete_inline(kind: Owner) -> Handler:
    def handler(call: Call) -> None:
        p = call.params
        _iam(call).delete_inline(kind, p[_owner_param(kind)], p["PolicyName"])

    return handler


HANDLERS: dict[str, Handler] = {
    "CreatePolicy": create_policy,
    "GetPolicy": get_policy,
    "ListPolicies": list_policies,
    "DeletePolicy": delete_policy,
    "CreatePolicyVersion": create_policy_version,
    "GetPolicyVersion": get_policy_version,
    "ListPolicyVersions": list_policy_versions,
    "SetDefaultPolicyVersion": set_default_policy_version,
    "DeletePolicyVersion": delete_policy_version,
    "AttachUserPolicy": _attach("user"),
    "DetachUserPolicy": _detach("user"),
    "ListAttachedUserPolicies": _list_attached("user"),
    "AttachRolePolicy": _attach("role"),
    "DetachRolePolicy": _detach("role"),
    "ListAttachedRolePolicies": _list_attached("role"),
    "PutUserPolicy": _put_inline("user"),
    "GetUserPolicy": _get_inline("user"),
    "ListUserPolicies": _list_inline("user"),
    "DeleteUserPolicy": _delete_inline("user"),
    "PutRolePolicy": _put_inline("role"),
    "GetRolePolicy": _get_inline("role"),
    "ListRolePolicies": _list_inline("role"),
    "DeleteRolePolicy": _delete_inline("role"),
}
