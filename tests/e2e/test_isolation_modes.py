"""Isolation modes end to end: the default `--isolation namespaces` (every instance in a sandbox of
its own) says so and is so; `--isolation process` runs instances as plain processes and warns
loudly; anything else is refused. And what the sandbox's network gives a function."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.server import (
    INSTANCE_CODE,
    RECORD_CODE,
    TRUST_LAMBDA,
    Recorder,
    Server,
    cgroup_pids,
    create,
    pid_exists,
)

NETWORK_TAG = "lamina:network"


def health(server: Server) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/_lamina/health", timeout=10) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def invoke(lam: Any, name: str, payload: Any = None) -> dict[str, Any]:
    out = lam.invoke(FunctionName=name, Payload=json.dumps({} if payload is None else payload))
    body = out["Payload"].read()
    out["Payload"].close()
    assert out["StatusCode"] == 200
    assert "FunctionError" not in out, body
    result: dict[str, Any] = json.loads(body)
    return result


WHERE_CODE = (
    INSTANCE_CODE
    + """
import os, socket
def handler(event, context):
    root = os.environ["LAMBDA_TASK_ROOT"]
    return {
        "instance": INSTANCE,
        "cgroup": CGROUP,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "hostname": socket.gethostname(),
        "task_root": root,
        "task_root_files": sorted(os.listdir(root)),
        "cwd": os.getcwd(),
        "sees": {path: os.path.exists(path) for path in event.get("paths", [])},
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
    }
"""
)


# -- the default: namespaces ---------------------------------------------------------------------


def test_default_is_namespaces_and_health_describes_the_sandbox(server: Server, lam: Any) -> None:
    info = health(server)
    assert info["isolation"] == "namespaces"
    note = info["isolation_note"]
    for needle in ("namespaces", "cgroup", "read-only root", "own uid", "seccomp", "network"):
        assert needle in note, (needle, note)
    sandbox = info["sandbox"]
    assert sandbox["cgroup_version"] in (1, 2)
    assert isinstance(sandbox["egress_beyond_host"], bool)
    assert isinstance(sandbox["zygotes"], dict)
    assert re.search(r" INFO lamina: isolation: namespaces — ", server.log), server.log[-2000:]

    # and an instance is what it says: PID 1 of its own namespace, an unprivileged uid, its own
    # hostname and cgroup, its code at /var/task, none of the host's files
    create(lam, "iso-where", WHERE_CODE)
    # lamina's store and credentials (all of its data dir but the SDK copy `runtime`, which
    # instances get read-only), this test, the test's interpreter
    secret = [p for p in server.data_dir.iterdir() if p.name != "runtime"]
    assert {"lamina.db", "code"} <= {p.name for p in secret}  # (root key: from the env here)
    host_paths = [*map(str, secret), str(Path(__file__).resolve()), sys.executable]
    got = invoke(lam, "iso-where", {"paths": host_paths})
    assert got["pid"] == 2  # its own PID namespace: PID 1 is the instance's init
    assert got["uid"] >= 20000
    assert got["hostname"].startswith("sandbox-")
    assert got["task_root"] == got["cwd"] == "/var/task"
    assert got["task_root_files"] == ["app.py"]
    assert got["sees"] == dict.fromkeys(host_paths, False)
    assert got["cgroup"].startswith("/lamina/run-")
    host_pids = cgroup_pids(got["cgroup"])
    assert host_pids and all(pid != 1 and pid_exists(pid) for pid in host_pids)
    endpoint = urllib.parse.urlsplit(got["endpoint"])
    assert endpoint.hostname not in ("127.0.0.1", "localhost")  # lamina's host address
    assert endpoint.port == urllib.parse.urlsplit(server.url).port
    zygotes = health(server)["sandbox"]["zygotes"]  # the warm zygote it was forked from
    assert zygotes and all("restarts" in z for z in zygotes.values()), zygotes


# -- process: no isolation, loudly ---------------------------------------------------------------


def test_process_isolation_warns_and_still_runs(fresh_server: Server) -> None:
    fresh_server.extra += ["--isolation", "process"]
    fresh_server.start()
    # the warning is in the log before lamina says it is ready
    head = fresh_server.log[: fresh_server.log.index("lamina ready on")]
    assert re.search(r" WARNING lamina: isolation: process — .*NO namespaces", head), head
    info = health(fresh_server)
    assert info["isolation"] == "process"
    assert "plain processes" in info["isolation_note"]
    assert "no namespaces" in info["isolation_note"]
    assert info["sandbox"] is None

    lam = fresh_server.client()
    create(lam, "iso-process", WHERE_CODE)
    got = invoke(lam, "iso-process", {"paths": [str(fresh_server.data_dir)]})
    # a plain process of the host: its pid is a host pid, its code is where lamina unpacked it
    assert got["pid"] != 1 and got["pid"] != os.getpid() and pid_exists(got["pid"])
    assert got["uid"] == os.getuid()
    assert got["sees"] == {str(fresh_server.data_dir): True}
    task_root = Path(got["task_root"])
    assert task_root.is_relative_to(fresh_server.data_dir) and (task_root / "app.py").is_file()
    endpoint = urllib.parse.urlsplit(got["endpoint"])
    port = urllib.parse.urlsplit(fresh_server.url).port
    assert (endpoint.hostname, endpoint.port) == ("127.0.0.1", port)


def test_unknown_isolation_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "LAMINA_CONFIG")}
    argv = [sys.executable, "-m", "lamina", "serve", "--port", "0"]
    argv += ["--data-dir", str(tmp_path / "data"), "--isolation", "bogus"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "unknown isolation 'bogus'" in output, output
    assert "namespaces" in output and "process" in output, output
    assert "lamina ready" not in output and "Traceback" not in output, output


# -- the sandbox's network -----------------------------------------------------------------------

CONNECT_CODE = (
    INSTANCE_CODE
    + RECORD_CODE
    + """
import os
def handler(event, context):
    try:
        record("%s from %s" % (context.function_name, INSTANCE))
    except OSError as exc:
        return {"instance": INSTANCE, "connected": False, "errno": exc.errno}
    return {"instance": INSTANCE, "connected": True, "errno": None}
"""
)


def test_network_none_cannot_reach_the_host(lam: Any) -> None:
    with Recorder() as rec:
        env = {"Variables": rec.env}
        create(lam, "iso-net-egress", CONNECT_CODE, Environment=env)
        create(lam, "iso-net-none", CONNECT_CODE, Environment=env, Tags={NETWORK_TAG: "none"})

        egress = invoke(lam, "iso-net-egress")
        assert egress["connected"] is True, egress
        assert rec.lines == [f"iso-net-egress from {egress['instance']}"]

        none = invoke(lam, "iso-net-none")
        assert none["connected"] is False, none
        assert none["errno"] in (errno.ENETUNREACH, errno.EHOSTUNREACH), none  # no route out
        assert rec.lines == [f"iso-net-egress from {egress['instance']}"]  # nothing arrived

        # tagging a function retires its instances: the next one has no network either
        arn = lam.get_function_configuration(FunctionName="iso-net-egress")["FunctionArn"]
        lam.tag_resource(Resource=arn, Tags={NETWORK_TAG: "none"})
        cut = invoke(lam, "iso-net-egress")
        assert cut["connected"] is False and cut["instance"] != egress["instance"], cut
        assert len(rec.lines) == 1


SDK_CODE = """
import os
import boto3
def handler(event, context):
    client = boto3.client("lambda")
    pages = client.get_paginator("list_functions").paginate()
    names = [f["FunctionName"] for page in pages for f in page["Functions"]]
    return {"endpoint": os.environ.get("AWS_ENDPOINT_URL"), "names": names}
"""


def test_boto3_in_a_function_reaches_lamina_without_configuration(server: Server, lam: Any) -> None:
    # its execution role may list functions (and nothing else): the SDK inside signs with it
    iam = server.client("iam")
    role = iam.create_role(RoleName="iso-sdk-lister", AssumeRolePolicyDocument=TRUST_LAMBDA)
    iam.put_role_policy(
        RoleName="iso-sdk-lister",
        PolicyName="list",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "lambda:ListFunctions", "Resource": "*"}
                ],
            }
        ),
    )
    create(lam, "iso-sdk", SDK_CODE, MemorySize=1769, Role=role["Role"]["Arn"])  # a whole CPU
    config = lam.get_function_configuration(FunctionName="iso-sdk")
    assert "AWS_ENDPOINT_URL" not in config.get("Environment", {}).get("Variables", {})
    got = invoke(lam, "iso-sdk")
    pages = lam.get_paginator("list_functions").paginate()
    assert sorted(got["names"]) == sorted(f["FunctionName"] for p in pages for f in p["Functions"])
    assert "iso-sdk" in got["names"]
    endpoint = urllib.parse.urlsplit(got["endpoint"])
    assert endpoint.port == urllib.parse.urlsplit(server.url).port
    assert endpoint.hostname not in ("127.0.0.1", "localhost")  # the sandbox's way to the host
