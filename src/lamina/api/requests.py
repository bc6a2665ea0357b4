"""Reading AWS requests: JSON bodies, path names, query parameters, each checked once."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from lamina.api.access import GuardedRoute
from lamina.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
)

# A 50 MB package travels base64-encoded inside JSON: 50 MB * 4/3 plus room for the rest.
MAX_CONTROL_BODY = 70 * 1024 * 1024


def operation(request: Request) -> str | None:
    """The operation a request performs, as AWS names it in its messages: the IAM action its
    route is guarded by (`lambda:InvokeFunction` → `InvokeFunction`), when it has one."""
    route = request.scope.get("route")
    if not isinstance(route, GuardedRoute):
        return None
    action = route.guard.action
    name = action if isinstance(action, str) else action(request)
    return name.partition(":")[2] or None


def too_large(limit: int, op: str | None) -> RequestTooLargeException:
    """AWS's refusal of a request body over `limit` bytes, naming the operation (e.g. "Request
    must be smaller than 6291456 bytes for the InvokeFunction operation")."""
    target = f"the {op} operation" if op else "this operation"
    return RequestTooLargeException(f"Request must be smaller than {limit} bytes for {target}")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit, operation(request))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit, operation(request))
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int = MAX_CONTROL_BODY) -> dict[str, Any]:
    raw = await read_body(request, limit)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: {exc}"
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequestContentException("The request body must be a JSON object")
    return body


def qualifier(request: Request) -> str | None:
    """`?Qualifier=` (a version or alias), when given."""
    return request.query_params.get("Qualifier")


def path_param(request: Request, name: str) -> str:
    value = request.path_params.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidParameterValueException(f"{name} is required")
    return value


def int_query(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidParameterValueException(f"{name} must be an integer, got '{raw}'") from None


def base_url(request: Request) -> str:
    """The address the client used to reach lamina (for URLs handed back to it)."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"
