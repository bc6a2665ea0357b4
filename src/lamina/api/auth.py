"""Authentication: every AWS-compatible request must carry a valid SigV4 signature.

A pure ASGI middleware in front of the routes. For each HTTP request it reads the body (the
signature covers its hash), checks the signature (`auth/sigv4.py`) against the key it names —
the root key, an IAM user's key, an STS session's, or an instance's execution-role session —
and hands the caller on as `request.state.principal` (a `Principal`). What it may then do is
`api/access.py`'s business.

A failure is answered in the protocol of the service asked: JSON for Lambda, the query
protocol's XML for IAM and STS (`MissingAuthenticationToken`, `InvalidClientTokenId`,
`SignatureDoesNotMatch`, `ExpiredToken`, …), status 403. Nothing reaches a handler unsigned.

Exempt, because they are not AWS APIs and carry their own proof: `GET /_lamina/health`, and
the code download URLs GetFunction hands out (signed by lamina itself, like S3's presigned
URLs). `lamina serve --no-auth` turns all of this off, loudly.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from lamina.api import iam, sts
from lamina.api.query import xml_error
from lamina.api.render import error_response, new_request_id
from lamina.auth.identity import SigningKey
from lamina.auth.sigv4 import INVALID_TOKEN, MISSING, SignedRequest, credential_scope, verify
from lamina.errors import (
    LambdaError,
    MissingAuthenticationTokenException,
    RequestTooLargeException,
    UnrecognizedClientException,
)
from lamina.platform import Platform

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_SIGNED_BODY = 80 * 1024 * 1024  # above every operation's own limit (CreateFunction's zip)
PRECHECK_ABOVE = 64 * 1024  # bodies above this (or of unknown size) wait for a known signer
EXEMPT_PREFIXES = ("/_lamina/health", "/_lamina/code/")

log = logging.getLogger("lamina.auth")


class AuthMiddleware:
    def __init__(self, app: ASGIApp, platform: Platform) -> None:
        self.app = app
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or not self.platform.settings.auth
            or scope["path"].startswith(EXEMPT_PREFIXES)
        ):
            await self.app(scope, receive, send)
            return
        head = _signed_request(scope, b"")
        token = head.headers.get("x-amz-security-token") or _query_token(head.query_string)
        try:  # refused before a large body is read: no one unknown makes lamina buffer it
            if scope["path"] != "/" and _declared_size(head) > PRECHECK_ABOVE:
                self._precheck(head, token)
        except LambdaError as exc:
            await _reject(scope, receive, send, head, exc)
            return
        body, more = await _read_body(receive, MAX_SIGNED_BODY)
        req = _signed_request(scope, body)
        try:
            if more:
                raise RequestTooLargeException(
                    f"Request must be smaller than {MAX_SIGNED_BODY} bytes for this operation"
                )
            verified = verify(req, lambda akid: self._lookup(akid, token), datetime.now(UTC))
        except LambdaError as exc:
            await _reject(scope, receive, send, req, exc)
            return
        scope.setdefault("state", {})["principal"] = verified.key.principal
        await self.app(scope, _replay(body, receive), send)

    def _precheck(self, head: SignedRequest, token: str | None) -> None:
        """What can be refused from the headers alone: no signature at all, or a key lamina
        does not know (verify() checks everything, the same way, once the body is read)."""
        found = credential_scope(head)
        if found is None:
            if "authorization" not in head.headers and "X-Amz-" not in head.query_string:
                raise MissingAuthenticationTokenException(MISSING)
            return  # malformed: verify() names what is wrong
        if self._lookup(found.access_key_id, token) is None:
            raise UnrecognizedClientException(INVALID_TOKEN)

    def _lookup(self, access_key_id: str, token: str | None) -> SigningKey | None:
        if token and access_key_id.startswith("ASIA"):
            # an instance's execution-role session: self-describing, no database read
            found = self.platform.sessions.signing_key(access_key_id, token)
            if found is not None:
                return found
        return self.platform.iam.signing_key(access_key_id)


def _declared_size(head: SignedRequest) -> int:
    """Content-Length, or "large" when the body's size is not declared (chunked)."""
    try:
        return int(head.headers.get("content-length", ""))
    except ValueError:
        return 0 if head.method in ("GET", "HEAD", "DELETE") else MAX_SIGNED_BODY


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The whole body, or its first `limit` bytes and True when there was more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the connection's own messages (a streaming response waits
    on them to learn of a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _signed_request(scope: Scope, body: bytes) -> SignedRequest:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    raw_path = scope.get("raw_path") or scope["path"].encode()
    return SignedRequest(
        method=scope["method"],
        raw_path=raw_path.decode("latin-1"),
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
    )


def _query_token(query: str) -> str | None:
    if "X-Amz-Security-Token=" not in query:
        return None
    values = parse_qs(query, keep_blank_values=True).get("X-Amz-Security-Token")
    return values[0] if values else None


async def _reject(
    scope: Scope, receive: Receive, send: Send, req: SignedRequest, exc: LambdaError
) -> None:
    request_id = new_request_id()
    log.info(
        "refused %s %s: %s (%s)", req.method, scope["path"], exc.code, _key_hint(req)
    )  # names the key id only; never a secret, a token or a signature
    service = _query_service(req)
    response = (
        xml_error(service, exc, request_id)
        if service is not None
        else error_response(exc, request_id)
    )
    await response(scope, receive, send)


def _query_service(req: SignedRequest) -> Any:
    """The query-protocol service (IAM or STS) a request is for, if it is for one."""
    found = credential_scope(req)
    name = found.service if found is not None else None
    if name == "iam":
        return iam.SERVICE
    if name == "sts":
        return sts.SERVICE
    if name is None and req.raw_path in ("", "/"):
        text = req.body[:4096].decode("latin-1") + "&" + req.query_string
        if "Version=2011-06-15" in text:
            return sts.SERVICE
        if "Action=" in text:
            return iam.SERVICE
    return None


def _key_hint(req: SignedRequest) -> str:
    found = credential_scope(req)
    return f"key {found.access_key_id}" if found is not None else "unsigned"
