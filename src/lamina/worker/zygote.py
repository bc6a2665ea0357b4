"""lamina's side of a zygote (see `zygote_main.py` for the process itself).

One zygote per interpreter. `spawn` asks it to fork a confined instance and returns the
instance's pid; `watch(pid)` is a future resolved with that instance's exit status when the
zygote reaps it. If a zygote dies, every instance it started is reported as killed (their
cgroups are torn down by their sandboxes) and the next spawn starts a new zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

ZYGOTE_MAIN = Path(__file__).with_name("zygote_main.py")
# The zygote's whole environment. Never lamina's own: every instance is forked from the zygote,
# and a process can read the environment it was exec'd with (/proc/self/environ) and its heap,
# so lamina's root key or master key there would be readable by every function. (Instances
# get their own environment through a pipe, see zygote_main.py.) Small also means cheap: the
# instance replaces it at start, touching every page that holds it.
ZYGOTE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
START_TIMEOUT_S = 15.0
_HEADER = struct.Struct(">I")

log = logging.getLogger("lamina.zygote")


class ZygoteError(RuntimeError):
    pass


class Zygote:
    def __init__(self, interpreter: str) -> None:
        self.interpreter = interpreter
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._ready: asyncio.Future[None] | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self.restarts = 0
        self.python = ""  # the interpreter's version, once it is ready
        self.immortal = 0  # objects it made immortal (Python 3.12+): shared after every fork

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._sock is not None

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = subprocess.Popen(  # noqa: ASYNC220 - a vfork+exec, ~1 ms, once per zygote
                [self.interpreter, "-I", "-S", str(ZYGOTE_MAIN), str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # an instance's fds 1 and 2 are its log pipe
                start_new_session=True,
                env=ZYGOTE_ENV,
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._buf.clear()
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT_S)
        except (TimeoutError, ZygoteError) as exc:
            self._died(f"zygote for {self.interpreter} did not start: {exc}")
            raise ZygoteError(f"zygote for {self.interpreter} did not start: {exc}") from None

    async def spawn(self, request: dict[str, Any], fds: list[int]) -> int:
        """Fork an instance; its pid (as lamina sees it). `fds` travel with the request."""
        async with self._lock:
            if not self.alive:
                if self._proc is not None:
                    self.restarts += 1
                await self._start()
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        rid = next(self._ids)
        fut: asyncio.Future[int] = loop.create_future()
        self._pending[rid] = fut
        data = json.dumps({"op": "spawn", **request, "id": rid}).encode()
        frame = _HEADER.pack(len(data)) + data
        packed = struct.pack(f"{len(fds)}i", *fds)
        try:
            sent = self._sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, packed)])
        except BlockingIOError:
            sent = 0
            self._sock.setblocking(True)
            try:
                sent = self._sock.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, packed)])
            finally:
                self._sock.setblocking(False)
        if sent < len(frame):
            await loop.sock_sendall(self._sock, frame[sent:])
        pid = await fut
        return pid

    def watch(self, pid: int) -> asyncio.Future[int]:
        """Resolves with how `pid` (a process this zygote forked) ended; at once with -9 if
        the zygote is gone, as `_died` resolves those it knew of (nothing would report it)."""
        fut = self._exits.get(pid)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            if self._sock is None:
                fut.set_result(-9)
            else:
                self._exits[pid] = fut
        return fut

    def _on_readable(self) -> None:
        assert self._sock is not None
        try:
            chunk = self._sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._died(f"zygote socket failed: {exc}")
            return
        if not chunk:
            self._died("zygote exited")
            return
        self._buf += chunk
        while len(self._buf) >= 4:
            (size,) = _HEADER.unpack_from(self._buf)
            if len(self._buf) < 4 + size:
                break
            message = json.loads(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            self._dispatch(message)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ready":
            self.python = ".".join(str(part) for part in msg.get("python") or ())
            self.immortal = int(msg.get("immortal") or 0)
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif op == "spawned":
            fut = self._pending.pop(msg["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(int(msg["pid"]))
        elif op == "failed":
            fut = self._pending.pop(msg["id"], None)
            if fut is not None and not fut.done():
                fut.set_exception(ZygoteError(str(msg.get("error"))))
        elif op == "exit":
            self.watch(int(msg["pid"]))
            fut = self._exits.pop(int(msg["pid"]))
            if not fut.done():
                fut.set_result(int(msg["status"]))

    def _died(self, reason: str) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
        log.warning("%s (%s)", reason, self.interpreter)
        error = ZygoteError(reason)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for exit_fut in self._exits.values():  # orphaned instances: their sandboxes kill them
            if not exit_fut.done():
                exit_fut.set_result(-9)
        self._exits.clear()

    async def close(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()  # the zygote sees EOF and exits
            self._sock = None
        try:
            await asyncio.to_thread(proc.wait, 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


class Zygotes:
    """One zygote per interpreter, started on first use."""

    def __init__(self) -> None:
        self._by_interpreter: dict[str, Zygote] = {}

    def get(self, interpreter: str) -> Zygote:
        z = self._by_interpreter.get(interpreter)
        if z is None:
            z = self._by_interpreter[interpreter] = Zygote(interpreter)
        return z

    def all(self) -> list[Zygote]:
        return list(self._by_interpreter.values())

    async def close(self) -> None:
        await asyncio.gather(*(z.close() for z in self._by_interpreter.values()))
