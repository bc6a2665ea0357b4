"""Blank instances: sandboxes half-started ahead of need, so a cold start skips that half.

A cold start of a confined instance forks from the zygote, attaches the child to its cgroups,
enters its network namespace, unshares its mount/IPC/UTS namespaces and forks the runtime
(the first child stays as the instance's init) before the runtime confines itself and runs.
None of that first half depends on the function, and on cgroup v1
the attach has a latency tail of tens of milliseconds (a write to `cgroup.procs` waits for an
RCU grace period). So for each interpreter that has started an instance, lamina keeps a few
*blanks*: instances that did the first half and wait on a socket of their own. A cold start
takes one (`take`), sets its cgroup limits to the function's, sends it the function
(`activate`), and a background task makes a replacement.

A blank holds a cgroup (named as the instance it will become, `i…`, with placeholder limits
until activated), a network namespace of the default `egress` kind with the Runtime API socket
already listening in it, the uid of the instance it will become, and two processes: its init,
already running as that uid, and its runtime-to-be, still root until it has its function and
confines itself (that root process is how a blank's group is told from an instance's).
Functions without network take the ordinary path. A blank whose zygote died is discarded, and
blanks go away with the instances when lamina is idle: an interpreter whose last cold start is
`idle_timeout` old keeps none.

Nothing on the cold path takes the cgroup mutex (no mkdir, attach or rename): that lock is
where refills and concurrent cold starts would otherwise wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lamina.worker import cgroups

if TYPE_CHECKING:
    from lamina.worker.isolated import IsolationHost
    from lamina.worker.netns import Netns

BLANKS_PER_INTERPRETER = 4
REFILL_DELAY_S = 0.005
PLACEHOLDER = cgroups.Limits(memory_mb=128, pids_max=1024)
_HEADER = struct.Struct(">I")

log = logging.getLogger("lamina.sandbox")


@dataclass(slots=True)
class Blank:
    name: str
    pid: int
    uid: int  # the instance's uid: its init already runs as it
    cgroup: cgroups.InstanceCgroup
    netns: Netns
    listener: socket.socket  # the Runtime API socket, listening inside `netns`
    control: socket.socket  # lamina's end of the socket the blank waits on
    exited: asyncio.Future[int]  # resolved by the zygote when the process ends

    def activate(self, request: dict[str, Any], fds: list[int]) -> None:
        """Hand the blank its function: `request` holds "spec" and "exec", `fds` the log pipe's
        write end and the environment pipe's read end (the caller closes its copies)."""
        data = json.dumps(request).encode()
        frame = _HEADER.pack(len(data)) + data
        packed = struct.pack(f"{len(fds)}i", *fds)
        # A blank is blocked reading this socket; a frame of a few KB fits its buffer at once.
        self.control.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, packed)])
        self.control.close()


class BlankPool:
    """A few blanks per interpreter, made in the background after each use."""

    def __init__(
        self,
        host: IsolationHost,
        port: int,
        per_interpreter: int = BLANKS_PER_INTERPRETER,
        idle_timeout: float = 300.0,
    ) -> None:
        self.host = host
        self.port = port  # where the Runtime API listens inside every sandbox
        self.per_interpreter = per_interpreter
        self.idle_timeout = idle_timeout
        self._ready: dict[str, deque[Blank]] = {}
        self._refilling: dict[str, asyncio.Task[None]] = {}
        self._reapers: dict[str, asyncio.TimerHandle] = {}
        self._discarding: set[asyncio.Task[None]] = set()
        self._closed = False
        self.taken = 0
        self.made = 0
        self._last_take = 0.0  # any interpreter: refills wait for a pause in cold starts
        self._last_used: dict[str, float] = {}
        # The read-only binds of the runtime each interpreter last served: sent with the next
        # blank request so the zygote plans them once, not every blank after activation.
        self._ro_binds: dict[str, list[str]] = {}

    def note_ro_binds(self, interpreter: str, ro_binds: tuple[str, ...]) -> None:
        if ro_binds:
            self._ro_binds[interpreter] = list(ro_binds)

    def take(self, interpreter: str) -> Blank | None:
        """A live blank for `interpreter`, or None (the caller starts an instance the long
        way); either way a refill is scheduled."""
        ready = self._ready.setdefault(interpreter, deque())
        blank = None
        while ready:
            candidate = ready.popleft()
            if candidate.exited.done():
                self._discard_later(candidate)
                continue
            blank = candidate
            break
        self._last_take = self._last_used[interpreter] = time.monotonic()
        self._schedule_refill(interpreter)
        if blank is not None:
            self.taken += 1
        return blank

    def ready(self) -> int:
        return sum(len(q) for q in self._ready.values())

    def _schedule_refill(self, interpreter: str) -> None:
        if self._closed or self.per_interpreter <= 0:
            return
        task = self._refilling.get(interpreter)
        if task is None or task.done():
            self._refilling[interpreter] = asyncio.get_running_loop().create_task(
                self._refill(interpreter), name=f"lamina-blanks-{interpreter}"
            )

    async def _refill(self, interpreter: str) -> None:
        ready = self._ready.setdefault(interpreter, deque())
        while not self._closed and len(ready) < self.per_interpreter:
            # The cold start that took a blank is still running (confine, runtime, first
            # invoke), and in a burst more follow: making replacements meanwhile would only
            # compete with them for the CPU. Refill once cold starts pause.
            wait = REFILL_DELAY_S - (time.monotonic() - self._last_take)
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                blank = await self._make(interpreter)
            except Exception as exc:  # the cold path still works without blanks
                log.warning("could not make a blank instance for %s: %s", interpreter, exc)
                return
            if self._closed:
                await self._discard(blank)
                return
            ready.append(blank)
        self._schedule_reap(interpreter)

    def _schedule_reap(self, interpreter: str) -> None:
        if interpreter not in self._reapers and not self._closed:
            loop = asyncio.get_running_loop()
            self._reapers[interpreter] = loop.call_later(self.idle_timeout, self._reap, interpreter)

    def _reap(self, interpreter: str) -> None:
        """Scale to zero: blanks of an interpreter with no cold start for `idle_timeout`."""
        self._reapers.pop(interpreter, None)
        idle = time.monotonic() - self._last_used.get(interpreter, 0.0)
        if idle < self.idle_timeout:
            loop = asyncio.get_running_loop()
            self._reapers[interpreter] = loop.call_later(
                self.idle_timeout - idle, self._reap, interpreter
            )
            return
        ready = self._ready.pop(interpreter, deque())
        for blank in ready:
            self._discard_later(blank)

    async def _make(self, interpreter: str) -> Blank:
        host = self.host
        name = host.name()  # the instance it will become
        pool = host.pools["egress"]
        uid = host.uid()  # init takes it at once: the instance's from the start
        try:
            ns = pool.acquire()
        except BaseException:
            host.release_uid(uid)
            raise
        cg: cgroups.InstanceCgroup | None = None
        listener: socket.socket | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener = ns.listen("127.0.0.1", self.port)
            cg = await asyncio.to_thread(host.cgroups.create, name, PLACEHOLDER)
            request = {"op": "blank", "procs": cg.procs_paths(), "netns": ns.path, "uid": uid}
            if interpreter in self._ro_binds:
                request["ro_binds"] = self._ro_binds[interpreter]
            zygote = host.zygotes.get(interpreter)
            pid = await zygote.spawn(request, [theirs.fileno()])
            # Watched at once: should the zygote die before the blank is ready, this resolves
            # and the blank is discarded, never handed a function nobody could see end.
            exited = zygote.watch(pid)
            theirs.close()
            ours.setblocking(False)
            # The zygote answers once it has forked; the blank says "r" once it is in its
            # cgroups and namespaces with its init forked (EOF: it failed, and its error is in
            # lamina's log).
            if await asyncio.get_running_loop().sock_recv(ours, 1) != b"r":
                raise RuntimeError(f"blank {name} exited while setting up")
            ours.setblocking(True)
        except BaseException:
            ours.close()
            if listener is not None:
                listener.close()
            if cg is not None:
                await asyncio.to_thread(_remove, cg)
            pool.release(ns)
            host.release_uid(uid)
            raise
        finally:
            theirs.close()
        self.made += 1
        return Blank(name, pid, uid, cg, ns, listener, ours, exited)

    def _discard_later(self, blank: Blank) -> None:
        task = asyncio.get_running_loop().create_task(self._discard(blank))
        self._discarding.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._discarding.discard)

    async def _discard(self, blank: Blank) -> None:
        blank.control.close()  # a live blank reads EOF and exits
        blank.listener.close()
        await asyncio.to_thread(_remove, blank.cgroup)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(blank.exited), 5.0)
        self.host.pools["egress"].release(blank.netns)
        self.host.release_uid(blank.uid)

    async def close(self) -> None:
        self._closed = True
        for handle in self._reapers.values():
            handle.cancel()
        for task in self._refilling.values():
            task.cancel()
        for task in self._refilling.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        blanks = [b for q in self._ready.values() for b in q]
        self._ready.clear()
        await asyncio.gather(*(self._discard(b) for b in blanks), return_exceptions=True)
        await asyncio.gather(*self._discarding, return_exceptions=True)


def _remove(cg: cgroups.InstanceCgroup) -> None:
    cg.kill()
    cg.remove()
