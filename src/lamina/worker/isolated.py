"""The confined sandbox backend: every instance forked from a zygote into its own namespaces,
cgroup, network namespace, root file system and uid, under a seccomp filter.

`IsolationHost` owns what instances share: the zygotes (one per interpreter), the cgroup
hierarchy, the network-namespace pools and the uid range. `IsolationHost.probe()` checks the
host first and names exactly what is missing; lamina refuses to start on such a host unless it
was told `--isolation process`.

Per instance (`IsolatedSandbox`), in order:
    prepare: a network namespace from the pool; the Runtime API socket at 127.0.0.1:9001 in it
    start:   a uid; a cgroup with the memory/CPU/pids limits; the zygote forks the instance
    pause/resume: freeze and thaw the cgroup while the instance is idle
    stop:    kill everything in the cgroup, remove it, return the namespace and the uid
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field

from lamina.worker import cgroups
from lamina.worker.blanks import Blank, BlankPool
from lamina.worker.netns import NetworkHost
from lamina.worker.netns_pool import NetnsPool
from lamina.worker.sandbox import LogPipe, SandboxSpec, SandboxStats
from lamina.worker.zygote import Zygotes

RUNTIME_API_PORT = 9001
UID_BASE, UID_COUNT = 20000, 10000
PIDS_MAX = 1024  # AWS's per-environment process/thread limit
STOP_TIMEOUT_S = 5.0

log = logging.getLogger("lamina.sandbox")


class IsolationUnavailable(RuntimeError):
    """The host cannot give instances the isolation lamina promises; the message says why."""


@dataclass
class IsolationHost:
    cgroups: cgroups.CgroupHost
    network: NetworkHost
    zygotes: Zygotes = field(default_factory=Zygotes)
    pools: dict[str, NetnsPool] = field(default_factory=dict)
    blanks: BlankPool | None = None
    _free_uids: list[int] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def probe(cls) -> IsolationHost:
        """Check every ingredient; raise IsolationUnavailable listing what is missing."""
        missing: list[str] = []
        if os.geteuid() != 0:
            missing.append("lamina is not running as root (namespaces, cgroups and mounts need it)")
        for ns in ("mnt", "pid", "ipc", "uts", "net"):
            if not os.path.exists(f"/proc/self/ns/{ns}"):
                missing.append(f"the kernel has no {ns} namespaces (/proc/self/ns/{ns})")
        if "Seccomp:" not in _read("/proc/self/status"):
            missing.append("the kernel has no seccomp (no Seccomp: line in /proc/self/status)")
        if shutil.which("ip") is None:
            missing.append("the `ip` command (iproute2) is not installed")
        host: cgroups.CgroupHost | None = None
        try:
            host = cgroups.detect()
        except cgroups.CgroupUnavailable as exc:
            missing.append(str(exc))
        if not missing and not _can_unshare():
            missing.append("creating mount/PID/IPC/UTS/network namespaces failed (unshare)")
        if missing or host is None:
            raise IsolationUnavailable("; ".join(missing))
        return cls(cgroups=host, network=NetworkHost())

    def start(self, blanks: int = 4, idle_timeout: float = 300.0) -> None:
        """Ready the host; keep `blanks` half-started sandboxes per interpreter in use."""
        self.cgroups.sweep_stale()
        NetnsPool.sweep_stale()
        self.network.setup()
        self._free_uids = list(range(UID_BASE + UID_COUNT - 1, UID_BASE - 1, -1))
        self.pools = {
            "egress": NetnsPool(self.network, "egress", target_size=8),
            "none": NetnsPool(self.network, "none", target_size=2),
        }
        self.blanks = BlankPool(self, RUNTIME_API_PORT, blanks, idle_timeout)

    @property
    def endpoint_address(self) -> str:
        """The host address every instance reaches lamina (and the host) at."""
        return self.network.endpoint_address

    def uid(self) -> int:
        if not self._free_uids:
            raise IsolationUnavailable("every sandbox uid is in use")
        return self._free_uids.pop()

    def release_uid(self, uid: int) -> None:
        self._free_uids.append(uid)

    def name(self) -> str:
        return f"i{next(self._names)}"

    def summary(self) -> str:
        egress = "egress to the host" + (" and beyond" if self.network.egress_beyond_host else "")
        return (
            f"zygote-forked sandboxes: mount/PID/IPC/UTS/network namespaces, cgroup "
            f"v{self.cgroups.version} (memory, CPU, pids, freezer), read-only root, own uid, "
            f"no capabilities, no_new_privs, seccomp; network: {egress}"
        )

    def describe(self) -> dict[str, object]:
        return {
            "cgroup_version": self.cgroups.version,
            "egress_beyond_host": self.network.egress_beyond_host,
            "zygotes": {
                z.interpreter: {"restarts": z.restarts, "python": z.python, "immortal": z.immortal}
                for z in self.zygotes.all()
            },
            "blanks": {
                "ready": self.blanks.ready() if self.blanks else 0,
                "taken": self.blanks.taken if self.blanks else 0,
            },
        }

    async def close(self) -> None:
        if self.blanks is not None:
            await self.blanks.close()
        await self.zygotes.close()
        for pool in self.pools.values():
            await asyncio.to_thread(pool.close)
        await asyncio.to_thread(self.network.teardown)
        await asyncio.to_thread(self.cgroups.close)


class IsolatedSandbox:
    confined = True

    def __init__(
        self, host: IsolationHost, network: str = "egress", interpreter: str | None = None
    ) -> None:
        self.host = host
        self.network = network if network in host.pools else "egress"
        self.interpreter = interpreter  # whose zygote forks it; lets it start from a blank
        self._blank: Blank | None = None
        self.pid = 0
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.name = host.name()
        self._netns: object | None = None
        self._cgroup: cgroups.InstanceCgroup | None = None
        self._uid: int | None = None
        self._log: LogPipe | None = None
        self._frozen = False
        self._peak = 0
        self._oom = False

    async def prepare(self) -> socket.socket | None:
        blanks = self.host.blanks
        if self.network == "egress" and self.interpreter and blanks is not None:
            blank = blanks.take(self.interpreter)
            if blank is not None:
                self._blank, self.name, self.pid = blank, blank.name, blank.pid
                self._netns, self._cgroup = blank.netns, blank.cgroup
                return blank.listener
        pool = self.host.pools[self.network]
        ns = pool.acquire()
        self._netns = ns
        return ns.listen("127.0.0.1", RUNTIME_API_PORT)

    async def start(self, spec: SandboxSpec) -> None:
        assert self._netns is not None
        self._uid = self._blank.uid if self._blank is not None else self.host.uid()
        limits = cgroups.Limits(memory_mb=spec.memory_mb, pids_max=PIDS_MAX)
        if self._cgroup is None:
            self._cgroup = self.host.cgroups.create(self.name, limits)
        else:  # a blank's group: its placeholder limits become the function's
            self._cgroup.set_limits(limits)
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        self._log = LogPipe(read_fd)
        env_r, env_w = os.pipe2(os.O_CLOEXEC)
        try:  # ~5 KB at most (4 KB of user variables): fits the pipe, never blocks
            os.write(env_w, json.dumps(spec.env).encode())
        finally:
            os.close(env_w)
        request = {
            "spec": {
                "task_root": spec.task_root,
                "ephemeral_mb": spec.ephemeral_mb,
                "uid": self._uid,
                "gid": self._uid,
                "hostname": f"sandbox-{self.name}",
                "ro_binds": list(spec.ro_binds),
                "runtime_dir": spec.runtime_dir or None,
                "opt": None,
            },
            "procs": self._cgroup.procs_paths(),
            "netns": self._netns.path,  # type: ignore[attr-defined]
            "exec": spec.exec_argv,
        }
        if self.host.blanks is not None and self.interpreter:
            self.host.blanks.note_ro_binds(self.interpreter, spec.ro_binds)
        if self._blank is not None:
            try:
                self._blank.activate(
                    {"spec": request["spec"], "exec": spec.exec_argv}, [write_fd, env_r]
                )
            finally:
                os.close(write_fd)
                os.close(env_r)
            self._blank.exited.add_done_callback(self._on_exit)
            return
        zygote = self.host.zygotes.get(spec.interpreter or "")
        try:
            self.pid = await zygote.spawn(request, [write_fd, env_r])
        finally:
            os.close(write_fd)
            os.close(env_r)
        zygote.watch(self.pid).add_done_callback(self._on_exit)

    def _on_exit(self, fut: asyncio.Future[int]) -> None:
        if self._cgroup is not None:
            self._peak = max(self._peak, self._cgroup.peak_memory_bytes())
            self._oom = self._oom or self._cgroup.oom_killed()
        if not self.exited.done():
            status = fut.result() if not fut.cancelled() else -9
            if 128 < status <= 128 + 64:  # the instance's init reports a signal as 128 + N
                status = 128 - status
            self.exited.set_result(status)

    def take_output(self) -> bytes:
        return self._log.take() if self._log is not None else b""

    def pause(self) -> None:
        if self._cgroup is not None and not self._frozen and not self.exited.done():
            self._cgroup.freeze(timeout=0)  # the kernel finishes freezing on its own
            self._frozen = True

    def resume(self) -> bool:
        if self._cgroup is None or self.exited.done():
            return False
        if not self._frozen:
            return True
        # A SIGKILL sent while the instance was frozen stays pending until the thaw, and the
        # instance dies just after it: look for one, so such an instance is not handed work.
        dying = any(_kill_pending(pid) for pid in self._cgroup.pids())
        self._cgroup.thaw()
        self._frozen = False
        return not dying

    async def stop(self) -> None:
        cg, self._cgroup = self._cgroup, None
        if cg is not None:
            self._peak = max(self._peak, cg.peak_memory_bytes())
            self._oom = self._oom or cg.oom_killed()
            await asyncio.to_thread(cg.kill)
            if self.pid and not self.exited.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.exited), STOP_TIMEOUT_S)
            await asyncio.to_thread(cg.remove)
        if not self.exited.done():
            self.exited.set_result(-9)
        if self._netns is not None:
            self.host.pools[self.network].release(self._netns)  # type: ignore[arg-type]
            self._netns = None
        if self._uid is not None:
            self.host.release_uid(self._uid)
            self._uid = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stats(self) -> SandboxStats:
        if self._cgroup is not None:
            self._peak = max(self._peak, self._cgroup.peak_memory_bytes())
        return SandboxStats(max_memory_mb=max(1, (self._peak + (1 << 20) - 1) >> 20))

    def oom_killed(self) -> bool:
        if self._cgroup is not None:
            self._oom = self._oom or self._cgroup.oom_killed()
        return self._oom


def _kill_pending(pid: int) -> bool:
    """Whether SIGKILL is pending for `pid` (thread or process-wide)."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & (1 << 8):
            return True
    return False


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _can_unshare() -> bool:
    """Try the namespaces an instance needs, in a throwaway child."""
    try:
        result = subprocess.run(
            ["unshare", "--mount", "--pid", "--ipc", "--uts", "--net", "--fork", "true"],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0
