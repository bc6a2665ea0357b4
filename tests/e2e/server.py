"""A real `lamina serve` subprocess on an ephemeral port, for end-to-end tests."""

from __future__ import annotations

import io
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from lamina.auth.sessions import LAMBDA_TRUST_POLICY

READY = re.compile(r"lamina ready on (http://\S+)")
ROLE = "arn:aws:iam::000000000000:role/lamina-test"
TRUST_LAMBDA = LAMBDA_TRUST_POLICY  # a role Lambda may assume
# The root key of every test server (lamina takes it from these variables, as DESIGN.md §1 says).
ROOT_KEY_ENV = {
    "LAMINA_ACCESS_KEY_ID": "AKIATESTTESTTESTTEST",
    "LAMINA_SECRET_ACCESS_KEY": "test-secret-test-secret-test-secret-0000",
}


class Server:
    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra = list(extra)
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.pid = 0  # of the last `lamina serve` started (its cgroup run dir is named after it)
        self.url = ""
        self.output: list[str] = []
        self._pump_thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> Server:
        self.url = ""
        # The IAM master key lives outside the data dir (auth/secrets.py): keep it beside the
        # test's data dir, so nothing lands in the real ~/.config and the tmp dir cleans it up.
        config_home = str(self.data_dir.parent / "xdg-config")
        env = {**os.environ, "LAMINA_LOG_LEVEL": "info", "XDG_CONFIG_HOME": config_home}
        env.update(ROOT_KEY_ENV)  # the clients below sign as the account's root key
        env.update(self.env)
        for key in ("AWS_ENDPOINT_URL", "LAMINA_CONFIG"):
            env.pop(key, None)
        argv = [sys.executable, "-m", "lamina", "serve", "--port", "0"]
        argv += ["--data-dir", str(self.data_dir), *self.extra]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.pid = self.proc.pid
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            self.output.append(line)
            m = READY.search(line)
            if m:
                self.url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.stop()
            raise RuntimeError("lamina serve did not start:\n" + "".join(self.output))
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        self._ensure_role()
        return self

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self._pump_thread is not None:
            self._pump_thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None
        return code

    @property
    def log(self) -> str:
        return "".join(self.output)

    def run_dirs(self) -> list[Path]:
        """This lamina's cgroup run directories (`lamina/run-<pid>-<start>`), in every hierarchy."""
        assert self.pid, "the server was never started"
        return run_dirs(self.pid)

    def instance_cgroups(self) -> dict[str, list[int]]:
        """This lamina's instance cgroups (e.g. `/lamina/run-<pid>-<start>/i3`): their host pids."""
        assert self.pid, "the server was never started"
        return instance_cgroups(self.pid)

    def _ensure_role(self) -> None:
        """The execution role every test function uses (lamina checks that a function's role
        exists and trusts lambda.amazonaws.com, as AWS does)."""
        iam = self.client("iam")
        with suppress(iam.exceptions.EntityAlreadyExistsException):
            iam.create_role(RoleName=ROLE.rsplit("/", 1)[1], AssumeRolePolicyDocument=TRUST_LAMBDA)

    def client(self, service: str = "lambda", **config: Any) -> Any:
        cfg = Config(retries={"max_attempts": 1, "mode": "standard"}, **config)
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"],
            aws_secret_access_key=ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"],
            config=cfg,
        )


@contextmanager
def running(data_dir: Path, *extra: str) -> Iterator[Server]:
    server = Server(data_dir, *extra).start()
    try:
        yield server
    finally:
        server.stop()


def make_zip(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


def python_runtime() -> str:
    """The runtime of the tests' Python functions: the tests' own Python's, or the one
    LAMINA_TEST_RUNTIME names (e.g. python3.13, to run the suite against another zygote)."""
    return os.environ.get("LAMINA_TEST_RUNTIME") or (
        f"python{sys.version_info.major}.{sys.version_info.minor}"
    )


def signed(
    url: str,
    method: str = "GET",
    body: bytes = b"",
    service: str = "lambda",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request by hand, SigV4-signed as the test servers' root key: status, headers, body."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    if body and "Content-Type" not in request.headers:
        request.headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
    credentials = Credentials(
        ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"], ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"]
    )
    SigV4Auth(credentials, service, "us-east-1").add_auth(request)
    return raw(url, method, body, dict(request.headers))


def raw(
    url: str, method: str = "GET", body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request by hand, exactly as given (no signature unless `headers` carry one)."""
    req = urllib.request.Request(
        url, data=body if method != "GET" else None, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def create(client: Any, name: str, code: str | dict[str, str | bytes], **kwargs: Any) -> Any:
    files: dict[str, str | bytes] = {"app.py": code} if isinstance(code, str) else code
    params: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": python_runtime(),
        "Handler": "app.handler",
        "Role": ROLE,
        "Code": {"ZipFile": make_zip(files, kwargs.pop("modes", None))},
    }
    params.update(kwargs)
    return client.create_function(**params)


# -- observing instances from the host -----------------------------------------------------------
#
# Under `--isolation namespaces` an instance is PID 1 of its own PID namespace, so the pid a
# function sees says nothing about which instance served it, and nothing the host can look up.
# A function names its instance with INSTANCE_CODE (an id made at import, and the cgroup it runs
# in); the host finds that instance's processes through the cgroup's `cgroup.procs`.

INSTANCE_CODE = """
import uuid as _uuid
INSTANCE = _uuid.uuid4().hex  # made once per instance, at import


def _own_cgroup():
    # the instance's cgroup path (cgroup v1: the pids hierarchy; v2: the unified one)
    try:
        with open("/proc/self/cgroup") as fh:
            lines = [line.rstrip("\\n").split(":", 2) for line in fh]
    except OSError:
        return None
    for _id, controllers, path in lines:
        if "pids" in controllers.split(","):
            return path
    for _id, controllers, path in lines:
        if _id == "0" and controllers == "":
            return path
    return None


CGROUP = _own_cgroup()
"""

CGROUP_FS = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu", "freezer")


def cgroup_v2() -> bool:
    return (CGROUP_FS / "cgroup.controllers").exists()


def cgroup_dirs(path: str) -> list[Path]:
    """Where the cgroup `path` (as /proc/<pid>/cgroup names it) lives, in every hierarchy lamina
    puts instances in."""
    rel = path.lstrip("/")
    if cgroup_v2():
        return [CGROUP_FS / rel]
    return [CGROUP_FS / controller / rel for controller in V1_CONTROLLERS]


def cgroup_pids(path: str) -> list[int]:
    """The host pids in the cgroup `path` (an instance's, while it exists)."""
    procs = CGROUP_FS / path.lstrip("/") if cgroup_v2() else CGROUP_FS / "pids" / path.lstrip("/")
    return [int(p) for p in (procs / "cgroup.procs").read_text().split()]


def run_dirs(server_pid: int | None = None) -> list[Path]:
    """lamina's cgroup run directories: every lamina's, or the one of the server `server_pid`.
    (cgroup v1: `/sys/fs/cgroup/<controller>/lamina/run-<pid>-<start>`.)"""
    name = "run-*" if server_pid is None else f"run-{server_pid}-*"
    if cgroup_v2():
        return sorted(CGROUP_FS.glob(f"**/lamina/{name}"))
    found: list[Path] = []
    for controller in V1_CONTROLLERS:
        found += sorted((CGROUP_FS / controller / "lamina").glob(name))
    return found


def instance_cgroups(server_pid: int | None = None) -> dict[str, list[int]]:
    """lamina's instance cgroups (every lamina's, or those of the server `server_pid`), keyed by
    their path as /proc/<pid>/cgroup names it, with the host pids in each. Blanks (sandboxes
    started ahead of need, see worker/blanks.py) are not instances yet and not listed."""
    name = "run-*" if server_pid is None else f"run-{server_pid}-*"
    base = CGROUP_FS if cgroup_v2() else CGROUP_FS / "pids"
    pattern = f"**/lamina/{name}/*/cgroup.procs" if cgroup_v2() else f"lamina/{name}/*/cgroup.procs"
    out: dict[str, list[int]] = {}
    for procs in sorted(base.glob(pattern)):
        try:
            pids = [int(p) for p in procs.read_text().split()]
        except FileNotFoundError:  # removed while we looked
            continue
        if is_blank(pids):
            continue
        out["/" + procs.parent.relative_to(base).as_posix()] = pids
    return out


def is_blank(pids: list[int]) -> bool:
    """Whether a lamina group's processes are a blank, not (yet) an instance: a blank's runtime
    waits as root for its function, while both processes of an instance (init and runtime) run
    as the instance's uid."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                uids = next(line for line in fh if line.startswith("Uid:")).split()[1:]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
        if uids[0] == "0":
            return True
    return False


def pid_exists(pid: int, zombie_is_gone: bool = False) -> bool:
    """Whether `pid` exists (os.kill(pid, 0) does not raise). With `zombie_is_gone`, a process
    that has exited but not been reaped by its parent counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if zombie_is_gone:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, IndexError):
            return False
    return True


def wait_gone(
    pids: Iterable[int],
    dirs: Iterable[Path] = (),
    timeout: float = 5.0,
    zombie_is_gone: bool = False,
) -> None:
    """Wait until every pid has stopped existing and every directory (cgroups) is removed."""
    pids, dirs = list(pids), list(dirs)
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_exists(p, zombie_is_gone)]
        left = [d for d in dirs if d.exists()]
        if not alive and not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"after {timeout} s, instance processes {alive} still exist and cgroups "
                f"{[str(d) for d in left]} are not removed"
            )
        time.sleep(0.02)


# -- side effects outside lamina -----------------------------------------------------------------
#
# A sandboxed function sees none of the host's files; what it can reach is the host address in
# AWS_ENDPOINT_URL. A test that needs a side effect outside lamina runs a Recorder (a TCP listener
# on the host) and the function sends it lines with RECORD_CODE's `record()`.

RECORD_CODE = """
def record(line, port=None):
    # Send one line to the test's Recorder on the host; returns once the Recorder has stored it.
    import os, socket, urllib.parse
    host = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"]).hostname
    port = int(port or os.environ["RECORDER_PORT"])
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(line.encode("utf-8") + b"\\n")
        conn.shutdown(socket.SHUT_WR)
        ack = b""
        while True:
            chunk = conn.recv(64)
            if not chunk:
                break
            ack += chunk
    if ack != b"ok\\n":
        raise RuntimeError("the recorder did not acknowledge %r: %r" % (line, ack))
"""


class Recorder:
    """A TCP listener on the host (0.0.0.0, an ephemeral port) collecting the lines sent to it.

    A client sends lines, shuts its side down, and gets `ok\\n` once they are stored (so a
    function that returned from `record()` has its lines in `lines`). Use as a context manager;
    `env` is the Environment a function needs to find it (with AWS_ENDPOINT_URL's host).
    """

    def __init__(self) -> None:
        self.port = 0
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Recorder:
        self._listener = socket.create_server(("0.0.0.0", 0), backlog=128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="recorder", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def env(self) -> dict[str, str]:
        return {"RECORDER_PORT": str(self.port)}

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def wait(self, count: int, timeout: float = 30.0) -> list[str]:
        """Wait until at least `count` lines arrived; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._lines) >= count, timeout):
                raise AssertionError(
                    f"expected {count} lines, got {len(self._lines)}: {self._lines[:5]}"
                )
            return list(self._lines)

    def _serve(self) -> None:
        assert self._listener is not None
        buffers: dict[socket.socket, bytes] = {}
        with selectors.DefaultSelector() as sel, self._listener:
            sel.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in sel.select(0.05):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    if sock is self._listener:
                        try:
                            conn, _addr = sock.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(False)
                        buffers[conn] = b""
                        sel.register(conn, selectors.EVENT_READ)
                        continue
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                        buffers[sock] = b""  # a reset connection stores nothing
                    if data:
                        buffers[sock] += data
                        continue
                    sel.unregister(sock)
                    received = buffers.pop(sock).decode("utf-8", "replace")
                    with self._cond:
                        self._lines += received.splitlines()
                        self._cond.notify_all()
                    with sock:
                        try:
                            sock.setblocking(True)
                            sock.settimeout(5)
                            sock.sendall(b"ok\n")
                        except OSError:
                            pass
            for sock in buffers:
                sock.close()


def invoke(lam: Any, name: str, payload: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Invoke and read the whole response; `body` is the payload bytes, `json` it decoded
    (None when empty or not JSON). No payload sends an empty body: the event is `{}`."""
    if payload is not None:
        kwargs["Payload"] = payload if isinstance(payload, bytes) else json.dumps(payload)
    out: dict[str, Any] = lam.invoke(FunctionName=name, **kwargs)
    out["body"] = out["Payload"].read()
    out["Payload"].close()
    out["request_id"] = out["ResponseMetadata"]["RequestId"]
    try:
        out["json"] = json.loads(out["body"])
    except ValueError:  # empty, or not JSON (a function may return raw bytes)
        out["json"] = None
    return out
