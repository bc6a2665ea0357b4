from __future__ import annotations

import base64

from lamina.observe.logs import InvocationLog, billed_ms, tail


def _log(**kw: object) -> InvocationLog:
    base: dict[str, object] = {
        "request_id": "r1",
        "version": "$LATEST",
        "runtime": "python3.11",
        "region": "us-east-1",
        "memory_size": 128,
        "output": b"hello\n",
        "duration_ms": 1.234,
        "max_memory_mb": 20,
        "init_duration_ms": None,
        "platform_lines": [],
    }
    base.update(kw)
    return InvocationLog(**base)  # type: ignore[arg-type]


def test_warm_log_shape() -> None:
    text = _log().render()
    lines = text.splitlines()
    assert lines[0] == "START RequestId: r1 Version: $LATEST"
    assert lines[1] == "hello"
    assert lines[2] == "END RequestId: r1"
    assert lines[3].startswith("REPORT RequestId: r1\tDuration: 1.23 ms\tBilled Duration: 2 ms")
    assert "\tMemory Size: 128 MB\tMax Memory Used: 20 MB" in lines[3]
    assert "Init Duration" not in text and "INIT_START" not in text


def test_cold_log_puts_init_output_before_start() -> None:
    text = _log(init_duration_ms=12.5, init_output=b"importing\n").render()
    lines = text.splitlines()
    assert lines[0].startswith("INIT_START Runtime Version: python:3.11")
    assert lines[1] == "importing"
    assert lines[2].startswith("START RequestId: r1")
    assert "\tInit Duration: 12.50 ms" in lines[-1]


def test_cold_start_bills_init_too() -> None:
    report = _log(duration_ms=1.234, init_duration_ms=12.5).render().splitlines()[-1]
    assert "\tDuration: 1.23 ms\tBilled Duration: 14 ms\t" in report  # ceil(1.234 + 12.5)


def test_tail_is_last_4kb() -> None:
    text = "x" * 10000 + "END"
    decoded = base64.b64decode(tail(text))
    assert len(decoded) == 4096 and decoded.endswith(b"END")


def test_billed_duration_rounds_up_in_1ms_steps() -> None:
    assert billed_ms(0.2) == 1
    assert billed_ms(15.74) == 16
    assert billed_ms(3.0) == 3
