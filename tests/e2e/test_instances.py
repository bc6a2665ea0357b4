"""Instances end to end: warm reuse, concurrency, timeouts, crashes, init errors, retirement,
reaping and shutdown, observed through real processes."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.e2e.server import Server, create, make_zip

COUNTER_CODE = """
import os, time
COUNT = 0
def handler(event, context):
    global COUNT
    COUNT += 1
    began = time.time()
    time.sleep(event.get("sleep", 0))
    if event.get("exit") is not None:
        os._exit(event["exit"])
    if event.get("kill"):
        os.kill(os.getpid(), 9)
    return {"pid": os.getpid(), "count": COUNT, "began": began, "ended": time.time(),
            "marker": os.environ.get("MARKER")}
"""


def invoke(lam: Any, name: str, payload: Any = None, **kwargs: Any) -> dict[str, Any]:
    kwargs["Payload"] = json.dumps({} if payload is None else payload)
    out: dict[str, Any] = lam.invoke(FunctionName=name, **kwargs)
    out["body"] = out["Payload"].read()
    out["Payload"].close()
    out["request_id"] = out["ResponseMetadata"]["RequestId"]
    out["json"] = json.loads(out["body"]) if out["body"] else None
    return out


def ok(out: dict[str, Any]) -> dict[str, Any]:
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, out["body"]
    result: dict[str, Any] = out["json"]
    return result


def pid_gone(pid: int) -> bool:
    """True once `pid` no longer exists (a zombie nobody reaps counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def wait_reaped(pid: int, timeout: float = 5.0) -> None:
    """Wait until `pid` is gone for good: os.kill(pid, 0) raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"instance process {pid} still exists after {timeout} s")


def tail_text(out: dict[str, Any]) -> str:
    return base64.b64decode(out["LogResult"]).decode("utf-8")


# -- reuse and concurrency -----------------------------------------------------------------------


def test_warm_instance_is_reused(lam: Any) -> None:
    create(lam, "ins-warm", COUNTER_CODE)
    results = [ok(invoke(lam, "ins-warm")) for _ in range(4)]
    assert [r["count"] for r in results] == [1, 2, 3, 4]
    assert len({r["pid"] for r in results}) == 1
    assert results[0]["pid"] != os.getpid()


def test_concurrent_invokes_run_on_separate_instances(lam: Any) -> None:
    create(lam, "ins-concurrent", COUNTER_CODE)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: invoke(lam, "ins-concurrent", {"sleep": 0.5}), range(4)))
    results = [ok(o) for o in outs]
    assert len({r["pid"] for r in results}) == 4
    assert all(r["count"] == 1 for r in results)
    # they overlapped: every one began before any one ended
    assert max(r["began"] for r in results) < min(r["ended"] for r in results)
    # and all four are now warm: four more concurrent invokes reuse exactly those instances
    with ThreadPoolExecutor(4) as pool:
        again = [ok(o) for o in pool.map(lambda _: invoke(lam, "ins-concurrent"), range(4))]
    assert {r["pid"] for r in again} <= {r["pid"] for r in results}
    assert len({r["request_id"] for r in outs}) == 4


# -- timeouts and crashes ------------------------------------------------------------------------


def test_timeout_kills_the_instance(lam: Any) -> None:
    create(lam, "ins-timeout", COUNTER_CODE, Timeout=1)
    first = ok(invoke(lam, "ins-timeout"))
    began = time.monotonic()
    out = invoke(lam, "ins-timeout", {"sleep": 5}, LogType="Tail")
    elapsed = time.monotonic() - began
    assert elapsed < 3.5, f"a 1 s timeout took {elapsed:.2f} s"
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    body = out["json"]
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    rid = out["request_id"]
    text = tail_text(out)
    line = re.search(
        rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z {rid} Task timed out after 1\.00 seconds$",
        text,
        re.M,
    )
    assert line is not None, text
    assert line.start() < text.index(f"END RequestId: {rid}")
    assert re.search(rf"REPORT RequestId: {rid}\tDuration: 10\d\d\.\d\d ms", text), text
    wait_reaped(first["pid"])
    after = ok(invoke(lam, "ins-timeout"))
    assert after["pid"] != first["pid"]
    assert after["count"] == 1  # a fresh instance: module state is new


def test_exit_is_runtime_exit_error(lam: Any) -> None:
    create(lam, "ins-exit", COUNTER_CODE)
    first = ok(invoke(lam, "ins-exit"))
    out = invoke(lam, "ins-exit", {"exit": 3}, LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 3" in out["json"]["errorMessage"]
    assert "exit status 3" in tail_text(out)
    wait_reaped(first["pid"])
    after = ok(invoke(lam, "ins-exit"))
    assert after["pid"] != first["pid"] and after["count"] == 1


def test_kill_is_runtime_exit_error(lam: Any) -> None:
    create(lam, "ins-kill", COUNTER_CODE)
    first = ok(invoke(lam, "ins-kill"))
    out = invoke(lam, "ins-kill", {"kill": True})
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: signal: killed" in out["json"]["errorMessage"]
    wait_reaped(first["pid"])
    after = ok(invoke(lam, "ins-kill"))
    assert after["pid"] != first["pid"] and after["count"] == 1


# -- init errors ---------------------------------------------------------------------------------


def init_error(lam: Any, name: str) -> dict[str, Any]:
    out = invoke(lam, name, LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    body: dict[str, Any] = out["json"]
    assert body["errorType"] in tail_text(out)
    # every invoke retries the init, and fails the same way
    again = invoke(lam, name)
    assert again["FunctionError"] == "Unhandled"
    assert again["json"]["errorType"] == body["errorType"]
    assert again["json"]["errorMessage"] == body["errorMessage"]
    return body


def test_import_error(lam: Any) -> None:
    create(lam, "ins-import", "import no_such_module_xyz\ndef handler(e, c):\n    return 1\n")
    body = init_error(lam, "ins-import")
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"] == (
        "Unable to import module 'app': No module named 'no_such_module_xyz'"
    )
    assert body["stackTrace"] == []


def test_handler_not_found(lam: Any) -> None:
    create(lam, "ins-nohandler", "def other(e, c):\n    return 1\n", Handler="app.nope")
    body = init_error(lam, "ins-nohandler")
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "Handler 'nope' missing on module 'app'"


def test_malformed_handler_name(lam: Any) -> None:
    create(lam, "ins-malformed", "def handler(e, c):\n    return 1\n", Handler="app")
    body = init_error(lam, "ins-malformed")
    assert body["errorType"] == "Runtime.MalformedHandlerName"
    assert body["errorMessage"].startswith("Bad handler 'app': ")


def test_syntax_error(lam: Any) -> None:
    create(lam, "ins-syntax", "def handler(e, c)\n    return 1\n")
    body = init_error(lam, "ins-syntax")
    assert body["errorType"] == "Runtime.UserCodeSyntaxError"
    assert body["errorMessage"].startswith("Syntax error in module 'app': ")
    assert "app.py" in "".join(body["stackTrace"])


def test_exception_at_import_is_reported(lam: Any) -> None:
    create(lam, "ins-init-raise", "raise RuntimeError('boom at init')\n")
    body = init_error(lam, "ins-init-raise")
    assert body["errorType"] == "RuntimeError"
    assert body["errorMessage"] == "boom at init"


# -- retirement ----------------------------------------------------------------------------------


def test_update_retires_old_instances(lam: Any) -> None:
    create(lam, "ins-update", COUNTER_CODE, Environment={"Variables": {"MARKER": "one"}})
    first = ok(invoke(lam, "ins-update"))
    assert first["marker"] == "one"

    lam.update_function_configuration(
        FunctionName="ins-update", Environment={"Variables": {"MARKER": "two"}}
    )
    second = ok(invoke(lam, "ins-update"))
    assert second["marker"] == "two"
    assert second["pid"] != first["pid"] and second["count"] == 1
    wait_reaped(first["pid"])

    code = COUNTER_CODE.replace('"marker": os.environ.get("MARKER")', '"marker": "new code"')
    lam.update_function_code(FunctionName="ins-update", ZipFile=make_zip({"app.py": code}))
    third = ok(invoke(lam, "ins-update"))
    assert third["marker"] == "new code"
    assert third["pid"] != second["pid"] and third["count"] == 1
    wait_reaped(second["pid"])


def test_busy_instance_retires_after_its_invoke(lam: Any) -> None:
    create(lam, "ins-update-busy", COUNTER_CODE, Environment={"Variables": {"MARKER": "old"}})
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke, lam, "ins-update-busy", {"sleep": 0.6})
        time.sleep(0.3)
        lam.update_function_configuration(
            FunctionName="ins-update-busy", Environment={"Variables": {"MARKER": "new"}}
        )
        busy = ok(slow.result())
    assert busy["marker"] == "old"  # the running invoke finished on the old instance
    wait_reaped(busy["pid"])
    fresh = ok(invoke(lam, "ins-update-busy"))
    assert fresh["marker"] == "new" and fresh["pid"] != busy["pid"]


def test_delete_function_stops_its_instances(lam: Any) -> None:
    create(lam, "ins-delete", COUNTER_CODE)
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: invoke(lam, "ins-delete", {"sleep": 0.3}), range(2)))
    pids = {ok(o)["pid"] for o in outs}
    assert len(pids) == 2
    lam.delete_function(FunctionName="ins-delete")
    for pid in pids:
        wait_reaped(pid)


# -- reaping and shutdown ------------------------------------------------------------------------


def test_idle_instances_are_reaped(fresh_server: Server) -> None:
    fresh_server.extra += ["--idle-timeout", "0.5"]
    lam = fresh_server.start().client()
    create(lam, "ins-idle", COUNTER_CODE)
    cold = invoke(lam, "ins-idle", LogType="Tail")
    pid = ok(cold)["pid"]
    assert "Init Duration:" in tail_text(cold)
    warm = invoke(lam, "ins-idle", LogType="Tail")
    assert ok(warm)["pid"] == pid
    assert "Init Duration:" not in tail_text(warm)
    time.sleep(1.0)
    wait_reaped(pid, timeout=3.0)
    again = invoke(lam, "ins-idle", LogType="Tail")
    assert ok(again)["pid"] != pid and again["json"]["count"] == 1
    assert "Init Duration:" in tail_text(again)


SPAWN_CODE = """
import os, subprocess
CHILD = None
def handler(event, context):
    global CHILD
    if CHILD is None:
        CHILD = subprocess.Popen(["sleep", "60"])
    return {"pid": os.getpid(), "child": CHILD.pid}
"""


def test_sigterm_leaves_no_instance_behind(fresh_server: Server) -> None:
    lam = fresh_server.start().client()
    create(lam, "ins-term-a", COUNTER_CODE)
    create(lam, "ins-term-b", SPAWN_CODE)
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda _: invoke(lam, "ins-term-a", {"sleep": 0.3}), range(3)))
    pids = {ok(o)["pid"] for o in outs}
    spawned = ok(invoke(lam, "ins-term-b"))
    pids.add(spawned["pid"])
    assert len(pids) == 4
    assert not any(pid_gone(p) for p in [*pids, spawned["child"]])
    code = fresh_server.stop(signal.SIGTERM)
    # uvicorn re-raises the signal it caught once shutdown is complete
    assert code in (0, -signal.SIGTERM), fresh_server.log
    assert "Application shutdown complete." in fresh_server.log
    # stop() returned when lamina exited: every instance (and what it started) is already gone
    survivors = [p for p in [*pids, spawned["child"]] if not pid_gone(p)]
    assert survivors == [], f"instance processes survived SIGTERM: {survivors}"


def test_instance_dying_while_idle_is_replaced(lam: Any) -> None:
    create(lam, "ins-idle-death", COUNTER_CODE)
    first = ok(invoke(lam, "ins-idle-death"))
    os.kill(first["pid"], signal.SIGKILL)  # something outside lamina kills the idle instance
    wait_reaped(first["pid"])
    after = ok(invoke(lam, "ins-idle-death"))  # not an error: a fresh instance serves it
    assert after["pid"] != first["pid"] and after["count"] == 1


def test_exit_during_init_is_runtime_exit_error(lam: Any) -> None:
    create(lam, "ins-init-exit", "import os\nos._exit(2)\ndef handler(e, c):\n    return 1\n")
    body = init_error(lam, "ins-init-exit")
    assert body["errorType"] == "Runtime.ExitError"
    assert "exit status 2" in body["errorMessage"]


def test_init_error_body_carries_the_request_id(lam: Any) -> None:
    create(lam, "ins-init-rid", "import no_such_module_rid\n")
    out = invoke(lam, "ins-init-rid")
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["requestId"] == out["request_id"]


def test_sigterm_lets_a_running_invoke_finish(fresh_server: Server) -> None:
    lam = fresh_server.start().client()
    create(lam, "ins-term-busy", COUNTER_CODE)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(invoke, lam, "ins-term-busy", {"sleep": 0.6})
        time.sleep(0.3)
        assert fresh_server.proc is not None
        fresh_server.proc.send_signal(signal.SIGTERM)
        result = ok(running.result(timeout=30))
    assert result["count"] == 1
    fresh_server.stop()
    wait_reaped(result["pid"], timeout=1.0)


def test_timeout_kills_what_the_instance_started(lam: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    create(
        lam,
        "ins-timeout-child",
        "import os, subprocess, time\n"
        "def handler(event, context):\n"
        "    child = subprocess.Popen(['sleep', '60'])\n"
        "    with open(os.environ['PIDFILE'], 'w') as fh:\n"
        "        fh.write(str(child.pid))\n"
        "    time.sleep(5)\n",
        Timeout=1,
        Environment={"Variables": {"PIDFILE": str(pidfile)}},
    )
    out = invoke(lam, "ins-timeout-child")
    assert out["json"]["errorType"] == "Sandbox.Timedout"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 3
    while not pid_gone(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pid_gone(child), f"the instance's child {child} survived its timeout"
