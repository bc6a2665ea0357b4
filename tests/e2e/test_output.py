"""What a function writes reaches its invocation's log whole and in order: stdout and stderr
interleaved as written, init output before START, and what was written before a timeout or a
crash kept. The instance's streams are unbuffered UTF-8 (as awslambdaric makes them) whatever
lamina's own stdout is; the zygote's stdout is /dev/null, a seekable device, which is what once
left instances with block-buffered streams."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.e2e.server import create, invoke

CODE = """
import os, sys, time
print("init-out")
print("init-err", file=sys.stderr)

def handler(event, context):
    what = event.get("do")
    print("out-1")
    print("err-1", file=sys.stderr)
    print("out-2 \u00e9\u6f22")
    sys.stderr.write("err-2 no newline yet")
    sys.stderr.write(" ...done\\n")
    if what == "sleep":
        print("before-timeout")
        time.sleep(5)
    if what == "exit":
        print("before-exit")
        sys.stderr.write("partial-line-before-exit")
        os._exit(3)
    return {
        "write_through": [sys.stdout.write_through, sys.stderr.write_through],
        "encoding": [sys.stdout.encoding, sys.stderr.encoding],
    }
"""


def tail(out: dict[str, Any]) -> str:
    return base64.b64decode(out["LogResult"]).decode()


def in_order(text: str, *parts: str) -> None:
    at = -1
    for part in parts:
        found = text.find(part, at + 1)
        assert found > at, f"{part!r} missing or out of order in:\n{text}"
        at = found


@pytest.fixture(scope="module")
def fn(lam: Any) -> str:
    create(lam, "out-order", CODE, Timeout=1)
    return "out-order"


def test_streams_are_unbuffered_utf8(lam: Any, fn: str) -> None:
    out = invoke(lam, fn, {}, LogType="Tail")
    assert "FunctionError" not in out, out["body"]
    assert out["json"] == {"write_through": [True, True], "encoding": ["utf-8", "utf-8"]}


def test_stdout_and_stderr_interleave_as_written(lam: Any, fn: str) -> None:
    create(lam, "out-cold", CODE)
    text = tail(invoke(lam, "out-cold", {}, LogType="Tail"))
    # init output after INIT_START and before START; the handler's after START, in order
    in_order(text, "INIT_START", "init-out", "init-err", "START RequestId")
    in_order(text, "START RequestId", "out-1", "err-1", "out-2 \u00e9\u6f22",
             "err-2 no newline yet ...done", "END RequestId")  # fmt: skip


def test_output_before_a_timeout_is_kept(lam: Any, fn: str) -> None:
    out = invoke(lam, fn, {"do": "sleep"}, LogType="Tail")
    assert out["json"]["errorType"] == "Sandbox.Timedout"
    in_order(tail(out), "START RequestId", "out-1", "before-timeout", "Task timed out after 1.00")


def test_output_before_a_crash_is_kept(lam: Any, fn: str) -> None:
    out = invoke(lam, fn, {"do": "exit"}, LogType="Tail")
    assert out["json"]["errorType"] == "Runtime.ExitError"
    in_order(tail(out), "START RequestId", "before-exit", "partial-line-before-exit", "END")
