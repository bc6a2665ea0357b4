"""Streamed responses on the Runtime API (`Lambda-Runtime-Function-Response-Mode: streaming`),
posted over real HTTP as a runtime posts them: chunked, an error in the trailers."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from lamina.worker.runtime_api import Invocation, ResponseStream, RuntimeApi, RuntimeReply

pytestmark = pytest.mark.anyio

NEXT = "/2018-06-01/runtime/invocation/next"
STREAMING = {"Lambda-Runtime-Function-Response-Mode": "streaming"}


def _inv(request_id: str, stream: ResponseStream | None) -> Invocation:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:f"
    return Invocation(request_id, b"{}", 0, arn, stream=stream)


class Runtime:
    """One keep-alive connection to the Runtime API, as a runtime holds it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, api: RuntimeApi) -> Runtime:
        return cls(*await asyncio.open_connection("127.0.0.1", api.port))

    def head(self, method: str, path: str, headers: dict[str, str]) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: x"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    def chunk(self, data: bytes) -> None:
        self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def end(self, trailers: dict[str, str] | None = None) -> None:
        lines = "".join(f"{k}: {v}\r\n" for k, v in (trailers or {}).items())
        self.writer.write(b"0\r\n" + lines.encode() + b"\r\n")

    async def response(self) -> tuple[int, bytes]:
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def next(self) -> None:
        self.head("GET", NEXT, {})
        assert (await self.response())[0] == 200

    def close(self) -> None:
        self.writer.close()


async def _started(
    request_id: str, stream: ResponseStream | None
) -> tuple[RuntimeApi, Runtime, asyncio.Future[RuntimeReply]]:
    """A Runtime API with the invocation `request_id` fetched by a runtime."""
    api = RuntimeApi()
    await api.listen()
    runtime = await Runtime.connect(api)
    reply = api.start(_inv(request_id, stream))
    await runtime.next()
    return api, runtime, reply


async def test_chunks_reach_the_stream_as_they_are_posted() -> None:
    stream = ResponseStream()
    api, runtime, reply = await _started("s1", stream)
    headers = {**STREAMING, "Transfer-Encoding": "chunked", "Expect": "100-continue"}
    runtime.head("POST", "/2018-06-01/runtime/invocation/s1/response", headers)
    assert await runtime.reader.readline() == b"HTTP/1.1 100 Continue\r\n"
    assert await runtime.reader.readline() == b"\r\n"
    runtime.chunk(b"one")
    assert await asyncio.wait_for(stream.get(), 5) == b"one"  # before the post is complete
    assert not reply.done()
    runtime.chunk(b"two")
    assert await asyncio.wait_for(stream.get(), 5) == b"two"
    runtime.end()
    assert (await runtime.response())[0] == 202
    got = await asyncio.wait_for(reply, 5)
    assert (got.kind, got.body, got.error_type) == ("response", b"", None)
    assert stream.streamed
    runtime.close()
    api.close()


async def test_an_error_in_the_trailers_is_a_function_error() -> None:
    stream = ResponseStream()
    api, runtime, reply = await _started("s2", stream)
    error = {"errorType": "Function.Boom", "errorMessage": "broke mid-stream"}
    runtime.head(
        "POST",
        "/2018-06-01/runtime/invocation/s2/response",
        {**STREAMING, "Transfer-Encoding": "chunked"},
    )
    runtime.chunk(b"partial")
    runtime.end(
        {
            "Lambda-Runtime-Function-Error-Type": "Function.Boom",
            "Lambda-Runtime-Function-Error-Body": base64.b64encode(
                json.dumps(error).encode()
            ).decode(),
        }
    )
    assert (await runtime.response())[0] == 202
    got = await asyncio.wait_for(reply, 5)
    assert (got.kind, got.error_type) == ("error", "Function.Boom")
    assert json.loads(got.body) == error
    assert await stream.get() == b"partial"
    runtime.close()
    api.close()


async def test_without_a_stream_the_chunks_are_assembled() -> None:
    api, runtime, reply = await _started("s3", None)
    runtime.head(
        "POST",
        "/2018-06-01/runtime/invocation/s3/response",
        {**STREAMING, "Transfer-Encoding": "chunked", "Content-Type": "text/plain"},
    )
    for part in (b"a", b"b", b"c"):
        runtime.chunk(part)
    runtime.end()
    assert (await runtime.response())[0] == 202
    got = await asyncio.wait_for(reply, 5)
    assert (got.kind, got.body, got.content_type) == ("response", b"abc", "text/plain")
    runtime.close()
    api.close()


async def test_an_unknown_response_mode_is_refused() -> None:
    api, runtime, reply = await _started("s4", ResponseStream())
    runtime.head(
        "POST",
        "/2018-06-01/runtime/invocation/s4/response",
        {"Lambda-Runtime-Function-Response-Mode": "buffered", "Content-Length": "2"},
    )
    runtime.writer.write(b"{}")
    status, body = await runtime.response()
    assert status == 400 and json.loads(body)["errorType"] == "InvalidFunctionResponseMode"
    assert not reply.done()  # the runtime may still answer properly
    runtime.close()
    api.close()


async def test_a_slow_reader_pauses_the_runtime() -> None:
    stream = ResponseStream()
    api, runtime, _reply = await _started("s5", stream)
    runtime.head(
        "POST",
        "/2018-06-01/runtime/invocation/s5/response",
        {**STREAMING, "Transfer-Encoding": "chunked"},
    )
    block = b"x" * 65536
    for _ in range(64):  # 4 MB, well past the high-water mark
        runtime.chunk(block)
    runtime.end()
    await asyncio.sleep(0.2)
    assert ResponseStream.HIGH < stream.pending < 4 * 1024 * 1024  # reading stopped
    total = 0
    while total < 64 * len(block):
        data = await asyncio.wait_for(stream.get(), 5)
        assert data is not None
        total += len(data)
    assert (await runtime.response())[0] == 202
    runtime.close()
    api.close()
