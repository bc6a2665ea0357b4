"""The instance pool: warm instances per blueprint, leased one invocation at a time.

`lease(blueprint)` yields an instance that serves exactly one invocation: the most recently
used idle instance of that blueprint (warm), else a new one (cold). On release a healthy
instance goes back to the idle stack; a dead, failed or retired one is stopped. Idle instances
past `idle_timeout` are reaped by one background task. Stopping is asynchronous and tracked,
so `shutdown` can wait for every sandbox to be gone.

Provisioned instances (`start_pinned`, kept by `worker/provisioned.py`) are leased before
on-demand ones of the same blueprint and are never reaped or retired; `stop_pinned` ends them.

Credentials: each new instance gets execution-role credentials minted for it (the blueprint's
`credentials`), and an environment variable cannot change under a running process — so, as
AWS effectively does, instances are replaced before their credentials run out. Once half the
credentials' lifetime has passed (`renew_at`, one float per instance) the pool hands the
instance no more work: it is stopped when it would be leased, released or reaped, and the
next invocation starts a fresh one. `worker/provisioned.py` replaces provisioned instances a
little ahead of that point, so they never leave a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from lamina.worker.blueprint import Blueprint
from lamina.worker.instance import Instance, State
from lamina.worker.sandbox import Sandbox

log = logging.getLogger("lamina.pool")

NEVER = float("inf")


@dataclass(frozen=True, slots=True)
class PoolStats:
    instances: int
    idle: int
    busy: int
    cold_starts: int


class Pool:
    def __init__(
        self, sandbox_factory: Callable[[Blueprint], Sandbox], idle_timeout: float
    ) -> None:
        self._sandbox_factory = sandbox_factory
        self.idle_timeout = idle_timeout
        self._idle: dict[str, list[Instance]] = {}
        self._all: set[Instance] = set()
        self._retired: set[str] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._reaper: asyncio.Task[None] | None = None
        self.cold_starts = 0
        # provisioned instances (worker/provisioned.py): never reaped or retired, used first
        self._pinned: set[Instance] = set()
        self._pinned_idle: dict[str, list[Instance]] = {}
        # instance -> time.monotonic() after which it gets no more work (credentials half used)
        self._renew_at: dict[Instance, float] = {}

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    @contextlib.asynccontextmanager
    async def lease(
        self, bp: Blueprint, on_cold: Callable[[], None] | None = None
    ) -> AsyncIterator[Instance]:
        """`on_cold` is called before a new instance is started; it may raise to refuse it."""
        inst = await self.acquire(bp, on_cold)
        try:
            yield inst
        finally:
            self.release(inst)

    async def acquire(self, bp: Blueprint, on_cold: Callable[[], None] | None = None) -> Instance:
        """An idle instance of `bp`, else a new one; hand it back with `release`. (`lease`
        wraps the pair; the invoke path calls them directly, which costs less.)"""
        inst = self._take_idle(bp.key)
        if inst is None:
            if on_cold is not None:
                on_cold()
            inst = await self._start_instance(bp)
        return inst

    def _take_idle(self, key: str) -> Instance | None:
        now = time.monotonic()
        renew_at = self._renew_at
        pinned = self._pinned_idle.get(key)
        while pinned:
            inst = pinned.pop()
            if renew_at.get(inst, NEVER) > now and inst.wake():
                return inst
            self._stop(inst)
        stack = self._idle.get(key)
        while stack:
            inst = stack.pop()
            if renew_at.get(inst, NEVER) > now and inst.wake():
                return inst
            self._stop(inst)
        return None

    def renew_at(self, inst: Instance) -> float:
        """When (`time.monotonic()`) `inst` stops getting work: half its credentials' lifetime
        after they were minted; `NEVER` for an instance without credentials."""
        return self._renew_at.get(inst, NEVER)

    def _new_instance(self, bp: Blueprint, initialization_type: str) -> Instance:
        creds = bp.credentials() if bp.credentials is not None else None
        spec = functools.partial(
            bp.sandbox_spec, initialization_type=initialization_type, credentials=creds
        )
        inst = Instance(bp.key, self._sandbox_factory(bp), spec)
        if creds is not None:  # half their lifetime from now
            left = creds.expires.timestamp() - time.time()
            self._renew_at[inst] = time.monotonic() + left / 2
        return inst

    async def _start_instance(self, bp: Blueprint) -> Instance:
        if self._closed.is_set():
            raise RuntimeError("the instance pool is shut down")
        inst = self._new_instance(bp, "on-demand")
        self._all.add(inst)
        self.cold_starts += 1
        try:
            await inst.start()
        except BaseException:  # a platform fault (e.g. no zygote): release what was taken
            self._stop(inst)
            raise
        return inst

    async def start_pinned(self, bp: Blueprint) -> Instance:
        """Start a provisioned instance of `bp` ahead of any invocation (it may have failed
        its init: see `init_failure`); a live one is idle and leased before on-demand ones."""
        if self._closed.is_set():
            raise RuntimeError("the instance pool is shut down")
        inst = self._new_instance(bp, "provisioned-concurrency")
        self._all.add(inst)
        self._pinned.add(inst)
        try:
            await inst.start()
        except BaseException:
            self._stop(inst)
            raise
        if inst.init_failure is None and inst.alive:
            inst.mark_preinitialized()
            self._pinned_idle.setdefault(inst.key, []).append(inst)
        return inst

    def stop_pinned(self, inst: Instance) -> None:
        """No longer provisioned: stopped now, or if it is serving an invocation, it finishes
        it and is kept as an on-demand instance (reaped when idle, like any other)."""
        stack = self._pinned_idle.get(inst.key)
        if stack and inst in stack:
            stack.remove(inst)
        if inst.state is State.BUSY:
            self._pinned.discard(inst)
        else:
            self._stop(inst)

    def release(self, inst: Instance) -> None:
        if inst in self._pinned:
            if inst.alive and inst.state in (State.IDLE, State.READY) and not self._closed.is_set():
                self._pinned_idle.setdefault(inst.key, []).append(inst)
            else:
                self._stop(inst)
            return
        keep = (
            inst.alive
            and inst.state in (State.IDLE, State.READY)
            and inst.key not in self._retired
            and not self._closed.is_set()
            and self._renew_at.get(inst, NEVER) > time.monotonic()
        )
        if keep:
            self._idle.setdefault(inst.key, []).append(inst)
        else:
            self._stop(inst)

    def retire(self, name: str) -> None:
        """Retire every instance of function `name` (after its code or configuration changed)."""
        prefix = f"{name}:"
        for inst in list(self._all):
            if inst.key.startswith(prefix) and inst not in self._pinned:
                self._retired.add(inst.key)
        for key in [k for k in self._idle if k.startswith(prefix)]:
            for inst in self._idle.pop(key):
                self._stop(inst)

    def _stop(self, inst: Instance) -> None:
        if inst not in self._all:
            return
        self._all.discard(inst)
        self._pinned.discard(inst)
        self._renew_at.pop(inst, None)
        task = asyncio.get_running_loop().create_task(inst.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        self._stopping.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("stopping an instance failed", exc_info=task.exception())
        live = {i.key for i in self._all}
        self._retired &= live

    async def _reap_loop(self) -> None:
        interval = max(0.05, min(5.0, self.idle_timeout / 2))
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), interval)
            self.reap()

    def reap(self) -> None:
        now = time.monotonic()
        deadline = now - self.idle_timeout
        renew_at = self._renew_at
        for key, stack in list(self._idle.items()):
            keep = [
                i
                for i in stack
                if i.alive and i.idle_since > deadline and renew_at.get(i, NEVER) > now
            ]
            for inst in stack:
                if inst not in keep:
                    self._stop(inst)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def stats(self) -> PoolStats:
        idle = sum(len(s) for s in self._idle.values())
        idle += sum(len(s) for s in self._pinned_idle.values())
        busy = sum(1 for i in self._all if i.state is State.BUSY)
        return PoolStats(len(self._all), idle, busy, self.cold_starts)

    async def shutdown(self) -> None:
        """Stop reaping, stop every instance and wait until all are gone. Safe to call twice."""
        self._closed.set()
        if self._reaper is not None:
            await self._reaper
            self._reaper = None
        self._idle.clear()
        self._pinned_idle.clear()
        for inst in list(self._all):
            self._stop(inst)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
