"""The Lambda Runtime API of one instance: real HTTP/1.1 on its own loopback port.

A runtime inside the instance (lamina's Python bootstrap, awslambdaric, a curl script) long-polls
`GET /2018-06-01/runtime/invocation/next` and posts `/response`, `/error` or `/init/error`.
This is the only channel between a runtime and lamina. HTTP parsing is httptools (the parser
uvicorn uses); the server is a small asyncio protocol because it sits on the invoke hot path.

A runtime may stream its response (`Lambda-Runtime-Function-Response-Mode: streaming`, chunked,
an error reported in the trailers). When the invocation has a `ResponseStream`, the chunks go
to it as they arrive; otherwise they are assembled into one body, as for any other response.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools

MAX_PAYLOAD = 6 * 1024 * 1024 + 100  # the Runtime API's limit, as the emulator's
MAX_STREAMED = 200 * 1024 * 1024  # a response streamed to an InvokeWithResponseStream caller
_MODE = "lambda-runtime-function-response-mode"
_ERROR_TYPE = "lambda-runtime-function-error-type"
_ERROR_BODY = "lambda-runtime-function-error-body"
# A runtime needs one or two connections; a function that opens more would only be trying to
# exhaust lamina's file descriptors, so connections beyond this are closed at once.
MAX_CONNECTIONS = 8
_PREFIX = "/2018-06-01/runtime/"
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}
_REASONS |= {413: "Request Entity Too Large", 500: "Internal Server Error"}


@dataclass(slots=True)
class Invocation:
    """One event handed to an instance."""

    request_id: str
    payload: bytes
    deadline_ms: int
    invoked_arn: str
    trace_id: str | None = None
    client_context: str | None = None
    cognito_identity: str | None = None
    tenant_id: str | None = None
    stream: ResponseStream | None = None  # set when the caller takes the response as it comes


class ResponseStream:
    """The chunks of one streamed response, from the runtime's connection to one reader.

    The connection `put`s chunks as they arrive; the reader `get`s them (None once `close`d and
    drained). Past `HIGH` unread bytes the connection stops reading from the runtime until the
    reader has caught up, so a slow caller holds back the function, not lamina's memory.
    """

    HIGH = 1024 * 1024

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._resume: Callable[[], None] | None = None
        self.pending = 0
        self.streamed = False  # whether the runtime streamed (even zero bytes)
        self.closed = False
        self.abandoned = False

    def put(self, data: bytes, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        if self.closed or self.abandoned:
            return
        self._chunks.append(data)
        self.pending += len(data)
        self._wake()
        if self.pending > self.HIGH and self._resume is None:
            self._resume = resume
            pause()

    def close(self) -> None:
        """No more chunks (the invocation is over, however it ended)."""
        self.closed = True
        self._wake()
        self._release()

    def abandon(self) -> None:
        """The reader is gone: drop what is queued and whatever comes."""
        self.abandoned = True
        self._chunks.clear()
        self.pending = 0
        self._release()

    async def get(self) -> bytes | None:
        while not self._chunks:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        self.pending -= len(data)
        if self.pending <= self.HIGH // 2:
            self._release()
        return data

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _release(self) -> None:
        if self._resume is not None:
            resume, self._resume = self._resume, None
            resume()


@dataclass(slots=True)
class RuntimeReply:
    """What a runtime posted: kind is `response`, `error` or `init_error`."""

    kind: str
    body: bytes
    content_type: str = "application/json"
    error_type: str | None = None


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


class RuntimeApi:
    """State shared by every connection the runtime of one instance opens."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._server: asyncio.Server | None = None
        self._waiting: _Connection | None = None  # the connection holding a GET /next
        self._queued: Invocation | None = None  # an event not yet fetched
        self._current: tuple[str, asyncio.Future[RuntimeReply]] | None = None
        self._stream: ResponseStream | None = None  # the current invocation's, if it has one
        self.ready: asyncio.Future[RuntimeReply | None] = loop.create_future()
        self.port = 0
        self.connections = 0

    async def listen(self, sock: socket.socket | None = None) -> str:
        """Serve on `sock` (a listening socket a sandbox made for its instance), else on a
        fresh loopback port; the `host:port` to hand the runtime as AWS_LAMBDA_RUNTIME_API."""
        if sock is None:
            self._server = await self._loop.create_server(
                lambda: _Connection(self), "127.0.0.1", 0, reuse_address=True
            )
        else:
            self._server = await self._loop.create_server(lambda: _Connection(self), sock=sock)
        host, self.port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._waiting is not None:
            self._waiting.close()
            self._waiting = None
        if not self.ready.done():
            self.ready.cancel()

    def start(self, inv: Invocation) -> asyncio.Future[RuntimeReply]:
        """Hand `inv` to the runtime; the future resolves with its reply."""
        fut: asyncio.Future[RuntimeReply] = self._loop.create_future()
        self._current = (inv.request_id, fut)
        self._stream = inv.stream
        if self._waiting is not None:
            conn, self._waiting = self._waiting, None
            conn.send_event(inv)
        else:
            self._queued = inv
        return fut

    def finish(self) -> None:
        """Forget the current invocation (after a reply, a timeout or a crash)."""
        self._current = None
        self._queued = None
        self._stream = None

    # -- called by connections -------------------------------------------------------------

    def on_next(self, conn: _Connection) -> None:
        if not self.ready.done():
            self.ready.set_result(None)
        if self._queued is not None:
            inv, self._queued = self._queued, None
            conn.send_event(inv)
        else:
            self._waiting = conn

    def stream_for(self, path: str) -> ResponseStream | None:
        """Where a streamed `/response` posted to `path` should go as it arrives: the current
        invocation's stream, if it has one and `path` answers it; else None (assemble it)."""
        current, stream = self._current, self._stream
        if stream is None or current is None or current[1].done():
            return None
        if path != f"{_PREFIX}invocation/{current[0]}/response":
            return None
        stream.streamed = True
        return stream

    def on_post(
        self,
        conn: _Connection,
        path: str,
        headers: dict[str, str],
        body: bytes,
        too_large: bool,
        trailers: dict[str, str] | None = None,
        limit: int = MAX_PAYLOAD,
    ) -> None:
        """A POST from the runtime, complete. `trailers` is not None for a streamed response
        (whose error, if any, is in them); `limit` is the size `too_large` was measured against."""
        rest = path[len(_PREFIX) :]
        content_type = headers.get("content-type", "application/json")
        error_type = headers.get(_ERROR_TYPE)
        if rest == "init/error":
            reply = RuntimeReply("init_error", body, content_type, error_type)
            if not self.ready.done():
                self.ready.set_result(reply)
            elif self._current is not None:
                self._current[1].set_result(reply)
            conn.respond(202, b'{"status":"OK"}')
            return
        parts = rest.split("/")
        if len(parts) != 3 or parts[0] != "invocation" or parts[2] not in ("response", "error"):
            conn.respond(404, _error_body("InvalidRequest", f"Unknown path {path}"))
            return
        request_id, kind = parts[1], parts[2]
        current = self._current
        if current is None or current[1].done():
            conn.respond(
                403, _error_body("InvalidStateTransition", "State transition is not allowed")
            )
            return
        if current[0] != request_id:
            conn.respond(400, _error_body("InvalidRequestID", "Invalid request ID"))
            return
        if too_large:
            conn.respond(
                413,
                _error_body(
                    "RequestEntityTooLarge",
                    f"Exceeded maximum allowed payload size ({limit} bytes).",
                ),
            )
            message = (
                f"Response payload size exceeded maximum allowed payload size ({limit} bytes)."
            )
            reply = RuntimeReply(
                "error",
                _error_body("Function.ResponseSizeTooLarge", message),
                "application/json",
                "Function.ResponseSizeTooLarge",
            )
        elif trailers is not None:
            conn.respond(202, b'{"status":"OK"}')
            reply = _streamed_reply(body, headers.get("content-type"), trailers)
        else:
            conn.respond(202, b'{"status":"OK"}')
            reply = RuntimeReply("response" if kind == "response" else "error", body, content_type)
            reply.error_type = error_type
        current[1].set_result(reply)

    def on_lost(self, conn: _Connection) -> None:
        if self._waiting is conn:
            self._waiting = None


def _streamed_reply(
    body: bytes, content_type: str | None, trailers: dict[str, str]
) -> RuntimeReply:
    """The reply a streamed response makes: a success, or the error its trailers report."""
    error_type = trailers.get(_ERROR_TYPE)
    if not error_type:
        return RuntimeReply("response", body, content_type or "application/octet-stream")
    raw = trailers.get(_ERROR_BODY, "")
    try:
        error_body = base64.b64decode(raw, validate=True) if raw else b""
    except (binascii.Error, ValueError):
        error_body = raw.encode("latin-1")
    if not error_body:
        error_body = _error_body(error_type, "The function failed while streaming its response")
    return RuntimeReply("error", error_body, "application/json", error_type)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection from the runtime."""

    def __init__(self, api: RuntimeApi) -> None:
        self.api = api
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0
        # a streamed /response: its headers (self._headers collects the trailers), its stream
        self._head: dict[str, str] | None = None
        self._sink: ResponseStream | None = None
        self._bad_mode = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.api.connections += 1
        if self.api.connections > MAX_CONNECTIONS:
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.respond(400, _error_body("InvalidRequest", "Malformed HTTP request"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.api.connections -= 1
        self.api.on_lost(self)
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []
        self._size = 0
        self._head = None
        self._sink = None
        self._bad_mode = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport:
            # curl asks before a chunked or large body, and waits a second if not answered
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        mode = self._headers.get(_MODE)
        if mode is None:
            return
        path = self._url.decode("latin-1").split("?", 1)[0]
        if not path.endswith("/response"):
            return
        if mode.lower() != "streaming":
            self._bad_mode = True
            return
        self._head, self._headers = self._headers, {}  # what follows the body are trailers
        self._sink = self.api.stream_for(path)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        sink = self._sink
        if sink is not None:
            if self._size <= MAX_STREAMED and self.transport is not None:
                sink.put(body, self.transport.pause_reading, self._resume_reading)
        elif self._size <= MAX_PAYLOAD:
            self._body.append(body)

    def _resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self._url.decode("latin-1").split("?", 1)[0]
        if method == b"GET" and path == _PREFIX + "invocation/next":
            self.api.on_next(self)
        elif method == b"POST" and path.startswith(_PREFIX):
            body = b"".join(self._body)
            if self._bad_mode:
                message = "Invalid value for the Lambda-Runtime-Function-Response-Mode header"
                self.respond(400, _error_body("InvalidFunctionResponseMode", message))
            elif self._head is not None:
                limit = MAX_STREAMED if self._sink is not None else MAX_PAYLOAD
                self.api.on_post(
                    self, path, self._head, body, self._size > limit, self._headers, limit
                )
            else:
                self.api.on_post(self, path, self._headers, body, self._size > MAX_PAYLOAD)
        elif method == b"GET" and path == "/2018-06-01/ping":
            self.respond(200, b"pong", "text/plain")
        else:
            self.respond(404, _error_body("InvalidRequest", f"Unknown path {path}"))

    # output
    def send_event(self, inv: Invocation) -> None:
        headers = [
            ("Lambda-Runtime-Aws-Request-Id", inv.request_id),
            ("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms)),
            ("Lambda-Runtime-Invoked-Function-Arn", inv.invoked_arn),
        ]
        optional = (
            ("Lambda-Runtime-Trace-Id", inv.trace_id),
            ("Lambda-Runtime-Client-Context", inv.client_context),
            ("Lambda-Runtime-Cognito-Identity", inv.cognito_identity),
            ("Lambda-Runtime-Aws-Tenant-Id", inv.tenant_id),
        )
        headers += [(k, v) for k, v in optional if v]
        self.respond(200, inv.payload, "application/json", headers)

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}"]
        lines += [f"{k}: {v}" for k, v in headers or ()]
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}", "", ""]
        self.transport.write("\r\n".join(lines).encode("latin-1") + body)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def describe(reply: RuntimeReply) -> dict[str, Any]:
    """The error JSON a reply carries, or {} when it is not JSON."""
    return describe_body(reply.body)


def describe_body(body: bytes) -> dict[str, Any]:
    """The JSON object `body` holds, or {} when it is not a JSON object."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
