"""The durable async queue: accepted events survive `kill -9`, retries follow the
EventInvokeConfig, and destinations get AWS's records."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.server import RECORD_CODE, Recorder, Server, create, invoke

ARN = "arn:aws:lambda:us-east-1:000000000000:function:"

SLOW_RECORDER = (
    RECORD_CODE + "import time\n"
    "def handler(event, context):\n"
    "    record('ran %s' % event['id'])\n"
    "    time.sleep(event.get('sleep', 0.2))\n"
    "    return 'ok'\n"
)

# Fails on its first two attempts at an event (counted in /tmp, which lives as long as the
# instance: one instance serves the retries here, as they come one at a time).
FLAKY = (
    RECORD_CODE + "import os\n"
    "def handler(event, context):\n"
    "    path = '/tmp/attempts-' + context.aws_request_id\n"
    "    n = int(open(path).read()) + 1 if os.path.exists(path) else 1\n"
    "    open(path, 'w').write(str(n))\n"
    "    record('attempt %s %d' % (event['id'], n))\n"
    "    if n <= event.get('fail', 2):\n"
    "        raise RuntimeError('attempt %d fails' % n)\n"
    "    return {'attempt': n}\n"
)

# A destination: records the record it got, as one JSON line.
DESTINATION = (
    RECORD_CODE + "import json\n"
    "def handler(event, context):\n"
    "    record('dest ' + json.dumps(event))\n"
)


def _accept(lam: Any, name: str, payloads: list[dict[str, Any]]) -> list[str]:
    def one(p: dict[str, Any]) -> str:
        out = invoke(lam, name, p, InvocationType="Event")
        assert out["StatusCode"] == 202
        return str(out["request_id"])

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, payloads))


def _survives_kill(fresh_server: Server, n: int) -> None:
    # an attempt that fails for lamina's own reasons (a sandbox that could not be set up under
    # the restart's burst of cold starts) is retried: 1 s later here, not 1 minute
    fresh_server.env = {"LAMINA_ASYNC_RETRY_BASE_S": "1"}
    lam = fresh_server.start().client()
    with Recorder() as rec:
        create(lam, "durable", SLOW_RECORDER, Environment={"Variables": rec.env}, Timeout=30)
        _accept(lam, "durable", [{"id": i} for i in range(n)])
        before = len(rec.lines)
        fresh_server.stop(signal.SIGKILL)
        assert before < n, "every event finished before the kill: nothing was left to recover"
        lam = fresh_server.start().client()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            seen = {line.split()[1] for line in rec.lines}
            if len(seen) >= n:
                break
            time.sleep(0.1)
        counts = Counter(line.split()[1] for line in rec.lines)
    missing = sorted(set(map(str, range(n))) - set(counts), key=int)
    duplicates = {k: v for k, v in counts.items() if v > 1}
    print(f"{n} accepted, {before} recorded before kill -9; {len(duplicates)} ran more than once")
    print("duplicates:", duplicates)
    print("sandbox setup failures:", fresh_server.log.count("sandbox setup failed"))
    assert not missing, f"{len(missing)} accepted events never ran: {missing[:20]}"


def test_accepted_events_survive_kill_9(fresh_server: Server) -> None:
    _survives_kill(fresh_server, 300)


@pytest.mark.slow
def test_accepted_events_survive_kill_9_at_1000(fresh_server: Server) -> None:
    _survives_kill(fresh_server, 1000)


def test_function_error_is_retried_until_it_succeeds(fresh_server: Server) -> None:
    fresh_server.env = {"LAMINA_ASYNC_RETRY_BASE_S": "0.3"}
    lam = fresh_server.start().client()
    with Recorder() as rec:
        env = {"Variables": rec.env}
        create(lam, "flaky", FLAKY, Environment=env)
        create(lam, "flaky-ok", DESTINATION, Environment=env)
        lam.put_function_event_invoke_config(
            FunctionName="flaky",
            DestinationConfig={"OnSuccess": {"Destination": ARN + "flaky-ok"}},
        )
        request_id = _accept(lam, "flaky", [{"id": "a"}])[0]
        lines = rec.wait(4, timeout=30)
        time.sleep(1.0)  # nothing more comes
        lines = rec.lines
    attempts = [line for line in lines if line.startswith("attempt")]
    assert attempts == ["attempt a 1", "attempt a 2", "attempt a 3"]
    (dest,) = [json.loads(line[5:]) for line in lines if line.startswith("dest ")]
    assert dest["version"] == "1.0"
    assert dest["timestamp"].endswith("Z")
    assert dest["requestContext"] == {
        "requestId": request_id,
        "functionArn": ARN + "flaky:$LATEST",
        "condition": "Success",
        "approximateInvokeCount": 3,
    }
    assert dest["requestPayload"] == {"id": "a"}
    assert dest["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert dest["responsePayload"] == {"attempt": 3}


def test_no_retries_sends_the_failure_record(fresh_server: Server) -> None:
    fresh_server.env = {"LAMINA_ASYNC_RETRY_BASE_S": "0.3"}
    lam = fresh_server.start().client()
    with Recorder() as rec:
        env = {"Variables": rec.env}
        create(lam, "fails", FLAKY, Environment=env)
        create(lam, "fails-dlq", DESTINATION, Environment=env)
        lam.put_function_event_invoke_config(
            FunctionName="fails",
            MaximumRetryAttempts=0,
            DestinationConfig={"OnFailure": {"Destination": ARN + "fails-dlq"}},
        )
        request_id = _accept(lam, "fails", [{"id": "b", "fail": 5}])[0]
        rec.wait(2, timeout=30)
        time.sleep(1.0)
        lines = rec.lines
    assert [line for line in lines if line.startswith("attempt")] == ["attempt b 1"]
    (dest,) = [json.loads(line[5:]) for line in lines if line.startswith("dest ")]
    ctx = dest["requestContext"]
    assert ctx["requestId"] == request_id
    assert ctx["condition"] == "RetriesExhausted"
    assert ctx["approximateInvokeCount"] == 1
    assert ctx["functionArn"] == ARN + "fails:$LATEST"
    assert dest["requestPayload"] == {"id": "b", "fail": 5}
    assert dest["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert dest["responsePayload"]["errorType"] == "RuntimeError"
    assert dest["responsePayload"]["errorMessage"] == "attempt 1 fails"


def test_event_invoke_config_api(server: Server) -> None:
    lam = server.client(parameter_validation=False)  # lamina's own checks, not botocore's
    create(lam, "eic", "def handler(e, c):\n    return e\n")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName="eic")
    out = lam.put_function_event_invoke_config(FunctionName="eic", MaximumRetryAttempts=1)
    assert out["FunctionArn"] == ARN + "eic:$LATEST"
    assert out["MaximumRetryAttempts"] == 1
    assert "MaximumEventAgeInSeconds" not in out
    assert out["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    assert out["LastModified"].year >= 2024  # a timestamp, as botocore parses it
    # Update merges
    out = lam.update_function_event_invoke_config(
        FunctionName="eic",
        MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnFailure": {"Destination": ARN + "eic"}},
    )
    assert out["MaximumRetryAttempts"] == 1
    assert out["MaximumEventAgeInSeconds"] == 120
    assert out["DestinationConfig"]["OnFailure"] == {"Destination": ARN + "eic"}
    got = lam.get_function_event_invoke_config(FunctionName="eic")
    assert {k: v for k, v in got.items() if k != "ResponseMetadata"} == {
        k: v for k, v in out.items() if k != "ResponseMetadata"
    }
    # Put replaces
    out = lam.put_function_event_invoke_config(FunctionName="eic", MaximumEventAgeInSeconds=60)
    assert "MaximumRetryAttempts" not in out
    assert out["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    listed = lam.list_function_event_invoke_configs(FunctionName="eic")
    assert [c["FunctionArn"] for c in listed["FunctionEventInvokeConfigs"]] == [ARN + "eic:$LATEST"]
    # paginated: one config per page across $LATEST and a published version
    lam.publish_version(FunctionName="eic")
    lam.put_function_event_invoke_config(FunctionName="eic", Qualifier="1", MaximumRetryAttempts=1)
    paged = [
        c["FunctionArn"]
        for page in lam.get_paginator("list_function_event_invoke_configs").paginate(
            FunctionName="eic", PaginationConfig={"PageSize": 1}
        )
        for c in page["FunctionEventInvokeConfigs"]
    ]
    assert sorted(paged) == [ARN + "eic:$LATEST", ARN + "eic:1"]
    lam.delete_function_event_invoke_config(FunctionName="eic", Qualifier="1")
    # errors
    for bad in (
        {"MaximumRetryAttempts": 3},
        {"MaximumEventAgeInSeconds": 59},
        {"MaximumEventAgeInSeconds": 21601},
        {"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:0:q"}}},
    ):
        with pytest.raises(ClientError) as info:
            lam.put_function_event_invoke_config(FunctionName="eic", **bad)
        assert info.value.response["Error"]["Code"] == "InvalidParameterValueException", bad
    with pytest.raises(ClientError) as info:
        lam.put_function_event_invoke_config(
            FunctionName="eic",
            DestinationConfig={"OnSuccess": {"Destination": "arn:aws:sns:us-east-1:0:t"}},
        )
    assert "sns" in info.value.response["Error"]["Message"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName="eic-none", MaximumRetryAttempts=1)
    with pytest.raises(ClientError) as info:
        lam.update_function_configuration(
            FunctionName="eic", DeadLetterConfig={"TargetArn": "arn:aws:sqs:us-east-1:0:q"}
        )
    assert info.value.response["Error"]["Code"] == "InvalidParameterValueException"
    lam.delete_function_event_invoke_config(FunctionName="eic")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_event_invoke_config(FunctionName="eic")
    assert (
        lam.list_function_event_invoke_configs(FunctionName="eic")["FunctionEventInvokeConfigs"]
        == []
    )
