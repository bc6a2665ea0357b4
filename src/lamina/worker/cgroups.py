"""One cgroup per function instance: a memory limit, CPU in proportion to it, a pids cap, a freezer.

lamina (root) creates an instance's group before the instance's process exists. That process
joins it itself, first thing, by writing its pid (or "0", meaning "me") to every path in
`procs_paths()`, so every descendant is born inside. The kernel checks the credentials the
file was opened with, so a child may open them while root and write after dropping to its
unprivileged uid or pivoting into its own root. Each lamina process keeps its groups
under one run directory named after it (`run-<pid>-<start time>`), so the groups a crashed
lamina left behind are found and swept by the next one (`CgroupHost.sweep_stale`):

    cgroup v1, one hierarchy per controller (co-mounted controllers share a directory):
        /sys/fs/cgroup/{memory,cpu,pids,freezer}/lamina/run-<pid>-<start>/<name>
    cgroup v2, under the group lamina runs in (the one delegated to it):
        <mount>/<lamina's group>/lamina/run-<pid>-<start>/<name>

v1 groups hang off each hierarchy's root, as Docker's `/docker` does, so a next lamina finds
them whichever group it was started in. v2 allows controllers only in groups delegated to
lamina, and a group that enables controllers for children may hold no processes itself: if
lamina is alone in its group it moves itself into the leaf `<group>/lamina-server`.

What is written (minimal writes: the v1 CFS period is left at its 100000 us default):

    memory  v1 memory.limit_in_bytes and memory.memsw.limit_in_bytes, equal (so no swap) and
            in the order that keeps limit <= memsw (limit first when lowering, else memsw)
            v2 memory.max, memory.swap.max = 0
    cpu     quota = period * memory_mb / 1769 (1 vCPU at 1,769 MB, as AWS), at least 1000 us
            v1 cpu.cfs_quota_us, v2 cpu.max
    pids    pids.max (threads count too), 1024 by default as AWS
    freeze  v1 freezer.state (FREEZING -> FROZEN happens asynchronously), v2 cgroup.freeze

An OOM kill is told by the `oom_kill` counter (v1 memory.oom_control, v2 memory.events), not by
memory.failcnt, which also counts reclaims that succeeded. Hot paths use bare os.open/os.write:
create + limits + attach + remove costs well under a millisecond.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("lamina.cgroups")

CPU_PERIOD_US = 100_000
MB_PER_VCPU = 1769
MIN_CPU_QUOTA_US = 1000
DEFAULT_PIDS_MAX = 1024
V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer")
V2_CONTROLLERS = ("memory", "pids", "cpu")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")
_RUN = re.compile(r"run-(\d+)(?:-(\d+))?")


class CgroupUnavailable(RuntimeError):
    """Neither cgroup layout is usable on this host; the message says what is missing."""


class CgroupError(RuntimeError):
    """A cgroup operation failed (the message names the group and the OS error)."""


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int
    pids_max: int = DEFAULT_PIDS_MAX

    def __post_init__(self) -> None:
        if self.memory_mb < 1 or self.pids_max < 1:
            raise ValueError(f"bad cgroup limits: {self}")

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @property
    def cpu_quota_us(self) -> int:
        return max(MIN_CPU_QUOTA_US, CPU_PERIOD_US * self.memory_mb // MB_PER_VCPU)


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        os.close(fd)


def _keyed(path: str) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" lines) as a dict."""
    return {k: int(v) for k, _, v in (ln.partition(" ") for ln in _read(path).splitlines())}


def _wait(done: Callable[[], bool], timeout: float) -> bool:
    """Poll `done` (spinning ~1 ms, then sleeping up to 5 ms a time) until true or `timeout`."""
    start = time.monotonic()
    delay = 0.0
    while not done():
        elapsed = time.monotonic() - start
        if elapsed > timeout:
            return False
        if elapsed > 0.001:
            delay = min(0.005, max(0.0002, delay * 2))
            time.sleep(delay)
    return True


def _start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live process, None if it is gone."""
    try:
        stat = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


class InstanceCgroup:
    """One instance's group: in every v1 hierarchy lamina uses, or one v2 directory."""

    def __init__(self, host: CgroupHost, run: str, name: str, *, found: bool = False) -> None:
        self.name = name
        self.limits: Limits | None = None  # what set_limits() last wrote
        self.version = host.version
        self.paths = {
            c: f"{b}/{run}/{name}" for c, b in zip(V1_CONTROLLERS, host.roles, strict=True)
        }
        self._mem, self._cpu, self._pids, self._frz = self.paths.values()
        self.dirs = list(dict.fromkeys(self.paths.values()))  # one per hierarchy
        self._memsw = host.swap_files
        self._has_kill = host.has_kill
        self._maybe_frozen = found  # a group found on disk may have been left frozen

    def procs_paths(self) -> list[str]:
        return [f"{d}/cgroup.procs" for d in self.dirs]

    def set_limits(self, limits: Limits) -> None:
        """Write `limits`, only what changed, in an order the kernel accepts."""
        old = self.limits
        try:
            if old is None or limits.memory_mb != old.memory_mb:
                shrinking = old is None or limits.memory_mb < old.memory_mb
                self._write_memory(limits.memory_bytes, shrinking)
            if old is None or limits.cpu_quota_us != old.cpu_quota_us:
                if self.version == 1:
                    _write(f"{self._cpu}/cpu.cfs_quota_us", str(limits.cpu_quota_us))
                else:
                    _write(f"{self._cpu}/cpu.max", f"{limits.cpu_quota_us} {CPU_PERIOD_US}")
            if old is None or limits.pids_max != old.pids_max:
                _write(f"{self._pids}/pids.max", str(limits.pids_max))
        except OSError as e:
            raise CgroupError(f"cannot set {limits} on cgroup {self.name!r}: {e}") from e
        self.limits = limits

    def _write_memory(self, limit: int, shrinking: bool) -> None:
        if self.version == 2:
            _write(f"{self._mem}/memory.max", str(limit))
            if self._memsw and self.limits is None:
                _write(f"{self._mem}/memory.swap.max", "0")
            return
        # v1 requires limit <= memsw limit at every step: lower the limit first, raise memsw first.
        files = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"][: 1 + self._memsw]
        for f in files if shrinking else reversed(files):
            _write(f"{self._mem}/{f}", str(limit))

    def freeze(self, timeout: float = 1.0) -> bool:
        """Stop every process; True once the kernel reports the group frozen within `timeout`."""
        self._maybe_frozen = True
        if self.version == 1:
            state = f"{self._frz}/freezer.state"
            _write(state, "FROZEN")
            return _wait(lambda: _read(state).startswith("FROZEN"), timeout)
        _write(f"{self._frz}/cgroup.freeze", "1")
        return _wait(lambda: "frozen 1" in _read(f"{self._frz}/cgroup.events"), timeout)

    def thaw(self) -> None:
        """Let the processes run again (effective at once: the write wakes every task)."""
        if self.version == 1:
            _write(f"{self._frz}/freezer.state", "THAWED")
        else:
            _write(f"{self._frz}/cgroup.freeze", "0")
        self._maybe_frozen = False

    def peak_memory_bytes(self) -> int:
        if self.version == 1:
            return int(_read(f"{self._mem}/memory.max_usage_in_bytes"))
        try:
            return int(_read(f"{self._mem}/memory.peak"))
        except FileNotFoundError:  # kernels before 5.19: the current usage is the best we have
            return int(_read(f"{self._mem}/memory.current"))

    def oom_killed(self) -> bool:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return _keyed(f"{self._mem}/{name}").get("oom_kill", 0) > 0

    def pids(self) -> list[int]:
        """Every process in the group, in any of its hierarchies."""
        found: set[int] = set()
        for path in self.procs_paths():
            with contextlib.suppress(FileNotFoundError):
                found.update(int(p) for p in _read(path).split())
        return sorted(found)

    def kill(self, timeout: float = 2.0) -> None:
        """SIGKILL every process and wait until the group is empty; it accepts no new ones."""
        with contextlib.suppress(FileNotFoundError):
            _write(f"{self._pids}/pids.max", "0")  # nothing forks while we kill
        if self._has_kill:
            with contextlib.suppress(FileNotFoundError):
                _write(f"{self._frz}/cgroup.kill", "1")
        if self._maybe_frozen:
            with contextlib.suppress(FileNotFoundError):
                self.thaw()  # a frozen task cannot die
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if _wait(lambda: not self.pids(), 0.05):
                return
            if time.monotonic() > deadline:
                raise CgroupError(f"cgroup {self.name!r} still holds {pids} after SIGKILL")

    def remove(self, timeout: float = 1.0) -> None:
        """rmdir the group everywhere, retrying while exiting processes linger; idempotent."""
        deadline = time.monotonic() + timeout
        for d in self.dirs:
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise CgroupError(f"cannot remove cgroup {d}: {e}") from e
                    time.sleep(0.001)

    def destroy(self) -> None:
        """kill() then remove(): what an instance's end needs."""
        self.kill()
        self.remove()


class CgroupHost:
    """The usable cgroup layout of this host and this lamina process's run directory."""

    def __init__(self, version: int, bases: dict[str, str]) -> None:
        self.version = version
        st = _start_time(os.getpid())
        self.run = f"run-{os.getpid()}-{st}"
        # base dir (…/lamina) holding the memory, cpu, pids and freezer groups, in that order
        self.roles = tuple(bases[c] for c in V1_CONTROLLERS)
        self.bases = list(dict.fromkeys(self.roles))
        self.run_dirs = [f"{b}/{self.run}" for b in self.bases]
        self.swap_files = False  # v1 memory.memsw.*, v2 memory.swap.max (swap accounting on)
        self.has_kill = False  # v2 cgroup.kill (5.14+)

    def create(self, name: str, limits: Limits) -> InstanceCgroup:
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad cgroup name {name!r}")
        cg = InstanceCgroup(self, self.run, name)
        made: list[str] = []
        try:
            for d in cg.dirs:
                os.mkdir(d)
                made.append(d)
            cg.set_limits(limits)
        except BaseException as e:
            for d in reversed(made):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            if isinstance(e, OSError):
                raise CgroupError(f"cannot create cgroup {name!r}: {e}") from e
            raise
        return cg

    def _clear(self, run: str) -> int:
        """Kill and remove every group under `run`, then the run directory; the groups removed."""
        names: set[str] = set()
        for base in self.bases:
            with contextlib.suppress(FileNotFoundError):
                names.update(e.name for e in os.scandir(f"{base}/{run}") if e.is_dir())
        removed = 0
        for name in sorted(names):
            try:
                InstanceCgroup(self, run, name, found=True).destroy()
                removed += 1
            except CgroupError as e:
                log.warning("cannot sweep cgroup: %s", e)
        for base in self.bases:
            try:
                os.rmdir(f"{base}/{run}")
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("cannot remove cgroup run directory %s/%s: %s", base, run, e)
        return removed

    def sweep_stale(self) -> int:
        """Kill and remove what lamina runs whose process is dead left behind; groups removed."""
        removed = 0
        for run in {n for b in self.bases if os.path.isdir(b) for n in os.listdir(b)}:
            if (m := _RUN.fullmatch(run)) is None:
                continue
            started = _start_time(int(m[1]))
            if started is None or (m[2] is not None and started != int(m[2])):
                log.info("sweeping cgroups of dead lamina run %s", run)
                removed += self._clear(run)
        return removed

    def close(self) -> None:
        """Kill and remove this run's remaining groups and its run directory (at shutdown)."""
        self._clear(self.run)

    def _prepare(self) -> None:
        """Make the run directories and learn which optional files this kernel has."""
        for d in self.run_dirs:
            os.makedirs(d, exist_ok=True)
            if self.version == 2:
                _enable(os.path.dirname(d))
                _enable(d)
        mem = f"{self.roles[0]}/{self.run}"
        swap = "memory.memsw.limit_in_bytes" if self.version == 1 else "memory.swap.max"
        self.swap_files = os.path.exists(f"{mem}/{swap}")
        self.has_kill = os.path.exists(f"{mem}/cgroup.kill")


def _enable(group: str) -> None:
    """Enable the v2 controllers lamina needs for the children of `group`."""
    path = f"{group}/cgroup.subtree_control"
    if not set(V2_CONTROLLERS) <= set(_read(path).split()):
        _write(path, " ".join(f"+{c}" for c in V2_CONTROLLERS))


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(mount point, mounted root, fs type, super options) of every cgroup mount."""
    found = []
    for line in _read(mountinfo).splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _src, opts) = left.split(), right.split()[:3]
        if fstype in ("cgroup", "cgroup2"):
            point = re.sub(r"\\(\d{3})", lambda m: chr(int(m[1], 8)), fields[4])
            found.append((point, fields[3], fstype, set(opts.split(","))))
    return found


def _v2(mounts: list[tuple[str, str, str, set[str]]], self_cgroup: str) -> CgroupHost | str:
    v2 = sorted((m for m in mounts if m[2] == "cgroup2"), key=lambda m: len(m[0]))
    if not v2:
        return "cgroup v2 is not mounted"
    point, root, _, _ = v2[0]
    own = next((ln[3:] for ln in _read(self_cgroup).splitlines() if ln.startswith("0::")), "/")
    rel = os.path.relpath(own, root) if own.startswith(root) else "."
    group = os.path.normpath(f"{point}/{rel}")
    try:
        offered = _read(f"{group}/cgroup.controllers").split()
    except OSError as e:
        return f"cgroup v2 group {group} is unreadable: {e}"
    missing = [c for c in V2_CONTROLLERS if c not in offered]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        return f"cgroup v2 has no {names} controller at {group} (it has: {' '.join(offered)})"
    try:
        try:
            _enable(group)
        except OSError as e:
            procs = _read(f"{group}/cgroup.procs").split()
            if e.errno != errno.EBUSY or procs != [str(os.getpid())]:
                raise
            # v2 forbids processes in a group that enables controllers: move lamina to a leaf.
            os.makedirs(f"{group}/lamina-server", exist_ok=True)
            _write(f"{group}/lamina-server/cgroup.procs", "0")
            _enable(group)
    except OSError as e:
        return (
            f"cgroup v2 cannot enable {V2_CONTROLLERS} in {group}/cgroup.subtree_control ({e}):"
            " run lamina in a cgroup of its own with delegation (systemd Delegate=yes)"
        )
    return CgroupHost(2, dict.fromkeys(V1_CONTROLLERS, f"{group}/lamina"))


def _v1(mounts: list[tuple[str, str, str, set[str]]]) -> CgroupHost | str:
    points = {c: m[0] for m in mounts if m[2] == "cgroup" for c in m[3] if c in V1_CONTROLLERS}
    top = os.path.dirname(next(iter(points.values()), "/sys/fs/cgroup/x"))
    missing = [c for c in V1_CONTROLLERS if c not in points]
    if missing:
        return ", ".join(f"cgroup v1 controller '{c}' is not mounted at {top}/{c}" for c in missing)
    return CgroupHost(1, {c: f"{p}/lamina" for c, p in points.items()})


def detect(
    *, mountinfo: str = "/proc/self/mountinfo", self_cgroup: str = "/proc/self/cgroup"
) -> CgroupHost:
    """The usable layout (v2 preferred, then v1), its run directory made and proven by a probe.

    Raises CgroupUnavailable with a message saying exactly what is missing.
    """
    mounts = _mounts(mountinfo)
    reasons: list[str] = []
    layouts: list[Callable[[], CgroupHost | str]] = [
        lambda: _v2(mounts, self_cgroup),
        lambda: _v1(mounts),
    ]
    for layout in layouts:  # v2 first; v1 is not touched when v2 works
        host = layout()
        if isinstance(host, str):
            reasons.append(host)
            continue
        try:  # prove the layout end to end: every limit file written, then removed
            host._prepare()
            host.create(f"probe-{os.getpid()}", Limits(128)).remove()
        except (OSError, CgroupError) as e:
            host.close()
            reasons.append(f"cgroup v{host.version} is unusable: {e}")
            continue
        return host
    raise CgroupUnavailable(" and ".join(reversed(reasons)))
