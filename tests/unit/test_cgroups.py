"""Per-instance cgroups against the real kernel: real groups, real processes, real limits."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lamina.worker.cgroups import (
    CgroupHost,
    CgroupUnavailable,
    InstanceCgroup,
    Limits,
    detect,
)

if os.geteuid() != 0:
    pytest.skip("cgroup tests need root (they create real cgroups)", allow_module_level=True)

PY = sys.executable
# A child joins its group first thing, as an instance's first process does ("0" means itself).
JOIN = """
import os, sys, time
for p in sys.argv[1:]:
    fd = os.open(p, os.O_WRONLY); os.write(fd, b"0"); os.close(fd)
print("in", flush=True)
"""


@pytest.fixture(scope="module")
def host() -> Iterator[CgroupHost]:
    try:
        h = detect()
    except CgroupUnavailable as e:
        pytest.skip(f"no usable cgroups on this host: {e}")
    yield h
    h.close()
    assert not any(os.path.exists(d) for d in h.run_dirs)


class Group:
    """Makes groups and children for one test, and cleans both up whatever happens."""

    def __init__(self, host: CgroupHost) -> None:
        self.host = host
        self.groups: list[InstanceCgroup] = []
        self.children: list[subprocess.Popen[str]] = []

    def create(self, name: str, limits: Limits) -> InstanceCgroup:
        cg = self.host.create(name, limits)
        self.groups.append(cg)
        return cg

    def run(self, cg: InstanceCgroup, code: str) -> subprocess.Popen[str]:
        """A Python child that joins `cg` by itself, then runs `code`."""
        argv = [PY, "-c", JOIN + code, *cg.procs_paths()]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.children.append(child)
        assert child.stdout is not None
        assert child.stdout.readline() == "in\n"
        return child

    def close(self) -> None:
        for cg in self.groups:
            with contextlib.suppress(Exception):
                cg.destroy()
        for child in self.children:
            child.kill()
            child.wait()
            if child.stdout:
                child.stdout.close()


@pytest.fixture
def g(host: CgroupHost) -> Iterator[Group]:
    group = Group(host)
    yield group
    group.close()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _cpu_seconds(pid: int) -> float:
    fields = _read(f"/proc/{pid}/stat").rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_cpu_follows_memory_as_aws() -> None:
    assert Limits(128).cpu_quota_us == 7235
    assert Limits(1769).cpu_quota_us == 100_000
    assert Limits(3538).cpu_quota_us == 200_000  # 2 vCPUs
    assert Limits(1).cpu_quota_us == 1000  # never a uselessly small quota
    assert Limits(128).pids_max == 1024
    with pytest.raises(ValueError):
        Limits(0)


def test_limits_are_written_and_updated_in_an_order_the_kernel_accepts(g: Group) -> None:
    def check(cg: InstanceCgroup, limits: Limits) -> None:
        mem, cpu, pids = cg.paths["memory"], cg.paths["cpu"], cg.paths["pids"]
        if cg.version == 1:
            assert int(_read(f"{mem}/memory.limit_in_bytes")) == limits.memory_bytes
            if os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):
                assert int(_read(f"{mem}/memory.memsw.limit_in_bytes")) == limits.memory_bytes
            assert _read(f"{cpu}/cpu.cfs_period_us") == "100000"
            assert int(_read(f"{cpu}/cpu.cfs_quota_us")) == limits.cpu_quota_us
        else:
            assert int(_read(f"{mem}/memory.max")) == limits.memory_bytes
            assert _read(f"{cpu}/cpu.max") == f"{limits.cpu_quota_us} 100000"
        assert int(_read(f"{pids}/pids.max")) == limits.pids_max

    for mb in (128, 1769, 3538):
        check(g.create(f"limits-{mb}", Limits(mb)), Limits(mb))
    cg = g.create("limits-update", Limits(128, pids_max=50))
    for limits in (Limits(3538), Limits(256, pids_max=7), Limits(10240)):  # up, down, up
        cg.set_limits(limits)
        check(cg, limits)
    with pytest.raises(ValueError):
        g.create("../escape", Limits(128))


def test_child_joins_through_fds_opened_before_dropping_root(g: Group) -> None:
    cg = g.create("nobody", Limits(128))
    fds = [os.open(p, os.O_WRONLY) for p in cg.procs_paths()]
    try:
        code = (
            "import os, time\n"
            "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            f"for fd in {fds}: os.write(fd, b'0')\n"
            "print(os.getuid(), flush=True)\n"
            "time.sleep(60)\n"
        )
        child = subprocess.Popen([PY, "-c", code], pass_fds=fds, stdout=subprocess.PIPE, text=True)
    finally:
        for fd in fds:
            os.close(fd)
    g.children.append(child)
    assert child.stdout is not None and child.stdout.readline() == "65534\n"
    assert cg.pids() == [child.pid]


def test_memory_hog_is_oom_killed(g: Group) -> None:
    cg = g.create("hog", Limits(128))
    assert not cg.oom_killed()
    child = g.run(cg, 'b = b"x" * (300 << 20)\nprint("survived", flush=True)')
    assert child.wait(timeout=10) == -9
    assert child.stdout is not None and child.stdout.read() == ""
    assert cg.oom_killed()
    assert 0.8 * Limits(128).memory_bytes < cg.peak_memory_bytes() <= Limits(128).memory_bytes


def test_fork_bomb_stops_at_pids_max(g: Group) -> None:
    cg = g.create("forkbomb", Limits(128, pids_max=20))
    bomb = """
kids = fails = 0
for _ in range(60):  # bounded: this test must not endanger the machine
    try:
        pid = os.fork()
    except BlockingIOError:
        fails += 1
        continue
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids += 1
print(kids, fails, flush=True)
time.sleep(30)
"""
    child = g.run(cg, bomb)
    assert child.stdout is not None
    kids, fails = map(int, child.stdout.readline().split())
    assert kids == 19 and fails == 41  # the bomb itself is the twentieth
    assert len(cg.pids()) == 20
    cg.kill()
    assert cg.pids() == []


def test_cpu_spinner_gets_its_share_not_a_core(g: Group) -> None:
    cg = g.create("spinner", Limits(128))
    child = g.run(cg, "while True: pass")
    time.sleep(0.1)
    t0, c0 = time.monotonic(), _cpu_seconds(child.pid)
    time.sleep(1.0)
    share = (_cpu_seconds(child.pid) - c0) / (time.monotonic() - t0)
    print(f"128 MB spinner used {share:.1%} of a core (expected ~7.2%)")
    assert share < 0.25
    assert "nr_throttled 0\n" not in _read(f"{cg.paths['cpu']}/cpu.stat") + "\n"


def test_freeze_stops_progress_and_thaw_resumes(g: Group, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_bytes(b"%10d" % 0)
    cg = g.create("freeze", Limits(128))
    g.run(
        cg,
        f"fd = os.open({str(counter)!r}, os.O_WRONLY)\n"
        "n = 0\n"
        "while True:\n"
        "    n += 1\n"
        "    os.pwrite(fd, b'%10d' % n, 0)\n"
        "    time.sleep(0.01)\n",
    )

    def count() -> int:
        return int(counter.read_bytes())

    deadline = time.monotonic() + 5
    while count() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cg.freeze()
    frozen_at = count()
    time.sleep(0.3)
    assert count() == frozen_at
    cg.thaw()
    time.sleep(0.1)
    assert count() > frozen_at


def test_kill_empties_a_frozen_group(g: Group) -> None:
    cg = g.create("frozen-kill", Limits(128))
    child = g.run(cg, "time.sleep(60)")
    assert cg.freeze()
    cg.kill()
    assert cg.pids() == []
    assert child.wait(timeout=5) == -9


def test_remove_leaves_nothing_and_is_idempotent(host: CgroupHost, g: Group) -> None:
    cg = g.create("removed", Limits(128))
    child = g.run(cg, "time.sleep(60)")
    cg.destroy()
    assert child.wait(timeout=5) == -9
    for run_dir in host.run_dirs:
        assert "removed" not in os.listdir(run_dir)
    cg.remove()
    cg.destroy()


def test_sweep_stale_kills_and_removes_a_dead_runs_groups(host: CgroupHost, g: Group) -> None:
    dead = _dead_pid()
    stale = f"run-{dead}-1"
    live = f"run-1-{_read('/proc/1/stat').rpartition(')')[2].split()[19]}"  # init: alive
    for base in host.bases:
        os.makedirs(f"{base}/{stale}/left-behind")
        os.makedirs(f"{base}/{live}/kept")
    sleeper = subprocess.Popen(["sleep", "60"], text=True)
    g.children.append(sleeper)
    for base in host.bases:
        with open(f"{base}/{stale}/left-behind/cgroup.procs", "w") as f:
            f.write(str(sleeper.pid))
    frz = f"{host.bases[-1]}/{stale}/left-behind"
    with open(f"{frz}/freezer.state" if host.version == 1 else f"{frz}/cgroup.freeze", "w") as f:
        f.write("FROZEN" if host.version == 1 else "1")  # a crash can leave a group frozen
    try:
        assert host.sweep_stale() == 1
        assert sleeper.wait(timeout=5) == -9
        for base in host.bases:
            assert not os.path.exists(f"{base}/{stale}")
            assert os.path.isdir(f"{base}/{live}/kept")  # a live owner's groups stay
    finally:
        for base in host.bases:
            for d in (f"{base}/{live}/kept", f"{base}/{live}"):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(d)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_200_cycles_leave_nothing_behind_and_print_costs(
    host: CgroupHost, g: Group, capsys: pytest.CaptureFixture[str]
) -> None:
    def count_dirs() -> int:
        return sum(len(dirs) for d in host.run_dirs for _, dirs, _ in os.walk(d))

    before = count_dirs()
    costs: dict[str, list[float]] = {
        k: [] for k in ("create", "attach", "freeze", "thaw", "kill", "remove")
    }
    sleeper = ["sleep", "60"]
    for i in range(200):
        child = subprocess.Popen(sleeper)
        t0 = time.perf_counter()
        cg = host.create(f"cycle-{i}", Limits(128))
        t1 = time.perf_counter()
        for path in cg.procs_paths():
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, str(child.pid).encode())
            os.close(fd)
        t2 = time.perf_counter()
        assert cg.freeze()
        t3 = time.perf_counter()
        cg.thaw()
        t4 = time.perf_counter()
        cg.kill()
        t5 = time.perf_counter()
        cg.remove()
        t6 = time.perf_counter()
        assert child.wait(timeout=5) == -9
        for k, a, b in zip(costs, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6), strict=True):
            costs[k].append((b - a) * 1e3)
    assert count_dirs() == before
    with capsys.disabled():
        line = ", ".join(f"{k} {statistics.median(v):.3f}/{max(v):.3f}" for k, v in costs.items())
        print(f"\ncgroup v{host.version} costs, ms median/max over 200: {line}")


def _fake_tree(tmp: Path, v1: list[str], v2: str | None) -> tuple[str, str]:
    lines = [f"3{i} 1 0:9{i} / {tmp}/{c} rw - cgroup cgroup rw,{c}" for i, c in enumerate(v1)]
    for c in v1:
        (tmp / c).mkdir(parents=True)
    if v2 is not None:
        (tmp / "unified").mkdir(parents=True)
        (tmp / "unified" / "cgroup.controllers").write_text(v2 + "\n")
        lines.append(f"50 1 0:99 / {tmp}/unified rw - cgroup2 cgroup2 rw")
    tmp.mkdir(exist_ok=True)
    (tmp / "mountinfo").write_text("\n".join(lines) + "\n")
    (tmp / "cgroup").write_text("0::/\n")
    return str(tmp / "mountinfo"), str(tmp / "cgroup")


def test_detect_says_exactly_what_is_missing(tmp_path: Path) -> None:
    mountinfo, own = _fake_tree(tmp_path / "a", ["memory", "cpu", "freezer"], "memory cpu")
    with pytest.raises(CgroupUnavailable) as e:
        detect(mountinfo=mountinfo, self_cgroup=own)
    t = tmp_path / "a"
    assert str(e.value) == (
        f"cgroup v1 controller 'pids' is not mounted at {t}/pids"
        f" and cgroup v2 has no 'pids' controller at {t}/unified (it has: memory cpu)"
    )
    mountinfo, own = _fake_tree(tmp_path / "b", ["memory", "cpu", "pids", "freezer"], None)
    with pytest.raises(CgroupUnavailable) as e:  # mounted, but the probe group has no files
        detect(mountinfo=mountinfo, self_cgroup=own)
    assert str(e.value).startswith("cgroup v1 is unusable: cannot set Limits(memory_mb=128")
    assert "memory.limit_in_bytes" in str(e.value)
    assert str(e.value).endswith(" and cgroup v2 is not mounted")
    assert os.listdir(tmp_path / "b" / "memory" / "lamina") == []  # the probe cleaned up
