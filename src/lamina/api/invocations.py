"""Invoke (and the deprecated InvokeAsync): the HTTP face of `invoke.router`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from lamina.api.access import guarded
from lamina.api.render import json_response
from lamina.api.requests import path_param, read_body
from lamina.invoke.router import MAX_SYNC_PAYLOAD, InvokeRequest
from lamina.platform import Platform

MAX_INVOKE_ASYNC_PAYLOAD = 256 * 1024


async def invoke_request(request: Request) -> InvokeRequest:
    """An Invoke-shaped request (Invoke, InvokeWithResponseStream) read from HTTP."""
    headers = request.headers
    return InvokeRequest(
        function_name=path_param(request, "name"),
        payload=await read_body(request, MAX_SYNC_PAYLOAD),
        qualifier=request.query_params.get("Qualifier"),
        invocation_type=headers.get("x-amz-invocation-type", "RequestResponse"),
        log_type=headers.get("x-amz-log-type", "None"),
        client_context=headers.get("x-amz-client-context"),
        trace_id=headers.get("x-amzn-trace-id"),
    )


async def invoke(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    req = await invoke_request(request)
    result = await platform.invoker.invoke(req)
    out_headers = {"x-amzn-RequestId": result.request_id, **result.headers}
    return Response(result.body, result.status, out_headers, media_type=result.content_type)


async def invoke_async(request: Request) -> Response:
    """InvokeAsync (deprecated by AWS, still used by old tools): an Event invoke, 202."""
    platform: Platform = request.app.state.platform
    req = InvokeRequest(
        function_name=path_param(request, "name"),
        payload=await read_body(request, MAX_INVOKE_ASYNC_PAYLOAD),
        invocation_type="Event",
    )
    result = await platform.invoker.invoke(req)
    return json_response({"Status": 202}, 202, result.request_id)


routes = [
    guarded("/2015-03-31/functions/{name}/invocations", invoke, ["POST"], "lambda:InvokeFunction"),
    guarded(
        "/2014-11-13/functions/{name}/invoke-async", invoke_async, ["POST"], "lambda:InvokeAsync"
    ),
    guarded(
        "/2014-11-13/functions/{name}/invoke-async/", invoke_async, ["POST"], "lambda:InvokeAsync"
    ),
]
