"""The two-level cache against the real Redis on 127.0.0.1:6379 (a key prefix per test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from tests.redis_support import SHARED_REDIS_URL, redis_prefix  # noqa: F401
from tests.unit.account_service_support import open_account

from banking_es.application.accounts import AccountService, CommandContext
from banking_es.application.ports import SystemClock, UuidGenerator
from banking_es.cache.local import LocalAccountCache
from banking_es.cache.redis import RedisGateway
from banking_es.cache.two_level import TwoLevelAccountCache
from banking_es.domain import commands as cmd
from banking_es.eventstore.memory import MemoryEventStore
from banking_es.observability.cache_and_redis import CacheAndRedisCounters

pytestmark = pytest.mark.redis

Process = tuple[AccountService, TwoLevelAccountCache]


@pytest.fixture
async def processes(redis_prefix: str) -> AsyncIterator[Callable[[], Process]]:  # noqa: F811
    """Builds "processes" (a service with its own L1) sharing one store and one Redis."""
    store = MemoryEventStore()
    built: list[tuple[TwoLevelAccountCache, RedisGateway]] = []

    def make() -> Process:
        metrics = CacheAndRedisCounters()
        gateway = RedisGateway(SHARED_REDIS_URL, prefix=redis_prefix, metrics=metrics)
        cache = TwoLevelAccountCache(LocalAccountCache(metrics=metrics), gateway)
        cache.start()
        built.append((cache, gateway))
        service = AccountService(store, cache, clock=SystemClock(), ids=UuidGenerator())
        return service, cache

    yield make
    for cache, gateway in built:
        await cache.close()
        await gateway.close()


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_second_process_finds_the_account_in_l2(
    processes: Callable[[], Process],
) -> None:
    (a, cache_a), (b, cache_b) = processes(), processes()
    account = await open_account(a, "10.00")
    await cache_a.flush()
    found = await b.get_account(account.id)
    assert found.balance == Decimal("10.00")
    assert cache_b.metrics.get("cache_hits", "l2") == 1
    assert cache_b.metrics.get("cache_misses", "l1") >= 1


async def test_a_write_in_one_process_drops_older_l1_entries_elsewhere(
    processes: Callable[[], Process],
) -> None:
    (a, cache_a), (b, cache_b) = processes(), processes()
    await eventually(lambda: cache_a.subscribed and cache_b.subscribed)
    account = await open_account(a, "10.00")
    await b.get_account(account.id)
    assert cache_b.local.version_of(account.id) == 1
    await a.deposit(cmd.Deposit(account.id, Decimal("5.00")), CommandContext())
    await eventually(lambda: cache_b.local.version_of(account.id) is None)
    assert cache_b.metrics.get("cache_invalidations", "pubsub") == 1
    assert (await b.get_account(account.id)).balance == Decimal("15.00")


async def test_l2_never_moves_an_entry_backwards(processes: Callable[[], Process]) -> None:
    (a, cache_a), (_, cache_b) = processes(), processes()
    account = await open_account(a, "1.00")
    newer = account.copy()
    newer.version, newer.balance = 7, Decimal("7.00")
    cache_a.put(newer)
    await cache_a.flush()
    cache_b.put(account)  # version 1, from a slow process
    await cache_b.flush()
    cache_b.invalidate(account.id)
    from_l2 = await cache_b.get(account.id)
    assert from_l2 is not None
    assert from_l2.version == 7


async def test_reads_stay_correct_when_l2_is_behind_the_store(
    processes: Callable[[], Process],
) -> None:
    (a, cache_a), (b, _) = processes(), processes()
    account = await open_account(a, "1.00")
    await cache_a.flush()
    await a.deposit(cmd.Deposit(account.id, Decimal("2.00")), CommandContext())
    cache_a._pending.clear()  # the L2 write is lost: L2 keeps version 1
    assert (await b.get_account(account.id)).balance == Decimal("3.00")
    # and a write from `b` on the stale L2 state is retried, not lost
    await b.deposit(cmd.Deposit(account.id, Decimal("4.00")), CommandContext())
    assert (await a.get_account(account.id)).balance == Decimal("7.00")


async def test_without_a_reachable_redis_the_cache_is_l1_only_and_the_breaker_opens() -> None:
    metrics = CacheAndRedisCounters()
    gateway = RedisGateway(
        "redis://127.0.0.1:1/0", timeout_ms=50, breaker_failures=2, metrics=metrics
    )
    cache = TwoLevelAccountCache(LocalAccountCache(metrics=metrics), gateway)
    store = MemoryEventStore()
    service = AccountService(store, cache, clock=SystemClock(), ids=UuidGenerator())
    try:
        account = await open_account(service, "5.00")
        cache.invalidate(account.id)
        for _ in range(3):
            cache.invalidate(account.id)
            assert (await service.get_account(account.id)).balance == Decimal("5.00")
        assert gateway.breaker.state == "open"
        assert metrics.breaker_state == "open"
        assert metrics.total("redis_errors") == 2
        assert metrics.get("redis_rejected", "cache_get") >= 1
        assert (await gateway.health())["status"] == "degraded"
    finally:
        await gateway.close()


async def test_closing_ends_the_l2_writer_even_when_its_cancellation_is_lost(
    processes: Callable[[], Process],
) -> None:
    service, cache = processes()
    account = await open_account(service, "1.00")
    await cache.flush()
    writing = asyncio.Event()

    async def flush_losing_its_cancellation() -> None:
        writing.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:  # as Python 3.11's wait_for may drop one
            asyncio.current_task().uncancel()  # type: ignore[union-attr]

    cache.flush = flush_losing_its_cancellation  # type: ignore[method-assign]
    account.version += 1
    cache.put(account)  # something new for L2: wakes the writer
    await asyncio.wait_for(writing.wait(), 2)
    await asyncio.wait_for(cache.close(), 2)
