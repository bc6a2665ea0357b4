"""IAM on the query endpoint: users, access keys and roles (policies: `api/iam_policies.py`).

Each handler takes the decoded `Call` (parameters already checked against botocore's model)
and returns a dict shaped like the operation's output; `api/query.py` writes the XML. The
`SERVICE` here is IAM's whole handler table, policies included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.api import iam_policies
from lamina.api.query import Call, Handler, Service, page
from lamina.errors import ValidationError
from lamina.store.iam import IamStore
from lamina.store.iam_records import AccessKeyRecord, RoleRecord, UserRecord

VERSION = "2010-05-08"


def _iam(call: Call) -> IamStore:
    return call.platform.iam


def _user(user: UserRecord, tags: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Path": user.path,
        "UserName": user.name,
        "UserId": user.user_id,
        "Arn": user.arn,
        "CreateDate": user.created,
    }
    if tags and user.tags:
        out["Tags"] = user.tags
    return out


def _role(role: RoleRecord, tags: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Path": role.path,
        "RoleName": role.name,
        "RoleId": role.role_id,
        "Arn": role.arn,
        "CreateDate": role.created,
        "AssumeRolePolicyDocument": role.trust_policy,
        "Description": role.description,
        "MaxSessionDuration": role.max_session,
    }
    if tags and role.tags:
        out["Tags"] = role.tags
    return out


def _key(key: AccessKeyRecord) -> dict[str, Any]:
    return {
        "UserName": key.user_name,
        "AccessKeyId": key.access_key_id,
        "Status": key.status,
        "CreateDate": key.created,
    }


def _own_name(call: Call) -> str:
    """`UserName`, else the calling IAM user's (as IAM does for key operations)."""
    name = call.params.get("UserName")
    if name:
        return str(name)
    if call.principal.kind != "user":
        raise ValidationError("Must specify userName when calling with non-User credentials")
    return call.principal.name


# -- users ------------------------------------------------------------------------------------


def create_user(call: Call) -> Mapping[str, Any]:
    p = call.params
    user = _iam(call).create_user(p["UserName"], p.get("Path", "/"), p.get("Tags"))
    return {"User": _user(user)}


def get_user(call: Call) -> Mapping[str, Any]:
    if call.params.get("UserName") or call.principal.kind == "user":
        return {"User": _user(_iam(call).get_user(_own_name(call)))}
    if call.principal.kind == "root":
        root = call.principal
        return {
            "User": {"UserId": root.user_id, "Arn": root.arn, "CreateDate": call.platform.started}
        }
    raise ValidationError("Must specify userName when calling with non-User credentials")


def list_users(call: Call) -> Mapping[str, Any]:
    users = _iam(call).list_users(call.params.get("PathPrefix", "/"))
    return page([_user(u, tags=False) for u in users], _name_key("UserName"), call.params, "Users")


def delete_user(call: Call) -> None:
    _iam(call).delete_user(call.params["UserName"])


# -- access keys ------------------------------------------------------------------------------


def create_access_key(call: Call) -> Mapping[str, Any]:
    made = _iam(call).create_access_key(_own_name(call))
    return {"AccessKey": {**_key(made.key), "SecretAccessKey": made.secret_access_key}}


def list_access_keys(call: Call) -> Mapping[str, Any]:
    if not call.params.get("UserName") and call.principal.kind == "root":
        root = call.principal  # the root user's own key: the one lamina was started with
        keys = [{"AccessKeyId": root.access_key_id, "Status": "Active", "UserName": "root"}]
    else:
        keys = [_key(k) for k in _iam(call).list_access_keys(_own_name(call))]
    keys.sort(key=lambda k: str(k["AccessKeyId"]))
    return page(keys, lambda k: str(k["AccessKeyId"]), call.params, "AccessKeyMetadata")


def update_access_key(call: Call) -> None:
    p = call.params
    _iam(call).update_access_key(_own_name(call), p["AccessKeyId"], p["Status"])


def delete_access_key(call: Call) -> None:
    _iam(call).delete_access_key(_own_name(call), call.params["AccessKeyId"])


# -- roles ------------------------------------------------------------------------------------


def create_role(call: Call) -> Mapping[str, Any]:
    p = call.params
    role = _iam(call).create_role(
        p["RoleName"],
        p["AssumeRolePolicyDocument"],
        p.get("Path", "/"),
        p.get("Description"),
        p.get("MaxSessionDuration", 3600),
        p.get("Tags"),
    )
    return {"Role": _role(role)}


def get_role(call: Call) -> Mapping[str, Any]:
    return {"Role": _role(_iam(call).get_role(call.params["RoleName"]))}


def list_roles(call: Call) -> Mapping[str, Any]:
    roles = _iam(call).list_roles(call.params.get("PathPrefix", "/"))
    return page([_role(r, tags=False) for r in roles], _name_key("RoleName"), call.params, "Roles")


def delete_role(call: Call) -> None:
    _iam(call).delete_role(call.params["RoleName"])


def update_assume_role_policy(call: Call) -> None:
    _iam(call).update_trust_policy(call.params["RoleName"], call.params["PolicyDocument"])


def _name_key(member: str) -> Any:
    return lambda item: str(item[member]).lower()


HANDLERS: dict[str, Handler] = {
    "CreateUser": create_user,
    "GetUser": get_user,
    "ListUsers": list_users,
    "DeleteUser": delete_user,
    "CreateAccessKey": create_access_key,
    "ListAccessKeys": list_access_keys,
    "UpdateAccessKey": update_access_key,
    "DeleteAccessKey": delete_access_key,
    "CreateRole": create_role,
    "GetRole": get_role,
    "ListRoles": list_roles,
    "DeleteRole": delete_role,
    "UpdateAssumeRolePolicy": update_assume_role_policy,
    **iam_policies.HANDLERS,
}

SERVICE = Service("iam", VERSION, HANDLERS)
