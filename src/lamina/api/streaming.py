"""InvokeWithResponseStream: the response as an AWS event stream, sent as the function makes it.

Each chunk a streaming runtime posts becomes one `PayloadChunk` event; a runtime that answers in
one piece (lamina's Python bootstrap, awslambdaric's ordinary handlers) gets its whole response
sent as one `PayloadChunk`. The last event is `InvokeComplete`, carrying the function's error
(and the log tail) if there is one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lamina.api.access import guarded
from lamina.api.eventstream import invoke_complete, payload_chunk
from lamina.api.invocations import invoke_request
from lamina.invoke.router import InvokeResult
from lamina.observe.logs import tail
from lamina.platform import Platform
from lamina.types import LogType
from lamina.worker.instance import Outcome
from lamina.worker.runtime_api import ResponseStream, describe_body

log = logging.getLogger("lamina.api")

# runs whose caller went away are still awaited to the end (the instance finishes its work)
_running: set[asyncio.Task[tuple[Outcome, str]]] = set()


async def invoke_with_response_stream(request: Request) -> Response:
    platform: Platform = request.app.state.platform
    req = await invoke_request(request)
    call = platform.invoker.prepare_stream(req)
    if isinstance(call, InvokeResult):  # DryRun
        return Response(b"", call.status, {"x-amzn-RequestId": call.request_id})
    stream = call.inv.stream = ResponseStream()
    task = asyncio.get_running_loop().create_task(platform.invoker.run_stream(call))
    _running.add(task)
    task.add_done_callback(_running.discard)
    task.add_done_callback(lambda _task: stream.close())
    task.add_done_callback(_retrieve)
    out_headers = {
        "x-amzn-RequestId": call.inv.request_id,
        "X-Amz-Executed-Version": call.bp.version,
    }
    return StreamingResponse(
        _events(stream, task, req.log_type),
        200,
        out_headers,
        media_type="application/vnd.amazon.eventstream",
    )


async def _events(
    stream: ResponseStream, task: asyncio.Task[tuple[Outcome, str]], log_type: str
) -> AsyncIterator[bytes]:
    try:
        while (chunk := await stream.get()) is not None:
            if chunk:
                yield payload_chunk(chunk)
        try:
            outcome, text = await asyncio.shield(task)
        except Exception:  # logged by _retrieve
            yield invoke_complete(
                {"ErrorCode": "ServiceException", "ErrorDetails": "An internal error occurred."}
            )
            return
        if not outcome.function_error and outcome.body and not stream.streamed:
            yield payload_chunk(outcome.body)  # a runtime that answered in one piece
        yield invoke_complete(_complete_fields(outcome, text, log_type))
    finally:
        stream.abandon()


def _retrieve(task: asyncio.Task[tuple[Outcome, str]]) -> None:
    # a run whose caller went away has no reader to see its failure: log it here
    if not task.cancelled() and task.exception() is not None:
        log.error("a streamed invocation failed in lamina", exc_info=task.exception())


def _complete_fields(outcome: Outcome, text: str, log_type: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if outcome.function_error:
        error = describe_body(outcome.body)
        fields["ErrorCode"] = outcome.error_type or error.get("errorType") or "Unhandled"
        message = error.get("errorMessage")
        fields["ErrorDetails"] = (
            message if isinstance(message, str) else outcome.body.decode("utf-8", "replace")
        )
    if log_type == LogType.TAIL:
        fields["LogResult"] = tail(text)
    return fields


routes = [
    guarded(
        "/2021-11-15/functions/{name}/response-streaming-invocations",
        invoke_with_response_stream,
        ["POST"],
        "lambda:InvokeFunction",
    ),
]
