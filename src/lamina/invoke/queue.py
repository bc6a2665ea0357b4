"""The durable async queue: `Event` invocations in SQLite until they have run.

    Invoke(Event) -> put(): a row in `async_events`, committed -> 202
    worker: take a due event -> run it -> success: delete (+ OnSuccess destination)
                                       -> function error: attempts += 1, retry after a backoff,
                                          or after the last attempt the OnFailure destination
                                          and the DeadLetterConfig target, then delete
                                       -> throttled: re-queued with backoff, not an attempt
    start -> every event a previous run left (say after `kill -9`) is due again

Durability: a `put` returns only once its row is committed. Commits are grouped: one writer
task takes every insert, update and delete waiting at that moment and commits them in one
transaction, so under load one commit covers many events. A committed event survives the death
of the lamina process (not a power cut: WAL + NORMAL may lose the last commits then).
Completion deletes are grouped the same way and are not waited for, so an event that finished
just before a crash may run again: delivery is at least once, as on AWS.

The writer commits on the event loop, on a connection it keeps. In WAL mode with
`synchronous=NORMAL` a commit appends to the WAL and never fsyncs (~0.1 ms), which is less than
handing it to a thread costs; the one step that does fsync, the checkpoint that copies the WAL
into the database, is switched off on that connection and run by `Checkpointer`, a thread of
its own, every second. (Measured: +20-30% events/s over HTTP against commits in a thread.)

Retry timing follows AWS: about 1 minute before the 2nd attempt and 2 minutes before the 3rd.
The base delay is `RETRY_BASE_S` (60 s), which the environment variable
`LAMINA_ASYNC_RETRY_BASE_S` overrides (tests shorten it). Throttles back off from 1 s, doubling,
up to a cap (the Invoker passes its own: 0.5 s up to 5 s), until the event is older than its
MaximumEventAgeInSeconds; a throttle is not an attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from lamina.control.event_invoke import EventInvokeConfigs
from lamina.control.functions import Functions
from lamina.errors import LambdaError
from lamina.store.schema import async_events
from lamina.types import LATEST, request_id
from lamina.worker.blueprint import Blueprint
from lamina.worker.instance import Outcome
from lamina.worker.runtime_api import Invocation

_DELETE = async_events.delete().where(async_events.c.request_id == sa.bindparam("rid"))
RETRY_BASE_S = 60.0

log = logging.getLogger("lamina.invoke.queue")

Run = Callable[[Blueprint, Invocation], Awaitable[tuple[Outcome, str]]]


def retry_base_s() -> float:
    """The delay before the 2nd attempt (twice that before the 3rd)."""
    raw = os.environ.get("LAMINA_ASYNC_RETRY_BASE_S")
    try:
        return float(raw) if raw else RETRY_BASE_S
    except ValueError:
        return RETRY_BASE_S


@dataclass(slots=True)
class QueuedEvent:
    request_id: str
    function: str
    qualifier: str | None  # as invoked: the ARN the function sees carries it
    version: str  # the version routing picked when the event was accepted
    payload: bytes
    trace_id: str | None
    client_context: str | None
    attempts: int = 0
    throttles: int = 0
    next_attempt_at: float = 0.0
    enqueued_at: float = 0.0

    def row(self) -> dict[str, Any]:
        """As a row of `async_events` (dataclasses.asdict, without its deep copy: flat)."""
        return {f: getattr(self, f) for f in _EVENT_FIELDS}


_EVENT_FIELDS = tuple(f.name for f in fields(QueuedEvent))
_Op = tuple[str, QueuedEvent, "asyncio.Future[None] | None"]


class EventQueue:
    """The queue and its workers. `run` runs one invocation (the Invoker's `run`); exceptions
    of the types in `throttled` mean "not now" and re-queue the event without an attempt."""

    def __init__(
        self,
        engine: sa.Engine,
        functions: Functions,
        configs: EventInvokeConfigs,
        run: Run,
        concurrency: int,
        throttled: tuple[type[BaseException], ...] = (),
        throttle_backoff: tuple[float, float] = (1.0, 300.0),
    ) -> None:
        self.engine = engine
        self.functions = functions
        self.configs = configs
        self.run = run
        self.concurrency = concurrency
        self.throttled = throttled
        self.throttle_backoff = throttle_backoff
        self._throttled: set[str] = set()  # events waiting again after a throttle
        self.retry_base_s = retry_base_s()
        self.accepted = 0
        self.done = 0
        self._ready: asyncio.Queue[QueuedEvent | None] = asyncio.Queue()
        self._later: dict[str, asyncio.TimerHandle] = {}
        self._ops: list[_Op] = []
        self._op_added = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._conn: sa.Connection | None = None  # the writer's, kept: no checkout per commit
        self._checkpointer = Checkpointer(engine)
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self._writer_closing = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer and workers; events left by a previous run become due."""
        loop = asyncio.get_running_loop()
        left = self._load()
        now = time.time()
        for ev in left:
            self._schedule(ev, max(0.0, ev.next_attempt_at - now))
        if left:
            log.info("async queue: %d events left by a previous run are queued again", len(left))
        self._writer = loop.create_task(self._write_loop())
        self._workers = [loop.create_task(self._work()) for _ in range(self.concurrency)]

    def queued(self) -> int:
        return self._ready.qsize() + len(self._later)

    def throttled_waiting(self) -> int:
        return len(self._throttled)

    async def drain(self, grace_s: float) -> None:
        """Run what is due (up to `grace_s`), then stop. Events waiting for a retry, and any
        not run in time, stay in the database for the next start."""
        self._closing = True
        for handle in self._later.values():
            handle.cancel()
        self._later.clear()
        for _ in self._workers:
            self._ready.put_nowait(None)  # after every due event: workers stop when they reach it
        if self._workers:
            _done, pending = await asyncio.wait(self._workers, timeout=grace_s)
            for w in pending:
                w.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
        left = 0
        while not self._ready.empty():
            left += self._ready.get_nowait() is not None
        if left > 0:
            log.warning(
                "%d queued events were not run before shutdown (they run at next start)",
                left,
            )
        self._writer_closing = True
        self._op_added.set()
        if self._writer is not None:
            await self._writer
        self._disconnect()
        await asyncio.to_thread(self._checkpointer.stop)

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- accepting -------------------------------------------------------------------------------

    async def put(self, ev: QueuedEvent, *, internal: bool = False) -> None:
        """Commit the event; it runs once due. Returns after the commit. Once draining, only
        `internal` events (destination records) are taken: they run at the next start."""
        if self._closing and not internal:
            raise RuntimeError("the async queue is closed")
        now = time.time()
        ev.enqueued_at = ev.enqueued_at or now
        ev.next_attempt_at = ev.next_attempt_at or now
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._submit("insert", ev, done)
        await done
        self.accepted += 1
        self._schedule(ev, max(0.0, ev.next_attempt_at - time.time()))

    def _schedule(self, ev: QueuedEvent, delay: float) -> None:
        if self._closing:
            return
        if delay <= 0:
            self._ready.put_nowait(ev)
            return
        loop = asyncio.get_running_loop()
        self._later[ev.request_id] = loop.call_later(delay, self._due, ev)

    def _due(self, ev: QueuedEvent) -> None:
        self._later.pop(ev.request_id, None)
        if not self._closing:
            self._ready.put_nowait(ev)

    # -- running ---------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            ev = await self._ready.get()
            if ev is None:
                return
            try:
                await self._attempt(ev)
            except Exception:  # a platform fault must not kill the worker
                log.exception("async invocation %s of %s failed", ev.request_id, ev.function)

    async def _attempt(self, ev: QueuedEvent) -> None:
        cfg = self.configs.effective(ev.function, ev.qualifier)
        if time.time() - ev.enqueued_at > cfg.max_age_s:
            await self._failed(ev, cfg.on_failure, None, None, "EventAgeExceeded")
            return
        try:
            rec, _q = self.functions.resolve(ev.function, ev.version)
        except LambdaError:
            log.warning(
                "async invocation %s: %s:%s no longer exists; the event is dropped",
                ev.request_id,
                ev.function,
                ev.version,
            )
            self._finish(ev)
            return
        bp = self.functions.blueprint(rec)
        inv = Invocation(
            request_id=ev.request_id,
            payload=ev.payload,
            deadline_ms=0,
            invoked_arn=self.functions.arn(ev.function, ev.qualifier),
            trace_id=ev.trace_id or "",
            client_context=ev.client_context,
        )
        outcome: Outcome | None
        try:
            outcome, _text = await self.run(bp, inv)
        except self.throttled:
            ev.throttles += 1
            base, cap = self.throttle_backoff
            self._throttled.add(ev.request_id)
            self._retry_later(ev, min(base * 2 ** (ev.throttles - 1), cap))
            return
        except Exception:
            log.exception("async invocation %s of %s failed in lamina", ev.request_id, ev.function)
            outcome = None
        self._throttled.discard(ev.request_id)
        ev.attempts += 1
        if outcome is not None and not outcome.function_error:
            if cfg.on_success:
                record = _record(self.functions, ev, bp, outcome, "Success")
                await self._send(cfg.on_success, record)
            self._finish(ev)
            return
        if ev.attempts <= cfg.max_retries:
            self._retry_later(ev, self.retry_base_s * ev.attempts)
            return
        dlq = (rec.config.get("DeadLetterConfig") or {}).get("TargetArn")
        await self._failed(ev, cfg.on_failure, bp, outcome, "RetriesExhausted", dlq)

    async def _failed(
        self,
        ev: QueuedEvent,
        on_failure: str | None,
        bp: Blueprint | None,
        outcome: Outcome | None,
        condition: str,
        dlq: str | None = None,
    ) -> None:
        log.info(
            "async invocation %s of %s failed (%s after %d attempts)",
            ev.request_id,
            ev.function,
            condition,
            ev.attempts,
        )
        if on_failure:
            await self._send(on_failure, _record(self.functions, ev, bp, outcome, condition))
        if dlq:
            await self._send(dlq, ev.payload)
        self._finish(ev)

    async def _send(self, arn: str, payload: bytes) -> None:
        """Queue `payload` for the destination function `arn` (durably, before the source
        event is deleted)."""
        try:
            rec, q = self.functions.resolve(arn, route=True)
        except LambdaError as exc:
            log.warning("destination %s: %s; the record is dropped", arn, exc)
            return
        await self.put(
            QueuedEvent(
                request_id=_new_id(),
                function=rec.name,
                qualifier=q,
                version=rec.version,
                payload=payload,
                trace_id=None,
                client_context=None,
            ),
            internal=True,
        )

    def _retry_later(self, ev: QueuedEvent, delay: float) -> None:
        ev.next_attempt_at = time.time() + delay
        self._submit("update", ev, None)
        self._schedule(ev, delay)

    def _finish(self, ev: QueuedEvent) -> None:
        self.done += 1
        self._submit("delete", ev, None)

    # -- the database ----------------------------------------------------------------------------

    def _submit(self, kind: str, ev: QueuedEvent, done: asyncio.Future[None] | None) -> None:
        self._ops.append((kind, ev, done))
        self._op_added.set()

    async def _write_loop(self) -> None:
        while True:
            await self._op_added.wait()
            self._op_added.clear()
            ops, self._ops = self._ops, []
            if not ops:
                if self._writer_closing:
                    return
                continue
            try:
                self._write(ops)
            except Exception as exc:
                log.exception("async queue: %d writes failed", len(ops))
                for _kind, _ev, done in ops:
                    if done is not None and not done.done():
                        done.set_exception(exc)
            else:
                for _kind, _ev, done in ops:
                    if done is not None and not done.done():
                        done.set_result(None)
            self._op_added.set()  # look again: more may have come while writing

    def _write(self, ops: list[_Op]) -> None:
        """`ops` in one transaction (on the event loop: see the module's docstring)."""
        if self._conn is None:
            self._conn = self.engine.connect()
            if self.engine.dialect.name == "sqlite":
                self._conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")  # Checkpointer's job
                self._conn.commit()
                self._checkpointer.start()
        conn = self._conn
        try:
            with conn.begin():
                self._apply(conn, ops)
        except sa.exc.DBAPIError:
            self._disconnect()  # a broken connection is not reused
            raise

    def _apply(self, conn: sa.Connection, ops: list[_Op]) -> None:
        i = 0
        while i < len(ops):
            kind = ops[i][0]
            j = i
            while j < len(ops) and ops[j][0] == kind:
                j += 1
            run = [ev for _k, ev, _d in ops[i:j]]
            if kind == "insert":
                conn.execute(async_events.insert(), [ev.row() for ev in run])
            elif kind == "delete":
                conn.execute(_DELETE, [{"rid": ev.request_id} for ev in run])
            else:
                for ev in run:
                    conn.execute(
                        async_events.update()
                        .where(async_events.c.request_id == ev.request_id)
                        .values(
                            attempts=ev.attempts,
                            throttles=ev.throttles,
                            next_attempt_at=ev.next_attempt_at,
                        )
                    )
            i = j

    def _load(self) -> list[QueuedEvent]:
        query = sa.select(async_events).order_by(async_events.c.enqueued_at)
        with self.engine.connect() as conn:
            return [QueuedEvent(**dict(row)) for row in conn.execute(query).mappings()]


def _new_id() -> str:
    return request_id()


def _record(
    functions: Functions,
    ev: QueuedEvent,
    bp: Blueprint | None,
    outcome: Outcome | None,
    condition: str,
) -> bytes:
    """The destination record AWS sends (Success, RetriesExhausted, EventAgeExceeded)."""
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        "requestContext": {
            "requestId": ev.request_id,
            "functionArn": functions.arn(ev.function, ev.qualifier or LATEST),
            "condition": condition,
            "approximateInvokeCount": ev.attempts,
        },
        "requestPayload": _decoded(ev.payload),
    }
    if bp is not None:
        context: dict[str, Any] = {"statusCode": 200, "executedVersion": bp.version}
        if outcome is None:
            context["functionError"] = "Unhandled"
            record["responseContext"] = context
            record["responsePayload"] = {
                "errorMessage": "lamina could not run the function",
                "errorType": "ServiceException",
            }
        else:
            if outcome.function_error:
                context["functionError"] = outcome.function_error
            record["responseContext"] = context
            record["responsePayload"] = _decoded(outcome.body)
    return json.dumps(record).encode()


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


class Checkpointer:
    """Copies the WAL into the database file every `interval` seconds, from its own thread
    and connection (a PASSIVE checkpoint never blocks the writer)."""

    def __init__(self, engine: sa.Engine, interval: float = 1.0) -> None:
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="lamina-queue-checkpoint", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.wait(self.interval):
                try:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                    conn.commit()
                except sa.exc.DBAPIError as exc:  # busy or locked: the next round tries again
                    log.debug("async queue: checkpoint skipped: %s", exc)
                    conn.rollback()
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            conn.commit()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
