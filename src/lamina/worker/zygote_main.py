"""The zygote: a warm interpreter of one runtime that forks a confined instance on request.

Runs as its own process, under the interpreter of the runtime it serves (python3.9 ... 3.14, or
lamina's own for `provided` runtimes), so it is standard library only and runs on Python 3.9+.
It imports lamina's Python bootstrap and the confinement code once, freezes the heap
(`gc.freeze()`, so forked instances share it copy-on-write), then serves lamina over a Unix
socket (fd in argv[1]):

    lamina -> zygote   {"op": "spawn", "id", "env", "spec", "procs", "netns", "exec"} + log fd
    zygote -> lamina   {"op": "spawned", "id", "pid"} | {"op": "failed", "id", "error"}
                       {"op": "exit", "pid", "status"}   (status < 0: killed by that signal)

Messages are a 4-byte big-endian length and JSON; the log fd travels as SCM_RIGHTS.

A spawn: fork -> new session -> join the instance's cgroups -> enter its network namespace ->
stdout/stderr to the log pipe -> new mount/PID/IPC/UTS namespaces + fork (the instance is PID 1
of its own PID namespace) -> confine (minimal read-only root, /var/task, sized /tmp, /proc,
unprivileged uid, no capabilities, no_new_privs, seccomp) -> run the runtime: the already
imported bootstrap for Python, an exec of the package's `bootstrap` for custom runtimes. The
zygote is a child subreaper, so it reaps every instance and reports how it ended.
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
sys.path[:0] = [_HERE, os.path.join(os.path.dirname(_HERE), "runtimes", "python")]


import bootstrap  # noqa: E402
import confine  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36
CLONE_NEWNET = 0x40000000
SYS_CLOSE_RANGE = 436
_libc = ctypes.CDLL(None, use_errno=True)
_HEADER = struct.Struct(">I")


def _send(sock, message):
    data = json.dumps(message).encode()
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
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, "setns %s: %s" % (path, os.strerror(err)))
    finally:
        os.close(fd)


def _close_all_but(keep):
    """Close every fd from 3 up except `keep` (close_range(2): one syscall on any Python)."""
    for low, high in ((3, keep - 1), (keep + 1, 0xFFFFFFFF)):
        if low <= high and _libc.syscall(SYS_CLOSE_RANGE, low, high, 0) != 0:
            os.closerange(low, min(high, 65535) + 1)


def _instance(request, log_fd, pid_w):
    """In the forked child: become the instance. Never returns."""
    status = 126
    try:
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
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        _close_all_but(pid_w)
        inner = confine.enter_namespaces()
        if inner:  # the intermediate process: report the instance's pid, then leave
            os.write(pid_w, str(inner).encode())
            os._exit(0)
        os.close(pid_w)
        confine.confine(request["prepared"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv = request.get("exec")
        if argv:
            try:
                os.execve(argv[0], argv, request["env"])
            except OSError as exc:
                os.write(2, ("lamina: cannot exec %s: %s\n" % (argv[0], exc)).encode())
                os._exit(127)
        sys.argv[1:] = []  # the bootstrap would read a handler from argv; ours is the fd
        bootstrap.main()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # report, then exit: nothing may return into the zygote loop
        with contextlib.suppress(OSError):
            os.write(2, ("lamina: sandbox setup failed: %s\n" % (exc,)).encode())
    finally:
        os._exit(status)


def _spawn(sock, request, fds):
    log_fd = fds[0] if fds else None
    for extra in fds[1:]:
        os.close(extra)
    if log_fd is None:
        _send(sock, {"op": "failed", "id": request.get("id"), "error": "no log fd"})
        return
    try:
        request["prepared"] = confine.prepare(request["spec"])  # checked before forking
    except Exception as exc:
        os.close(log_fd)
        _send(sock, {"op": "failed", "id": request["id"], "error": str(exc)})
        return
    pid_r, pid_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(pid_r)
        sock.close()
        _instance(request, log_fd, pid_w)
    os.close(pid_w)
    os.close(log_fd)
    data = b""
    while True:
        chunk = os.read(pid_r, 32)
        if not chunk:
            break
        data += chunk
    os.close(pid_r)
    if data:
        _send(sock, {"op": "spawned", "id": request["id"], "pid": int(data)})
    else:
        _send(sock, {"op": "failed", "id": request["id"], "error": "the instance did not start"})


def _reap(sock):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        _send(sock, {"op": "exit", "pid": pid, "status": code})


def main():
    sock = socket.socket(fileno=int(sys.argv[1]))
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.collect()
    gc.freeze()  # instances share the zygote's heap copy-on-write
    _send(sock, {"op": "ready", "python": list(sys.version_info[:3])})
    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            _reap(sock)
        if sock in ready:
            request, fds = _recv(sock)
            if request is None:
                return  # lamina went away: the instances die with their cgroups
            if request.get("op") == "spawn":
                _spawn(sock, request, fds)
            _reap(sock)


if __name__ == "__main__":
    main()
