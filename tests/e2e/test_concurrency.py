"""Concurrency controls: reserved concurrency, the account limit, throttling, scale-up rate."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.e2e.server import RECORD_CODE, ROOT_KEY_ENV, Recorder, Server, create, invoke

SLEEPER = """
import time

def handler(event, context):
    start = time.time()
    time.sleep(event.get("sleep", 0))
    return {"start": start, "end": time.time()}
"""

RECORDER = (
    RECORD_CODE
    + """
def handler(event, context):
    record("ran %s" % event["i"])
    return "ok"
"""
)


def _throttle(exc: Any) -> tuple[str, str, str, int]:
    r = exc.response
    return (
        r["Error"]["Code"],
        r["Reason"],
        r["ResponseMetadata"]["HTTPHeaders"]["retry-after"],
        r["ResponseMetadata"]["HTTPStatusCode"],
    )


def _burst(client: Any, name: str, n: int, sleep: float) -> list[Any]:
    """`n` sync invokes released at once: each a result dict or the exception raised.
    (Without retries: `max_attempts: 1` is one *retry*, which would run a throttled call later.)
    """
    lam = boto3.client(
        "lambda",
        endpoint_url=client.meta.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ROOT_KEY_ENV["LAMINA_ACCESS_KEY_ID"],
        aws_secret_access_key=ROOT_KEY_ENV["LAMINA_SECRET_ACCESS_KEY"],
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )
    barrier = threading.Barrier(n)

    def one(_i: int) -> Any:
        barrier.wait()
        try:
            return invoke(lam, name, {"sleep": sleep})
        except lam.exceptions.TooManyRequestsException as exc:
            return exc

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_put_get_delete_function_concurrency(lam: Any) -> None:
    create(lam, "cc-shapes", SLEEPER)
    create(lam, "cc-other", SLEEPER)
    got = lam.get_function_concurrency(FunctionName="cc-shapes")
    assert "ReservedConcurrentExecutions" not in got
    assert "Concurrency" not in lam.get_function(FunctionName="cc-shapes")
    limit = lam.get_account_settings()["AccountLimit"]
    assert limit["ConcurrentExecutions"] == 1000
    unreserved = limit["UnreservedConcurrentExecutions"]

    put = lam.put_function_concurrency(FunctionName="cc-shapes", ReservedConcurrentExecutions=5)
    assert put["ReservedConcurrentExecutions"] == 5
    got = lam.get_function_concurrency(FunctionName="cc-shapes")
    assert got["ReservedConcurrentExecutions"] == 5
    fn = lam.get_function(FunctionName="cc-shapes")
    assert fn["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    revision = fn["Configuration"]["RevisionId"]
    limit = lam.get_account_settings()["AccountLimit"]
    assert limit["UnreservedConcurrentExecutions"] == unreserved - 5
    assert invoke(lam, "cc-shapes")["StatusCode"] == 200  # under its reservation: runs

    # the unreserved pool must keep 100: the largest reservation leaves exactly 100
    most = unreserved - 100
    lam.put_function_concurrency(FunctionName="cc-shapes", ReservedConcurrentExecutions=most)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 100
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as err:
        lam.put_function_concurrency(FunctionName="cc-other", ReservedConcurrentExecutions=1)
    assert err.value.response["Error"]["Message"] == (
        "Specified ReservedConcurrentExecutions for function decreases account's "
        "UnreservedConcurrentExecution below its minimum value of [100]."
    )
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(
            FunctionName="cc-shapes", ReservedConcurrentExecutions=most + 1
        )
    assert lam.get_function_concurrency(FunctionName="cc-shapes")[
        "ReservedConcurrentExecutions"
    ] == (most)

    out = lam.delete_function_concurrency(FunctionName="cc-shapes")
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(
        FunctionName="cc-shapes"
    )
    fn = lam.get_function(FunctionName="cc-shapes")
    assert "Concurrency" not in fn
    assert fn["Configuration"]["RevisionId"] == revision  # not a configuration change
    limit = lam.get_account_settings()["AccountLimit"]
    assert limit["UnreservedConcurrentExecutions"] == unreserved

    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_concurrency(FunctionName="cc-missing", ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_concurrency(FunctionName="cc-missing")


def test_reserved_zero_throttles_sync_and_holds_async(lam: Any) -> None:
    with Recorder() as rec:
        create(lam, "cc-zero", RECORDER, Environment={"Variables": rec.env})
        lam.put_function_concurrency(FunctionName="cc-zero", ReservedConcurrentExecutions=0)
        with pytest.raises(lam.exceptions.TooManyRequestsException) as err:
            invoke(lam, "cc-zero", {"i": "sync"})
        code, reason, retry_after, status = _throttle(err.value)
        assert (code, reason, status) == (
            "TooManyRequestsException",
            "ReservedFunctionConcurrentInvocationLimitExceeded",
            429,
        )
        assert int(retry_after) >= 1
        assert err.value.response["Error"]["Message"] == "Rate Exceeded."

        out = invoke(lam, "cc-zero", {"i": "async"}, InvocationType="Event")
        assert out["StatusCode"] == 202  # accepted: it waits, it is not dropped or failed
        time.sleep(1.5)
        assert rec.lines == []
        lam.delete_function_concurrency(FunctionName="cc-zero")
        assert rec.wait(1, timeout=20) == ["ran async"]


def test_burst_beyond_reserved_is_throttled(lam: Any) -> None:
    create(lam, "cc-burst", SLEEPER, MemorySize=1769, Timeout=10)
    lam.put_function_concurrency(FunctionName="cc-burst", ReservedConcurrentExecutions=2)
    try:
        results = _burst(lam, "cc-burst", 6, 0.5)
    finally:
        lam.delete_function_concurrency(FunctionName="cc-burst")
    ok = [r for r in results if isinstance(r, dict)]
    throttled = [r for r in results if not isinstance(r, dict)]
    assert len(ok) == 2 and len(throttled) == 4, results
    for exc in throttled:
        assert _throttle(exc)[1] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    spans = [json.loads(r["body"]) for r in ok]
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)  # ran concurrently
    assert invoke(lam, "cc-burst")["StatusCode"] == 200  # released: runs again


def test_account_limit_and_scale_up_rate(fresh_server: Server) -> None:
    fresh_server.extra += ["--concurrency-limit", "150", "--scale-up-rate", "2"]
    lam = fresh_server.start().client()
    limit = lam.get_account_settings()["AccountLimit"]
    assert (limit["ConcurrentExecutions"], limit["UnreservedConcurrentExecutions"]) == (150, 150)
    create(lam, "cc-small", SLEEPER, MemorySize=1769, Timeout=10)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(FunctionName="cc-small", ReservedConcurrentExecutions=51)
    lam.put_function_concurrency(FunctionName="cc-small", ReservedConcurrentExecutions=50)
    fresh_server.stop()  # the reservation is kept in the function's metadata
    lam = fresh_server.start().client()
    got = lam.get_function_concurrency(FunctionName="cc-small")
    assert got["ReservedConcurrentExecutions"] == 50
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 100
    lam.delete_function_concurrency(FunctionName="cc-small")

    # at most 2 new instances per 10 s: a third concurrent invoke is throttled
    results = _burst(lam, "cc-small", 3, 0.5)
    ok = [r for r in results if isinstance(r, dict)]
    throttled = [r for r in results if not isinstance(r, dict)]
    assert len(ok) == 2 and len(throttled) == 1, results
    _code, reason, retry_after, status = _throttle(throttled[0])
    assert (reason, status) == ("FunctionInvocationRateLimitExceeded", 429)
    assert 1 <= int(retry_after) <= 10
    assert invoke(lam, "cc-small")["StatusCode"] == 200  # a warm instance needs no new one
