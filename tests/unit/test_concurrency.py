from __future__ import annotations

import asyncio

import pytest

from lamina.invoke.concurrency import Concurrency, Throttled


def test_unreserved_pool_reservations_and_release() -> None:
    reserved: dict[str, int] = {"res": 1}
    c = Concurrency(3, 1000, reserved)
    assert c.unreserved() == 2

    async def scenario() -> None:
        async with c.lease("res"):
            with pytest.raises(Throttled) as err:
                async with c.lease("res"):
                    pass
            assert err.value.reason == "ReservedFunctionConcurrentInvocationLimitExceeded"
            async with c.lease("a"), c.lease("b"):  # the unreserved pool holds 2
                with pytest.raises(Throttled) as err:
                    async with c.lease("a"):
                        pass
                assert err.value.reason == "ConcurrentInvocationLimitExceeded"
        with pytest.raises(RuntimeError):  # released on every path, errors included
            async with c.lease("res"):
                raise RuntimeError
        assert c.running() == {}

    asyncio.run(scenario())


def test_scale_up_rate_is_a_sliding_10_second_window() -> None:
    now = [100.0]
    c = Concurrency(1000, 2, {}, clock=lambda: now[0])
    c.cold_start("f")
    c.cold_start("f")
    c.cold_start("g")  # per function
    with pytest.raises(Throttled) as err:
        c.cold_start("f")
    assert (err.value.reason, err.value.retry_after) == ("FunctionInvocationRateLimitExceeded", 10)
    now[0] = 110.5
    c.cold_start("f")
