"""The AWS query protocol (IAM, STS): `POST /` with a form body, or `GET /?Action=…`.

One route reads the form, picks the service (the SigV4 credential scope's service name, else
`Version`, else whichever service knows the `Action`), checks the parameters against that
service's botocore model (required members, lengths, patterns, ranges, enums — answered with
AWS's `ValidationError` wording), and calls the handler with the decoded parameters. Handlers
return plain dicts shaped like the operation's output; the XML is written from the same model,
so every answer is what botocore's query parser expects: lists as `<member>`, timestamps in
ISO 8601, booleans `true`/`false`, and `policyDocumentType` strings URL-encoded as IAM sends
them (botocore decodes them back into dicts).

Errors (any `LambdaError`) become `<ErrorResponse><Error><Type/><Code/><Message/></Error>
<RequestId/></ErrorResponse>` with the error's status; the rest-json renderer stays Lambda's.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

import botocore.session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from lamina.api.access import DispatchRoute, authorize, iam_resource
from lamina.api.render import error_response, new_request_id
from lamina.api.requests import read_body
from lamina.auth.identity import Principal
from lamina.errors import (
    InvalidAction,
    LambdaError,
    ServiceException,
    UnknownOperationException,
    ValidationError,
)
from lamina.platform import Platform

log = logging.getLogger("lamina.api")

MAX_FORM_BODY = 1024 * 1024
_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([a-z0-9-]+)/aws4_request")


@dataclass(frozen=True, slots=True)
class Call:
    """One query-protocol request, decoded: what a handler needs."""

    action: str
    params: dict[str, Any]  # decoded per the model: nested dicts, lists, ints, bools
    principal: Principal
    platform: Platform
    request_id: str


Handler = Callable[[Call], Mapping[str, Any] | None]


@dataclass(frozen=True, slots=True)
class Service:
    """A query-protocol service: its botocore model name, API version and handlers."""

    name: str  # "iam", "sts" (the botocore model and the SigV4 scope's service name)
    version: str
    handlers: Mapping[str, Handler]


def caller(request: Request) -> Principal:
    """Who is calling: what SigV4 verified (`request.state.principal`, set by api/auth.py),
    else — with `--no-auth`, where nobody is verified — the account's root user."""
    principal = getattr(request.state, "principal", None)
    if isinstance(principal, Principal):
        return principal
    platform: Platform = request.app.state.platform
    return platform.iam.root_principal


# -- the route --------------------------------------------------------------------------------


def routes(*services: Service) -> list[BaseRoute]:
    """The `/` route answering every action of `services`."""

    async def endpoint(request: Request) -> Response:
        request_id = new_request_id()
        service = services[0]
        try:
            form = await _read_form(request)
        except LambdaError as exc:
            return xml_error(service, exc, request_id)
        action = form.get("Action", "")
        if not action and not _scoped(services, request, form):
            # no Action, no IAM/STS signature: not a query-protocol request at all
            method, path = request.method, request.url.path
            return error_response(
                UnknownOperationException(f"No operation matches {method} {path}")
            )
        try:
            service = _pick(services, request, form, action)
            handler = service.handlers.get(action)
            if handler is None:
                raise InvalidAction(
                    "The action or operation requested is invalid. Verify that the action is "
                    "typed correctly."
                )
            operation = _model(service.name).operation_model(action)
            params: dict[str, Any] = {}
            if operation.input_shape is not None:
                params = _decode(operation.input_shape, form, "")
                _validate(operation.input_shape, params)
            platform: Platform = request.app.state.platform
            principal = caller(request)
            if service.name == "iam":
                resource = iam_resource(platform.settings.account_id, principal, params)
                await authorize(request, f"iam:{action}", resource)
            # STS: GetCallerIdentity needs no permission; AssumeRole is decided by the role's
            # trust policy together with the caller's own policies (api/sts.py).
            call = Call(action, params, principal, platform, request_id)
            result = handler(call)
            return xml_response(service, action, result, request_id)
        except LambdaError as exc:
            return xml_error(service, exc, request_id)
        except Exception as exc:  # a fault in lamina: logged, answered as AWS's 500
            log.error("unhandled error in %s (request %s)", service.name, request_id, exc_info=exc)
            fault = ServiceException("An internal error occurred in lamina.")
            return xml_error(service, fault, request_id)

    return [DispatchRoute("/", endpoint, methods=["GET", "POST"])]


async def _read_form(request: Request) -> dict[str, str]:
    fields = dict(parse_qsl(request.url.query, keep_blank_values=True))
    if request.method == "POST":
        body = await read_body(request, MAX_FORM_BODY)
        try:
            fields.update(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            raise ValidationError("The request body is not valid UTF-8.") from None
    return fields


def _scope(request: Request, form: Mapping[str, str]) -> str:
    """The SigV4 credential scope's service name (header or presigned query), else ""."""
    found = _SCOPE.search(request.headers.get("authorization", ""))
    if found:
        return found.group(1)
    parts = form.get("X-Amz-Credential", "").split("/")
    return parts[3] if len(parts) == 5 else ""


def _scoped(services: tuple[Service, ...], request: Request, form: Mapping[str, str]) -> bool:
    return _scope(request, form) in {s.name for s in services}


def _pick(
    services: tuple[Service, ...], request: Request, form: Mapping[str, str], action: str
) -> Service:
    name = _scope(request, form)
    for service in services:
        if service.name == name:
            return service
    for service in services:
        if service.version == form.get("Version"):
            return service
    for service in services:
        if action in service.handlers:
            return service
    return services[0]


@functools.cache
def _model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


# -- decoding and checking parameters ---------------------------------------------------------


def _wire_name(shape: Any, default: str) -> str:
    return str(shape.serialization.get("name", default))


def _decode(shape: Any, form: Mapping[str, str], prefix: str) -> Any:
    kind = shape.type_name
    if kind == "structure":
        out: dict[str, Any] = {}
        for member, member_shape in shape.members.items():
            key = _wire_name(member_shape, member)
            full = f"{prefix}.{key}" if prefix else key
            present = full in form or any(k.startswith(full + ".") for k in form)
            if present:
                out[member] = _decode(member_shape, form, full)
        return out
    if kind == "list":
        item = f"{prefix}.{_wire_name(shape.member, 'member')}."
        return [_decode(shape.member, form, f"{item}{i}") for i in _indexes(form, item)]
    if kind == "map":
        entry = f"{prefix}.entry."
        key_name = _wire_name(shape.key, "key")
        value_name = _wire_name(shape.value, "value")
        return {
            _decode(shape.key, form, f"{entry}{i}.{key_name}"): _decode(
                shape.value, form, f"{entry}{i}.{value_name}"
            )
            for i in _indexes(form, entry)
        }
    return _scalar(shape, form.get(prefix, ""), prefix)


def _indexes(form: Mapping[str, str], prefix: str) -> list[int]:
    found = {k[len(prefix) :].split(".", 1)[0] for k in form if k.startswith(prefix)}
    return sorted(int(i) for i in found if i.isdigit())


def _scalar(shape: Any, raw: str, where: str) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(raw)
        if kind in ("float", "double"):
            return float(raw)
        if kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
        if kind == "timestamp":
            return datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if kind == "blob":
            return base64.b64decode(raw, validate=True)
    except (ValueError, binascii.Error):
        raise ValidationError(f"Invalid value '{raw}' for parameter {where}") from None
    return raw


def _validate(shape: Any, params: Mapping[str, Any]) -> None:
    problems: list[str] = []
    _check(shape, params, "", problems)
    if problems:
        count = len(problems)
        noun = "error" if count == 1 else "errors"
        raise ValidationError(f"{count} validation {noun} detected: " + "; ".join(problems))


def _check(shape: Any, value: Any, where: str, problems: list[str]) -> None:
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure":
        for member in shape.required_members:
            if member not in value:
                path = _path(where, member)
                problems.append(
                    f"Value null at '{path}' failed to satisfy constraint: Member must not be null"
                )
        for member, member_shape in shape.members.items():
            if member in value:
                _check(member_shape, value[member], _path(where, member), problems)
        return
    if kind == "list":
        for i, item in enumerate(value, 1):
            _check(shape.member, item, f"{where}.{i}.member", problems)
    shown = f"'{value}'" if kind != "list" else "list"

    def fail(rule: str) -> None:
        problems.append(
            f"Value {shown} at '{where}' failed to satisfy constraint: Member must {rule}"
        )

    if kind in ("string", "list"):
        size = len(value)
        if "min" in meta and size < meta["min"]:
            fail(f"have length greater than or equal to {meta['min']}")
        if "max" in meta and size > meta["max"]:
            fail(f"have length less than or equal to {meta['max']}")
    if kind in ("integer", "long"):
        if "min" in meta and value < meta["min"]:
            fail(f"have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            fail(f"have value less than or equal to {meta['max']}")
    if kind == "string":
        if shape.enum and value not in shape.enum:
            fail(f"satisfy enum value set: [{', '.join(shape.enum)}]")
        pattern = _pattern(meta.get("pattern"))
        if pattern is not None and not pattern.fullmatch(value):
            fail(f"satisfy regular expression pattern: {meta['pattern']}")


def _path(where: str, member: str) -> str:
    camel = member[:1].lower() + member[1:]
    return f"{where}.{camel}" if where else camel


@functools.cache
def _pattern(source: str | None) -> re.Pattern[str] | None:
    if not source:
        return None
    try:
        return re.compile(source, re.DOTALL)
    except re.error:  # Java-only syntax (\p{L}…): not checked here
        return None


# -- paging ---------------------------------------------------------------------------------


def page(
    items: list[Any], key: Callable[[Any], str], params: Mapping[str, Any], member: str
) -> dict[str, Any]:
    """One page of a List* answer, IAM style: at most `MaxItems` (default 100) after `Marker`;
    `IsTruncated`, and `Marker` for the next page when there is one. Markers are opaque (the
    last item's `key`); `items` come in ascending `key` order."""
    limit = int(params.get("MaxItems", 100))
    start = 0
    if params.get("Marker"):
        try:
            after = base64.urlsafe_b64decode(str(params["Marker"]).encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise ValidationError("Invalid Marker.") from None
        keys = [key(item) for item in items]
        if after in keys:  # right after the item the marker names
            start = keys.index(after) + 1
        else:  # that item is gone: after where it would sort
            start = next((i for i, k in enumerate(keys) if k > after), len(items))
    chunk = items[start : start + limit]
    out: dict[str, Any] = {member: chunk, "IsTruncated": start + limit < len(items)}
    if out["IsTruncated"]:
        out["Marker"] = base64.urlsafe_b64encode(key(chunk[-1]).encode()).decode()
    return out


# -- writing answers --------------------------------------------------------------------------


def _namespace(service: Service) -> str:
    return f"https://{service.name}.amazonaws.com/doc/{service.version}/"


def xml_response(
    service: Service, action: str, result: Mapping[str, Any] | None, request_id: str
) -> Response:
    """`<{Action}Response><{Action}Result>…</…><ResponseMetadata>…</…></{Action}Response>`."""
    shape = _model(service.name).operation_model(action).output_shape
    inner = ""
    if shape is not None:
        wrapper = shape.serialization.get("resultWrapper", f"{action}Result")
        inner = f"<{wrapper}>{_members(shape, result or {})}</{wrapper}>"
    body = (
        f'<{action}Response xmlns="{_namespace(service)}">{inner}'
        f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
        f"</{action}Response>"
    )
    return _xml(body, 200, request_id)


def xml_error(service: Service, exc: LambdaError, request_id: str) -> Response:
    """Any lamina error as the query protocol's `ErrorResponse`."""
    fault = "Sender" if exc.fault == "User" else "Receiver"
    body = (
        f'<ErrorResponse xmlns="{_namespace(service)}"><Error><Type>{fault}</Type>'
        f"<Code>{escape(exc.query_code or exc.code)}</Code>"
        f"<Message>{escape(exc.message)}</Message></Error>"
        f"<RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    response = _xml(body, exc.status, request_id)
    response.headers.update(exc.headers)
    return response


def _xml(body: str, status: int, request_id: str) -> Response:
    return Response(body.encode(), status, {"x-amzn-RequestId": request_id}, media_type="text/xml")


def _members(shape: Any, value: Mapping[str, Any]) -> str:
    parts = []
    for member, member_shape in shape.members.items():
        if value.get(member) is None:
            continue
        name = _wire_name(member_shape, member)
        parts.append(f"<{name}>{_encode(member_shape, value[member])}</{name}>")
    return "".join(parts)


def _encode(shape: Any, value: Any) -> str:
    kind = shape.type_name
    if kind == "structure":
        return _members(shape, value)
    if kind == "list":
        tag = _wire_name(shape.member, "member")
        return "".join(f"<{tag}>{_encode(shape.member, item)}</{tag}>" for item in value)
    if kind == "map":
        key, val = _wire_name(shape.key, "key"), _wire_name(shape.value, "value")
        return "".join(
            f"<entry><{key}>{_encode(shape.key, k)}</{key}>"
            f"<{val}>{_encode(shape.value, v)}</{val}></entry>"
            for k, v in value.items()
        )
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp":
        when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "blob":
        return base64.b64encode(value).decode()
    if shape.name == "policyDocumentType":  # IAM sends documents URL-encoded
        return escape(quote(str(value), safe=""))
    return escape(str(value))
