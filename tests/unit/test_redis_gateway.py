"""The protections of `RedisGateway.run`: deadline, breaker and load shedding (no server needed:
the calls under test do not touch the client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from banking_es.cache.redis import RedisGateway, RedisUnavailable


@pytest.fixture
async def gateway() -> AsyncIterator[RedisGateway]:
    gateway = RedisGateway(
        "redis://127.0.0.1:1/0",
        timeout_ms=20,
        breaker_failures=2,
        breaker_reset=60,
        max_in_flight=1,
    )
    yield gateway
    await gateway.close()


async def test_a_call_over_the_deadline_fails_and_counts_towards_the_breaker(
    gateway: RedisGateway,
) -> None:
    for _ in range(2):
        with pytest.raises(RedisUnavailable):
            await gateway.run("slow", lambda _: asyncio.sleep(1))
    assert gateway.breaker.state == "open"
    assert gateway.metrics.get("redis_errors", "slow") == 2
    calls = []

    async def call(_: object) -> None:
        calls.append(1)

    with pytest.raises(RedisUnavailable, match="breaker is open"):
        await gateway.run("fast", call)
    assert calls == []  # an open breaker never calls Redis
    assert gateway.metrics.get("redis_rejected", "fast") == 1


async def test_calls_beyond_the_in_flight_limit_are_shed(gateway: RedisGateway) -> None:
    release = asyncio.Event()

    async def waits(_: object) -> str:
        await release.wait()
        return "done"

    first = asyncio.create_task(gateway.run("wait", waits))
    await asyncio.sleep(0)
    with pytest.raises(RedisUnavailable, match="shed"):
        await gateway.run("more", waits)
    release.set()
    assert await first == "done"
    assert gateway.metrics.get("redis_shed", "more") == 1
    assert gateway.breaker.state == "closed"  # shedding is not a Redis failure
    assert gateway.metrics.redis_latency.count == 1
