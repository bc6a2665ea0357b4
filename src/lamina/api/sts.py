"""STS on the query endpoint: GetCallerIdentity and AssumeRole.

AssumeRole hands out temporary credentials (`ASIA…` key, secret, session token) for a role
whose trust policy allows the caller `sts:AssumeRole`; `trust_allows` is the one place that
decision is made. Unlike AWS, lamina lets the account's root user assume a role its trust
policy admits (AWS refuses root outright) — until SigV4 is enforced every caller is root.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.api.query import Call, Handler, Service
from lamina.auth.identity import Principal
from lamina.auth.policy import MalformedPolicy, RequestContext, evaluate, parse_policy
from lamina.errors import AccessDenied, ValidationError
from lamina.store.iam import IamStore
from lamina.store.iam_records import RoleRecord

VERSION = "2011-06-15"
_ANY_IDENTITY = parse_policy(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def trust_allows(iam: IamStore, principal: Principal, role: RoleRecord) -> bool:
    """Whether `principal` may assume `role` — THE decision point for AssumeRole.

    Two checks with `lamina.auth.policy.evaluate`, both must pass:
    1. the request as a whole (the caller's identity policies + the trust policy as the
       resource policy): no explicit deny, and an allow where AWS needs one (a trust policy
       that names the account, not the caller, needs the caller's identity policy too);
    2. the trust policy itself admits the caller (directly or through its account): IAM
       never lets an identity policy alone assume a role. Checked as the cross-account case
       with an allow-all identity, where only the resource policy's own grant counts.
    """
    try:
        trust = parse_policy(role.trust_policy, kind="resource")
        identity = [parse_policy(doc) for doc in iam.identity_policies(principal)]
    except MalformedPolicy:
        return False
    ctx = RequestContext(action="sts:AssumeRole", resource=role.arn, principal=principal)
    if not evaluate(ctx, identity, trust).allowed:
        return False
    elsewhere = RequestContext(
        action="sts:AssumeRole",
        resource=role.arn,
        principal=principal,
        resource_account=f"not-{principal.account}",
        keys={"aws:ResourceAccount": principal.account},
    )
    return evaluate(elsewhere, [_ANY_IDENTITY], trust).allowed


def get_caller_identity(call: Call) -> Mapping[str, Any]:
    who = call.principal
    return {"UserId": who.user_id, "Account": who.account, "Arn": who.arn}


def assume_role(call: Call) -> Mapping[str, Any]:
    p = call.params
    iam: IamStore = call.platform.iam
    role_arn = str(p["RoleArn"])
    role = iam.role(role_arn)
    if role is None or not trust_allows(iam, call.principal, role):
        raise AccessDenied(
            f"User: {call.principal.arn} is not authorized to perform: sts:AssumeRole on "
            f"resource: {role_arn}"
        )
    duration = int(p.get("DurationSeconds", 3600))
    if duration > role.max_session:
        raise ValidationError(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
        )
    creds = iam.mint_role_session(role.arn, str(p["RoleSessionName"]), duration)
    return {
        "Credentials": {
            "AccessKeyId": creds.access_key_id,
            "SecretAccessKey": creds.secret_access_key,
            "SessionToken": creds.session_token,
            "Expiration": creds.expiration,
        },
        "AssumedRoleUser": {
            "AssumedRoleId": creds.assumed_role_id,
            "Arn": creds.assumed_role_arn,
        },
    }


HANDLERS: dict[str, Handler] = {
    "GetCallerIdentity": get_caller_identity,
    "AssumeRole": assume_role,
}

SERVICE = Service("sts", VERSION, HANDLERS)
