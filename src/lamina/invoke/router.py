"""The invocation router: from an Invoke request to an instance and back.

    check the request -> resolve the function -> [Event: queue, answer 202]
    -> lease an instance from the pool -> hand it the event -> its Outcome
    -> the log (START/END/REPORT) -> the response (body, X-Amz-* headers)

Async (`Event`) invocations go to the durable queue (`invoke.queue`): committed to SQLite
before the 202, run by its workers with retries and destinations, and run again after a
restart if lamina stopped before they finished. Shutdown runs what is due, then stops.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from random import getrandbits

from lamina.control.event_invoke import EventInvokeConfigs
from lamina.control.functions import Functions
from lamina.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    RequestTooLargeException,
    ServiceException,
)
from lamina.invoke.concurrency import Concurrency, Throttled
from lamina.invoke.queue import EventQueue, QueuedEvent
from lamina.observe.logs import InvocationLog, tail
from lamina.store.metadata import FunctionRecord
from lamina.types import InvocationType, LogType, parse_function_name, request_id
from lamina.worker.blueprint import Blueprint
from lamina.worker.instance import Outcome
from lamina.worker.pool import Pool
from lamina.worker.runtime_api import Invocation

MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
MAX_ASYNC_PAYLOAD = 1024 * 1024
MAX_CLIENT_CONTEXT = 3583
ASYNC_CONCURRENCY = 64
THROTTLE_BACKOFF_S = 0.5  # a throttled event is queued again after 0.5 s, 1 s, 2 s, ... 5 s
THROTTLE_BACKOFF_MAX_S = 5.0

log = logging.getLogger("lamina.invoke")


@dataclass(slots=True)
class InvokeRequest:
    function_name: str
    payload: bytes
    qualifier: str | None = None
    invocation_type: str = InvocationType.REQUEST_RESPONSE
    log_type: str = LogType.NONE
    client_context: str | None = None  # base64, as the X-Amz-Client-Context header carries it
    trace_id: str | None = None


@dataclass(slots=True)
class InvokeResult:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    request_id: str = ""


@dataclass(slots=True)
class StreamCall:
    """An InvokeWithResponseStream call, checked and resolved, not yet run."""

    bp: Blueprint
    inv: Invocation


@dataclass(slots=True)
class Counters:
    invocations: int = 0
    errors: int = 0
    async_accepted: int = 0


class Invoker:
    def __init__(
        self, functions: Functions, pool: Pool, configs: EventInvokeConfigs | None = None
    ) -> None:
        self.functions = functions
        self.pool = pool
        self.counters = Counters()
        settings = functions.settings
        self.concurrency = Concurrency(
            settings.concurrency_limit, settings.scale_up_rate, functions.reserved
        )
        self.queue = EventQueue(
            functions.metadata.engine,
            functions,
            configs or EventInvokeConfigs(functions, functions.metadata),
            self.run,
            ASYNC_CONCURRENCY,
            throttled=(Throttled,),
            throttle_backoff=(THROTTLE_BACKOFF_S, THROTTLE_BACKOFF_MAX_S),
        )
        self._inflight: set[asyncio.Task[None]] = set()
        self._sync_inflight = 0
        self._closing = False

    def start(self) -> None:
        self.queue.start()

    # -- the request -------------------------------------------------------------------------

    def _accept(
        self, req: InvokeRequest, allowed: tuple[InvocationType, ...], operation: str
    ) -> tuple[InvocationType, Blueprint, Invocation] | InvokeResult:
        """Check a request and resolve its function: what to run, or DryRun's 204 answer.
        Every error is raised here, before anything runs or any response is sent."""
        itype: InvocationType | None = None
        if req.invocation_type in InvocationType.__members__.values():
            itype = InvocationType(req.invocation_type)
        if itype is None or itype not in allowed:
            raise InvalidParameterValueException(
                f"Unsupported invocation type: {req.invocation_type}. Use "
                f"{', '.join(t.value for t in allowed)}."
            )
        if req.log_type not in (LogType.NONE, LogType.TAIL):
            raise InvalidParameterValueException(f"Unsupported log type: {req.log_type}")
        # the qualifier may come in the name ("fn:$LATEST", an ARN) or as ?Qualifier=
        rec, qualifier = self.functions.resolve(req.function_name, req.qualifier, route=True)
        limit = MAX_ASYNC_PAYLOAD if itype is InvocationType.EVENT else MAX_SYNC_PAYLOAD
        if len(req.payload) > limit:
            raise RequestTooLargeException(
                f"Request must be smaller than {limit} bytes for the {operation} operation"
            )
        payload = _check_json(req.payload)
        client_context = _client_context(req.client_context)
        if itype is InvocationType.DRY_RUN:
            return InvokeResult(204, request_id=str(uuid.uuid4()))
        bp = self.functions.blueprint(rec)
        return itype, bp, self._invocation(rec, qualifier, payload, req, client_context)

    async def invoke(self, req: InvokeRequest) -> InvokeResult:
        accepted = self._accept(req, tuple(InvocationType), "InvokeFunction")
        if isinstance(accepted, InvokeResult):
            return accepted
        itype, bp, inv = accepted
        rec_name = bp.name
        if itype is InvocationType.EVENT:
            if self._closing:
                raise ServiceException("lamina is shutting down and accepts no new events")
            ref = parse_function_name(inv.invoked_arn)
            await self.queue.put(
                QueuedEvent(
                    request_id=inv.request_id,
                    function=rec_name,
                    qualifier=ref.qualifier if ref is not None else None,
                    version=bp.version,
                    payload=inv.payload,
                    trace_id=inv.trace_id,
                    client_context=inv.client_context,
                )
            )
            self.counters.async_accepted += 1
            return InvokeResult(202, request_id=inv.request_id)
        self._sync_inflight += 1
        try:
            outcome, text = await self.run(bp, inv)
        finally:
            self._sync_inflight -= 1
        headers = {"X-Amz-Executed-Version": bp.version}
        if outcome.function_error:
            headers["X-Amz-Function-Error"] = outcome.function_error
        if req.log_type == LogType.TAIL:
            headers["X-Amz-Log-Result"] = tail(text)
        return InvokeResult(200, outcome.body, outcome.content_type, headers, inv.request_id)

    # -- InvokeWithResponseStream ---------------------------------------------------------------

    def prepare_stream(self, req: InvokeRequest) -> StreamCall | InvokeResult:
        """Check an InvokeWithResponseStream request and resolve its function: the call to run
        with `run_stream`, or the 204 answer to a DryRun."""
        allowed = (InvocationType.REQUEST_RESPONSE, InvocationType.DRY_RUN)
        accepted = self._accept(req, allowed, "InvokeWithResponseStream")
        if isinstance(accepted, InvokeResult):
            return accepted
        _itype, bp, inv = accepted
        self.concurrency.check(bp.name)  # a throttle is a 429, before the stream starts
        return StreamCall(bp, inv)

    async def run_stream(self, call: StreamCall) -> tuple[Outcome, str]:
        """Run a prepared streaming call (its chunks go to `call.inv.stream`, if set)."""
        self._sync_inflight += 1
        try:
            return await self.run(call.bp, call.inv)
        finally:
            self._sync_inflight -= 1

    def _invocation(
        self,
        rec: FunctionRecord,
        qualifier: str | None,
        payload: bytes,
        req: InvokeRequest,
        client_context: str | None,
    ) -> Invocation:
        return Invocation(
            request_id=request_id(),
            payload=payload,
            deadline_ms=0,  # set when the instance takes it
            invoked_arn=self.functions.arn(rec.name, qualifier),
            trace_id=req.trace_id or _trace_id(),
            client_context=client_context,
        )

    # -- running it ----------------------------------------------------------------------------

    async def run(self, bp: Blueprint, inv: Invocation) -> tuple[Outcome, str]:
        cold = functools.partial(self.concurrency.cold_start, bp.name)  # refuses past the rate
        pooled = self.concurrency.acquire(bp.name)
        try:
            instance = await self.pool.acquire(bp, cold)
            try:
                self.counters.invocations += 1
                inv.deadline_ms = int(time.time() * 1000) + bp.timeout_s * 1000
                outcome = await instance.invoke(inv, bp.timeout_s)
            finally:
                self.pool.release(instance)
        finally:
            self.concurrency.release(bp.name, pooled)
        if outcome.function_error:
            self.counters.errors += 1
        status = {"Sandbox.Timedout": "timeout", "Runtime.ExitError": "error"}.get(
            outcome.error_type or ""
        )
        text = InvocationLog(
            request_id=inv.request_id,
            version=bp.version,
            runtime=bp.runtime.name,
            region=bp.region,
            memory_size=bp.memory_mb,
            output=outcome.output,
            duration_ms=outcome.duration_ms,
            max_memory_mb=outcome.max_memory_mb,
            init_duration_ms=outcome.init_duration_ms,
            platform_lines=outcome.platform_lines,
            init_output=outcome.init_output,
            status=status,
        ).render()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", text.rstrip())
        return outcome, text

    def stats(self) -> dict[str, int]:
        return {
            "invocations": self.counters.invocations,
            "errors": self.counters.errors,
            "async_accepted": self.counters.async_accepted,
            "async_done": self.queue.done,
            "async_queued": self.queue.queued(),
            "async_throttled": self.queue.throttled_waiting(),
            "sync_in_flight": self._sync_inflight,
        }

    async def drain(self, grace_s: float = 30.0) -> None:
        """Stop accepting events, then wait for queued and running ones (up to `grace_s`)."""
        self._closing = True
        deadline = time.monotonic() + grace_s
        await self.queue.drain(grace_s)
        while self._sync_inflight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _check_json(payload: bytes) -> bytes:
    if not payload.strip():
        return b"{}"
    try:
        json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {exc}"
        ) from None
    return payload


def _client_context(raw: str | None) -> str | None:
    if not raw:
        return None
    if len(raw) > MAX_CLIENT_CONTEXT:
        raise InvalidRequestContentException(
            f"Client context must be at most {MAX_CLIENT_CONTEXT} bytes (base64-encoded)."
        )
    try:
        decoded = base64.b64decode(raw, validate=True).decode()
        if not isinstance(json.loads(decoded), dict):
            raise ValueError("not an object")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidRequestContentException(
            "Client context must be a valid Base64-encoded JSON object."
        ) from None
    return decoded


def _trace_id() -> str:
    bits = f"{getrandbits(160):040x}"
    return f"Root=1-{int(time.time()):08x}-{bits[:24]};Parent={bits[24:]};Sampled=0"
