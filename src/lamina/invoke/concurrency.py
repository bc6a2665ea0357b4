"""Concurrency limits: what may run at once, and how fast a function may add instances.

As on AWS, the account has `concurrency_limit` concurrent executions. A function with reserved
concurrency (`ReservedConcurrentExecutions`, on the function as a whole, all versions) runs at
most that many at once; every other function shares the unreserved pool (the limit minus all
reservations). A function may also start at most `scale_up_rate` new instances per 10 s.

`lease(name)` is taken around each execution and released on every path. Over a limit it
raises `Throttled` (a TooManyRequestsException, so a sync invoke answers 429 as it is); the
async worker catches it and queues the event again after a backoff.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping

from lamina.errors import TooManyRequestsException

RESERVED_CONCURRENCY_LIMIT = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_CONCURRENCY_LIMIT = "ConcurrentInvocationLimitExceeded"
RESERVED_RATE_LIMIT = "ReservedFunctionInvocationRateLimitExceeded"
FUNCTION_RATE_LIMIT = "FunctionInvocationRateLimitExceeded"
SCALE_WINDOW_S = 10.0


class Throttled(TooManyRequestsException):
    """An execution refused by a concurrency or scale-up limit; `reason` says which."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__("Rate Exceeded.", reason, retry_after)
        self.reason = reason
        self.retry_after = retry_after


class Concurrency:
    def __init__(
        self,
        limit: int,
        scale_up_rate: int,
        reserved: Mapping[str, int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.scale_up_rate = scale_up_rate
        self._reserved = reserved  # function name -> ReservedConcurrentExecutions (live view)
        self._clock = clock
        self._running: dict[str, int] = {}
        self._unreserved_running = 0
        self._cold: dict[str, deque[float]] = {}

    def unreserved(self) -> int:
        """The unreserved pool: the account limit minus every reservation."""
        return self.limit - sum(self._reserved.values())

    def check(self, name: str) -> None:
        """Raise `Throttled` if an execution of `name` would be refused now."""
        reserved = self._reserved.get(name)
        if reserved is not None:
            if self._running.get(name, 0) >= reserved:
                raise Throttled(RESERVED_CONCURRENCY_LIMIT)
        elif self._unreserved_running >= self.unreserved():
            raise Throttled(ACCOUNT_CONCURRENCY_LIMIT)

    @contextlib.asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[None]:
        pooled = self.acquire(name)
        try:
            yield
        finally:
            self.release(name, pooled)

    def acquire(self, name: str) -> bool:
        """Count one more running invocation of `name` (or raise Throttled); pass what it
        returns to `release` when it ends. (`lease` wraps the pair; the invoke path calls
        them directly: a generator-based context manager costs more than the counting.)"""
        self.check(name)
        pooled = name not in self._reserved  # counted against the unreserved pool
        self._running[name] = self._running.get(name, 0) + 1
        if pooled:
            self._unreserved_running += 1
        return pooled

    def release(self, name: str, pooled: bool) -> None:
        left = self._running[name] - 1
        if left:
            self._running[name] = left
        else:
            del self._running[name]
        if pooled:
            self._unreserved_running -= 1

    def cold_start(self, name: str) -> None:
        """Count a new instance of `name`; raise `Throttled` past `scale_up_rate` per 10 s."""
        now = self._clock()
        window = self._cold.setdefault(name, deque())
        while window and window[0] <= now - SCALE_WINDOW_S:
            window.popleft()
        if len(window) >= self.scale_up_rate:
            reason = RESERVED_RATE_LIMIT if name in self._reserved else FUNCTION_RATE_LIMIT
            raise Throttled(reason, max(1, math.ceil(window[0] + SCALE_WINDOW_S - now)))
        window.append(now)

    def running(self) -> dict[str, int]:
        return dict(self._running)
