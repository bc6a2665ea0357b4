"""What an instance can see: its own minimal root, its own code and /tmp, its own processes.

The host's files (/etc/shadow, lamina's data dir), other functions' code, other instances' /tmp
and the host's processes are not there to be found, by path or through /proc/<pid>/root.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from lamina.runtimes.registry import RuntimeRegistry, sdk_path
from tests.e2e.server import Server, python_runtime
from tests.security.harness import (
    SANDBOX_UIDS,
    Canary,
    children_of,
    function,
    invoke,
    result,
    unique,
)

PROBE = """
import errno, os

def attempt(fn, *args):
    try:
        value = fn(*args)
    except OSError as e:
        return [type(e).__name__, errno.errorcode.get(e.errno, str(e.errno))]
    return ["ok", value if isinstance(value, (str, bool, int, list)) else repr(value)]

def read(path):
    with open(path, errors="replace") as fh:
        return fh.read()
"""

READ_SHADOW = (
    PROBE
    + """
def handler(event, context):
    paths = ["/etc/shadow", "/etc/gshadow", "/proc/1/root/etc/shadow", "/proc/self/root/etc/shadow",
             "/var/task/../../../etc/shadow", "/proc/%d/root/etc/shadow" % event["server_pid"],
             "/proc/1/cwd/../../etc/shadow"]
    return {p: attempt(read, p) for p in paths}
"""
)


def test_reading_etc_shadow(lam: Any, canary: Canary, server: Server) -> None:
    assert server.proc is not None
    shadow = [ln for ln in Path("/etc/shadow").read_text().splitlines() if ln.strip()]
    with function(lam, unique("shadow"), READ_SHADOW) as name:
        out = invoke(lam, name, {"server_pid": server.proc.pid})
        res = result(out)
        assert len(res) == 7
        for path, (outcome, err) in res.items():
            assert outcome in ("FileNotFoundError", "PermissionError"), (path, outcome, err)
        assert res["/etc/shadow"] == ["FileNotFoundError", "ENOENT"]
        for line in shadow:
            assert line not in out["body"]
    canary.check()


FIND_CODE = (
    PROBE
    + """
def handler(event, context):
    found = []
    walked = 0
    for top in sorted(os.listdir("/")):
        if top in ("proc", "sys", "dev"):
            continue
        for root, dirs, files in os.walk("/" + top, onerror=lambda e: None):
            walked += 1
            found += [os.path.join(root, f) for f in files if f.startswith("marker-")]
    unpacked = event["data_dir"] + "/code/unpacked"
    return {
        "found": found,
        "walked": walked,
        "own": sorted(os.listdir("/var/task")),
        "unpacked": attempt(os.listdir, unpacked),
        "data_dir": attempt(os.listdir, event["data_dir"]),
        "code_dir": attempt(os.listdir, event["data_dir"] + "/code"),
        "other": attempt(read, unpacked + "/" + event["other_sha"] + "/" + event["other_marker"]),
    }
"""
)


def test_reading_another_functions_code(lam: Any, canary: Canary, server: Server) -> None:
    secret = uuid.uuid4().hex
    own_marker, other_marker = f"marker-{uuid.uuid4().hex}", f"marker-{uuid.uuid4().hex}"
    victim_code = {"app.py": "def handler(e, c):\n    return 1\n", other_marker: secret}
    with (
        function(lam, unique("victim"), victim_code) as victim,
        function(
            lam, unique("snoop"), {"app.py": FIND_CODE, own_marker: "mine"}, MemorySize=1769
        ) as snoop,
    ):
        assert result(invoke(lam, victim)) == 1  # the victim's code is unpacked and in use
        sha = lam.get_function(FunctionName=victim)["Configuration"]["CodeSha256"]
        unpacked = server.data_dir / "code" / "unpacked"
        on_host = list(unpacked.glob(f"*/{other_marker}"))
        assert len(on_host) == 1  # the host path the snoop tries below is real
        event = {
            "data_dir": str(server.data_dir),
            "other_sha": on_host[0].parent.name,
            "other_marker": other_marker,
            "sha": sha,
        }
        out = invoke(lam, snoop, event)
        res = result(out)
        assert res["found"] == [f"/var/task/{own_marker}"], res["found"]  # its own, only
        assert res["walked"] > 100  # it did look around
        assert res["unpacked"][0] == "FileNotFoundError", res
        assert res["code_dir"][0] == "FileNotFoundError", res
        assert res["other"][0] == "FileNotFoundError", res
        assert "code" not in (res["data_dir"][1] if res["data_dir"][0] == "ok" else [])
        assert secret not in out["body"] and other_marker not in out["body"]
    canary.check()


TMP_MARKER = """
import errno, os, socket, time

def handler(event, context):
    path, shm = "/tmp/" + event["marker"], "/dev/shm/" + event["marker"]
    abstract = "\\0" + event["marker"]  # abstract Unix sockets are per network namespace
    if event["role"] == "writer":
        for p in (path, shm):
            with open(p, "w") as fh:
                fh.write("written by " + socket.gethostname())
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(abstract)
        listener.listen(1)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        own = probe.connect_ex(abstract)  # it works from this instance
        probe.close()
        wrote_at = time.time()
        time.sleep(event["hold"])
        listener.close()
        return {"host": socket.gethostname(), "wrote_at": wrote_at, "ended": time.time(),
                "sees_own": os.path.exists(path) and os.path.exists(shm), "own_abstract": own}
    seen, listing, connect = [], [], None
    until = time.time() + event["look"]
    while time.time() < until:
        seen += [p for p in (path, shm) if os.path.exists(p)]
        listing = sorted(os.listdir("/tmp")) + sorted(os.listdir("/dev/shm"))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connect = errno.errorcode.get(s.connect_ex(abstract), "connected")
        s.close()
        time.sleep(0.05)
    return {"host": socket.gethostname(), "seen": seen, "listing": listing,
            "abstract": connect, "checked_until": until}
"""


def test_another_instances_tmp_is_invisible(lam: Any, canary: Canary) -> None:
    """Two instances of one function at the same time: what one leaves in /tmp, /dev/shm or
    under an abstract Unix socket name, the other does not find."""
    marker = f"marker-{uuid.uuid4().hex}"
    with function(lam, unique("tmp-peek"), TMP_MARKER) as name:
        box: dict[str, Any] = {}

        def writer() -> None:
            box["writer"] = invoke(lam, name, {"role": "writer", "marker": marker, "hold": 3})

        th = threading.Thread(target=writer)
        th.start()
        time.sleep(0.5)  # the writer's instance is busy: the reader gets another, concurrently
        reader = result(invoke(lam, name, {"role": "reader", "marker": marker, "look": 1.5}))
        th.join()
        wrote = result(box["writer"])
        assert wrote["sees_own"] is True and wrote["own_abstract"] == 0
        assert wrote["host"] != reader["host"]  # two instances
        assert wrote["wrote_at"] < reader["checked_until"] < wrote["ended"]  # at the same time
        assert reader["seen"] == []
        assert marker not in reader["listing"]
        assert reader["abstract"] == "ECONNREFUSED"
    canary.check()


LIST_PROCS = (
    PROBE
    + """
def handler(event, context):
    pid = event["server_pid"]
    return {
        "numeric": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "self": os.getpid(),
        "uids": sorted({ln.split()[1] for p in os.listdir("/proc") if p.isdigit()
                        for ln in attempt(read, "/proc/%s/status" % p)[1].splitlines()
                        if ln.startswith("Uid:")}),
        "server_proc": attempt(os.stat, "/proc/%d" % pid),
        "server_signal": attempt(os.kill, pid, 0),
        "zygotes": [attempt(os.kill, z, 0) for z in event["zygotes"]],
        "ppid": os.getppid(),
        "init_uid": [ln for ln in read("/proc/1/status").splitlines() if ln.startswith("Uid:")],
        "init_cmdline": read("/proc/1/cmdline").split("\\0")[0],
    }
"""
)


def test_host_processes_are_invisible(lam: Any, canary: Canary, server: Server) -> None:
    assert server.proc is not None
    zygotes = children_of(server.proc.pid)
    assert zygotes  # lamina's zygotes, at least the one that forked the canary
    with function(lam, unique("ps"), LIST_PROCS) as name:
        res = result(invoke(lam, name, {"server_pid": server.proc.pid, "zygotes": zygotes}))
        # Only the instance's own processes: itself (PID 1), or a minimal init and itself.
        assert res["numeric"] in ([1], [1, 2]) and res["self"] in res["numeric"], res
        assert res["uids"] == [str(res["init_uid"][0].split()[1])], res  # all of one uid
        assert res["server_proc"] == ["FileNotFoundError", "ENOENT"]
        assert res["server_signal"] == ["ProcessLookupError", "ESRCH"]
        assert all(z == ["ProcessLookupError", "ESRCH"] for z in res["zygotes"]), res
        assert res["ppid"] in (0, 1)  # nothing above its own namespace
        uid = int(res["init_uid"][0].split()[1])
        assert uid in SANDBOX_UIDS  # PID 1 is the instance itself, not the host's init
        assert "python" in res["init_cmdline"]
    canary.check()


PROC_ROOT = (
    PROBE
    + """
import socket

def handler(event, context):
    data_dir = event["data_dir"]
    me = str(os.getpid())
    return {
        "group": socket.gethostname().removeprefix("sandbox-"),
        "root": sorted(os.listdir("/")),
        "self_root": sorted(os.listdir("/proc/self/root")),
        "own_root": sorted(os.listdir("/proc/%s/root" % me)),
        "dotdot": sorted(os.listdir("/proc/self/root/../../..")),
        "others": [p for p in os.listdir("/proc") if p.isdigit() and p != me],
        "init_root": attempt(os.listdir, "/proc/1/root"),
        "init_cwd": attempt(os.readlink, "/proc/1/cwd"),
        "shadow": os.path.exists("/proc/self/root/etc/shadow"),
        "data_dir": os.path.exists("/proc/self/root" + data_dir + "/code"),
        "db": [p for p in (os.listdir("/proc/self/root" + data_dir)
               if os.path.isdir("/proc/self/root" + data_dir) else [])],
        "etc": sorted(os.listdir("/proc/self/root/etc")),
        "cwd": os.readlink("/proc/self/cwd"),
        "root_link": os.readlink("/proc/self/root"),
        "home": attempt(os.listdir, "/proc/self/root/home"),
        "work": attempt(os.listdir, "/proc/self/root/work/main/src"),
    }
"""
)


def test_proc_root_leads_only_to_the_sandbox_root(lam: Any, canary: Canary, server: Server) -> None:
    with function(lam, unique("proc-root"), PROC_ROOT) as name:
        res = result(invoke(lam, name, {"data_dir": str(server.data_dir)}))
        assert res["self_root"] == res["root"] == res["own_root"] == res["dotdot"]
        assert res["root_link"] == "/" and res["cwd"] == "/var/task"
        assert res["shadow"] is False and "shadow" not in res["etc"]
        assert res["data_dir"] is False
        assert res["db"] in ([], ["runtime"]), res  # at most the runtime's SDK, bound read-only
        assert res["home"][0] == "FileNotFoundError"
        assert res["work"][0] == "FileNotFoundError"
        # The only other process is the instance's init, which is not dumpable: its root and
        # cwd are not the runtime's to follow.
        assert res["others"] == ["1"], res["others"]
        assert res["init_root"] == res["init_cwd"] == ["PermissionError", "EACCES"], res
        # From the host: init's root is the instance's root too (the runtime's pivot_root moved
        # it), not the host's, in case anything ever reaches it.
        groups = [pids for g, pids in server.instance_cgroups().items() if g.endswith(res["group"])]
        assert len(groups) == 1 and len(groups[0]) == 2, groups
        roots = {(st.st_dev, st.st_ino) for st in (os.stat(f"/proc/{p}/root") for p in groups[0])}
        host = os.stat("/")
        assert len(roots) == 1 and (host.st_dev, host.st_ino) not in roots, roots
        # The minimal root, plus the top-level directories of the host paths lamina binds
        # read-only at the same path for the runtime (interpreter installation, SDK): those
        # depend on where this checkout and its interpreter live, so they are derived, not listed.
        registry = RuntimeRegistry(sdk=sdk_path(server.data_dir / "runtime"))
        runtime = registry.resolve(python_runtime())
        bound = {Path(p).parts[1] for p in runtime.ro_binds}
        minimal = {"bin", "dev", "etc", "lib", "lib64", "opt", "proc", "sbin", "tmp", "usr", "var"}
        assert set(res["root"]) <= minimal | bound, (res["root"], runtime.ro_binds)
        assert {"dev", "etc", "proc", "tmp", "var"} <= set(res["root"])
    canary.check()


WRITE_TASK = (
    PROBE
    + """
def write(path, mode="w"):
    with open(path, mode) as fh:
        fh.write("pwned")

def handler(event, context):
    return {
        "create": attempt(write, "/var/task/new.py"),
        "overwrite": attempt(write, "/var/task/app.py", "a"),
        "unlink": attempt(os.unlink, "/var/task/app.py"),
        "chmod": attempt(os.chmod, "/var/task/app.py", 0o777),
        "mkdir": attempt(os.mkdir, "/var/task/sub"),
        "rename": attempt(os.rename, "/var/task/app.py", "/var/task/x.py"),
        "root": attempt(write, "/pwned"),
        "etc_passwd": attempt(write, "/etc/passwd", "a"),
        "usr": attempt(write, "/usr/bin/pwned"),
        "tmp": attempt(write, "/tmp/fine"),
        "app": read("/var/task/app.py")[:20],
    }
"""
)


def test_writing_var_task_is_read_only(lam: Any, canary: Canary) -> None:
    with function(lam, unique("write-task"), WRITE_TASK) as name:
        res = result(invoke(lam, name))
        erofs = ["OSError", "EROFS"]
        for op in ("create", "unlink", "chmod", "mkdir", "rename", "root", "usr"):
            assert res[op] == erofs, (op, res[op])
        # Existing files belong to root (0644): the permission check answers before the mount's.
        assert res["overwrite"] in (erofs, ["PermissionError", "EACCES"])
        assert res["etc_passwd"] in (erofs, ["PermissionError", "EACCES"])
        assert res["tmp"] == ["ok", "None"]
        assert res["app"] == WRITE_TASK[:20]
        assert result(invoke(lam, name))["app"] == WRITE_TASK[:20]  # unchanged for the next call
    canary.check()


SCAN_MEMORY = """
def handler(event, context):
    patterns = [(a + b).encode() for a, b in event["split"]]  # never whole in the event
    hits = []
    with open("/proc/self/maps") as fh:
        regions = [ln.split() for ln in fh.read().splitlines()]
    scanned = 0
    with open("/proc/self/mem", "rb", buffering=0) as mem:
        for r in regions:
            if not r[1].startswith("rw"):
                continue
            lo, hi = (int(x, 16) for x in r[0].split("-"))
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:
                continue
            scanned += len(data)
            for n, pat in enumerate(patterns):
                i = data.find(pat)
                while i >= 0:
                    hits.append([n, data[max(0, i - 48):i].decode("latin-1")])
                    i = data.find(pat, i + 1)
            del data
    return {"scanned": scanned, "hits": hits}
"""


def test_zygote_leaves_no_other_functions_environment_in_memory(lam: Any, canary: Canary) -> None:
    """Instances are forks of one zygote per runtime, which parsed every earlier spawn request
    (each carrying a function's environment). A new instance reads its whole memory and finds
    none of the environment values of the functions that started just before it."""
    victims = []
    for size in (0, 18, 36):  # small and large requests, so freed chunks of all sizes remain
        var = f"LEAKTEST_{uuid.uuid4().hex[:8].upper()}"
        secret = f"s3cr3t{uuid.uuid4().hex}"
        pad = {f"PAD{i:02d}": "x" * 90 for i in range(size)}
        victims.append((unique("env-victim"), var, secret, {var: secret, **pad}))
    with contextlib.ExitStack() as stack:
        for name, _, _, env in victims:
            code = "def handler(e, c):\n    return 1\n"
            env_kw = {"Environment": {"Variables": env}}
            stack.enter_context(function(lam, name, code, MemorySize=128, **env_kw))
            assert result(invoke(lam, name)) == 1
        # The scanner's own environment holds a value of the same shape: the scan must find it.
        own = f"s3cr3t{uuid.uuid4().hex}"
        env_kw = {"Environment": {"Variables": {"OWN_VALUE": own}}}
        scanner = stack.enter_context(
            function(lam, unique("mem-scan"), SCAN_MEMORY, MemorySize=1769, **env_kw)
        )
        secrets = [own] + [s for _, _, s, _ in victims]
        res = result(invoke(lam, scanner, {"split": [[s[:10], s[10:]] for s in secrets]}))
        assert res["scanned"] > 1 << 20
        # An environment value shows as `NAME=value` (environ) or `"NAME": "value"` (JSON).
        as_env = [(n, ctx) for n, ctx in res["hits"] if ctx.endswith(('": "', "="))]
        assert any(n == 0 and ctx.endswith("OWN_VALUE=") for n, ctx in as_env), res["hits"]
        leaked = [
            (n, ctx)
            for n, ctx in res["hits"]
            if n > 0 and ((n, ctx) in as_env or "LEAKTEST_" in ctx)
        ]
        assert leaked == [], leaked
    canary.check()
