"""Privilege attacks: the instance runs as an unprivileged uid with no capabilities, under
no_new_privs and a seccomp deny list, so ptrace, mount, new namespaces, setuid binaries and
signals to lamina all fail with the errno the kernel or the filter gives."""

from __future__ import annotations

from typing import Any

from tests.e2e.server import Server
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
import ctypes, errno, os

libc = ctypes.CDLL(None, use_errno=True)

def name(err):
    return errno.errorcode.get(err, str(err))

def attempt(fn, *args):
    try:
        value = fn(*args)
    except OSError as e:
        return [type(e).__name__, name(e.errno)]
    return ["ok", value if isinstance(value, (str, bool, int, list)) else repr(value)]

def call(fn, *args):
    \"\"\"A libc call through ctypes: ["ok", result] or ["errno", name].\"\"\"
    ctypes.set_errno(0)
    rc = fn(*args)
    if rc == -1:
        return ["errno", name(ctypes.get_errno())]
    return ["ok", rc]
"""

STATUS = """
import os

def handler(event, context):
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return {k: v.strip() for k, v in status.items()} | {
        "getuid": os.getuid(), "geteuid": os.geteuid(), "getgid": os.getgid(),
        "groups": os.getgroups(),
    }
"""


def test_instance_is_unprivileged(lam: Any, canary: Canary) -> None:
    with function(lam, unique("whoami"), STATUS) as name:
        st = result(invoke(lam, name))
        uids = [int(u) for u in st["Uid"].split()]
        gids = [int(g) for g in st["Gid"].split()]
        assert len(set(uids)) == 1 and uids[0] in SANDBOX_UIDS, st["Uid"]  # real/eff/saved/fs
        assert len(set(gids)) == 1 and gids[0] in SANDBOX_UIDS, st["Gid"]
        assert st["getuid"] == st["geteuid"] == uids[0] and st["getgid"] == gids[0]
        assert st["groups"] == [] and st["Groups"] == ""
        for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert int(st[caps], 16) == 0, (caps, st[caps])
        assert st["NoNewPrivs"] == "1"
        assert st["Seccomp"] == "2"  # filter mode
        # In a PID namespace of its own: PID 1, or PID 2 under a minimal init of its own.
        assert (st["Pid"], st["PPid"]) in (("1", "0"), ("2", "1")), (st["Pid"], st["PPid"])
    canary.check()


PTRACE = (
    PROBE
    + """
import signal, time

PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_SEIZE = 0, 16, 0x4206

class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

def handler(event, context):
    ptrace = libc.ptrace
    ptrace.restype = ctypes.c_long
    ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    child = os.fork()  # a process of its own uid: only seccomp stands in the way
    if child == 0:
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    buf = ctypes.create_string_buffer(64)
    local, remote = IoVec(ctypes.addressof(buf), 64), IoVec(0x400000, 64)
    vm_read = libc.process_vm_readv
    vm_read.restype = ctypes.c_ssize_t
    try:
        return {
            "attach_init": call(ptrace, PTRACE_ATTACH, 1, None, None),
            "attach_child": call(ptrace, PTRACE_ATTACH, child, None, None),
            "seize_child": call(ptrace, PTRACE_SEIZE, child, None, None),
            "traceme": call(ptrace, PTRACE_TRACEME, 0, None, None),
            "attach_lamina": call(ptrace, PTRACE_ATTACH, event["server_pid"], None, None),
            "vm_readv_child": call(vm_read, child, ctypes.byref(local), 1,
                                   ctypes.byref(remote), 1, 0),
            "tracer": [ln for ln in open("/proc/%d/status" % child).read().splitlines()
                       if ln.startswith("TracerPid")][0],
        }
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
"""
)


def test_ptrace_is_denied(lam: Any, canary: Canary, server: Server) -> None:
    assert server.proc is not None
    with function(lam, unique("ptrace"), PTRACE) as name:
        res = result(invoke(lam, name, {"server_pid": server.proc.pid}))
        for op in ("attach_init", "attach_child", "seize_child", "traceme", "attach_lamina"):
            assert res[op] == ["errno", "EPERM"], (op, res[op])
        assert res["vm_readv_child"] == ["errno", "EPERM"]
        assert res["tracer"].split() == ["TracerPid:", "0"]
    canary.check()


MOUNT = (
    PROBE
    + """
import subprocess

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
SIGCHLD, SYS_clone, SYS_clone3, SYS_pivot_root = 17, 56, 435, 155
MS_BIND, MS_REMOUNT = 0x1000, 0x20

def raw_clone(flags):
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    pid = libc.syscall(SYS_clone, ctypes.c_ulong(flags | SIGCHLD), None, None, None, None)
    if pid == 0:  # it worked: the child leaves at once
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
        return ["ok", pid]
    return ["errno", name(ctypes.get_errno())]

def handler(event, context):
    os.makedirs("/tmp/mnt", exist_ok=True)
    m = libc.mount
    m.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    ns_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    cli = subprocess.run(["unshare", "--user", "--map-root-user", "id", "-u"],
                         capture_output=True, text=True)
    out = {
        "mount_tmpfs": call(m, b"none", b"/tmp/mnt", b"tmpfs", 0, None),
        "bind_root": call(m, b"/", b"/tmp/mnt", None, MS_BIND, None),
        "remount_rw": call(m, None, b"/var/task", None, MS_REMOUNT | MS_BIND, None),
        "umount_task": call(libc.umount2, b"/var/task", 2),
        "unshare_user": call(libc.unshare, CLONE_NEWUSER),
        "unshare_mount": call(libc.unshare, CLONE_NEWNS),
        "unshare_net": call(libc.unshare, CLONE_NEWNET),
        "setns": call(libc.setns, ns_fd, 0),
        "chroot": call(libc.chroot, b"/tmp"),
        "pivot_root": call(libc.syscall, SYS_pivot_root, b"/tmp", b"/tmp/mnt"),
        "clone_newuser": raw_clone(CLONE_NEWUSER),
        "clone_newpid": raw_clone(CLONE_NEWPID),
        "clone3": call(libc.syscall, SYS_clone3, None, 0),
        "plain_fork": raw_clone(0)[0],
        "unshare_cli": [cli.returncode, cli.stdout.strip(), cli.stderr.strip()],
        "mounted": open("/proc/self/mountinfo").read().count("/tmp/mnt"),
    }
    if hasattr(os, "unshare"):  # Python 3.12+
        out["os_unshare"] = attempt(os.unshare, os.CLONE_NEWUSER)
    return out
"""
)


def test_mount_and_new_namespaces_are_denied(lam: Any, canary: Canary) -> None:
    with function(lam, unique("mount"), MOUNT) as name:
        res = result(invoke(lam, name))
        eperm = ["errno", "EPERM"]
        for op in ("mount_tmpfs", "bind_root", "remount_rw", "umount_task", "unshare_user",
                   "unshare_mount", "unshare_net", "setns", "chroot", "pivot_root",
                   "clone_newuser", "clone_newpid"):  # fmt: skip
            assert res[op] == eperm, (op, res[op])
        assert res["clone3"] == ["errno", "ENOSYS"]  # so libc falls back to the checked clone
        assert res["plain_fork"] == "ok"  # a clone without namespace flags still works
        rc, stdout, stderr = res["unshare_cli"]
        assert rc != 0 and stdout == "" and "Operation not permitted" in stderr, res
        assert res["mounted"] == 0
        if "os_unshare" in res:
            assert res["os_unshare"] == ["PermissionError", "EPERM"]
    canary.check()


SETUID = (
    PROBE
    + """
import stat, subprocess, time

def held_uids(argv):
    \"\"\"Start a setuid binary that waits for a password on stdin; its uids while it waits.\"\"\"
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 5
        while time.time() < deadline:
            status = dict(ln.split(":", 1) for ln in
                          open("/proc/%d/status" % p.pid).read().splitlines())
            if status["Name"].strip() == os.path.basename(argv[0]) and \\
                    status["State"].strip().startswith("S"):
                return {"uid": status["Uid"].split(), "gid": status["Gid"].split(),
                        "caps": status["CapEff"].strip()}
            time.sleep(0.01)
        return None
    finally:
        p.kill()
        p.communicate()

def handler(event, context):
    found = sorted(f for f in os.listdir("/usr/bin")
                   if os.stat("/usr/bin/" + f).st_mode & stat.S_ISUID)
    runs = {}
    for argv in (["/usr/bin/mount", "-t", "tmpfs", "none", "/tmp"],
                 ["/usr/bin/umount", "/var/task"],
                 ["/usr/bin/su", "-c", "id -u", "root"],
                 ["/usr/bin/passwd", "-d", "root"],
                 ["/usr/bin/chsh", "-s", "/bin/sh", "root"]):
        if os.path.exists(argv[0]):
            p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               timeout=10)
            runs[os.path.basename(argv[0])] = [p.returncode, p.stdout, p.stderr]
    waiting = next((b for b in ("newgrp", "sg", "chfn") if b in found), None)
    return {
        "setuid": found,
        "nosuid": bool(os.statvfs("/usr/bin").f_flag & os.ST_NOSUID),
        "runs": runs,
        "held": [waiting, held_uids(["/usr/bin/" + waiting, "root"]) if waiting else None],
        "euid": os.geteuid(),
        "setuid0": attempt(os.setuid, 0),
        "seteuid0": attempt(os.seteuid, 0),
    }
"""
)


def test_setuid_binaries_do_not_give_root(lam: Any, canary: Canary) -> None:
    with function(lam, unique("setuid"), SETUID, MemorySize=512) as name:
        res = result(invoke(lam, name))
        uid = res["euid"]
        assert uid in SANDBOX_UIDS
        assert res["setuid"], "no setuid binary in /usr/bin to try"
        assert res["nosuid"] is True  # /usr is mounted nosuid in the sandbox
        assert res["setuid0"] == ["PermissionError", "EPERM"]
        assert res["seteuid0"] == ["PermissionError", "EPERM"]
        # A setuid-root binary, caught while it waits for a password: it runs as the caller.
        binary, held = res["held"]
        assert binary is not None, res["setuid"]
        assert held == {"uid": [str(uid)] * 4, "gid": [str(uid)] * 4, "caps": "0" * 16}, held
        runs = res["runs"]
        assert "mount" in runs, runs
        for tool, (rc, stdout, _stderr) in runs.items():
            assert rc != 0, (tool, runs[tool])  # nothing succeeded
            assert stdout.strip() != "0", (tool, runs[tool])
        assert "must be superuser" in runs["mount"][2] or "only root" in runs["mount"][2]
    canary.check()


KILL = (
    PROBE
    + """
import signal

def handler(event, context):
    out = {"lamina": attempt(os.kill, event["server_pid"], signal.SIGKILL),
           "lamina_term": attempt(os.kill, event["server_pid"], signal.SIGTERM),
           "zygotes": [attempt(os.kill, z, signal.SIGKILL) for z in event["zygotes"]],
           "group": attempt(os.killpg, event["server_pid"], signal.SIGKILL),
           "parent": attempt(os.kill, os.getppid() or 0, 0)}
    out["everyone"] = attempt(os.kill, -1, signal.SIGKILL)  # all it may signal but itself
    return out
"""
)


def test_killing_lamina_is_impossible(lam: Any, canary: Canary, server: Server) -> None:
    assert server.proc is not None
    zygotes = children_of(server.proc.pid)
    assert zygotes
    with function(lam, unique("kill"), KILL) as name:
        res = result(invoke(lam, name, {"server_pid": server.proc.pid, "zygotes": zygotes}))
        esrch = ["ProcessLookupError", "ESRCH"]
        assert res["lamina"] == esrch and res["lamina_term"] == esrch
        assert res["group"] == esrch
        assert res["zygotes"] == [esrch] * len(zygotes)
        assert res["everyone"] == esrch  # nobody else in its PID namespace
        assert server.proc.poll() is None
        assert set(zygotes) <= set(children_of(server.proc.pid))  # every zygote still there
    canary.check()


HANDLES = (
    PROBE
    + """
import socket

def write(path):
    with open(path, "w") as fh:
        fh.write("|/tmp/pwn")

def read(path):
    with open(path, "rb") as fh:
        return len(fh.read(64))

def handler(event, context):
    fds = {}
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue  # the listing's own fd, closed by now
        if target.startswith("socket:"):
            s = socket.socket(fileno=os.dup(int(fd)))
            target = [s.family.name, s.getpeername()]
            s.close()
        fds[fd] = target
    return {
        "fds": fds,
        "core_pattern": attempt(write, "/proc/sys/kernel/core_pattern"),
        "sysrq": attempt(write, "/proc/sysrq-trigger"),
        "drop_caches": attempt(write, "/proc/sys/vm/drop_caches"),
        "hostname": attempt(write, "/proc/sys/kernel/hostname"),
        "sys": os.path.exists("/sys"),
        "kcore": os.path.exists("/proc/kcore"),
        "kmsg": attempt(read, "/proc/kmsg"),
        "dev": sorted(os.listdir("/dev")),
    }
"""
)


def test_no_host_handles_or_kernel_knobs(lam: Any, canary: Canary) -> None:
    """Nothing inherited reaches outside (runc CVE-2024-21626 leaked a host directory fd);
    kernel-wide knobs (core_pattern, sysrq) cannot be written; no /sys, so no cgroupfs and
    no release_agent."""
    with function(lam, unique("handles"), HANDLES) as name:
        res = result(invoke(lam, name))
        fds = res.pop("fds")
        assert fds["0"] == "/dev/null"
        assert fds["1"].startswith("pipe:") and fds["2"] == fds["1"]  # the log pipe
        rest = {fd: t for fd, t in fds.items() if fd not in ("0", "1", "2")}
        # what remains are the runtime's own connections to its Runtime API
        assert all(t == ["AF_INET", ["127.0.0.1", 9001]] for t in rest.values()), fds
        denied = (["PermissionError", "EACCES"], ["OSError", "EROFS"])
        for knob in ("core_pattern", "drop_caches", "hostname", "kmsg"):
            assert res[knob] in denied, (knob, res[knob])
        assert res["sysrq"] in (*denied, ["FileNotFoundError", "ENOENT"])
        assert res["sys"] is False and res["kcore"] is False
        assert set(res["dev"]) <= {"fd", "full", "null", "random", "shm", "stderr", "stdin",
                                   "stdout", "tty", "urandom", "zero"}, res["dev"]  # fmt: skip
    canary.check()
