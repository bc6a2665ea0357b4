"""Confine a freshly forked instance: namespaces, a minimal read-only root, no privileges, seccomp.

An instance first gets its own mount, PID, IPC and UTS namespaces (a zygote's instance as
zygote_main.py lays out; `enter_namespaces()` does it in one call, e.g. for the unit tests),
then, in the process that will run the function:

1. `enter_namespaces()` (if it has no namespaces yet): unshare, then fork into the new PID
   namespace: 0 in the child, its pid in the caller, which should `os._exit(0)`.
2. `confine(spec)`: `build_root` → `set_hostname` → `drop_privileges` → `load_seccomp`:

   - `build_root(spec)` gives it a read-only root (system directories, a minimal `/etc`, the
     code at `/var/task`, `/opt`, a size-limited tmpfs `/tmp`, a fresh `/proc`, a minimal
     `/dev`), `pivot_root`s into it, detaches the old root and changes to `/var/task`. The part
     that is the same for every instance is built once per zygote (`build_template`) and comes
     with the instance's copy of the zygote's mount namespace; otherwise the whole root is made
     on a small tmpfs of the instance's own;
   - `set_hostname(name)` needs CAP_SYS_ADMIN, so it comes before the drop;
   - `drop_privileges(uid, gid)` empties the supplementary groups, switches to the sandbox
     uid/gid, empties every capability set (bounding set first) and sets no_new_privs;
   - `load_seccomp()` installs the classic-BPF deny list of `seccomp.py`.

`prepare(spec)`, called in the zygote before it forks, turns a spec into the exact steps;
`confine` takes either. A failed step raises `ConfineError` (an OSError) naming the step; the
instance is then half-built and must exit. Everything lives in the instance's own mount
namespace: when its last process dies the kernel drops every mount; on the host remain only the
empty mount point directories under `/run/lamina`, made once.

Stdlib + ctypes only, unchanged on Python 3.9 to 3.14 (it runs in zygotes of every runtime).
What does not depend on the instance is prepared at import, in the zygote: a forked child pays
a copy-on-write fault (~3 us here) for every page it writes, so the per-instance path is a flat
loop of syscalls over prebuilt bytes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

try:  # as lamina.worker.confine
    from . import seccomp as _bpf
except ImportError:  # as `confine`, a top-level module in a zygote, beside `seccomp`
    import seccomp as _bpf  # type: ignore[import-not-found,no-redef]

__all__ = [
    "ROOT_MOUNT_POINT",
    "ConfineError",
    "ConfineSpec",
    "Prepared",
    "build_root",
    "confine",
    "drop_privileges",
    "enter_namespaces",
    "load_seccomp",
    "prepare",
    "set_hostname",
]


class _SpecRequired(TypedDict):
    task_root: str  # the function's code, bound read-only at /var/task
    ephemeral_mb: int  # size of the private tmpfs /tmp
    uid: int  # the unprivileged user the runtime runs as
    gid: int
    hostname: str
    ro_binds: list[str]  # host paths bound read-only at the same path (interpreter, SDK, ...)


class ConfineSpec(_SpecRequired, total=False):
    opt: str | None  # bound read-only at /opt (layers); else /opt is an empty read-only dir
    runtime_dir: str | None  # bound read-only at /var/runtime (the runtime's packages)
    user: str  # the name of `uid` in /etc/passwd (default sbx_user1051)
    resolv_conf: str  # contents of /etc/resolv.conf (default: the host's, bound read-only)


class ConfineError(OSError):
    """A confinement step failed: `step` names it, `errno` says why."""

    def __init__(self, err: int, step: str) -> None:
        super().__init__(err, os.strerror(err))
        self.step = step

    def __str__(self) -> str:
        return f"{self.step}: [Errno {self.errno}] {self.strerror}"


# --- constants (x86_64 Linux) ---------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
NAMESPACE_FLAGS |= CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

SYS_capset = 126
SYS_pivot_root = 155
SYS_seccomp = 317
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

ROOT_MOUNT_POINT = "/run/lamina/root"  # every instance mounts its own tmpfs here, privately
_ROOT = ROOT_MOUNT_POINT.encode()
_DEFAULT_USER = "sbx_user1051"
_NOBODY = 65534


# --- libc through ctypes --------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _fn(name: str, restype: type[Any], *argtypes: type[Any]) -> Callable[..., int]:
    f: Callable[..., int] = ctypes.CFUNCTYPE(restype, *argtypes, use_errno=True)((name, _libc))
    return f


_c = ctypes
_mount = _fn("mount", _c.c_int, _c.c_char_p, _c.c_char_p, _c.c_char_p, _c.c_ulong, _c.c_char_p)
_umount2 = _fn("umount2", _c.c_int, _c.c_char_p, _c.c_int)
_unshare = _fn("unshare", _c.c_int, _c.c_int)
_sethostname = _fn("sethostname", _c.c_int, _c.c_char_p, _c.c_size_t)
_prctl = _fn("prctl", _c.c_int, _c.c_int, _c.c_ulong, _c.c_ulong, _c.c_ulong, _c.c_ulong)
_pivot_root = _fn("syscall", _c.c_long, _c.c_long, _c.c_char_p, _c.c_char_p)
_capset = _fn("syscall", _c.c_long, _c.c_long, _c.c_void_p, _c.c_void_p)
_seccomp = _fn("syscall", _c.c_long, _c.c_long, _c.c_uint, _c.c_uint, _c.c_void_p)
# Untyped, Python ints pass as C ints: a third of the per-call cost of typed arguments, for the
# 41 capability drops. Only for calls whose arguments are all small non-negative ints.
_prctl_untyped: Callable[..., int] = _libc.prctl


def _fail(step: str) -> NoReturn:
    raise ConfineError(ctypes.get_errno(), step)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


# --- 1. namespaces --------------------------------------------------------------------------


def enter_namespaces() -> int:
    """Unshare mount, PID, IPC and UTS namespaces, then fork into the new PID namespace.

    Returns 0 in the grandchild, which is PID 1 of the new namespace and goes on to `confine`;
    returns the grandchild's pid (as the parent namespace sees it) in the calling process,
    which should report it and `os._exit(0)` (the zygote, a child subreaper, reaps the rest).
    """
    if _unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) != 0:
        _fail("unshare mount/pid/ipc/uts namespaces")
    try:
        return os.fork()
    except OSError as e:
        raise ConfineError(e.errno or errno.EAGAIN, "fork into the new PID namespace") from e


# --- 2. the root filesystem -----------------------------------------------------------------
#
# The root is built by running plans: lists of steps (op, step name, path, source, fstype,
# flags or mode, data). The steps that are the same for every instance are planned at import.

_MOUNT, _MKDIR, _TOUCH, _WRITE, _SYMLINK, _MKNOD = range(6)
if TYPE_CHECKING:
    _Step = tuple[int, str, bytes, bytes | None, bytes | None, int, bytes | None]

_RO_BIND = MS_REMOUNT | MS_BIND | MS_RDONLY
_NOSUID_NODEV = MS_NOSUID | MS_NODEV


def _mount_step(step: str, dst: bytes, src: bytes | None, fstype: bytes | None, flags: int,
                data: bytes | None = None) -> _Step:  # fmt: skip
    return (_MOUNT, step, dst, src, fstype, flags, data)


def _bind_ro(src: bytes, dst: bytes, what: str, flags: int = _NOSUID_NODEV) -> list[_Step]:
    """Bind `src` at `dst` (which must exist), then make that bind read-only.

    A bind ignores MS_RDONLY and friends on the first call, so a second MS_REMOUNT|MS_BIND call
    sets them. Not recursive, on purpose: mounts below `src` stay hidden.
    """
    return [
        _mount_step("bind " + what, dst, src, None, MS_BIND),
        _mount_step(f"remount {what} read-only", dst, None, None, _RO_BIND | flags),
    ]


def _mkdir(path: str) -> _Step:
    return (_MKDIR, "mkdir " + path, _ROOT + path.encode(), None, None, 0o755, None)


def _touch(path: str, mode: int = 0o644) -> _Step:
    return (_TOUCH, "create " + path, _ROOT + path.encode(), None, None, mode, None)


def _write(path: str, data: bytes) -> _Step:
    return (_WRITE, "write " + path, _ROOT + path.encode(), None, None, 0o644, data)


def _symlink(path: str, target: str) -> _Step:
    return (_SYMLINK, "symlink " + path, _ROOT + path.encode(), target.encode(), None, 0, None)


def _bind_same(path: str, is_dir: bool) -> list[_Step]:
    """Bind host `path` read-only at the same path in the new root (its parent must exist)."""
    make = _mkdir(path) if is_dir else _touch(path)
    return [make, *_bind_ro(path.encode(), _ROOT + path.encode(), path)]


_SKELETON = ("/etc", "/var", "/var/task", "/opt", "/proc", "/dev", "/tmp")
_NSSWITCH = (
    b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\n"
    b"protocols: files\nservices: files\nethers: files\nrpc: files\n"
)
_HOSTS = b"127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost\n"
_DEV_NODES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
              ("urandom", 1, 9), ("tty", 5, 0))  # fmt: skip
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))  # fmt: skip


def _static_plans() -> tuple[list[_Step], list[_Step], frozenset[str], tuple[str, ...]]:
    """What every instance's root holds, from this host's layout (read once, in the zygote).

    Returns the steps to run before the instance's own, the steps to run after them (/proc,
    /dev), the directories they make, and the path prefixes they already make visible.
    """
    made = set(_SKELETON)
    visible: list[str] = []
    early: list[_Step] = []
    # System directories read-only; usrmerge symlinks as on the host.
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            early.append(_symlink(path, os.readlink(path)))
        elif os.path.isdir(path):
            early += _bind_same(path, is_dir=True)
        else:
            continue
        made.add(path)
        visible.append(path + "/")
    early += [_mkdir(path) for path in _SKELETON]

    # A minimal /etc, never the host's: a few static tables written here, and bound read-only
    # what TLS, the dynamic linker and Debian's alternatives need.
    early += [_write("/etc/nsswitch.conf", _NSSWITCH), _write("/etc/hosts", _HOSTS)]
    for name in ("services", "protocols"):
        data = _read("/etc/" + name)
        if data is not None:
            early.append(_write("/etc/" + name, data))
    early.append(_symlink("/etc/localtime", "/usr/share/zoneinfo/UTC"))
    early.append(_symlink("/etc/mtab", "/proc/self/mounts"))
    early.append(_symlink("/etc/os-release", "/usr/lib/os-release"))
    for name in ("ssl", "ca-certificates", "pki", "alternatives", "ld.so.cache"):
        path = "/etc/" + name
        if os.path.exists(path):
            early += _bind_same(path, os.path.isdir(path))

    # /proc of the new PID namespace, mounted while the old root is still attached (in a user
    # namespace the kernel refuses it afterwards).
    proc_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    late = [_mount_step("mount /proc", _ROOT + b"/proc", b"proc", b"proc", proc_flags)]
    # A minimal /dev: the usual character devices and links, /dev/shm, nothing else.
    dev = _ROOT + b"/dev"
    dev_flags = MS_NOSUID | MS_NOEXEC
    late.append(_mount_step("mount /dev tmpfs", dev, b"dev", b"tmpfs", dev_flags,
                            b"size=64k,nr_inodes=64,mode=755"))  # fmt: skip
    for name, major, minor in _DEV_NODES:
        raw = b"/dev/" + name.encode()
        late.append((_MKNOD, "mknod /dev/" + name, _ROOT + raw, raw, None,
                     os.makedev(major, minor), None))  # fmt: skip
    late += [_symlink("/dev/" + name, target) for name, target in _DEV_LINKS]
    late.append(_mkdir("/dev/shm"))
    late.append(_mount_step("mount /dev/shm tmpfs", dev + b"/shm", b"shm", b"tmpfs",
                            _NOSUID_NODEV, b"size=64m,mode=1777"))  # fmt: skip
    late.append(_mount_step("remount /dev read-only", dev, None, None, _RO_BIND | dev_flags))
    return early, late, frozenset(made), tuple(visible)


_EARLY, _LATE, _MADE, _VISIBLE = _static_plans()
_UNDER_LATER_MOUNTS = ("/proc/", "/dev/", "/var/task/", "/var/runtime/", "/opt/")
_PRIVATE = [_mount_step("make / private", b"/", None, None, MS_REC | MS_PRIVATE)]
_ROOT_TMPFS = [_mount_step(f"mount {ROOT_MOUNT_POINT} tmpfs", _ROOT, b"lamina-root", b"tmpfs",
                           _NOSUID_NODEV, b"size=1m,nr_inodes=4096,mode=755")]  # fmt: skip
_MAKE_MOUNT_POINT: list[
    _Step
] = [  # 0755 each (os.makedirs would make the parents 0777 under umask 0)
    (_MKDIR, "mkdir " + path, path.encode(), None, None, 0o755, None)
    for path in ("/run", "/run/lamina", ROOT_MOUNT_POINT)
]
_ROOT_READ_ONLY = [_mount_step("remount / read-only", _ROOT, None, None, _RO_BIND | _NOSUID_NODEV)]


_RO_BIND_PLANS: dict[tuple[str, ...], list[_Step]] = {}


def _ro_bind_steps(ro_binds: tuple[str, ...]) -> list[_Step]:
    """The runtime's interpreter and SDK: read-only at the same path, with parents made 0755
    so that the sandbox user can walk down to them. The same for every instance of a runtime,
    so planned once per zygote (a stat per path, and what the zygote would redo per fork)."""
    steps = _RO_BIND_PLANS.get(ro_binds)
    if steps is not None:
        return steps
    steps = []
    made = set(_MADE)
    for path in sorted(os.path.normpath(p) for p in ro_binds):
        if path in made or path.startswith(_VISIBLE):
            continue  # already visible through /usr (or listed twice)
        if not path.startswith("/") or path == "/" or path.startswith(_UNDER_LATER_MOUNTS):
            raise ValueError(f"ro_binds: cannot bind {path!r} at the same path in the sandbox")
        parent = ""
        for part in path.split("/")[1:-1]:
            parent += "/" + part
            if parent not in made:
                made.add(parent)
                steps.append(_mkdir(parent))
        made.add(path)
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError as e:
            raise ConfineError(e.errno or errno.ENOENT, "ro_bind " + path) from e
        steps += _bind_same(path, is_dir)
    if len(_RO_BIND_PLANS) < 16:  # a zygote serves one interpreter: a runtime or two
        _RO_BIND_PLANS[ro_binds] = steps
    return steps


def plan_ro_binds(ro_binds: list[str] | tuple[str, ...]) -> bool:
    """Plan `ro_binds` ahead (in a zygote, before it forks blanks that will need the plan);
    True if that was new. A bad bind is left for the instance to report."""
    key = tuple(ro_binds)
    if key in _RO_BIND_PLANS:
        return False
    try:
        _ro_bind_steps(key)
    except (OSError, ValueError):
        return False
    return True


def _instance_plan(spec: ConfineSpec) -> list[_Step]:
    """The steps that depend on the instance: /tmp, its binds, /etc/passwd and friends."""
    size = b"size=%dm,mode=1777" % int(spec["ephemeral_mb"])
    # /tmp first, so that a bind below /tmp (a data dir in a test, say) is not hidden by it.
    plan = [_mount_step("mount /tmp tmpfs", _ROOT + b"/tmp", b"tmp", b"tmpfs", _NOSUID_NODEV, size)]
    plan += _ro_bind_steps(tuple(spec["ro_binds"]))
    plan += _bind_ro(spec["task_root"].encode(), _ROOT + b"/var/task", "/var/task")
    runtime_dir = spec.get("runtime_dir")
    if runtime_dir:
        plan.append(_mkdir("/var/runtime"))
        plan += _bind_ro(runtime_dir.encode(), _ROOT + b"/var/runtime", "/var/runtime")
    opt = spec.get("opt")
    if opt:
        plan += _bind_ro(opt.encode(), _ROOT + b"/opt", "/opt")

    plan += [_write("/etc/passwd", _passwd(spec)), _write("/etc/group", _group(spec))]
    resolv = spec.get("resolv_conf")
    if resolv is not None:
        plan.append(_write("/etc/resolv.conf", resolv.encode()))
    elif os.path.exists("/etc/resolv.conf"):  # the host's, live
        plan += _bind_same("/etc/resolv.conf", is_dir=False)
    else:
        plan.append(_write("/etc/resolv.conf", b""))
    return plan


def _passwd(spec: ConfineSpec) -> bytes:
    uid, gid = int(spec["uid"]), int(spec["gid"])
    user = (spec.get("user") or _DEFAULT_USER).encode()
    passwd = b"root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d::/tmp:/sbin/nologin\n" % (
        user, uid, gid)  # fmt: skip
    if uid != _NOBODY:
        passwd += b"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    return passwd


def _group(spec: ConfineSpec) -> bytes:
    gid = int(spec["gid"])
    group = b"root:x:0:\n%s:x:%d:\n" % ((spec.get("user") or _DEFAULT_USER).encode(), gid)
    if gid != _NOBODY:
        group += b"nogroup:x:65534:\n"
    return group


def _run(plan: list[_Step]) -> None:
    mount, mkdir, mknod = _mount, os.mkdir, os.mknod
    step = ""
    try:
        for op, step, path, src, fstype, n, data in plan:
            if op == _MOUNT:
                if mount(src, path, fstype, n, data) != 0:
                    _fail(step)
            elif op == _MKDIR:
                try:  # noqa: SIM105 (contextlib.suppress costs more, per instance)
                    mkdir(path, n)
                except FileExistsError:  # a parent inside an earlier bind
                    pass
            elif op == _SYMLINK:
                assert src is not None
                os.symlink(src, path)
            elif op == _WRITE:
                assert data is not None
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, n)
                try:
                    os.write(fd, data)  # one call: tmpfs never writes short
                finally:
                    os.close(fd)
            elif op == _TOUCH:
                try:  # noqa: SIM105
                    mknod(path, stat.S_IFREG | n)
                except FileExistsError:
                    pass
            elif op == _MKNOD:
                try:
                    mknod(path, stat.S_IFCHR | 0o666, n)
                except PermissionError:  # no CAP_MKNOD here: bind the host's node instead
                    assert src is not None
                    mknod(path, stat.S_IFREG | 0o666)
                    _run(_bind_ro(src, path, src.decode(), MS_NOSUID | MS_NOEXEC))
    except ConfineError:
        raise
    except OSError as e:
        raise ConfineError(e.errno or errno.EIO, step) from e


class Prepared:
    """A spec turned into the exact steps that confine an instance, ready to run in a child.

    `prepare(spec)` in the zygote, before it forks, keeps that work (and the copy-on-write
    faults it would cost) out of every child; `confine(spec)` also takes a plain spec.
    """

    __slots__ = ("from_template", "gid", "hostname", "plan", "uid")

    def __init__(self, spec: ConfineSpec) -> None:
        # On a zygote's root template (same binds) only the instance's own mounts are left.
        self.from_template = _TEMPLATE_BINDS[0] == tuple(spec["ro_binds"])
        if self.from_template:
            self.plan = _templated_plan(spec)
        else:
            self.plan = _EARLY + _instance_plan(spec) + _LATE + _ROOT_READ_ONLY
        self.hostname: str = spec["hostname"]
        self.uid = int(spec["uid"])
        self.gid = int(spec["gid"])
        if self.uid == 0 or self.gid == 0:
            raise ValueError("a sandbox must not run as uid or gid 0")


def prepare(spec: ConfineSpec) -> Prepared:
    """Check `spec` and plan its confinement (cheap; do it before forking where possible)."""
    return Prepared(spec)


def _mount_root_tmpfs() -> None:
    """Make / private, then mount a fresh tmpfs at ROOT_MOUNT_POINT (its directory made once
    per host)."""
    _run(_PRIVATE)
    try:
        _run(_ROOT_TMPFS)
    except ConfineError as e:
        if e.errno != errno.ENOENT:
            raise
        _run(_MAKE_MOUNT_POINT)
        _run(_ROOT_TMPFS)


def build_root(spec: ConfineSpec | Prepared) -> None:
    """Build the instance's root filesystem and `pivot_root` into it; cwd becomes /var/task.

    Must run as root, in a mount namespace of its own and as a member of the new PID namespace
    (the fresh /proc shows the PID namespace of the process that mounts it), that is in the
    grandchild after `enter_namespaces`. After an error the namespace is half-built: exit.
    """
    prepared = spec if isinstance(spec, Prepared) else Prepared(spec)  # before any change
    old_umask = os.umask(0)
    try:
        if not prepared.from_template:  # the whole root, on a tmpfs of this instance's own
            _mount_root_tmpfs()
        # (on a template: this namespace is a copy of the zygote's, already private)
        _run(prepared.plan)  # the root ends read-only: the instance writes to /tmp, /dev/shm
    finally:
        os.umask(old_umask)
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching "." drops it.
    try:
        os.chdir(_ROOT)
    except OSError as e:
        raise ConfineError(e.errno or errno.EIO, "chdir to the new root") from e
    if _pivot_root(SYS_pivot_root, b".", b".") != 0:
        _fail("pivot_root")
    if _umount2(b".", MNT_DETACH) != 0:
        _fail("detach the old root")
    try:
        os.chdir(b"/var/task")
    except OSError as e:
        raise ConfineError(e.errno or errno.EIO, "chdir /var/task") from e


# --- 2b. the root template of a zygote ------------------------------------------------------
#
# A zygote builds the part of the root that every instance of its runtime shares once,
# read-only, in a mount namespace of its own; an instance's namespace starts as a copy of it
# (copying a mount is far cheaper than making one) and only its own mounts are left to make.

_STAGE = b"/run/lamina/stage"  # in each instance's namespace, a tmpfs for its /etc files
_TEMPLATE_BINDS: list[tuple[str, ...] | None] = [None]  # the ro_binds the template holds


def build_template(ro_binds: list[str] | tuple[str, ...]) -> None:
    """In a zygote (root): move to a mount namespace of its own and build the template there.
    Instances whose spec has the same `ro_binds` then start from it (see `Prepared`)."""
    key = tuple(ro_binds)
    if _unshare(CLONE_NEWNS) != 0:
        _fail("unshare the zygote's mount namespace")
    steps = _EARLY + _ro_bind_steps(_outside_tmp(key)[0]) + [_mkdir("/var/runtime")]
    steps += [_touch("/etc/passwd"), _touch("/etc/group")]  # mount points for the instance's
    if os.path.exists("/etc/resolv.conf"):  # the host's, live
        steps += _bind_same("/etc/resolv.conf", is_dir=False)
    else:
        steps.append(_touch("/etc/resolv.conf"))
    # /dev as every instance has it; /proc and /dev/shm are each instance's own
    own = (_ROOT + b"/proc", _ROOT + b"/dev/shm")
    steps += [step for step in _LATE if not (step[0] == _MOUNT and step[2] in own)]
    old_umask = os.umask(0)
    try:
        _mount_root_tmpfs()
        _run(steps)
        _run(_ROOT_READ_ONLY)
        try:  # noqa: SIM105
            os.mkdir(_STAGE, 0o755)
        except FileExistsError:
            pass
    finally:
        os.umask(old_umask)
    _TEMPLATE_BINDS[0] = key


def _outside_tmp(ro_binds: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(binds the template can hold, binds below /tmp): the instance's own /tmp would hide
    the latter, so each instance makes them after mounting it (a checkout under /tmp, say)."""
    below = tuple(p for p in ro_binds if os.path.normpath(p).startswith("/tmp/"))
    return tuple(p for p in ro_binds if p not in below), below


def _templated_plan(spec: ConfineSpec) -> list[_Step]:
    """An instance's own mounts, on its copy of the zygote's template."""
    size = b"size=%dm,mode=1777" % int(spec["ephemeral_mb"])
    plan = [_mount_step("mount /tmp tmpfs", _ROOT + b"/tmp", b"tmp", b"tmpfs", _NOSUID_NODEV, size)]
    below_tmp = _outside_tmp(tuple(spec["ro_binds"]))[1]
    if below_tmp:
        plan += _ro_bind_steps(below_tmp)
    plan += _bind_ro(spec["task_root"].encode(), _ROOT + b"/var/task", "/var/task")
    runtime_dir = spec.get("runtime_dir")
    if runtime_dir:
        plan += _bind_ro(runtime_dir.encode(), _ROOT + b"/var/runtime", "/var/runtime")
    opt = spec.get("opt")
    if opt:
        plan += _bind_ro(opt.encode(), _ROOT + b"/opt", "/opt")
    files = {"passwd": _passwd(spec), "group": _group(spec)}
    resolv = spec.get("resolv_conf")
    if resolv is not None:
        files["resolv.conf"] = resolv.encode()
    stage_flags = _NOSUID_NODEV | MS_NOEXEC
    plan.append(_mount_step("mount the /etc staging tmpfs", _STAGE, b"etc", b"tmpfs",
                            stage_flags, b"size=16k,nr_inodes=8,mode=755"))  # fmt: skip
    for name, data in files.items():
        plan.append((_WRITE, "write /etc/" + name, _STAGE + b"/" + name.encode(), None, None,
                     0o644, data))  # fmt: skip
    plan.append(_mount_step("remount the /etc staging tmpfs read-only", _STAGE, None, None,
                            _RO_BIND | stage_flags))  # fmt: skip
    for name in files:
        target = _ROOT + b"/etc/" + name.encode()
        plan += _bind_ro(_STAGE + b"/" + name.encode(), target, "/etc/" + name)
    proc_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    plan.append(_mount_step("mount /proc", _ROOT + b"/proc", b"proc", b"proc", proc_flags))
    plan.append(_mount_step("mount /dev/shm tmpfs", _ROOT + b"/dev/shm", b"shm", b"tmpfs",
                            _NOSUID_NODEV, b"size=64m,mode=1777"))  # fmt: skip
    return plan


# --- 3. hostname and privileges -------------------------------------------------------------


def set_hostname(name: str) -> None:
    """Set the UTS namespace's hostname (needs CAP_SYS_ADMIN: call before dropping)."""
    raw = name.encode()
    if _sethostname(raw, len(raw)) != 0:
        _fail(f"sethostname {name!r}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]


_CAPS = tuple(range(int((_read("/proc/sys/kernel/cap_last_cap") or b"40").strip()) + 1))
_CAP_HEADER = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
_CAP_NONE = (_CapData * 2)()
_CAP_ADDRESSES = (ctypes.addressof(_CAP_HEADER), ctypes.addressof(_CAP_NONE))


def drop_privileges(uid: int, gid: int) -> None:
    """Become `uid`/`gid` with no supplementary groups, no capabilities, and no_new_privs."""
    if uid == 0 or gid == 0:
        raise ValueError("a sandbox must not run as uid or gid 0")
    try:
        os.setgroups([])
    except OSError as e:
        raise ConfineError(e.errno or errno.EPERM, "setgroups []") from e
    try:
        os.setresgid(gid, gid, gid)
    except OSError as e:
        raise ConfineError(e.errno or errno.EPERM, f"setresgid {gid}") from e
    # The bounding set only shrinks with CAP_SETPCAP, so before setresuid gives it up.
    prctl = _prctl_untyped
    for cap in _CAPS:
        if prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            _fail(f"drop capability {cap} from the bounding set")
    try:
        os.setresuid(uid, uid, uid)
    except OSError as e:
        raise ConfineError(e.errno or errno.EPERM, f"setresuid {uid}") from e
    # Leaving uid 0 cleared permitted and effective; clear inheritable and ambient too.
    if _capset(SYS_capset, _CAP_ADDRESSES[0], _CAP_ADDRESSES[1]) != 0:
        _fail("capset to empty")
    if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        _fail("clear ambient capabilities")
    # Changing uid made the process non-dumpable, which hands /proc/self/* to root and hides
    # /proc/self/fd (so /dev/stdout) from the instance itself. Nothing privileged is left in
    # it, and seccomp denies ptrace anyway.
    if prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        _fail("set dumpable")
    if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fail("set no_new_privs")


# --- 4. seccomp (the program: seccomp.py) --------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PROGRAM = _bpf.filter_bytes(NAMESPACE_FLAGS)
_FILTER = ctypes.create_string_buffer(_PROGRAM, len(_PROGRAM))
_FPROG = _SockFprog(len(_PROGRAM) // 8, ctypes.addressof(_FILTER))
_FPROG_ADDRESS = ctypes.addressof(_FPROG)


def load_seccomp() -> None:
    """Install the deny list on every thread of this process (needs no_new_privs, or root)."""
    rc = _seccomp(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, _FPROG_ADDRESS)
    if rc < 0:
        _fail("load the seccomp filter")
    if rc > 0:  # TSYNC names the thread it could not bring along
        raise ConfineError(errno.EBUSY, f"load the seccomp filter (thread {rc})")


# --- all of it ------------------------------------------------------------------------------


def confine(spec: ConfineSpec | Prepared) -> None:
    """Confine the calling grandchild (after `enter_namespaces`): root, hostname, ids, seccomp.

    `spec` is a `ConfineSpec` or, cheaper per instance, what `prepare(spec)` made of it in the
    zygote before forking.
    """
    prepared = spec if isinstance(spec, Prepared) else Prepared(spec)
    build_root(prepared)
    set_hostname(prepared.hostname)
    drop_privileges(prepared.uid, prepared.gid)
    load_seccomp()
