"""Readiness checks of the cache for `/health/ready`: `cache` (warming) and `redis`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from banking_es.cache.redis import RedisGateway
from banking_es.cache.two_level import TwoLevelAccountCache
from banking_es.cache.warming import CacheWarmer

Check = Callable[[], Awaitable[dict[str, Any]]]


def cache_checks(
    account_cache: TwoLevelAccountCache,
    warmer: CacheWarmer | None,
    redis: RedisGateway | None,
) -> dict[str, Check]:
    """The checks to add, by name: `cache` always, `redis` when `REDIS_URL` is set.

    Redis away is `degraded` (the service still answers from L1 and the database)."""

    async def cache() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok", **account_cache.stats()}
        if warmer is not None:
            body["warming"] = warmer.status()
        return body

    checks: dict[str, Check] = {"cache": cache}
    if redis is not None:

        async def redis_check() -> dict[str, Any]:
            return await redis.health()

        checks["redis"] = redis_check
    return checks
