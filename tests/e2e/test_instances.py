"""Instances end to end: warm reuse, concurrency, timeouts, crashes, init errors, retirement,
reaping and shutdown, observed through real processes.

Under the default `--isolation namespaces` every instance is PID 1 of its own PID namespace, so
a function names its instance with an id made at import (`instance`) and reports the cgroup it
runs in; the host sees that instance's processes in the cgroup's `cgroup.procs` and checks they
stop existing, and the cgroup is removed, when lamina is done with the instance."""

from __future__ import annotations

import base64
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tests.e2e.server import (
    INSTANCE_CODE,
    RECORD_CODE,
    Recorder,
    Server,
    cgroup_dirs,
    cgroup_pids,
    create,
    invoke,
    make_zip,
    pid_exists,
    wait_gone,
)

COUNTER_CODE = (
    INSTANCE_CODE
    + RECORD_CODE
    + """
import os, time
COUNT = 0
def handler(event, context):
    global COUNT
    COUNT += 1
    began = time.time()
    if event.get("notify"):  # tell the test (its Recorder's port) that the handler is running
        record("running %s %s" % (INSTANCE, CGROUP), event["notify"])
    time.sleep(event.get("sleep", 0))
    if event.get("exit") is not None:
        os._exit(event["exit"])
    if event.get("kill"):
        os.kill(os.getpid(), 9)
    return {"instance": INSTANCE, "cgroup": CGROUP, "pid": os.getpid(), "count": COUNT,
            "began": began, "ended": time.time(), "marker": os.environ.get("MARKER")}
"""
)


def ok(out: dict[str, Any]) -> dict[str, Any]:
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, out["body"]
    result: dict[str, Any] = out["json"]
    return result


@dataclass(frozen=True)
class Seen:
    """An instance as the host sees it: its cgroup and the host pids in it."""

    instance: str
    cgroup: str
    pids: tuple[int, ...]


def seen(result: dict[str, Any]) -> Seen:
    """The host's view of the (live) instance that returned `result`."""
    assert result["cgroup"] and "/lamina/run-" in result["cgroup"], result
    pids = cgroup_pids(result["cgroup"])
    assert pids, f"no process in the cgroup {result['cgroup']} of a live instance"
    assert os.getpid() not in pids
    return Seen(result["instance"], result["cgroup"], tuple(pids))


def wait_reaped(instance: Seen, timeout: float = 5.0) -> None:
    """Wait until the instance is gone for good: os.kill(pid, 0) raises for each of its host
    pids, and its cgroup is removed."""
    wait_gone(instance.pids, cgroup_dirs(instance.cgroup), timeout)


def wait_pid_reaped(pid: int, timeout: float = 5.0) -> None:
    """Process mode: wait until the instance process `pid` is gone (os.kill(pid, 0) raises)."""
    wait_gone([pid], timeout=timeout)


def tail_text(out: dict[str, Any]) -> str:
    return base64.b64decode(out["LogResult"]).decode("utf-8")


# -- reuse and concurrency -----------------------------------------------------------------------


def test_warm_instance_is_reused(lam: Any) -> None:
    create(lam, "ins-warm", COUNTER_CODE)
    results = [ok(invoke(lam, "ins-warm")) for _ in range(4)]
    assert [r["count"] for r in results] == [1, 2, 3, 4]
    assert len({r["instance"] for r in results}) == 1
    assert len({r["cgroup"] for r in results}) == 1
    # a process of its own, not the test's: PID 1 of its own namespace, a host pid in its cgroup
    assert results[0]["pid"] == 2  # PID 1 of its namespace is the instance's init
    seen(results[0])


def test_concurrent_invokes_run_on_separate_instances(lam: Any) -> None:
    create(lam, "ins-concurrent", COUNTER_CODE)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: invoke(lam, "ins-concurrent", {"sleep": 0.5}), range(4)))
    results = [ok(o) for o in outs]
    assert len({r["instance"] for r in results}) == 4
    assert len({r["cgroup"] for r in results}) == 4  # each in a sandbox of its own
    host_pids = [set(seen(r).pids) for r in results]
    assert all(not a & b for i, a in enumerate(host_pids) for b in host_pids[i + 1 :])
    assert all(r["count"] == 1 for r in results)
    # they overlapped: every one began before any one ended
    assert max(r["began"] for r in results) < min(r["ended"] for r in results)
    # and all four are now warm: four more concurrent invokes reuse exactly those instances
    with ThreadPoolExecutor(4) as pool:
        again = [ok(o) for o in pool.map(lambda _: invoke(lam, "ins-concurrent"), range(4))]
    assert {r["instance"] for r in again} <= {r["instance"] for r in results}
    assert len({r["request_id"] for r in outs}) == 4


# -- timeouts and crashes ------------------------------------------------------------------------


def test_timeout_kills_the_instance(lam: Any) -> None:
    create(lam, "ins-timeout", COUNTER_CODE, Timeout=1)
    first = ok(invoke(lam, "ins-timeout"))
    before = seen(first)
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
    wait_reaped(before)
    after = ok(invoke(lam, "ins-timeout"))
    assert after["instance"] != first["instance"]
    assert after["count"] == 1  # a fresh instance: module state is new


def test_exit_is_runtime_exit_error(lam: Any) -> None:
    create(lam, "ins-exit", COUNTER_CODE)
    first = ok(invoke(lam, "ins-exit"))
    before = seen(first)
    out = invoke(lam, "ins-exit", {"exit": 3}, LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 3" in out["json"]["errorMessage"]
    assert "exit status 3" in tail_text(out)
    wait_reaped(before)
    after = ok(invoke(lam, "ins-exit"))
    assert after["instance"] != first["instance"] and after["count"] == 1


def test_kill_is_runtime_exit_error(lam: Any) -> None:
    """A runtime killed by SIGKILL mid-invoke (here by the host, at its host pid) is a
    Runtime.ExitError, and the next invoke gets a fresh instance."""
    create(lam, "ins-kill", COUNTER_CODE)
    first = ok(invoke(lam, "ins-kill"))
    before = seen(first)
    with Recorder() as rec, ThreadPoolExecutor(1) as pool:
        busy = pool.submit(invoke, lam, "ins-kill", {"notify": rec.port, "sleep": 10})
        (line,) = rec.wait(1)
        assert line == f"running {first['instance']} {first['cgroup']}"  # it is running
        for pid in before.pids:
            os.kill(pid, signal.SIGKILL)
        out = busy.result(timeout=30)
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: signal: killed" in out["json"]["errorMessage"]
    wait_reaped(before)
    after = ok(invoke(lam, "ins-kill"))
    assert after["instance"] != first["instance"] and after["count"] == 1


def test_self_kill_is_runtime_exit_error(lam: Any) -> None:
    create(lam, "ins-self-kill", COUNTER_CODE)
    first = ok(invoke(lam, "ins-self-kill"))
    out = invoke(lam, "ins-self-kill", {"kill": True})
    assert out["StatusCode"] == 200
    assert out.get("FunctionError") == "Unhandled", out["json"]
    assert out["json"]["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: signal: killed" in out["json"]["errorMessage"]
    after = ok(invoke(lam, "ins-self-kill"))
    assert after["instance"] != first["instance"] and after["count"] == 1


def test_self_kill_is_runtime_exit_error_in_process_mode(fresh_server: Server) -> None:
    """With --isolation process the runtime is a plain process: it can SIGKILL itself."""
    fresh_server.extra += ["--isolation", "process"]
    lam = fresh_server.start().client()
    create(lam, "ins-self-kill", COUNTER_CODE)
    first = ok(invoke(lam, "ins-self-kill"))
    assert first["pid"] != os.getpid() and pid_exists(first["pid"])
    out = invoke(lam, "ins-self-kill", {"kill": True})
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"]["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: signal: killed" in out["json"]["errorMessage"]
    wait_pid_reaped(first["pid"])
    after = ok(invoke(lam, "ins-self-kill"))
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


def test_builtin_module_as_handler_is_a_conflict(lam: Any) -> None:
    # even with a sys.py in the package: a built-in module's name is refused before any import
    code = {"sys.py": "def handler(e, c):\n    return 1\n", "app.py": "x = 1\n"}
    create(lam, "ins-builtin", code, Handler="sys.handler")
    body = init_error(lam, "ins-builtin")
    assert body["errorType"] == "Runtime.BuiltInModuleConflict"
    assert body["errorMessage"] == "Cannot use built-in module sys as a handler module"
    assert body["stackTrace"] == []


def test_unserializable_result_is_a_marshal_error(lam: Any) -> None:
    code = "def handler(event, context):\n    return {'ok': event.get('ok') or {1, 2}}\n"
    create(lam, "ins-marshal", code)
    out = invoke(lam, "ins-marshal", LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    assert out["json"] == {
        "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": out["request_id"],
        "stackTrace": [],
    }
    assert (
        "[ERROR] Runtime.MarshalError: Unable to marshal response: Object of type set is not "
        "JSON serializable\rTraceback (most recent call last):"
    ) in tail_text(out)
    # an invoke-time error: the function keeps serving
    assert ok(invoke(lam, "ins-marshal", {"ok": 1})) == {"ok": 1}


# -- retirement ----------------------------------------------------------------------------------


def test_update_retires_old_instances(lam: Any) -> None:
    create(lam, "ins-update", COUNTER_CODE, Environment={"Variables": {"MARKER": "one"}})
    first = ok(invoke(lam, "ins-update"))
    assert first["marker"] == "one"
    first_seen = seen(first)

    lam.update_function_configuration(
        FunctionName="ins-update", Environment={"Variables": {"MARKER": "two"}}
    )
    second = ok(invoke(lam, "ins-update"))
    assert second["marker"] == "two"
    assert second["instance"] != first["instance"] and second["count"] == 1
    second_seen = seen(second)
    wait_reaped(first_seen)

    code = COUNTER_CODE.replace('"marker": os.environ.get("MARKER")', '"marker": "new code"')
    lam.update_function_code(FunctionName="ins-update", ZipFile=make_zip({"app.py": code}))
    third = ok(invoke(lam, "ins-update"))
    assert third["marker"] == "new code"
    assert third["instance"] != second["instance"] and third["count"] == 1
    wait_reaped(second_seen)


def test_busy_instance_retires_after_its_invoke(lam: Any) -> None:
    create(lam, "ins-update-busy", COUNTER_CODE, Environment={"Variables": {"MARKER": "old"}})
    warm = seen(ok(invoke(lam, "ins-update-busy")))
    with Recorder() as rec, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(invoke, lam, "ins-update-busy", {"sleep": 0.6, "notify": rec.port})
        rec.wait(1)  # the invoke is running on the warm instance
        lam.update_function_configuration(
            FunctionName="ins-update-busy", Environment={"Variables": {"MARKER": "new"}}
        )
        assert all(pid_exists(p) for p in warm.pids)  # a busy instance is not stopped
        busy = ok(slow.result())
    assert busy["marker"] == "old"  # the running invoke finished on the old instance
    assert busy["instance"] == warm.instance and busy["count"] == 2
    wait_reaped(warm)
    fresh = ok(invoke(lam, "ins-update-busy"))
    assert fresh["marker"] == "new" and fresh["instance"] != busy["instance"]


def test_delete_function_stops_its_instances(lam: Any) -> None:
    create(lam, "ins-delete", COUNTER_CODE)
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: invoke(lam, "ins-delete", {"sleep": 0.3}), range(2)))
    instances = [seen(ok(o)) for o in outs]
    assert len({i.instance for i in instances}) == 2
    lam.delete_function(FunctionName="ins-delete")
    for instance in instances:
        wait_reaped(instance)


# -- reaping and shutdown ------------------------------------------------------------------------


def test_idle_instances_are_reaped(fresh_server: Server) -> None:
    fresh_server.extra += ["--idle-timeout", "0.5"]
    lam = fresh_server.start().client()
    create(lam, "ins-idle", COUNTER_CODE)
    cold = invoke(lam, "ins-idle", LogType="Tail")
    first = seen(ok(cold))
    assert "Init Duration:" in tail_text(cold)
    warm = invoke(lam, "ins-idle", LogType="Tail")
    assert ok(warm)["instance"] == first.instance
    assert "Init Duration:" not in tail_text(warm)
    time.sleep(1.0)
    wait_reaped(first, timeout=3.0)
    assert fresh_server.instance_cgroups() == {}
    again = invoke(lam, "ins-idle", LogType="Tail")
    assert ok(again)["instance"] != first.instance and again["json"]["count"] == 1
    assert "Init Duration:" in tail_text(again)


SPAWN_CODE = (
    INSTANCE_CODE
    + """
import os, subprocess
CHILD = None
def handler(event, context):
    global CHILD
    if CHILD is None:
        CHILD = subprocess.Popen(["sleep", "60"])
    return {"instance": INSTANCE, "cgroup": CGROUP, "pid": os.getpid(), "child": CHILD.pid}
"""
)


def test_sigterm_leaves_no_instance_behind(fresh_server: Server) -> None:
    lam = fresh_server.start().client()
    create(lam, "ins-term-a", COUNTER_CODE)
    create(lam, "ins-term-b", SPAWN_CODE)
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda _: invoke(lam, "ins-term-a", {"sleep": 0.3}), range(3)))
    instances = {ok(o)["instance"] for o in outs}
    spawned = ok(invoke(lam, "ins-term-b"))
    instances.add(spawned["instance"])
    assert len(instances) == 4
    # the host's view: four instance cgroups of this lamina; ins-term-b's also holds its child
    groups = fresh_server.instance_cgroups()
    assert len(groups) == 4, groups
    assert spawned["cgroup"] in groups and len(groups[spawned["cgroup"]]) == 3, (
        groups
    )  # init, runtime, child
    pids = [p for group in groups.values() for p in group]
    assert all(pid_exists(p) for p in pids)
    run_dirs = fresh_server.run_dirs()
    assert run_dirs
    code = fresh_server.stop(signal.SIGTERM)
    # uvicorn re-raises the signal it caught once shutdown is complete
    assert code in (0, -signal.SIGTERM), fresh_server.log
    assert "Application shutdown complete." in fresh_server.log
    # stop() returned when lamina exited: every instance (and what it started) is already gone,
    # and so are its cgroups
    survivors = [p for p in pids if pid_exists(p, zombie_is_gone=True)]
    assert survivors == [], f"instance processes survived SIGTERM: {survivors}"
    left = [str(d) for d in run_dirs if d.exists()]
    assert left == [], f"cgroups left behind after SIGTERM: {left}"


def test_instance_dying_while_idle_is_replaced(lam: Any) -> None:
    create(lam, "ins-idle-death", COUNTER_CODE)
    first = ok(invoke(lam, "ins-idle-death"))
    before = seen(first)
    time.sleep(0.2)  # idle long enough to be frozen
    for pid in before.pids:  # something outside lamina kills the idle instance
        os.kill(pid, signal.SIGKILL)
    after = ok(invoke(lam, "ins-idle-death"))  # not an error: a fresh instance serves it
    assert after["instance"] != first["instance"] and after["count"] == 1
    wait_reaped(before)


def test_instance_dying_while_idle_is_replaced_in_process_mode(fresh_server: Server) -> None:
    """With --isolation process nothing freezes an idle instance: it dies at once."""
    fresh_server.extra += ["--isolation", "process"]
    lam = fresh_server.start().client()
    create(lam, "ins-idle-death", COUNTER_CODE)
    first = ok(invoke(lam, "ins-idle-death"))
    os.kill(first["pid"], signal.SIGKILL)  # something outside lamina kills the idle instance
    wait_pid_reaped(first["pid"])
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
    with Recorder() as rec, ThreadPoolExecutor(1) as pool:
        running = pool.submit(invoke, lam, "ins-term-busy", {"sleep": 0.6, "notify": rec.port})
        (line,) = rec.wait(1)  # the handler is running
        _, instance, cgroup = line.split()
        busy = Seen(instance, cgroup, tuple(cgroup_pids(cgroup)))
        assert fresh_server.proc is not None
        fresh_server.proc.send_signal(signal.SIGTERM)
        result = ok(running.result(timeout=30))
    assert result["count"] == 1 and result["instance"] == busy.instance
    fresh_server.stop()
    wait_reaped(busy, timeout=1.0)


TIMEOUT_CHILD_CODE = (
    INSTANCE_CODE
    + RECORD_CODE
    + """
import subprocess, time
def handler(event, context):
    child = subprocess.Popen(["sleep", "60"])
    record("started %s %s" % (child.pid, CGROUP))
    time.sleep(5)
"""
)


def test_timeout_kills_what_the_instance_started(lam: Any) -> None:
    with Recorder() as rec, ThreadPoolExecutor(1) as pool:
        create(
            lam,
            "ins-timeout-child",
            TIMEOUT_CHILD_CODE,
            Timeout=1,
            MemorySize=1769,  # a whole CPU: the child starts well within the 1 s
            Environment={"Variables": rec.env},
        )
        running = pool.submit(invoke, lam, "ins-timeout-child")
        (line,) = rec.wait(1)  # the child is started, the handler sleeps
        _, _child, cgroup = line.split()
        pids = cgroup_pids(cgroup)
        assert len(pids) == 3, pids  # init, the runtime and its child, as the host sees them
        out = running.result(timeout=30)
    assert out["json"]["errorType"] == "Sandbox.Timedout"
    try:
        wait_gone(pids, cgroup_dirs(cgroup), timeout=3.0)
    except AssertionError as exc:
        raise AssertionError(f"the instance or its child survived its timeout: {exc}") from None
