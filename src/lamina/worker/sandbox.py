"""The sandbox interface, and its first backend: a plain process.

A sandbox runs one instance's runtime program and reports on it. Every backend answers the same
small contract, so the instance code above it never knows which one it has:

- `prepare()` readies what the instance needs before it starts and returns the listening
  socket its Runtime API must be served on (None: lamina picks a loopback port);
- `start(spec)` launches the runtime (`spec.argv`, cwd `spec.cwd`, environment `spec.env`),
  with stdout and stderr merged into one log pipe;
- `exited` is a future that resolves with the exit status (negative: killed by that signal);
- `take_output()` returns what the runtime has written since the last call, reading the pipe
  to its current end first (so output written before a Runtime API reply is never late);
- `stop()` kills everything the sandbox started and waits for it; calling it twice is harmless;
- `pause()` / `resume()` freeze an idle instance and thaw it for its next invocation;
  `resume()` is False when the instance turns out to be dying (it must not be used);
- `stats()` reports the peak memory the instance used; `oom_killed()` whether it was killed for
  exceeding its memory limit.

The Runtime API channel is common to every backend (`runtime_api.py`), so "invoke" lives on
the instance, not here. The process backend gives no isolation: it is what `--isolation
process` means.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from typing import Protocol

MAX_BUFFERED_OUTPUT = 1024 * 1024  # per invocation; older output beyond this is dropped


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """What to run. A plain process runs `argv` in `cwd`; a confined sandbox forks the runtime
    from the zygote of `interpreter` and, for custom runtimes, execs `exec_argv` inside."""

    argv: list[str]
    cwd: str
    env: dict[str, str] = field(repr=False)  # holds the instance's credentials
    memory_mb: int = 128
    ephemeral_mb: int = 512
    interpreter: str | None = None
    exec_argv: list[str] | None = None
    task_root: str = ""  # the code on the host, mounted read-only at /var/task when confined
    ro_binds: tuple[str, ...] = ()  # host paths the runtime needs, visible at the same path
    runtime_dir: str = ""  # the runtime's own packages on the host, at /var/runtime when confined
    network: str = "egress"  # or "none"


@dataclass(frozen=True, slots=True)
class SandboxStats:
    max_memory_mb: int


class Sandbox(Protocol):
    pid: int
    exited: asyncio.Future[int]
    confined: bool  # True: the runtime sees its code at /var/task in its own root

    async def prepare(self) -> socket.socket | None: ...
    async def start(self, spec: SandboxSpec) -> None: ...
    def take_output(self) -> bytes: ...
    def pause(self) -> None: ...
    def resume(self) -> bool: ...
    async def stop(self) -> None: ...
    def stats(self) -> SandboxStats: ...
    def oom_killed(self) -> bool: ...


class LogPipe:
    """The read end of an instance's stdout+stderr pipe, drained by the event loop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._out = bytearray()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        while self.fd >= 0:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                asyncio.get_running_loop().remove_reader(self.fd)
                return
            self._out += chunk
            if len(self._out) > MAX_BUFFERED_OUTPUT:
                del self._out[: len(self._out) - MAX_BUFFERED_OUTPUT]

    def take(self) -> bytes:
        """Everything written so far, reading the pipe to its current end first."""
        self._read()
        out = bytes(self._out)
        self._out.clear()
        return out

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


def read_peak_kb(pid: int) -> int:
    """VmHWM of a live process, in KiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass(slots=True)
class ProcessSandbox:
    """A runtime as a child process in its own session (so its whole group can be killed)."""

    pid: int = 0
    exited: asyncio.Future[int] = field(init=False)
    confined: bool = False
    _proc: subprocess.Popen[bytes] | None = None
    _log: LogPipe | None = None
    _pidfd: int = -1
    _peak_kb: int = 0

    def __post_init__(self) -> None:
        self.exited = asyncio.get_running_loop().create_future()

    async def prepare(self) -> socket.socket | None:
        return None

    def pause(self) -> None:
        """Plain processes are not frozen (there is no cgroup to freeze)."""

    def resume(self) -> bool:
        """See pause()."""
        return not self.exited.done()

    def oom_killed(self) -> bool:
        return False  # no memory limit is enforced on a plain process

    async def start(self, spec: SandboxSpec) -> None:
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        try:
            # Popen (vfork + exec) takes about a millisecond; asyncio's subprocess adds a watcher.
            self._proc = subprocess.Popen(  # noqa: ASYNC220
                spec.argv,
                cwd=spec.cwd,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.pid = self._proc.pid
        self._log = LogPipe(read_fd)
        self._pidfd = os.pidfd_open(self.pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._on_exit)

    def take_output(self) -> bytes:
        return self._log.take() if self._log is not None else b""

    def _on_exit(self) -> None:
        assert self._proc is not None
        self._peak_kb = max(self._peak_kb, read_peak_kb(self.pid))
        code = self._proc.poll()
        if code is None:
            return
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        if not self.exited.done():
            self.exited.set_result(code)

    async def stop(self) -> None:
        if self._proc is None:
            return
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            await asyncio.shield(self.exited)
        if self._log is not None:
            self._log.close()
        self._proc = None

    def stats(self) -> SandboxStats:
        if not self.exited.done():
            self._peak_kb = max(self._peak_kb, read_peak_kb(self.pid))
        return SandboxStats(max_memory_mb=max(1, (self._peak_kb + 1023) // 1024))
