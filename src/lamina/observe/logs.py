"""The platform's log lines for an invocation, in AWS's shapes.

    INIT_START Runtime Version: python:3.12.v1	Runtime Version ARN: arn:aws:lambda:...
    START RequestId: <id> Version: $LATEST
    <function output>
    END RequestId: <id>
    REPORT RequestId: <id>	Duration: 1.23 ms	Billed Duration: 2 ms	Memory Size: 128 MB	...

`LogType=Tail` returns the last 4 KB of this text, base64-encoded.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from dataclasses import dataclass

TAIL_BYTES = 4096


def timestamp(now: float | None = None) -> str:
    t = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def billed_ms(duration_ms: float) -> int:
    return max(1, math.ceil(duration_ms))


@dataclass(slots=True)
class InvocationLog:
    """Everything one invocation's log shows."""

    request_id: str
    version: str
    runtime: str
    region: str
    memory_size: int
    output: bytes
    duration_ms: float
    max_memory_mb: int
    init_duration_ms: float | None
    platform_lines: list[str]
    init_output: bytes = b""  # what the runtime printed while initializing (cold starts)
    status: str | None = None  # "timeout", "error" … shown on REPORT when set

    def billed_source_ms(self) -> float:
        """What is billed: the invoke, and on a cold start its init too (AWS bills the init of
        on-demand functions since 1 August 2025; a provisioned instance's init is not part of
        any invocation, so it never shows here)."""
        return self.duration_ms + (self.init_duration_ms or 0.0)

    def render(self) -> str:
        parts: list[str] = []
        if self.init_duration_ms is not None:
            sha = hashlib.sha256(self.runtime.encode()).hexdigest()
            parts.append(
                f"INIT_START Runtime Version: {self.runtime.replace('python', 'python:')}.lamina"
                f"\tRuntime Version ARN: arn:aws:lambda:{self.region}::runtime:{sha}\n"
            )
        for chunk in (self.init_output, None, self.output):
            if chunk is None:
                parts.append(f"START RequestId: {self.request_id} Version: {self.version}\n")
            elif chunk:
                text = chunk.decode("utf-8", "replace")
                parts.append(text if text.endswith("\n") else text + "\n")
        parts += [line + "\n" for line in self.platform_lines]
        parts.append(f"END RequestId: {self.request_id}\n")
        report = (
            f"REPORT RequestId: {self.request_id}\tDuration: {self.duration_ms:.2f} ms"
            f"\tBilled Duration: {billed_ms(self.billed_source_ms())} ms"
            f"\tMemory Size: {self.memory_size} MB\tMax Memory Used: {self.max_memory_mb} MB"
        )
        if self.init_duration_ms is not None:
            report += f"\tInit Duration: {self.init_duration_ms:.2f} ms"
        if self.status:
            report += f"\tStatus: {self.status}"
        parts.append(report + "\t\n")
        return "".join(parts)


def tail(text: str) -> str:
    """Base64 of the last 4 KB of `text` (the `X-Amz-Log-Result` header).

    The cut never splits a character: continuation bytes left at the front are dropped, so the
    tail always decodes as UTF-8."""
    data = text.encode("utf-8")[-TAIL_BYTES:]
    start = 0
    while start < min(3, len(data)) and data[start] & 0xC0 == 0x80:
        start += 1
    return base64.b64encode(data[start:]).decode("ascii")
