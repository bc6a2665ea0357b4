"""Code packages are collected by reference, against a real `lamina serve` through boto3.

A package (its zip in `code/zips/` and its tree in `code/unpacked/`) stays while a function's
`$LATEST` or a published version names its digest, or an instance runs from it; then it goes.
Several tests race two requests: a big upload is sent first and, once its put is seen working
in `code/tmp/`, a small one, which commits while the big one is still being stored.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.server import ROLE, Server, make_zip, python_runtime

BIG = 24 * 1024 * 1024  # random bytes: a put that takes a while (extract, write, fsync)


def handler_zip(tag: str, extra: dict[str, str | bytes] | None = None) -> bytes:
    app = f"def handler(event, context):\n    return {tag!r}\n"
    return make_zip({"app.py": app, **(extra or {})})


def big_zip(tag: str) -> bytes:
    return handler_zip(tag, {"blob.bin": os.urandom(BIG)})


def sha_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha_of(conf: dict[str, Any]) -> str:
    return base64.b64decode(conf["CodeSha256"]).hex()


def stored(server: Server) -> set[str]:
    """Digests with a zip or a tree in the server's code store."""
    code = server.data_dir / "code"
    zips = {p.name.removesuffix(".zip") for p in (code / "zips").iterdir()}
    return zips | {p.name for p in (code / "unpacked").iterdir()}


def listing(server: Server) -> set[str]:
    """Every path in the code store, but a collection's own work dirs (`tmp/delete-*`): the
    packages of instances that earlier tests left stopping may be collected at any moment."""
    code = server.data_dir / "code"
    found = {str(p.relative_to(code)) for p in code.rglob("*")}
    return {p for p in found if not p.startswith("tmp/delete-")}


def work_dirs(server: Server) -> set[str]:
    """What uploads left in `tmp/`: nothing, once they have answered."""
    return {p for p in listing(server) if p.startswith("tmp/")}


def whole(server: Server, sha: str) -> bool:
    """Both halves of a package are there."""
    code = server.data_dir / "code"
    return (code / "zips" / f"{sha}.zip").is_file() and (code / "unpacked" / sha).is_dir()


def wait_until(what: str, ok: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.01)


def create(lam: Any, name: str, data: bytes, **kwargs: Any) -> Any:
    return lam.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": data},
        **kwargs,
    )


def invoke(lam: Any, name: str, **kwargs: Any) -> Any:
    out = lam.invoke(FunctionName=name, Payload=b"{}", **kwargs)
    assert "FunctionError" not in out, out["Payload"].read()
    return json.loads(out["Payload"].read())


def test_updates_keep_only_the_current_package(lam: Any, server: Server) -> None:
    name = "gc-updates"
    before = stored(server)
    codes = [handler_zip(f"{name}-{i}") for i in range(4)]
    create(lam, name, codes[0])
    for i, data in enumerate(codes[1:], 1):
        out = lam.update_function_code(FunctionName=name, ZipFile=data)
        assert sha_of(out) == sha_hex(data)
        assert stored(server) - before == {sha_hex(data)}, f"after update {i}"
    assert invoke(lam, name) == f"{name}-3"
    assert whole(server, sha_hex(codes[3]))
    assert not work_dirs(server)
    lam.delete_function(FunctionName=name)
    wait_until("the last package is collected", lambda: sha_hex(codes[3]) not in stored(server))


def test_dry_run_stores_nothing(lam: Any, server: Server) -> None:
    name = "gc-dry-run"
    current, candidate = handler_zip(f"{name}-now"), handler_zip(f"{name}-maybe")
    created = create(lam, name, current)
    before = listing(server)
    out = lam.update_function_code(FunctionName=name, ZipFile=candidate, DryRun=True)
    assert sha_of(out) == sha_hex(candidate) and out["CodeSize"] == len(candidate)
    assert out["RevisionId"] == created["RevisionId"]
    assert not listing(server) - before
    got = lam.get_function(FunctionName=name)["Configuration"]
    assert sha_of(got) == sha_hex(current) and got["RevisionId"] == created["RevisionId"]
    # a package an update would refuse, a dry run refuses too: with nothing left behind
    bad = make_zip({"../evil.py": "x"})
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_code(FunctionName=name, ZipFile=bad, DryRun=True)
    assert not listing(server) - before
    lam.delete_function(FunctionName=name)


def test_published_versions_keep_their_packages(lam: Any, server: Server) -> None:
    name = "gc-versions"
    one, two, three = (handler_zip(f"{name}-{i}") for i in (1, 2, 3))
    create(lam, name, one)
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_code(FunctionName=name, ZipFile=two)
    assert {sha_hex(one), sha_hex(two)} <= stored(server)
    assert whole(server, sha_hex(one)) and whole(server, sha_hex(two))
    lam.update_function_code(FunctionName=name, ZipFile=three, Publish=True)  # version 2
    assert sha_hex(two) not in stored(server)  # named by nothing any more
    assert {sha_hex(one), sha_hex(three)} <= stored(server)

    lam.delete_function(FunctionName=name, Qualifier="1")
    assert sha_hex(one) not in stored(server)
    assert whole(server, sha_hex(three))  # $LATEST and version 2
    lam.update_function_code(FunctionName=name, ZipFile=one)
    assert {sha_hex(one), sha_hex(three)} <= stored(server)  # version 2 still names three
    lam.delete_function(FunctionName=name)
    assert not {sha_hex(one), sha_hex(three)} & stored(server)


def test_functions_sharing_a_package(lam: Any, server: Server) -> None:
    shared = handler_zip("gc-shared")
    first, second = "gc-shared-1", "gc-shared-2"
    assert sha_of(create(lam, first, shared)) == sha_of(create(lam, second, shared))
    assert invoke(lam, first) == invoke(lam, second) == "gc-shared"
    lam.delete_function(FunctionName=first)
    assert whole(server, sha_hex(shared))
    assert invoke(lam, second) == "gc-shared"
    # the second one moves away from it: now nothing names it (once its instance is gone)
    lam.update_function_code(FunctionName=second, ZipFile=handler_zip("gc-shared-moved"))
    wait_until("the shared package is collected", lambda: sha_hex(shared) not in stored(server))
    lam.delete_function(FunctionName=second)


class Gate:
    """A TCP listener on the host: a function connects and blocks until the test opens it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("0.0.0.0", 0))
        self._listener.settimeout(30)
        self.port = self._listener.getsockname()[1]
        self._conn: socket.socket | None = None

    def wait_arrival(self) -> None:
        self._conn, _ = self._listener.accept()

    def open(self) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.sendall(b"go\n")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # a handler still waiting gets EOF and goes on
        self._listener.close()


WAITS_THEN_READS = """
import os, socket, urllib.parse

def handler(event, context):
    host = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"]).hostname
    with socket.create_connection((host, event["port"]), timeout=30) as conn:
        conn.recv(16)  # until the test opens the gate
    with open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "data.txt")) as fh:
        return fh.read()
"""


def test_a_running_instance_keeps_its_package(lam: Any, server: Server) -> None:
    name = "gc-in-use"
    old = make_zip({"app.py": WAITS_THEN_READS, "data.txt": "old data"})
    create(lam, name, old, Timeout=60)
    gate = Gate()
    result: dict[str, Any] = {}

    def call() -> None:
        out = server.client().invoke(
            FunctionName=name, Payload=json.dumps({"port": gate.port}).encode()
        )
        result.update(out, body=out["Payload"].read())

    caller = threading.Thread(target=call)
    caller.start()
    try:
        gate.wait_arrival()  # the handler runs the old code
        new = make_zip({"app.py": WAITS_THEN_READS, "data.txt": "new data"})
        lam.update_function_code(FunctionName=name, ZipFile=new)
        assert whole(server, sha_hex(old)), "collected under a running instance"
        gate.open()
        caller.join(60)
    finally:
        gate.close()
    assert "FunctionError" not in result, result["body"]
    assert json.loads(result["body"]) == "old data"  # read after the update, from its package
    wait_until("the old package goes with its instance", lambda: sha_hex(old) not in stored(server))
    assert whole(server, sha_hex(new))
    lam.delete_function(FunctionName=name)


def race(server: Server, slow: Callable[[Any], Any], fast: Callable[[Any], Any]) -> list[Any]:
    """Run `slow` in a thread; once its upload is being stored (a put's work dir appears in
    `code/tmp/`), run `fast`. Returns both outcomes (a response or the exception)."""
    outcomes: list[Any] = [None, None]

    def run(i: int, call: Callable[[Any], Any]) -> None:
        try:
            outcomes[i] = call(server.client())
        except Exception as exc:
            outcomes[i] = exc

    tmp = server.data_dir / "code" / "tmp"
    slow_thread = threading.Thread(target=run, args=(0, slow))
    slow_thread.start()
    try:
        wait_until(
            "the slow upload is being stored",
            lambda: outcomes[0] is not None or any(p.name[:4] == "put-" for p in tmp.iterdir()),
            timeout=60,
        )
        run(1, fast)
    finally:
        slow_thread.join(120)
    return outcomes


def error_code(outcome: Any) -> str:
    """The error code of a call that failed, "ok" for a response."""
    response = getattr(outcome, "response", None)
    return str(response["Error"]["Code"]) if isinstance(outcome, Exception) and response else "ok"


def updating(name: str, data: bytes, revision: str) -> Callable[[Any], Any]:
    return lambda c: c.update_function_code(FunctionName=name, ZipFile=data, RevisionId=revision)


def creating(name: str, data: bytes) -> Callable[[Any], Any]:
    return lambda c: create(c, name, data)


def test_concurrent_updates_with_one_revision_id(lam: Any, server: Server) -> None:
    name = "gc-revision-race"
    first = handler_zip(f"{name}-0")
    create(lam, name, first)
    before = stored(server) - {sha_hex(first)}
    for attempt in range(5):
        revision = lam.get_function(FunctionName=name)["Configuration"]["RevisionId"]
        big, small = big_zip(f"{name}-big-{attempt}"), handler_zip(f"{name}-small-{attempt}")
        slow, fast = race(server, updating(name, big, revision), updating(name, small, revision))
        codes = [error_code(slow), error_code(fast)]
        assert sorted(codes) == ["PreconditionFailedException", "ok"], (slow, fast)
        winner = small if codes[1] == "ok" else big
        assert sha_of(lam.get_function(FunctionName=name)["Configuration"]) == sha_hex(winner)
        assert stored(server) - before == {sha_hex(winner)}  # not the loser's, nor the old one
        assert whole(server, sha_hex(winner))
        assert not work_dirs(server)
        if codes[1] == "ok":  # the small one won while the big one was being stored
            break
    else:
        pytest.fail("the second update never overtook the first one's upload")
    assert invoke(lam, name) == f"{name}-small-{attempt}"
    lam.delete_function(FunctionName=name)  # its package goes once its instance has stopped
    wait_until("the package is collected", lambda: not stored(server) - before)


def test_a_lost_create_race_leaves_no_file(lam: Any, server: Server) -> None:
    before = stored(server)
    for attempt in range(5):
        name = f"gc-create-race-{attempt}"
        big, small = big_zip(f"{name}-big"), handler_zip(f"{name}-small")
        slow, fast = race(server, creating(name, big), creating(name, small))
        codes = [error_code(slow), error_code(fast)]
        assert sorted(codes) == ["ResourceConflictException", "ok"], (slow, fast)
        winner = small if codes[1] == "ok" else big
        assert sha_of(lam.get_function(FunctionName=name)["Configuration"]) == sha_hex(winner)
        assert stored(server) - before == {sha_hex(winner)}  # nothing of the loser's
        assert not work_dirs(server)
        lam.delete_function(FunctionName=name)
        assert stored(server) - before == set()
        if codes[1] == "ok":  # the small one won while the big one was being stored
            break
    else:
        pytest.fail("the second create never overtook the first one's upload")


def test_a_configuration_change_during_a_code_update_survives(lam: Any, server: Server) -> None:
    name = "gc-both-changes"
    create(lam, name, handler_zip(f"{name}-0"))
    big = big_zip(f"{name}-big")
    env = {"Variables": {"SET": "meanwhile"}}
    slow, fast = race(
        server,
        lambda c: c.update_function_code(FunctionName=name, ZipFile=big),
        lambda c: c.update_function_configuration(FunctionName=name, Environment=env),
    )
    assert error_code(slow) == error_code(fast) == "ok", (slow, fast)
    conf = lam.get_function(FunctionName=name)["Configuration"]
    assert sha_of(conf) == sha_hex(big)
    assert conf.get("Environment") == env  # not lost to the code update's older copy
    lam.delete_function(FunctionName=name)
    assert sha_hex(big) not in stored(server)


def plant(code: Path, data: bytes) -> str:
    sha = sha_hex(data)
    (code / "zips" / f"{sha}.zip").write_bytes(data)
    (code / "unpacked" / sha).mkdir()
    (code / "unpacked" / sha / "app.py").write_text("# planted\n")
    return sha


def test_start_sweeps_what_nothing_references(fresh_server: Server) -> None:
    fresh_server.start()
    lam = fresh_server.client()
    published, kept = handler_zip("gc-sweep-v1"), handler_zip("gc-sweep-kept")
    create(lam, "gc-sweep", published, Publish=True)
    lam.update_function_code(FunctionName="gc-sweep", ZipFile=kept)
    assert fresh_server.stop() == 0

    code = fresh_server.data_dir / "code"
    orphan = plant(code, handler_zip("gc-sweep-orphan"))
    tree_only = sha_hex(b"a tree whose zip is gone")
    (code / "unpacked" / tree_only).mkdir()
    (code / "tmp" / "put-left-by-a-crash").mkdir()
    (code / "tmp" / "put-left-by-a-crash" / "code.zip").write_bytes(b"partial")
    (code / "zips" / "not-a-package.txt").write_text("an operator's note")

    fresh_server.start()
    assert stored(fresh_server) == {sha_hex(published), sha_hex(kept), "not-a-package.txt"}
    assert whole(fresh_server, sha_hex(published)) and whole(fresh_server, sha_hex(kept))
    assert orphan not in stored(fresh_server) and tree_only not in stored(fresh_server)
    assert not work_dirs(fresh_server)
    assert "removed 2 unreferenced packages and 1 work dirs" in fresh_server.log
    lam = fresh_server.client()
    assert invoke(lam, "gc-sweep") == "gc-sweep-kept"
    assert invoke(lam, "gc-sweep", Qualifier="1") == "gc-sweep-v1"
