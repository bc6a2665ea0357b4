"""InvokeWithResponseStream end to end: boto3's event stream against a real lamina, with a
Python function (answered in one piece) and a curl `bootstrap` that streams its response."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.e2e.server import create, invoke
from tests.e2e.test_custom_runtimes import CURL_PRELUDE, EXEC, NEXT, RUNTIME

# Three chunks, 0.2 s apart, posted as they are written (curl -T - streams its stdin, chunked).
CURL_STREAM = (
    CURL_PRELUDE
    + "while true; do"
    + NEXT
    + """  { printf 'first;'; sleep 0.2; printf 'second;'; sleep 0.2; printf 'third'; } \\
    | curl -sS -o /dev/null -X POST "$API/invocation/$REQUEST_ID/response" \\
      -H 'Lambda-Runtime-Function-Response-Mode: streaming' \\
      -H 'Transfer-Encoding: chunked' -H 'Content-Type: text/plain' -T -
done
"""
)


def stream(lam: Any, name: str, payload: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Invoke with a response stream; `events` are (arrival time, event) in order."""
    if payload is not None:
        kwargs["Payload"] = json.dumps(payload)
    began = time.monotonic()
    out: dict[str, Any] = lam.invoke_with_response_stream(FunctionName=name, **kwargs)
    out["events"] = [(time.monotonic() - began, event) for event in out["EventStream"]]
    out["chunks"] = [e["PayloadChunk"]["Payload"] for _, e in out["events"] if "PayloadChunk" in e]
    *_, (_, last) = out["events"]
    out["complete"] = last["InvokeComplete"]
    return out


def test_a_buffered_response_is_one_chunk(lam: Any) -> None:
    create(lam, "st-python", "def handler(event, context):\n    return {'echo': event}\n")
    out = stream(lam, "st-python", {"k": "wörld"}, LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["ExecutedVersion"] == "$LATEST"
    assert out["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    assert len(out["events"]) == 2
    assert [json.loads(c) for c in out["chunks"]] == [{"echo": {"k": "wörld"}}]
    assert "ErrorCode" not in out["complete"]
    assert "REPORT RequestId:" in base64.b64decode(out["complete"]["LogResult"]).decode()


def test_a_streaming_runtime_is_relayed_chunk_by_chunk(lam: Any) -> None:
    create(lam, "st-curl", {"bootstrap": CURL_STREAM}, Runtime=RUNTIME, modes=EXEC)
    for _ in range(2):  # cold, then warm
        out = stream(lam, "st-curl", {})
        assert out["StatusCode"] == 200
        assert b"".join(out["chunks"]) == b"first;second;third"
        assert len(out["chunks"]) >= 2, out["chunks"]
        assert out["complete"] == {}
        first_at = next(t for t, e in out["events"] if "PayloadChunk" in e)
        done_at = out["events"][-1][0]
        # the first chunk came while the function was still writing (0.4 s of sleeps after it;
        # the bound leaves room for a loaded machine, which a chunk sent at the end could not)
        assert done_at - first_at > 0.15, out["events"]


def test_plain_invoke_of_a_streaming_runtime_gets_the_whole_body(lam: Any) -> None:
    create(lam, "st-curl-plain", {"bootstrap": CURL_STREAM}, Runtime=RUNTIME, modes=EXEC)
    out = invoke(lam, "st-curl-plain", {})
    assert out["StatusCode"] == 200 and "FunctionError" not in out
    assert out["body"] == b"first;second;third"
    assert out["ResponseMetadata"]["HTTPHeaders"]["content-type"].startswith("text/plain")


def test_a_function_error_ends_the_stream(lam: Any) -> None:
    create(lam, "st-raise", "def handler(event, context):\n    raise ValueError('nope')\n")
    out = stream(lam, "st-raise", {}, LogType="Tail")
    assert out["StatusCode"] == 200
    assert out["chunks"] == []
    assert out["complete"]["ErrorCode"] == "ValueError"
    assert out["complete"]["ErrorDetails"] == "nope"
    assert "ValueError" in base64.b64decode(out["complete"]["LogResult"]).decode()


def test_event_invocations_are_refused_and_dry_run_is_204(lam: Any) -> None:
    create(lam, "st-types", "def handler(event, context):\n    return 1\n")
    with pytest.raises(ClientError) as err:
        lam.invoke_with_response_stream(FunctionName="st-types", InvocationType="Event")
    assert err.value.response["Error"]["Code"] == "InvalidParameterValueException"
    out = lam.invoke_with_response_stream(FunctionName="st-types", InvocationType="DryRun")
    assert out["StatusCode"] == 204
    if "EventStream" in out:  # an empty stream: give its connection back
        out["EventStream"].close()
    with pytest.raises(ClientError) as err:
        lam.invoke_with_response_stream(FunctionName="st-missing")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
