"""Authorization: every route names the IAM action it performs and the resource it acts on.

A route is declared with `guarded(path, endpoint, methods, action, resource)`; before the
endpoint runs, the caller that `api/auth.py` authenticated is checked against its identity
policies (IAM users' and roles' inline and attached policies) and the resource's own policy
(a function's AddPermission statements) by `auth/policy.py`, as AWS evaluates them. Denied →
403 AccessDeniedException, worded as AWS words it. The route table test checks that every
route is guarded or explicitly public, so a route cannot be added without a permission check.

The account's root key is allowed everything in its account (unless a resource policy denies
it). With `--no-auth` nothing is checked.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lamina.auth.identity import Principal
from lamina.auth.policy import MalformedPolicy, Policy, RequestContext, evaluate, parse_policy
from lamina.errors import AccessDeniedException
from lamina.platform import Platform
from lamina.types import function_arn, parse_function_name

Endpoint = Callable[[Request], Awaitable[Response]]
Resource = Callable[[Request], Awaitable[str]]
Extra = Callable[[Request], Awaitable[list[tuple[str, str]]]]


Action = str | Callable[[Request], str]  # one action, or one chosen by the request


@dataclass(frozen=True, slots=True)
class Guard:
    action: Action  # e.g. "lambda:InvokeFunction"
    resource: Resource  # the ARN acted on, from the request
    extra: Extra | None = None  # further (action, resource) pairs, e.g. iam:PassRole


class GuardedRoute(Route):
    """A route whose endpoint runs only for a caller allowed `guard.action`."""

    def __init__(self, path: str, endpoint: Endpoint, methods: list[str], guard: Guard) -> None:
        self.guard = guard

        async def checked(request: Request) -> Response:
            action = guard.action if isinstance(guard.action, str) else guard.action(request)
            await authorize(request, action, await guard.resource(request))
            if guard.extra is not None:
                for action, resource in await guard.extra(request):
                    await authorize(request, action, resource)
            return await endpoint(request)

        super().__init__(path, checked, methods=methods, name=endpoint.__name__)


class DispatchRoute(Route):
    """One path serving many actions (the query protocol's `POST /`): its dispatcher checks
    each action itself with `check` once it knows which one was asked for."""


class PublicRoute(Route):
    """A route that is not an AWS API and carries its own proof (or none is needed):
    lamina's health check, and the code download URLs lamina signs itself."""


def guarded(
    path: str,
    endpoint: Endpoint,
    methods: list[str],
    action: Action,
    resource: Resource | None = None,
    extra: Extra | None = None,
) -> GuardedRoute:
    return GuardedRoute(path, endpoint, methods, Guard(action, resource or function, extra))


# -- resources --------------------------------------------------------------------------------


async def function(request: Request) -> str:
    """The function ARN a `{name}` path parameter (and `?Qualifier=`) names."""
    return _function_arn(request, request.path_params.get("name", ""))


async def any_resource(_request: Request) -> str:
    return "*"


async def tagged_arn(request: Request) -> str:
    return str(request.path_params.get("arn", "*"))


async def function_in_body(request: Request) -> str:
    """CreateFunction names its function in the JSON body."""
    try:
        body = json.loads(await request.body())
        name = body.get("FunctionName") if isinstance(body, dict) else None
    except ValueError:
        name = None
    return _function_arn(request, name) if isinstance(name, str) else "*"


async def pass_role(request: Request) -> list[tuple[str, str]]:
    """Naming an execution role takes iam:PassRole on it, as on AWS."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        return []
    role = body.get("Role") if isinstance(body, dict) else None
    return [("iam:PassRole", role)] if isinstance(role, str) and role else []


def _function_arn(request: Request, raw: str) -> str:
    platform: Platform = request.app.state.platform
    settings = platform.settings
    ref = parse_function_name(raw)
    if ref is None:
        return function_arn(settings.region, settings.account_id, raw)
    qualifier = ref.qualifier or request.query_params.get("Qualifier") or None
    account = ref.account or settings.account_id
    return function_arn(ref.region or settings.region, account, ref.name, qualifier)


def iam_resource(account: str, principal: Principal, params: dict[str, Any]) -> str:
    """The ARN an IAM action acts on, from its parameters (as IAM's authorization names it)."""
    if isinstance(params.get("PolicyArn"), str):
        return str(params["PolicyArn"])
    if isinstance(params.get("RoleName"), str):
        return f"arn:aws:iam::{account}:role/{params['RoleName']}"
    if isinstance(params.get("UserName"), str):
        return f"arn:aws:iam::{account}:user/{params['UserName']}"
    if isinstance(params.get("PolicyName"), str) and "PolicyDocument" in params:
        return f"arn:aws:iam::{account}:policy/{params['PolicyName']}"  # CreatePolicy
    if principal.kind == "user":
        return principal.arn  # GetUser, CreateAccessKey, … without a UserName: the caller
    return "*"


# -- the check --------------------------------------------------------------------------------


async def authorize(request: Request, action: str, resource: str) -> None:
    """Raise AccessDeniedException unless the caller may perform `action` on `resource`."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        return  # --no-auth: the middleware named nobody
    platform: Platform = request.app.state.platform
    client = request.client.host if request.client else None
    check(platform, principal, action, resource, client)


def check(
    platform: Platform,
    principal: Principal,
    action: str,
    resource: str,
    source_ip: str | None = None,
) -> None:
    account = platform.settings.account_id
    resource_policy = _resource_policy(platform, action, resource)
    if principal.kind == "root" and principal.account == account and resource_policy is None:
        return  # the account's root user, and no resource policy that could deny it
    identity = _identity_policies(platform, principal)
    now = time.time()
    keys: dict[str, str] = {
        "aws:CurrentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "aws:EpochTime": str(int(now)),
        "aws:SecureTransport": "false",
        "aws:RequestedRegion": platform.settings.region,
    }
    if source_ip:
        keys["aws:SourceIp"] = source_ip
    if resource.startswith("arn:aws:lambda:"):
        keys["lambda:FunctionArn"] = resource
    ctx = RequestContext(
        action=action,
        resource=resource,
        principal=principal,
        resource_account=account,
        keys=keys,
    )
    decision = evaluate(ctx, identity, resource_policy)
    if not decision.allowed:
        raise AccessDeniedException(_denied_message(principal, action, resource, decision))


def _denied_message(principal: Principal, action: str, resource: str, decision: Any) -> str:
    who = f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource}"
    if decision.reason == "explicit-deny":
        where = (
            "a resource-based policy" if decision.via == "resource" else "an identity-based policy"
        )
        return f"{who} with an explicit deny in {where}"
    return f"{who} because no identity-based policy allows the {action} action"


def _identity_policies(platform: Platform, principal: Principal) -> Sequence[Policy]:
    docs = platform.iam.identity_policies(principal)
    return [p for p in (_parsed(d if isinstance(d, str) else json.dumps(d)) for d in docs) if p]


def _resource_policy(platform: Platform, action: str, resource: str) -> Policy | None:
    """The function's own policy (AddPermission), for Lambda actions on a function."""
    if not action.startswith("lambda:"):
        return None
    ref = parse_function_name(resource) if resource.startswith("arn:") else None
    if ref is None:
        return None
    found: Policy | None = platform.permissions.policy_for(ref.name, ref.qualifier)
    return found


@functools.lru_cache(maxsize=2048)
def _parsed(document: str) -> Policy | None:
    """Stored documents were checked when stored; parsing is cached by their text."""
    try:
        return parse_policy(document)
    except MalformedPolicy:
        return None
