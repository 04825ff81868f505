"""Named locks across processes: Redis when `REDIS_URL` is set, PostgreSQL advisory locks
otherwise, SQLite's own write lock on one machine. The port and its errors are in `base`.
A lock is never a fencing token: where two holders must never both write, the write carries
a shard epoch that the event store checks (shards/leases.py)."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis

from banking_es.db.base import Database
from banking_es.locks.base import LockManager
from banking_es.observability.locks import LockMetrics


def lock_manager(
    db: Database,
    redis: Redis | None = None,
    *,
    prefix: str = "banking-es",
    metrics: LockMetrics | None = None,
) -> LockManager[Any]:
    """The lock manager of this deployment: on `redis` when given, else on `db`."""
    if redis is not None:
        from banking_es.locks.redis import RedisLocks

        return LockManager(RedisLocks(redis, prefix), metrics)
    if db.dialect == "postgres":
        from banking_es.locks.postgres import PostgresLocks

        return LockManager(PostgresLocks(cast(Any, db).url), metrics)
    from banking_es.locks.sqlite import SqliteLocks

    return LockManager(SqliteLocks(db), metrics)
