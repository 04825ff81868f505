"""Lock managers of every backend for tests, and a lock holder to run as a process of its
own (`python -m tests.integration.lock_support KIND LOCATION PREFIX NAME TTL`): it takes the
lock, prints `held` and sleeps until killed."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from redis.asyncio import Redis

from banking_es.db.migrate import migrate
from banking_es.db.sqlite import SqliteDatabase
from banking_es.locks.base import LockManager
from banking_es.locks.postgres import PostgresLocks
from banking_es.locks.redis import RedisLocks
from banking_es.locks.sqlite import SqliteLocks


async def open_manager(kind: str, location: str, prefix: str) -> tuple[LockManager[Any], Any]:
    """A manager of `kind` and what to close after it (a database, or None)."""
    if kind == "redis":
        return LockManager(RedisLocks(Redis.from_url(location), prefix)), None
    if kind == "postgres":
        return LockManager(PostgresLocks(location)), None
    db = await SqliteDatabase.connect(location)
    await migrate(db)
    return LockManager(SqliteLocks(db)), db


async def _hold(kind: str, location: str, prefix: str, name: str, ttl: float) -> None:
    manager, _ = await open_manager(kind, location, prefix)
    await manager.acquire(name, ttl=ttl, timeout=30)
    print("held", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    kind, location, prefix, name, ttl = sys.argv[1:6]
    asyncio.run(_hold(kind, location, prefix, name, float(ttl)))
