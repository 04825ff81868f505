"""The lock manager on Redis, PostgreSQL and SQLite: one holder at a time under contention,
a crashed holder's lock freed, a held lock extended past its ttl, and a holder that lost its
lock unable to release the next holder's."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from tests.integration.lock_support import open_manager
from tests.redis_support import SHARED_REDIS_URL, redis_prefix  # noqa: F401

from banking_es.locks.base import HeldLock, LockLost, LockManager, LockTimeout
from banking_es.locks.postgres import PgHandle

KINDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("sqlite"),
]
ROOT = Path(__file__).resolve().parents[2]

Opener = Callable[[], Awaitable[LockManager[Any]]]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def location(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "redis":
        return SHARED_REDIS_URL
    if kind == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "locks.db")


@pytest.fixture
async def open_locks(kind: str, location: str, redis_prefix: str) -> AsyncIterator[Opener]:  # noqa: F811
    """Open another manager on the same store, as another process would."""
    opened: list[tuple[LockManager[Any], Any]] = []

    async def open_one() -> LockManager[Any]:
        manager, db = await open_manager(kind, location, redis_prefix)
        opened.append((manager, db))
        return manager

    yield open_one
    for manager, db in opened:
        await manager.close()
        if db is not None:
            await db.close()


async def _lose(kind: str, location: str, held: HeldLock[Any]) -> None:
    """Make `held` lose its lock as a real failure would: its ttl passes unextended, or its
    PostgreSQL session ends."""
    if kind == "postgres":
        handle: Any = held._handle
        assert isinstance(handle, PgHandle)
        admin = await asyncpg.connect(location)
        try:
            pid = handle.conn.get_server_pid()
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
    else:
        await asyncio.sleep(held.ttl + 0.3)


async def test_one_holder_at_a_time_under_contention(open_locks: Opener) -> None:
    managers = [await open_locks() for _ in range(3)]
    inside = 0
    most_inside = 0
    done = 0

    async def worker(manager: LockManager[Any]) -> None:
        nonlocal inside, most_inside, done
        for _ in range(3):
            async with manager.hold("contended", ttl=5, timeout=30):
                inside += 1
                most_inside = max(most_inside, inside)
                await asyncio.sleep(0.01)
                inside -= 1
                done += 1

    await asyncio.gather(*(worker(m) for m in managers for _ in range(4)))
    assert done == 36
    assert most_inside == 1
    contended = sum(m.metrics.contended.labels("contended")._value.get() for m in managers)
    acquired = sum(
        m.metrics.acquisitions.labels("contended", "acquired")._value.get() for m in managers
    )
    assert contended > 0
    assert acquired == 36


async def test_a_crashed_holders_lock_is_freed(
    kind: str,
    location: str,
    redis_prefix: str,  # noqa: F811
    open_locks: Opener,
) -> None:
    ttl = 1.0
    holder = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tests.integration.lock_support"),
        *(kind, location, redis_prefix, "crashed", str(ttl)),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        manager = await open_locks()
        with pytest.raises(LockTimeout):
            await manager.acquire("crashed", ttl=ttl, timeout=0.2)
        assert manager.metrics.acquisitions.labels("crashed", "timeout")._value.get() == 1
        holder.kill()
        await holder.wait()
        started = time.monotonic()
        held = await manager.acquire("crashed", ttl=ttl, timeout=ttl + 5)
        assert time.monotonic() - started <= ttl + 5
        await held.release()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_a_held_lock_is_extended_past_its_ttl(open_locks: Opener) -> None:
    first, second = await open_locks(), await open_locks()
    held = await first.acquire("extended", ttl=0.6)
    await asyncio.sleep(2.0)  # more than three ttls
    with pytest.raises(LockTimeout):
        await second.acquire("extended", ttl=0.6, timeout=0)
    assert not held.lost.is_set()
    await held.release()
    again = await second.acquire("extended", ttl=0.6, timeout=2)
    await again.release()
    assert first.metrics.lost.labels("extended")._value.get() == 0


async def test_a_holder_that_lost_its_lock_cannot_release_the_next_holders(
    kind: str, location: str, open_locks: Opener
) -> None:
    first, second, third = await open_locks(), await open_locks(), await open_locks()
    stale = await first.acquire("lost", ttl=0.5, auto_extend=False)
    await _lose(kind, location, stale)
    current = await second.acquire("lost", ttl=5, timeout=5)
    with pytest.raises(LockLost):
        await stale.release()
    assert stale.lost.is_set()
    assert first.metrics.lost.labels("lost")._value.get() == 1
    with pytest.raises(LockTimeout):  # still the second's
        await third.acquire("lost", ttl=5, timeout=0.3)
    await current.release()
    after = await third.acquire("lost", ttl=5, timeout=2)
    await after.release()


async def test_an_extension_that_finds_the_lock_gone_marks_it_lost(
    kind: str, location: str, open_locks: Opener
) -> None:
    first, second = await open_locks(), await open_locks()
    held = await first.acquire("taken", ttl=0.5, auto_extend=False)
    await _lose(kind, location, held)
    taker = await second.acquire("taken", ttl=5, timeout=5)
    with pytest.raises(LockLost):
        await held.extend()
    assert held.lost.is_set()
    await taker.release()


async def test_the_deployment_chooses_redis_then_its_database(
    kind: str, location: str, tmp_path: Path
) -> None:
    from redis.asyncio import Redis

    from banking_es.db.postgres import PostgresDatabase
    from banking_es.db.sqlite import SqliteDatabase
    from banking_es.locks import lock_manager
    from banking_es.locks.postgres import PostgresLocks
    from banking_es.locks.redis import RedisLocks
    from banking_es.locks.sqlite import SqliteLocks

    if kind == "redis":
        client = Redis.from_url(location)
        sqlite = await SqliteDatabase.connect(tmp_path / "unused.db")
        try:
            assert isinstance(lock_manager(sqlite, client).backend, RedisLocks)
        finally:
            await client.aclose()
            await sqlite.close()
        return
    db = await (
        PostgresDatabase.connect(location)
        if kind == "postgres"
        else SqliteDatabase.connect(location)
    )
    try:
        expected = PostgresLocks if kind == "postgres" else SqliteLocks
        assert isinstance(lock_manager(db).backend, expected)
    finally:
        await db.close()


async def test_an_unreachable_store_is_lock_unavailable(tmp_path: Path) -> None:
    from redis.asyncio import Redis

    from banking_es.locks.base import LockUnavailable
    from banking_es.locks.redis import RedisLocks

    manager = LockManager(RedisLocks(Redis.from_url("redis://127.0.0.1:1/0")))
    try:
        with pytest.raises(LockUnavailable):
            await manager.acquire("away", ttl=1, timeout=0)
        assert manager.metrics.acquisitions.labels("away", "error")._value.get() == 1
    finally:
        await manager.close()
