"""Provisioned concurrency through boto3 against a real `lamina serve`: the config API on
versions and aliases, instances initialized ahead of time and used first, replaced when they
die, stopped on Delete, and started again after a restart."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.e2e.server import Server, create, invoke

ACCOUNT = "000000000000"
REGION = "us-east-1"

CODE = """
import os, time, uuid
INSTANCE = uuid.uuid4().hex
time.sleep(0.2)  # an init long enough to show in a REPORT

def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("exit") is not None:
        os._exit(event["exit"])
    return {"instance": INSTANCE, "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"]}
"""


def arn(name: str, qualifier: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}:{qualifier}"


def wait_ready(lam: Any, name: str, qualifier: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got: dict[str, Any] = lam.get_provisioned_concurrency_config(
            FunctionName=name, Qualifier=qualifier
        )
        if got["Status"] == "READY" or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def call(lam: Any, name: str, payload: Any = None) -> tuple[dict[str, Any], str]:
    out = invoke(lam, name, payload or {}, LogType="Tail")
    assert out["StatusCode"] == 200 and "FunctionError" not in out, out["body"]
    result: dict[str, Any] = out["json"]
    return result, base64.b64decode(out["LogResult"]).decode()


def test_provisioned_api_shapes_and_errors(lam: Any) -> None:
    name = "prov-api"
    create(lam, name, CODE, MemorySize=1769, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    errors = lam.exceptions
    with pytest.raises(errors.InvalidParameterValueException) as exc:
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        )
    assert exc.value.response["Error"]["Message"] == (
        "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
    )
    with pytest.raises(errors.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    with pytest.raises(errors.ProvisionedConcurrencyConfigNotFoundException):
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    with pytest.raises(errors.ResourceNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="nope")
    with pytest.raises(errors.ResourceNotFoundException):
        lam.put_provisioned_concurrency_config(
            FunctionName="prov-missing", Qualifier="1", ProvisionedConcurrentExecutions=1
        )
    assert (
        lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
        == []
    )

    # provisioned instances count against the function's reserved concurrency
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with pytest.raises(errors.InvalidParameterValueException):
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2
        )
    lam.delete_function_concurrency(FunctionName=name)

    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    assert put["Status"] in ("IN_PROGRESS", "READY")
    assert {"AllocatedProvisionedConcurrentExecutions", "LastModified"} <= set(put)
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)
    configs = listed["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"] for c in configs] == [arn(name, "1")]
    assert wait_ready(lam, name, "1")["AvailableProvisionedConcurrentExecutions"] == 1
    deleted = lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    lam.delete_function(FunctionName=name)


def test_provisioned_init_failure(lam: Any) -> None:
    name = "prov-broken"
    create(lam, name, "raise RuntimeError('no init')\n", MemorySize=1769, Publish=True)
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
        if got["Status"] != "IN_PROGRESS":
            break
        time.sleep(0.1)
    assert got["Status"] == "FAILED", got
    assert got["StatusReason"]
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


def test_provisioned_alias_instances(lam: Any) -> None:
    name = "prov-alias"
    create(lam, name, CODE, MemorySize=1769, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2
    )
    got = wait_ready(lam, name, "live")
    assert got["Status"] == "READY", got
    assert got["AllocatedProvisionedConcurrentExecutions"] == 2

    first, text = call(lam, f"{name}:live")
    assert first["init"] == "provisioned-concurrency"
    assert "REPORT RequestId" in text and "Init Duration" not in text, text

    # two at once: both provisioned instances serve, neither is cold
    with ThreadPoolExecutor(2) as ex:
        both = list(ex.map(lambda _: call(lam, f"{name}:live", {"sleep": 0.5}), range(2)))
    assert {r["init"] for r, _ in both} == {"provisioned-concurrency"}
    assert len({r["instance"] for r, _ in both}) == 2
    assert all("Init Duration" not in t for _, t in both)
    by_version, _ = call(lam, f"{name}:1")  # the version the alias names uses them too
    assert by_version["init"] == "provisioned-concurrency"

    # $LATEST is another version: on demand, cold
    latest, text = call(lam, name)
    assert latest["init"] == "on-demand" and latest["version"] == "$LATEST"
    assert "Init Duration" in text

    # one that dies is replaced
    out = invoke(lam, f"{name}:live", {"exit": 1})
    assert out.get("FunctionError") == "Unhandled"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
        if got["AllocatedProvisionedConcurrentExecutions"] == 2:
            break
        time.sleep(0.1)
    assert got["AllocatedProvisionedConcurrentExecutions"] == 2, got
    with ThreadPoolExecutor(2) as ex:
        both = list(ex.map(lambda _: call(lam, f"{name}:live", {"sleep": 0.3}), range(2)))
    assert {r["init"] for r, _ in both} == {"provisioned-concurrency"}

    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    after, text = call(lam, f"{name}:live")
    assert after["init"] == "on-demand" and "Init Duration" in text
    lam.delete_function(FunctionName=name)


def test_provisioned_survives_restart(fresh_server: Server) -> None:
    name = "prov-restart"
    fresh_server.start()
    lam = fresh_server.client()
    try:
        create(lam, name, CODE, MemorySize=1769, Publish=True)
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="1", ProvisionedConcurrentExecutions=1
        )
        assert wait_ready(lam, name, "1")["Status"] == "READY"
    finally:
        lam.close()
    assert fresh_server.stop() == 0
    assert "Traceback" not in fresh_server.log, fresh_server.log
    fresh_server.start()
    lam = fresh_server.client()
    try:
        got = wait_ready(lam, name, "1")
        assert got["Status"] == "READY", got
        assert got["RequestedProvisionedConcurrentExecutions"] == 1
        result, text = call(lam, f"{name}:1")
        assert result["init"] == "provisioned-concurrency" and "Init Duration" not in text
    finally:
        lam.close()
