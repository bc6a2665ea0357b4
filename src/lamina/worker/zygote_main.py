"""The zygote: a warm interpreter of one runtime that forks a confined instance on request.

Runs as its own process, under the interpreter of the runtime it serves (python3.9 ... 3.14, or
lamina's own for `provided` runtimes), so it is standard library only and runs on Python 3.9+.
It imports lamina's Python bootstrap and the confinement code once, freezes the heap
(`gc.freeze()`, so forked instances share it copy-on-write), makes it immortal on Python 3.12
and 3.13 (`_immortalize`: reference counts no longer write to its pages), then serves lamina
over a Unix socket (fd in argv[1]):

    lamina -> zygote   {"op": "spawn", "id", "spec", "procs", "netns", "exec"} + 2 fds: the log
                       pipe, and a pipe holding the environment (read only by the instance)
    lamina -> zygote   {"op": "blank", "id", "procs", "netns", "ro_binds"?} + 1 fd: the blank's
                       end of a socket on which it later receives {"spec", "exec"} + the 2 fds
                       above ("ro_binds", when lamina knows them: planned once, before forking)
    zygote -> lamina   {"op": "ready", "python", "immortal"} once, at start
    zygote -> lamina   {"op": "spawned", "id", "pid"} | {"op": "failed", "id", "error"}
                       {"op": "exit", "pid", "status"}   (status < 0: killed by that signal)

Messages are a 4-byte big-endian length and JSON; the fds travel as SCM_RIGHTS.

A spawn: new PID namespace for the next child, fork (the instance's init, PID 1 of it; the
zygote then points its own next child back at its PID namespace) -> new session -> join the
instance's cgroups -> enter its network namespace -> new mount/IPC/UTS namespaces -> fork the
runtime (PID 2; init drops to the instance's uid and only reaps from then on) -> in the
runtime: stdout/stderr to the log pipe -> confine (minimal read-only root, /var/task, sized
/tmp, /proc, unprivileged uid, no capabilities, no_new_privs, seccomp) -> run the runtime: the
already imported bootstrap for Python, an exec of the package's `bootstrap` for custom
runtimes. The zygote reaps every instance's init (its direct children), which ends with the
runtime, and reports how each ended.

A blank does the first half ahead of need (fork, session, cgroups, network namespace, new
mount/IPC/UTS namespaces, the runtime's fork) and then waits; lamina hands it a function on
the cold path, and only the second half (confine, runtime) is left to do then. That keeps the
forks and the cgroup attach (whose latency has a tail of tens of milliseconds on cgroup v1)
off the path.
"""

import contextlib
import ctypes
import gc
import json
import os
import select
import signal
import socket
import struct
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_OURS = [_HERE, os.path.join(os.path.dirname(_HERE), "runtimes", "python")]
sys.path[:0] = _OURS


import bootstrap  # noqa: E402
import confine  # noqa: E402

# A function's own `bootstrap.py` or `confine.py` must import as itself: lamina's modules stay
# loaded under private names, and their directories leave the import path.
sys.path[:] = [p for p in sys.path if p not in _OURS]
for _name in ("bootstrap", "confine", "seccomp"):
    sys.modules["_lamina_" + _name] = sys.modules.pop(_name)

CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNS_IPC_UTS = 0x00020000 | 0x08000000 | 0x04000000
SYS_CLOSE_RANGE = 436
_libc = ctypes.CDLL(None, use_errno=True)
# Looked up here, once: CDLL makes a function object on the first attribute access, and made in
# a forked child that costs every instance ~0.2 ms of faults and setup.
_syscall = _libc.syscall
_HEADER = struct.Struct(">I")


def _send(sock, message):
    _send_raw(sock, json.dumps(message).encode())


def _send_raw(sock, data):
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv(sock):
    """One message and the fds that came with it; None at EOF."""
    fds = []
    header = b""
    while len(header) < 4:
        chunk, anc, _flags, _addr = sock.recvmsg(4 - len(header), socket.CMSG_SPACE(16))
        if not chunk:
            return None, fds
        fds += _fds(anc)
        header += chunk
    (size,) = _HEADER.unpack(header)
    body = b""
    while len(body) < size:
        chunk, anc, _flags, _addr = sock.recvmsg(size - len(body), socket.CMSG_SPACE(16))
        if not chunk:
            return None, fds
        fds += _fds(anc)
        body += chunk
    return json.loads(body), fds


def _fds(ancillary):
    out = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            out += list(struct.unpack("%di" % (usable // 4), data[:usable]))
    return out


def _setns(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns " + path)
    finally:
        os.close(fd)


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))


def _close_from_3():
    """Close every fd from 3 up (close_range(2): one syscall on any Python)."""
    if _syscall(SYS_CLOSE_RANGE, 3, 0xFFFFFFFF, 0) != 0:
        os.closerange(3, 65536)


def _split(uid):
    """Fork the runtime; the calling process, PID 1 of the instance, stays behind as its init
    and never returns from here.

    The fork comes before any confinement work, so init has written almost nothing when the
    runtime is copied from it: the pages the confinement writes are copied once (in the
    runtime), not once in init and again in the runtime. Init shares the runtime's mount, IPC
    and UTS namespaces (the runtime's `pivot_root` moves init into the new root too) and drops
    to the instance's uid with no capabilities at once."""
    runtime = os.fork()
    if runtime == 0:
        return
    gc.disable()  # init allocates nearly nothing; every page it writes is a private copy
    try:
        _syscall(SYS_CLOSE_RANGE, 3, 0xFFFFFFFF, 0)  # the zygote's socket, the runtime's fds
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # leaving uid 0 empties the capability sets
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.write(2, ("lamina: instance init failed: %s\n" % (exc,)).encode())
        os._exit(126)  # the kernel kills the runtime with the namespace
    _init(runtime)


def _init(runtime):
    """PID 1 of an instance: reap every orphan, and end with the runtime.

    The kernel ignores signals a PID 1 sends itself, so the runtime must not be PID 1 (a
    handler's `os.kill(os.getpid(), SIGKILL)` has to kill it, as on Lambda). When the runtime
    ends, init exits with its status — 128 + N when signal N killed it, as a shell reports it —
    and the kernel kills whatever else is left in the namespace."""
    wait = os.wait
    while True:
        try:
            pid, status = wait()
        except ChildProcessError:
            os._exit(0)
        if pid == runtime:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status))


def _read_env(fd):
    """The instance's environment, from the pipe lamina filled (the zygote never reads it, so
    one function's variables never sit in the heap the next instance is forked from)."""
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))


def _enter(request):
    """In the forked child: its own session, the instance's cgroups and network namespace."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    me = str(os.getpid()).encode()
    for path in request.get("procs") or ():
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, me)
        finally:
            os.close(fd)
    if request.get("netns"):
        _setns(request["netns"])


def _become(request, log_fd, env_fd):
    """In the runtime, forked by `_split`: confine, then run the runtime."""
    env = _read_env(env_fd)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    _close_from_3()
    confine.confine(request["prepared"])
    null = os.open("/dev/null", os.O_RDONLY)  # the sandbox's own, not a handle from outside
    os.dup2(null, 0)
    os.close(null)
    argv = request.get("exec")
    if argv:
        try:
            os.execve(argv[0], argv, env)
        except OSError as exc:
            os.write(2, ("lamina: cannot exec %s: %s\n" % (argv[0], exc)).encode())
            os._exit(127)
    _set_environ(env)
    sys.argv[1:] = []  # the bootstrap would read a handler from argv; ours is the fd
    bootstrap.main()


_ENVIRON = ctypes.c_void_p.in_dll(_libc, "environ")  # libc's `char **environ`
_ENV_BLOCK = [None]  # the instance's environ array: it must live as long as the process
# Array types made here, once: making a ctypes type in the instance costs more than the rest.
_ENV_ARRAYS = [ctypes.c_char_p * size for size in (64, 256, 1024)]
_FS_ENCODING = sys.getfilesystemencoding()


def _set_environ(env):
    """Make `env` the process's whole environment, for C (getenv, what a child execs with) and
    for os.environ alike.

    os.environ.clear() + update() cost ~0.55 ms and ~75 page faults in an instance: a setenv()
    per variable, each copying and reallocating inside the heap inherited from the zygote. One
    NULL-terminated array handed to libc and one dict for os.environ do the same for less;
    libc's setenv/unsetenv work on such an array afterwards (it copies it before growing it).
    Anything os.environ would refuse (a NUL, a name with "=") goes the ordinary way and is
    refused the same way."""
    try:
        pairs = {
            k.encode(_FS_ENCODING, "surrogateescape"): v.encode(_FS_ENCODING, "surrogateescape")
            for k, v in env.items()
        }
    except (AttributeError, UnicodeError):  # not strings: os.environ says what is wrong
        pairs = {}
    if not pairs or any(b"=" in k or b"\0" in k or b"\0" in v or not k for k, v in pairs.items()):
        os.environ.clear()
        os.environ.update(env)
        return
    size = len(pairs) + 1  # and the NULL that ends it
    kind = next((t for t in _ENV_ARRAYS if t._length_ >= size), None) or ctypes.c_char_p * size
    block = kind(*[k + b"=" + v for k, v in pairs.items()])  # the rest of it stays NULL
    _ENV_BLOCK[0] = block  # keeps the array and its strings alive
    _ENVIRON.value = ctypes.addressof(block)
    data = os.environ._data  # what os.environ (and os.environb) map, encoded
    data.clear()
    data.update(pairs)


def _instance(request, log_fd, env_fd):
    """In the forked child: become the instance's init, and fork its runtime. Never returns."""

    def body():
        _enter(request)
        _check(_libc.unshare(CLONE_NEWNS_IPC_UTS), "unshare mount/ipc/uts namespaces")
        _split(request["prepared"].uid)
        _become(request, log_fd, env_fd)

    _run_child(body)


def _blank(request, ctl_fd):
    """In the forked child: a blank instance, already in its cgroups and namespaces, its init
    and its runtime-to-be forked, waiting on its own control socket for the function it is to
    become. Never returns."""

    def wait_then_become():
        _enter(request)
        _check(_libc.unshare(CLONE_NEWNS_IPC_UTS), "unshare mount/ipc/uts namespaces")
        _split(request["uid"])
        ctl = socket.socket(fileno=ctl_fd)
        ctl.sendall(b"r")  # ready: in its cgroups and namespaces (lamina waits for this)
        activation, fds = _recv(ctl)
        ctl.detach()  # its fd goes with the others in _become; the object must not close it
        if activation is None or len(fds) != 2:
            os._exit(0)  # lamina retired the blank (or went away)
        activation["prepared"] = confine.prepare(activation["spec"])
        _become(activation, fds[0], fds[1])

    _run_child(wait_then_become)


def _run_child(body):
    status = 126
    try:
        body()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # report, then exit: nothing may return into the zygote loop
        with contextlib.suppress(OSError):
            os.write(2, ("lamina: sandbox setup failed: %s\n" % (exc,)).encode())
    finally:
        os._exit(status)


def _spawn(sock, request, fds):
    """spawn: fds are the log pipe's write end and the read end of a pipe holding the
    environment. blank: one fd, the blank's end of its control socket."""
    blank = request.get("op") == "blank"
    if len(fds) != (1 if blank else 2):
        for fd in fds:
            os.close(fd)
        _send(sock, {"op": "failed", "id": request.get("id"), "error": "wrong number of fds"})
        return
    if os.getppid() != _PARENT[0]:  # lamina died: requests still buffered are for nobody
        os._exit(0)
    if _TEMPLATE_TRIED[0] is False:
        binds = request.get("ro_binds") if blank else request["spec"].get("ro_binds")
        if binds and not request.get("exec"):  # a Python runtime's: most instances here
            _build_template(binds)
    try:
        if not blank:
            request["prepared"] = confine.prepare(request["spec"])  # checked before forking
        elif request.get("ro_binds") and confine.plan_ro_binds(request["ro_binds"]):
            _settle()  # the plan is shared by every blank from now on
        _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
        pid = os.fork()
    except Exception as exc:
        for fd in fds:
            os.close(fd)
        _send(sock, {"op": "failed", "id": request["id"], "error": str(exc)})
        return
    if pid == 0:
        sock.close()
        if blank:
            _blank(request, fds[0])
        _instance(request, fds[0], fds[1])
    # Children after this one must not land in the instance's PID namespace: point them back
    # at ours. If that fails the zygote cannot go on safely; lamina restarts it.
    _check(_libc.setns(_PIDNS[0], CLONE_NEWPID), "setns back to the zygote's PID namespace")
    for fd in fds:
        os.close(fd)
    # Formatted by hand, like "exit": after each fork every page the zygote writes is a fresh
    # copy, and the JSON encoder's objects are ~10 of those pages per spawn.
    _send_raw(sock, b'{"op": "spawned", "id": %d, "pid": %d}' % (request["id"], pid))


def _build_template(binds):
    """Once: the read-only part of every instance's root, in the zygote's own mount namespace
    (confine.build_template). Without it each instance builds its whole root, as before."""
    _TEMPLATE_TRIED[0] = True
    try:
        confine.build_template(binds)
    except Exception as exc:  # logged; instances still confine themselves fully
        with contextlib.suppress(OSError):
            os.write(2, ("lamina: zygote root template failed: %s\n" % (exc,)).encode())
    _settle()


def _reap(sock):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _send_raw(sock, b'{"op": "exit", "pid": %d, "status": %d}' % (pid, code))


# Python 3.12 and 3.13 on 64-bit (PEP 683): an object whose refcount's low 32 bits are all
# ones is immortal, and Py_INCREF/Py_DECREF leave it alone instead of writing to it. Later
# versions change the header's layout again; they are left alone until verified.
_IMMORTAL = 0xFFFFFFFF
_CAN_IMMORTALIZE = (
    (3, 12) <= sys.version_info[:2] <= (3, 13)
    and sys.maxsize > 2**32
    and sys.byteorder == "little"
    and "t" not in sys.abiflags  # a free-threaded build counts references differently
)


def _immortalize(objects, through_immortal=False):
    """Make `objects`, and everything they reach, immortal (Python 3.12, 3.13; else a no-op).

    After a fork every page the instance writes is a private copy, and most such writes in an
    instance are reference counts: a function called, a constant loaded, a module global read
    all write to the object's page (~55% of an instance's write faults, measured). What the
    zygote holds lives as long as the zygote anyway; immortal, its pages stay shared. Only the
    zygote's own objects are touched: an instance's objects, and anything the zygote makes
    later, count references as usual. `through_immortal` also follows what objects that are
    already immortal reach (the first pass: the interpreter's static objects are immortal, what
    they hold is not); later passes stop there. Returns how many objects were made immortal."""
    if not _CAN_IMMORTALIZE:
        return 0
    # The low half of each object's ob_refcnt, addressed as 32-bit words from address 0.
    words = memoryview((ctypes.c_uint32 * (sys.maxsize // 4)).from_address(0)).cast("B").cast("I")
    code = type(_immortalize.__code__)  # not tracked by gc: its constants and names come here
    seen = set()
    level = list(objects)
    made = 0
    while level:
        batch, more = [], []
        for obj in level:
            key = id(obj)
            if key in seen:
                continue
            seen.add(key)
            if words[key >> 2] < 0x80000000:  # not immortal yet
                words[key >> 2] = _IMMORTAL
                made += 1
            elif not through_immortal:
                continue
            batch.append(obj)
            if type(obj) is code:
                more += (obj.co_consts, obj.co_names, obj.co_filename, obj.co_name, obj.co_qualname)
        level = gc.get_referents(*batch) + more
    words.release()
    return made


def _settle(through_immortal=False):
    """What the zygote holds now is shared by every instance forked from here on: immortal
    (3.12, 3.13) and frozen, out of the collector's reach. Returns `_immortalize`'s count."""
    made = _immortalize(gc.get_objects(), through_immortal)
    gc.freeze()
    return made


_PIDNS = [-1]  # an fd for the zygote's own PID namespace
_TEMPLATE_TRIED = [False]
_PARENT = [0]  # lamina's pid


def _prepare_runtime():
    """Work every Python instance would otherwise repeat after the fork, done once here.

    - The instance's unbuffered stdout/stderr (bootstrap.setup_stdio), made while fds 1 and 2
      are briefly a pipe: the streams then know their fds are not seekable, as the instance's
      log pipe is not; they keep writing to fds 1 and 2, whatever those are in the instance.
    - Finders for /var/task and /var/runtime in the path importer cache (the zip importer is
      no use for a directory); each instance's copy reads its own directory when first used.
    - No bytecode writes: /var/task is read-only, so each attempt only fails.
    """
    r, w = os.pipe()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(w, 1)
        os.dup2(w, 2)
        bootstrap.setup_stdio()
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (r, w, *saved):
            os.close(fd)
    import importlib._bootstrap_external as external  # frozen: no file is read

    loaders = external._get_supported_file_loaders()
    for entry in ("/var/task", "/var/runtime"):
        sys.path_importer_cache[entry] = external.FileFinder(entry, *loaders)
    sys.dont_write_bytecode = True


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    _PIDNS[0] = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    _PARENT[0] = os.getppid()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _prepare_runtime()
    gc.collect()
    immortal = _settle(through_immortal=True)
    _send(sock, {"op": "ready", "python": list(sys.version_info[:3]), "immortal": immortal})
    poller = select.poll()  # one object for the zygote's life (select() makes lists per call)
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    sock_fd = sock.fileno()
    while True:
        try:
            ready = [fd for fd, _ in poller.poll()]
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            _reap(sock)
        if sock_fd in ready:
            request, fds = _recv(sock)
            if request is None:
                return  # lamina went away: the instances die with their cgroups
            if request.get("op") in ("spawn", "blank"):
                _spawn(sock, request, fds)
            _reap(sock)


if __name__ == "__main__":
    main()
