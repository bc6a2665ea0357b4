"""One function instance: a sandbox, its Runtime API, and the lifecycle that ties them.

The lifecycle is one table of allowed transitions (`TRANSITIONS`) moved only by `_transition`:

    starting -> ready -> busy -> idle -> busy -> ... -> stopping -> dead

An instance serves one invocation at a time. `invoke` returns an `Outcome` for every path:
a reply from the runtime, an init failure, a timeout (the instance is killed) or a crash.
"""

from __future__ import annotations

import asyncio
import enum
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from lamina.observe.logs import timestamp
from lamina.worker.runtime_api import Invocation, RuntimeApi, RuntimeReply, describe
from lamina.worker.sandbox import Sandbox, SandboxSpec

# Builds an instance's SandboxSpec once its Runtime API address ("host:port") is known; the flag
# says whether the sandbox confines it (code at /var/task) or runs it as a plain process.
SpecFactory = Callable[[str, bool], SandboxSpec]

INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase of on-demand instances
FREEZE_AFTER_S = 0.05  # an idle instance is frozen once it has been idle this long


class State(enum.StrEnum):
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    IDLE = "idle"
    STOPPING = "stopping"
    DEAD = "dead"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STARTING: frozenset({State.READY, State.STOPPING, State.DEAD}),
    State.READY: frozenset({State.BUSY, State.STOPPING, State.DEAD}),
    State.BUSY: frozenset({State.IDLE, State.STOPPING, State.DEAD}),
    State.IDLE: frozenset({State.BUSY, State.STOPPING, State.DEAD}),
    State.STOPPING: frozenset({State.DEAD}),
    State.DEAD: frozenset(),
}


class InvalidTransition(RuntimeError):
    pass


@dataclass(slots=True)
class Outcome:
    """The result of one invocation on one instance."""

    body: bytes
    content_type: str
    function_error: str | None  # "Unhandled" when the function failed
    output: bytes  # what the runtime printed (init output first on a cold start)
    duration_ms: float
    init_duration_ms: float | None
    max_memory_mb: int
    platform_lines: list[str]  # lines lamina adds before END (timeout, crash)
    error_type: str | None = None
    init_output: bytes = b""


def _error(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-code)
        name = {"kill": "killed", "segv": "segmentation fault", "abrt": "aborted"}.get(name, name)
        return f"signal: {name}"
    return f"exit status {code}"


class Instance:
    def __init__(self, key: str, sandbox: Sandbox, spec_factory: SpecFactory) -> None:
        self.key = key
        self.sandbox = sandbox
        self._spec_factory = spec_factory
        self.state = State.STARTING
        self.api: RuntimeApi | None = None
        self.init_duration_ms: float | None = None
        self.init_failure: Outcome | None = None
        self.idle_since = time.monotonic()
        self.invocations = 0
        self._cold = True
        self._reply: asyncio.Future[RuntimeReply] | None = None
        self._init_output = b""
        self._freeze: asyncio.TimerHandle | None = None

    def _transition(self, new: State) -> None:
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(f"instance {self.key}: {self.state} -> {new}")
        self.state = new

    @property
    def alive(self) -> bool:
        return (
            self.state in (State.READY, State.IDLE, State.BUSY) and not self.sandbox.exited.done()
        )

    async def start(self) -> None:
        """Launch the runtime and wait until it asks for its first event (or fails)."""
        began = time.perf_counter()
        self.api = RuntimeApi()
        address = await self.api.listen(await self.sandbox.prepare())
        spec = self._spec_factory(address, self.sandbox.confined)
        try:
            await self.sandbox.start(spec)
        except OSError as exc:  # e.g. the bootstrap is missing or not executable
            self.init_duration_ms = (time.perf_counter() - began) * 1000
            self._fail_init("Runtime.InvalidEntrypoint", f"fork/exec {spec.argv[0]}: {exc}")
            return
        exited = self.sandbox.exited
        exited.add_done_callback(self._on_exit)
        waits: set[asyncio.Future[object]] = {self.api.ready, exited}  # type: ignore[arg-type]
        done, _ = await asyncio.wait(
            waits, timeout=INIT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        self.init_duration_ms = (time.perf_counter() - began) * 1000
        self._init_output = self.sandbox.take_output()
        if self.api.ready in done and self.api.ready.result() is None:
            self._transition(State.READY)
            return
        if self.api.ready in done:
            reply = self.api.ready.result()
            assert reply is not None
            self._fail_init_reply(reply)
        elif exited in done:
            self._fail_init(
                "Runtime.ExitError", f"Runtime exited with error: {_exit_reason(exited.result())}"
            )
        else:
            self._fail_init(
                "Sandbox.Timedout", f"Init phase timed out after {INIT_TIMEOUT_S:.2f} seconds"
            )

    def _fail_init_reply(self, reply: RuntimeReply) -> None:
        self.init_failure = Outcome(
            body=reply.body,
            content_type="application/json",
            function_error="Unhandled",
            output=b"",
            duration_ms=0.0,
            init_duration_ms=self.init_duration_ms,
            max_memory_mb=self.sandbox.stats().max_memory_mb,
            platform_lines=[],
            error_type=reply.error_type,
        )

    def _fail_init(self, error_type: str, message: str) -> None:
        self._fail_init_reply(
            RuntimeReply("init_error", _error(error_type, message), error_type=error_type)
        )
        assert self.init_failure is not None
        self.init_failure.platform_lines.append(f"Error: {message}\n{error_type}")

    async def invoke(self, inv: Invocation, timeout_s: float) -> Outcome:
        if self.init_failure is not None:
            outcome = self.init_failure
            outcome.init_output = self._init_output + self.sandbox.take_output()
            outcome.body = outcome.body.replace(
                b'"requestId": ""', f'"requestId": "{inv.request_id}"'.encode()
            )
            return outcome
        assert self.api is not None
        self._transition(State.BUSY)
        self.invocations += 1
        loop = asyncio.get_running_loop()
        init_ms = self.init_duration_ms if self._cold else None
        init_output, self._init_output = self._init_output, b""
        self._cold = False
        began = time.perf_counter()
        fut = self._reply = self.api.start(inv)
        if self.sandbox.exited.done():
            self._on_exit(self.sandbox.exited)
        timer = loop.call_later(timeout_s, self._resolve, fut, RuntimeReply("timeout", b""))
        try:
            reply = await fut
        finally:
            timer.cancel()
            self._reply = None
            self.api.finish()
        duration_ms = (time.perf_counter() - began) * 1000
        output = self.sandbox.take_output()
        lines: list[str] = []
        body, ctype, error_type = reply.body, reply.content_type, reply.error_type
        function_error: str | None = None
        if reply.kind == "timeout":
            lines.append(
                f"{timestamp()} {inv.request_id} Task timed out after {timeout_s:.2f} seconds"
            )
            error_type = "Sandbox.Timedout"
            body = _error(
                error_type,
                f"RequestId: {inv.request_id} Error: Task timed out after {timeout_s:.2f} seconds",
            )
            ctype, function_error = "application/json", "Unhandled"
            duration_ms = timeout_s * 1000
        elif reply.kind == "exit":
            reason = _exit_reason(self.sandbox.exited.result())
            error_type = "Runtime.OutOfMemory" if self.sandbox.oom_killed() else "Runtime.ExitError"
            message = f"RequestId: {inv.request_id} Error: Runtime exited with error: {reason}"
            lines.append(f"{message}\n{error_type}")
            body, ctype, function_error = (
                _error(error_type, message),
                "application/json",
                "Unhandled",
            )
        elif reply.kind in ("error", "init_error"):
            function_error = "Unhandled"
            if error_type is None:
                error_type = describe(reply).get("errorType")
        stats = self.sandbox.stats()
        if self.alive and reply.kind in ("response", "error"):
            self._transition(State.IDLE)
            self.idle_since = time.monotonic()
            # Idle instances are frozen, as Lambda freezes them — after a short grace, so that
            # back-to-back invocations do not pay a freeze and a thaw each (~0.1-0.3 ms).
            self._freeze = loop.call_later(FREEZE_AFTER_S, self._pause_if_idle)
        return Outcome(
            body,
            ctype,
            function_error,
            output,
            duration_ms,
            init_ms,
            stats.max_memory_mb,
            lines,
            error_type,
            init_output,
        )

    def mark_preinitialized(self) -> None:
        """A provisioned instance: its init ran ahead, so no invocation reports it."""
        self._cold = False

    def wake(self) -> bool:
        """Make an idle instance ready for its next invocation (thaw it if it was frozen);
        False if it turned out to be dying, e.g. killed from outside while frozen."""
        if self._freeze is not None:
            self._freeze.cancel()
            self._freeze = None
        return self.sandbox.resume() and self.alive

    def _pause_if_idle(self) -> None:
        self._freeze = None
        if self.state is State.IDLE:
            self.sandbox.pause()

    def _on_exit(self, _exited: asyncio.Future[int]) -> None:
        if self._reply is not None:
            self._resolve(self._reply, RuntimeReply("exit", b""))

    @staticmethod
    def _resolve(fut: asyncio.Future[RuntimeReply], reply: RuntimeReply) -> None:
        if not fut.done():
            fut.set_result(reply)

    async def stop(self) -> None:
        if self.state in (State.STOPPING, State.DEAD):
            return
        self._transition(State.STOPPING)
        if self._freeze is not None:
            self._freeze.cancel()
            self._freeze = None
        if self.api is not None:
            self.api.close()
        await self.sandbox.stop()
        self._transition(State.DEAD)
