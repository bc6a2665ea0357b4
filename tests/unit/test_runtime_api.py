"""The Runtime API server spoken to over real HTTP, as a runtime would."""

from __future__ import annotations

import asyncio
import json

import pytest

from lamina.worker.runtime_api import MAX_PAYLOAD, Invocation, RuntimeApi


async def _request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    hdrs: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        hdrs[k.strip().lower()] = v.strip()
    data = await reader.readexactly(int(hdrs["content-length"]))
    writer.close()
    await writer.wait_closed()
    return status, hdrs, data


pytestmark = pytest.mark.anyio  # coroutine tests, run by anyio's pytest plugin (asyncio)

NEXT = "/2018-06-01/runtime/invocation/next"


def _inv(request_id: str = "req-1") -> Invocation:
    return Invocation(
        request_id=request_id,
        payload=b'{"k": 1}',
        deadline_ms=1_700_000_000_000,
        invoked_arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        trace_id="Root=1-abc;Sampled=0",
        client_context='{"custom": {"a": 1}}',
    )


async def test_next_delivers_the_event_with_its_headers() -> None:
    api = RuntimeApi()
    port = int((await api.listen()).rsplit(":", 1)[1])
    poll = asyncio.create_task(_request(port, "GET", NEXT))
    assert await asyncio.wait_for(api.ready, 5) is None  # the first /next ends init
    reply = api.start(_inv())
    status, headers, body = await asyncio.wait_for(poll, 5)
    assert status == 200 and json.loads(body) == {"k": 1}
    assert headers["lambda-runtime-aws-request-id"] == "req-1"
    assert headers["lambda-runtime-deadline-ms"] == "1700000000000"
    assert headers["lambda-runtime-invoked-function-arn"].endswith(":function:f")
    assert headers["lambda-runtime-trace-id"] == "Root=1-abc;Sampled=0"
    assert json.loads(headers["lambda-runtime-client-context"]) == {"custom": {"a": 1}}
    assert "lambda-runtime-cognito-identity" not in headers  # empty headers are omitted

    status, _, body = await _request(
        port, "POST", "/2018-06-01/runtime/invocation/req-1/response", b'"ok"'
    )
    assert status == 202 and json.loads(body) == {"status": "OK"}
    got = await asyncio.wait_for(reply, 5)
    assert (got.kind, got.body) == ("response", b'"ok"')
    api.close()


async def test_event_queued_before_next_is_fetched() -> None:
    api = RuntimeApi()
    port = int((await api.listen()).rsplit(":", 1)[1])
    api.start(_inv("early"))
    status, headers, _ = await _request(port, "GET", NEXT)
    assert status == 200 and headers["lambda-runtime-aws-request-id"] == "early"
    api.close()


async def test_out_of_sequence_calls_get_the_documented_errors() -> None:
    api = RuntimeApi()
    port = int((await api.listen()).rsplit(":", 1)[1])
    status, _, body = await _request(port, "POST", "/2018-06-01/runtime/invocation/x/response")
    assert status == 403 and json.loads(body)["errorType"] == "InvalidStateTransition"
    reply = api.start(_inv("real"))
    await _request(port, "GET", NEXT)
    status, _, body = await _request(port, "POST", "/2018-06-01/runtime/invocation/x/response")
    assert status == 400 and json.loads(body)["errorType"] == "InvalidRequestID"
    status, _, _ = await _request(
        port,
        "POST",
        "/2018-06-01/runtime/invocation/real/error",
        b'{"errorType": "E", "errorMessage": "m"}',
        {"Lambda-Runtime-Function-Error-Type": "Function.Custom"},
    )
    assert status == 202
    got = await reply
    assert (got.kind, got.error_type) == ("error", "Function.Custom")
    status, _, body = await _request(port, "POST", "/2018-06-01/runtime/invocation/real/response")
    assert status == 403  # already answered
    status, _, _ = await _request(port, "GET", "/2018-06-01/nope")
    assert status == 404
    api.close()


async def test_oversized_response_is_refused_and_reported() -> None:
    api = RuntimeApi()
    port = int((await api.listen()).rsplit(":", 1)[1])
    reply = api.start(_inv("big"))
    await _request(port, "GET", NEXT)
    status, _, body = await _request(
        port, "POST", "/2018-06-01/runtime/invocation/big/response", b"x" * (MAX_PAYLOAD + 1)
    )
    assert status == 413 and json.loads(body)["errorType"] == "RequestEntityTooLarge"
    got = await reply
    assert got.error_type == "Function.ResponseSizeTooLarge"
    api.close()


async def test_init_error_resolves_ready() -> None:
    api = RuntimeApi()
    port = int((await api.listen()).rsplit(":", 1)[1])
    status, _, _ = await _request(
        port,
        "POST",
        "/2018-06-01/runtime/init/error",
        b'{"errorType": "Runtime.ImportModuleError", "errorMessage": "m"}',
        {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"},
    )
    assert status == 202
    got = await asyncio.wait_for(api.ready, 5)
    assert got is not None and got.error_type == "Runtime.ImportModuleError"
    api.close()
