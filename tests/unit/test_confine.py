"""Confinement against the real kernel: a forked grandchild confines itself, then probes.

Each test forks a child that calls `enter_namespaces()` and `confine(spec)` as a zygote's child
would, runs probes inside the sandbox and reports them as JSON over a pipe; the test asserts on
them. The seccomp program is also checked instruction by instruction with a small classic-BPF
interpreter, for every syscall number (that part needs no root).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import selectors
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.worker import confine, seccomp
from lamina.worker.confine import ConfineError, ConfineSpec

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="confinement needs root (mount namespaces, pivot_root, setuid)"
)

UID = GID = 1051
HOSTNAME = "sbx-test"
CONFINE_DIR = os.path.dirname(confine.__file__)
LAMINA_SRC = os.path.dirname(os.path.dirname(CONFINE_DIR))
PY39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"
_libc = ctypes.CDLL(None, use_errno=True)


def make_task_root(parent: Path) -> Path:
    root = parent / "task"
    root.mkdir()
    root.chmod(0o755)  # the bind shows the source dir's own mode at /var/task
    (root / "app.py").write_text("def handler(event, context):\n    return event\n")
    suid = root / "suid-id"  # a setuid-root copy: nosuid and no_new_privs must defeat it
    shutil.copy("/usr/bin/id", suid)
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    return root


@pytest.fixture
def task_root(tmp_path: Path) -> Iterator[Path]:
    root = make_task_root(tmp_path)
    yield root
    (root / "suid-id").unlink()  # leave no setuid-root file behind in the host's /tmp


def make_spec(task_root: Path, **overrides: Any) -> ConfineSpec:
    spec: ConfineSpec = {
        "task_root": str(task_root),
        "ephemeral_mb": 4,
        "uid": UID,
        "gid": GID,
        "hostname": HOSTNAME,
        "ro_binds": sorted({sys.base_prefix, sys.prefix, LAMINA_SRC}),
        "opt": None,
    }
    spec.update(overrides)  # type: ignore[typeddict-item]
    return spec


def run_confined(
    spec: ConfineSpec | confine.Prepared | None,
    probe: Callable[[], Any],
    timeout: float = 60.0,
) -> Any:
    """Fork, enter namespaces, confine with `spec` (None: don't), run `probe`, return its JSON."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # never returns: every path ends in os._exit
        status = 1
        try:
            os.close(r)
            inner = confine.enter_namespaces()
            if inner:  # the intermediate process: wait for the instance, pass its status on
                _, st = os.waitpid(inner, 0)
                status = os.waitstatus_to_exitcode(st) & 0xFF
            else:
                if spec is not None:
                    confine.confine(spec)
                result: Any = {"ok": probe()}
                _write_all(w, json.dumps(result).encode())
                status = 0
        except BaseException as e:
            with contextlib.suppress(BaseException):
                _write_all(w, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
        finally:
            os._exit(status)
    os.close(w)
    data = _read_all(r, pid, timeout)
    _, st = os.waitpid(pid, 0)
    assert data, f"the confined child said nothing (wait status {st:#x})"
    result = json.loads(data)
    if "error" in result:
        raise AssertionError("inside the sandbox: " + result["error"])
    assert os.waitstatus_to_exitcode(st) == 0
    return result["ok"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_all(fd: int, pid: int, timeout: float) -> bytes:
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                os.kill(pid, signal.SIGKILL)
                os.close(fd)
                os.waitpid(pid, 0)
                raise AssertionError("the confined child timed out")
            chunk = os.read(fd, 65536)
            if not chunk:
                os.close(fd)
                return b"".join(chunks)
            chunks.append(chunk)


# --- probes (run inside the sandbox) --------------------------------------------------------


def _read(path: str, mode: str = "r", size: int = -1) -> Any:
    with open(path, mode) as f:
        return f.read(size)


def _write(path: str, data: str, mode: str = "w") -> None:
    with open(path, mode) as f:
        f.write(data)


def _errno_of(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno or -1
    return 0


def _libc_errno(rc: int) -> int:
    return ctypes.get_errno() if rc == -1 else 0


def _status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        pairs = (line.split(":", 1) for line in f)
        return {k: v.strip() for k, v in pairs}


def _fill_tmp() -> int:
    """Write 1 MiB blocks to /tmp until it fails; the errno it fails with."""
    fd = os.open("/tmp/big", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"x" * (1 << 20)
        for _ in range(64):
            os.write(fd, block)
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        os.close(fd)
        os.unlink("/tmp/big")


def _fork_works() -> list[int]:
    child = os.fork()
    if child == 0:
        os._exit(7)
    _, st = os.waitpid(child, 0)
    return [child, os.waitstatus_to_exitcode(st)]


def _thread_works() -> bool:
    seen = []
    t = threading.Thread(target=lambda: seen.append(threading.get_ident()))
    t.start()
    t.join()
    return len(seen) == 1 and seen[0] != threading.get_ident()


def _ptrace_attach() -> int:
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    try:
        return _libc_errno(_libc.ptrace(16, child, 0, 0))  # PTRACE_ATTACH
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def _clone_with(flags: int) -> int:
    rc = _libc.syscall(56, flags | signal.SIGCHLD, 0, 0, 0, 0)
    if rc == 0:  # it worked, and this is the new child: leave at once
        os._exit(0)
    if rc > 0:
        os.waitpid(rc, 0)
        return 0
    return ctypes.get_errno()


def _run(argv: list[str]) -> list[object]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return [done.returncode, done.stdout.strip(), done.stderr.strip()[-300:]]


def _fresh_import() -> dict[str, bool]:
    """Import stdlib modules this interpreter has not loaded yet: its prefix must be bound."""
    out = {}
    for name in ("colorsys", "cmath", "fractions", "netrc"):
        if name not in sys.modules:
            __import__(name)
            out[name] = True
    return out


def probes() -> dict[str, Any]:
    import pwd
    import socket
    import ssl

    status = _status()
    out: dict[str, Any] = {
        "pid": os.getpid(),
        "proc_pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "cwd": os.getcwd(),
        "root": sorted(os.listdir("/")),
        "root_home": sorted(os.listdir("/root")),
        "etc": sorted(os.listdir("/etc")),
        "dev": sorted(os.listdir("/dev")),
        "shadow_exists": os.path.exists("/etc/shadow"),
        "shadow_read": _errno_of(lambda: _read("/etc/shadow")),
        "passwd": _read("/etc/passwd"),
        "resolv": _read("/etc/resolv.conf"),
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "app": _read("/var/task/app.py"),
        "write_var_task": _errno_of(lambda: _write("/var/task/x", "")),
        "write_root": _errno_of(lambda: _write("/x", "")),
        "write_etc": _errno_of(lambda: _write("/etc/x", "")),
        "write_usr": _errno_of(lambda: _write("/usr/x", "")),
        "write_dev": _errno_of(lambda: _write("/dev/x", "")),
        "tmp_small": _errno_of(lambda: _write("/tmp/small", "hello")),
        "tmp_fill": _fill_tmp(),
        "dev_null": _errno_of(lambda: _write("/dev/null", "x")),
        "dev_urandom": len(_read("/dev/urandom", "rb", 16)),
        "proc_self_fd": _errno_of(lambda: os.listdir("/proc/self/fd")),
        "ids": [list(os.getresuid()), list(os.getresgid()), os.getgroups()],
        "status": {k: status.get(k) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")},
        "no_new_privs": status.get("NoNewPrivs"),
        "seccomp": status.get("Seccomp"),
        "hostname": socket.gethostname(),
        "sethostname": _libc_errno(_libc.sethostname(b"evil", 4)),
        "unshare_user": _libc_errno(_libc.unshare(confine.CLONE_NEWUSER)),
        "unshare_mount": _libc_errno(_libc.unshare(confine.CLONE_NEWNS)),
        "clone_newuser": _clone_with(confine.CLONE_NEWUSER),
        "clone_newnet": _clone_with(confine.CLONE_NEWNET),
        "clone3": _libc_errno(_libc.syscall(435, None, 0)),
        "mount": _libc_errno(_libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        "umount": _libc_errno(_libc.umount2(b"/tmp", 2)),
        "chroot": _errno_of(lambda: os.chroot("/tmp")),
        "ptrace_traceme": _libc_errno(_libc.ptrace(0, 0, 0, 0)),
        "ptrace_attach": _ptrace_attach(),
        "keyctl": _libc_errno(_libc.syscall(250, 0, -2, 0)),  # KEYCTL_GET_KEYRING_ID
        "bpf": _libc_errno(_libc.syscall(321, 0, None, 0)),
        "personality_query": _libc.personality(0xFFFFFFFF),
        "personality_no_aslr": _libc_errno(_libc.personality(0x0040000)),
        "io_uring": _libc_errno(_libc.syscall(425, 1, None)),
        "fork": _fork_works(),
        "thread": _thread_works(),
        "setuid_copy": _run(["/var/task/suid-id", "-u"]),
        "fresh_import": _fresh_import(),
        "exec_python": _run(
            [os.path.realpath(sys.executable), "-c", "import json, sys; print(json.__name__)"]
        ),
        "tls_ca_certs": ssl.create_default_context().cert_store_stats()["x509_ca"],
        "mountinfo": _read("/proc/self/mountinfo").splitlines(),
    }
    return out


# --- the sandbox, probed from inside --------------------------------------------------------


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("confinement needs root")
    root = make_task_root(tmp_path_factory.mktemp("confine"))
    try:
        result: dict[str, Any] = run_confined(make_spec(root), probes)
    finally:
        (root / "suid-id").unlink()
    return result


@needs_root
def test_the_instance_is_pid_1_and_sees_only_its_own_processes(probed: dict[str, Any]) -> None:
    assert probed["pid"] == 1
    assert probed["proc_pids"] == [1]
    assert probed["fork"][0] > 1  # its children are numbered in its own namespace too


@needs_root
def test_the_root_is_minimal_and_read_only(probed: dict[str, Any]) -> None:
    assert probed["cwd"] == "/var/task"
    assert {"usr", "etc", "tmp", "proc", "dev", "var", "opt"} <= set(probed["root"])
    top = Path(confine.__file__).resolve().parts[1]  # where lamina's source lies, e.g. "work"
    assert "home" not in probed["root"] or top == "home"
    assert top in probed["root"]  # the source dir the probe bound
    assert probed["root_home"] == [".pyenv"]  # only the bound interpreter prefix
    for key in ("write_var_task", "write_root", "write_etc", "write_usr", "write_dev"):
        assert probed[key] == errno.EROFS, key
    assert probed["app"].startswith("def handler")
    # every mount is nosuid, and everything but /tmp, /dev/shm and /proc is read-only
    for line in probed["mountinfo"]:
        fields = line.split()
        mount_point, options = fields[4], fields[5].split(",")
        assert "nosuid" in options, line
        if mount_point not in ("/tmp", "/dev/shm", "/proc"):
            assert "ro" in options, line


@needs_root
def test_etc_is_minimal_not_the_hosts(probed: dict[str, Any]) -> None:
    assert probed["shadow_exists"] is False
    assert probed["shadow_read"] == errno.ENOENT
    assert "shadow" not in probed["etc"] and "sudoers" not in probed["etc"]
    assert {"passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "localtime"} <= set(
        probed["etc"]
    )
    assert f"sbx_user1051:x:{UID}:{GID}:" in probed["passwd"]
    assert probed["user"] == "sbx_user1051"
    assert probed["resolv"] == Path("/etc/resolv.conf").read_text()
    assert probed["tls_ca_certs"] > 0  # /etc/ssl is there: TLS clients can verify servers


@needs_root
def test_tmp_is_private_writable_and_sized(probed: dict[str, Any]) -> None:
    assert probed["tmp_small"] == 0
    assert probed["tmp_fill"] == errno.ENOSPC  # 4 MiB, not the host's disk
    assert any(" /tmp " in line and "size=4096k" in line for line in probed["mountinfo"])


@needs_root
def test_dev_is_minimal(probed: dict[str, Any]) -> None:
    assert set(probed["dev"]) == {
        "null", "zero", "full", "random", "urandom", "tty", "shm",
        "fd", "stdin", "stdout", "stderr",
    }  # fmt: skip
    assert probed["dev_null"] == 0
    assert probed["dev_urandom"] == 16
    assert probed["proc_self_fd"] == 0  # dumpable again after the uid change


@needs_root
def test_unprivileged_with_no_capabilities(probed: dict[str, Any]) -> None:
    assert probed["ids"] == [[UID] * 3, [GID] * 3, []]
    assert probed["status"] == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), "0000000000000000"
    )
    assert probed["no_new_privs"] == "1"
    assert probed["hostname"] == HOSTNAME
    assert probed["sethostname"] == errno.EPERM
    rc, out, _ = probed["setuid_copy"]
    assert (rc, out) == (0, str(UID))  # a setuid-root binary does not make it root


@needs_root
def test_seccomp_denies_what_it_should(probed: dict[str, Any]) -> None:
    assert probed["seccomp"] == "2"
    for key in (
        "unshare_user", "unshare_mount", "clone_newuser", "clone_newnet", "mount", "umount",
        "chroot", "ptrace_traceme", "ptrace_attach", "keyctl", "bpf", "personality_no_aslr",
        "io_uring",
    ):  # fmt: skip
        assert probed[key] == errno.EPERM, key
    assert probed["clone3"] == errno.ENOSYS
    assert probed["personality_query"] == 0


@needs_root
def test_fork_threads_and_python_keep_working(probed: dict[str, Any]) -> None:
    assert probed["fork"][1] == 7
    assert probed["thread"] is True
    assert probed["fresh_import"] and all(probed["fresh_import"].values())
    assert probed["exec_python"] == [0, "json", ""]


# --- other behaviour ------------------------------------------------------------------------


@needs_root
def in_a_templated_zygote(
    spec: ConfineSpec, probe: Callable[[], Any], template_binds: list[str] | None = None
) -> dict[str, Any]:
    """Fork a stand-in zygote that builds its root template (confine.build_template, in a mount
    namespace of its own, for `template_binds`, by default the spec's), then confine an
    instance from it and run `probe` there."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # never returns
        status = 1
        try:
            os.close(r)
            confine.build_template(spec["ro_binds"] if template_binds is None else template_binds)
            prepared = confine.prepare(spec)
            got = {"from_template": prepared.from_template, "probe": run_confined(prepared, probe)}
            _write_all(w, json.dumps({"ok": got}).encode())
            status = 0
        except BaseException as e:
            with contextlib.suppress(BaseException):
                _write_all(w, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode())
        finally:
            os._exit(status)
    os.close(w)
    data = _read_all(r, pid, 60.0)
    os.waitpid(pid, 0)
    result = json.loads(data)
    assert "error" not in result, result.get("error")
    out: dict[str, Any] = result["ok"]
    return out


def test_a_root_from_the_zygote_template_is_the_same_root(
    probed: dict[str, Any], tmp_path: Path
) -> None:
    root = make_task_root(tmp_path)
    try:
        got = in_a_templated_zygote(make_spec(root), probes)
        other = in_a_templated_zygote(
            make_spec(root, ro_binds=[sys.base_prefix]),
            lambda: {"passwd": _read("/etc/passwd"), "root": sorted(os.listdir("/"))},
            template_binds=make_spec(root)["ro_binds"],
        )
    finally:
        (root / "suid-id").unlink()
    assert got["from_template"]
    templated = got["probe"]
    for key, value in probed.items():  # every probe, containment included, answers the same
        if key != "mountinfo":
            assert templated[key] == value, key
    # The instance's own mounts sit on the template's: its /etc/passwd is one of them.
    assert any(line.split()[4] == "/etc/passwd" for line in templated["mountinfo"])
    # An instance whose binds differ from the template's builds its whole root, the same way.
    assert not other["from_template"]
    assert other["probe"]["passwd"] == probed["passwd"]
    assert "var" in other["probe"]["root"] and "work" not in other["probe"]["root"]


def test_python39_zygote_can_confine_itself(task_root: Path) -> None:
    """The module imports and works, unchanged, under the oldest Python runtime."""
    if not os.path.exists(PY39):
        pytest.skip(f"{PY39} is not installed")
    prefix = os.path.dirname(os.path.dirname(PY39))
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {CONFINE_DIR!r})
        import confine  # as the zygote imports it
        spec = {{"task_root": {str(task_root)!r}, "ephemeral_mb": 4, "uid": {UID},
                 "gid": {GID}, "hostname": "py39", "ro_binds": [{prefix!r}]}}
        prepared = confine.prepare(spec)
        inner = confine.enter_namespaces()
        if inner:
            os._exit(os.waitstatus_to_exitcode(os.waitpid(inner, 0)[1]))
        confine.confine(prepared)
        fresh = "json" not in sys.modules
        import json  # after pivot_root: only there through the bound prefix
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print(json.dumps({{
            "version": list(sys.version_info[:2]), "pid": os.getpid(), "uid": os.getuid(),
            "fresh_json": fresh, "cwd": os.getcwd(), "hostname": os.uname().nodename,
            "cap_eff": status["CapEff"].strip(), "seccomp": status["Seccomp"].strip(),
        }}))
        """
    )
    done = subprocess.run(
        [PY39, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "version": [3, 9],
        "pid": 1,
        "uid": UID,
        "fresh_json": True,
        "cwd": "/var/task",
        "hostname": "py39",
        "cap_eff": "0000000000000000",
        "seccomp": "2",
    }


@needs_root
def test_opt_and_resolv_conf_from_the_spec(task_root: Path, tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "python").mkdir(parents=True)
    (layer / "python" / "lib.py").write_text("X = 1\n")
    layer.chmod(0o755)
    spec = make_spec(task_root, opt=str(layer), resolv_conf="nameserver 10.0.0.2\n")

    def probe() -> list[object]:
        return [
            os.listdir("/opt/python"),
            _errno_of(lambda: _write("/opt/y", "")),
            _read("/etc/resolv.conf"),
        ]

    assert run_confined(spec, probe) == [["lib.py"], errno.EROFS, "nameserver 10.0.0.2\n"]


@needs_root
def test_ro_binds_nested_and_below_tmp(task_root: Path, tmp_path: Path) -> None:
    """An SDK dir in a temp data dir, plus a package inside it listed again, as the registry
    may list them: both visible at their own path, read-only, /tmp still the instance's own."""
    sdk = tmp_path / "sdk"
    (sdk / "pkg").mkdir(parents=True)
    (sdk / "pkg" / "mod.py").write_text("X = 1\n")
    sdk.chmod(0o755)
    (sdk / "pkg").chmod(0o755)
    spec = make_spec(task_root, ro_binds=[str(sdk / "pkg"), str(sdk), sys.base_prefix])

    def probe() -> list[object]:
        return [
            _read(str(sdk / "pkg" / "mod.py")),
            _errno_of(lambda: _write(str(sdk / "new.py"), "")),
            _errno_of(lambda: _write("/tmp/mine", "x")),
            sorted(os.listdir("/tmp")),
        ]

    want = [
        "X = 1\n",
        errno.EROFS,
        0,
        sorted(["mine", str(tmp_path).split("/")[2]]),
    ]
    assert run_confined(spec, probe) == want
    # the same from a zygote's template: binds below /tmp are each instance's (its own /tmp
    # would hide the template's), the others come with the template
    got = in_a_templated_zygote(spec, probe)
    assert got["from_template"]
    assert got["probe"] == want


@needs_root
def test_a_failing_step_is_named(tmp_path: Path) -> None:
    spec = make_spec(tmp_path / "missing")

    def probe() -> str:
        try:
            confine.build_root(spec)
        except ConfineError as e:
            return f"{e.errno} {e.step} | {e}"
        return "no error"

    got = run_confined(None, probe)
    assert got == "2 bind /var/task | bind /var/task: [Errno 2] No such file or directory"


def test_bad_specs_fail_before_any_change(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uid or gid 0"):
        confine.prepare(make_spec(tmp_path, uid=0))
    with pytest.raises(ValueError, match="cannot bind '/proc/sys'"):
        confine.prepare(make_spec(tmp_path, ro_binds=["/proc/sys"]))
    with pytest.raises(ConfineError, match="ro_bind /nonexistent"):
        confine.prepare(make_spec(tmp_path, ro_binds=["/nonexistent/x"]))


@needs_root
def test_nothing_remains_on_the_host(task_root: Path) -> None:
    """20 confined instances come and go; the host's mount table is exactly as before."""
    with open("/proc/self/mountinfo") as f:
        before = f.read()
    prepared = confine.prepare(make_spec(task_root))
    for _ in range(20):
        assert run_confined(prepared, lambda: os.getpid()) == 1
    with open("/proc/self/mountinfo") as f:
        assert f.read() == before
    assert os.listdir(confine.ROOT_MOUNT_POINT) == []


@needs_root
def test_confine_cost(task_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Measure (not assert) the per-instance cost over 50 runs, planned in the child or before."""
    spec = make_spec(task_root)
    results: dict[str, list[float]] = {}
    for label, arg in (("spec", spec), ("prepare(spec)", confine.prepare(spec))):

        def probe(arg: ConfineSpec | confine.Prepared = arg) -> float:
            t0 = time.perf_counter()
            confine.confine(arg)
            return (time.perf_counter() - t0) * 1000

        results[label] = sorted(run_confined(None, probe) for _ in range(50))
    with capsys.disabled():
        for label, times in results.items():
            print(
                f"\nconfine({label}) over 50 instances: median {statistics.median(times):.3f} ms,"
                f" p90 {times[44]:.3f} ms, min {times[0]:.3f} ms"
            )


# --- the seccomp program, interpreted -------------------------------------------------------

ALLOW, KILL = seccomp.SECCOMP_RET_ALLOW, seccomp.SECCOMP_RET_KILL_PROCESS
EPERM = seccomp.SECCOMP_RET_ERRNO | errno.EPERM
ENOSYS = seccomp.SECCOMP_RET_ERRNO | errno.ENOSYS
AUDIT_ARCH_I386 = 0x40000003


PROGRAM = seccomp.program(confine.NAMESPACE_FLAGS)


def decide(nr: int, arch: int = seccomp.AUDIT_ARCH_X86_64, arg0: int = 0) -> int:
    """Run the filter on one seccomp_data, as the kernel does."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    acc, pc = 0, 0
    for _ in range(len(PROGRAM)):
        code, jt, jf, k = PROGRAM[pc]
        if code == 0x20:  # ld [k]
            (acc,) = struct.unpack_from("=I", data, k)
            pc += 1
        elif code in (0x15, 0x35, 0x45):  # jeq, jge, jset
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if taken else jf)
        elif code == 0x06:  # ret k
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")
    raise AssertionError("the filter did not return")


def test_seccomp_denies_the_list_and_allows_the_rest() -> None:
    denied = set(seccomp.DENIED_SYSCALLS.values())
    for nr in range(512):  # clone and personality with a plain first argument: allowed
        want = ENOSYS if nr == seccomp.NR_CLONE3 else EPERM if nr in denied else ALLOW
        assert decide(nr) == want, nr
    for name in ("ptrace", "mount", "unshare", "setns", "bpf", "keyctl", "kexec_load"):
        assert decide(seccomp.DENIED_SYSCALLS[name]) == EPERM, name
    assert len(PROGRAM) < 256


def test_seccomp_clone_flags_and_personality() -> None:
    clone = seccomp.NR_CLONE
    thread = 0x3D0F00  # what glibc's pthread_create passes
    fork = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
    assert decide(clone, arg0=thread) == ALLOW
    assert decide(clone, arg0=fork) == ALLOW
    assert decide(clone, arg0=0x4111) == ALLOW  # CLONE_VM | CLONE_VFORK | SIGCHLD
    for flag in (0x20000, 0x2000000, 0x4000000, 0x8000000, 0x10000000, 0x20000000, 0x40000000):
        assert decide(clone, arg0=fork | flag) == EPERM, hex(flag)
    for value in (0, 8, 0xFFFFFFFF):
        assert decide(seccomp.NR_PERSONALITY, arg0=value) == ALLOW
    for value in (0x0040000, 0x0400000, 0x1000000):  # no ASLR, READ_IMPLIES_EXEC, ...
        assert decide(seccomp.NR_PERSONALITY, arg0=value) == EPERM


def test_seccomp_other_abis() -> None:
    assert decide(0, arch=AUDIT_ARCH_I386) == KILL  # i386 through int 0x80
    assert decide(0x40000000) == EPERM  # x32 read
    assert decide(0x40000000 | 101) == EPERM  # x32 ptrace
