"""Readiness checks of the cache for `/health/ready`: `cache` (warming) and `redis`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from banking_es.bootstrap import Services

Check = Callable[[], Awaitable[dict[str, Any]]]


def cache_checks(services: Services) -> tuple[list[str], list[Check]]:
    """The names and checks to add: `cache` always, `redis` when `REDIS_URL` is set.

    Redis away is `degraded` (the service still answers from L1 and the database)."""
    names: list[str] = []
    checks: list[Check] = []

    async def cache() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok"}
        if services.account_cache is not None:
            body.update(services.account_cache.stats())
        if services.cache_warmer is not None:
            body["warming"] = services.cache_warmer.status()
        return body

    names.append("cache")
    checks.append(cache)
    redis = services.redis
    if redis is not None:

        async def redis_check() -> dict[str, Any]:
            return await redis.health()

        names.append("redis")
        checks.append(redis_check)
    return names, checks
