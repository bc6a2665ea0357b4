"""The one place AWS-shaped responses are made: JSON bodies, errors, request ids.

Errors follow what botocore's rest-json parser expects: the status from the error class, the
code in `x-amzn-ErrorType`, and a body with `Type` and the message member the model names.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from lamina.errors import LambdaError, ServiceException
from lamina.types import request_id

log = logging.getLogger("lamina.api")


def new_request_id() -> str:
    return request_id()


def json_response(
    body: Any,
    status: int = 200,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    hdrs = {"x-amzn-RequestId": request_id or new_request_id()}
    if headers:
        hdrs.update(headers)
    content = b"" if body is None else json.dumps(body).encode()
    return Response(content, status, hdrs, media_type="application/json")


def page_response(key: str, items: list[Any], next_marker: str | None) -> Response:
    """A List* answer: the items under `key`, and `NextMarker` when there is another page."""
    body: dict[str, Any] = {key: items}
    if next_marker:
        body["NextMarker"] = next_marker
    return json_response(body)


def error_response(exc: LambdaError, request_id: str | None = None) -> Response:
    headers = {"x-amzn-ErrorType": exc.code, **exc.headers}
    return json_response(exc.body(), exc.status, request_id, headers)


async def handle_lambda_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LambdaError)
    return error_response(exc)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """A fault in lamina: logged with its traceback, answered as ServiceException (500)."""
    request_id = new_request_id()
    log.error(
        "unhandled error in %s %s (request %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
    )
    return error_response(ServiceException("An internal error occurred in lamina."), request_id)
