"""`GET /admin/cache`: this process's L1 and L2 counts, and what Redis says of itself.

Hits and misses are this process's (`CacheAndRedisCounters`, also exported to /metrics); L1 entries,
evictions and memory are the figures of the `banking_es_cache_*` gauges. L2 entries, evictions
and memory are Redis's own (DBSIZE, `evicted_keys`, `used_memory`): the whole Redis database,
null when Redis does not answer.
"""

from __future__ import annotations

from typing import Any

from banking_es.cache.local import LocalAccountCache
from banking_es.cache.redis import RedisGateway, RedisUnavailable
from banking_es.observability.cache_and_redis import CacheAndRedisCounters


async def cache_stats(
    local: LocalAccountCache, metrics: CacheAndRedisCounters, redis: RedisGateway | None
) -> dict[str, Any]:
    l1 = {
        "entries": len(local),
        "hits": metrics.get("cache_hits", "l1"),
        "misses": metrics.get("cache_misses", "l1"),
        "evictions": local.evictions,
        "approx_bytes": local.approximate_bytes(),
    }
    l2 = None if redis is None else await _l2(redis, metrics)
    l2_hits = l2["hits"] if l2 is not None else 0
    lookups = l1["hits"] + l1["misses"]
    # A read is a hit when either level answered; L2 is only asked on an L1 miss.
    ratio = round((l1["hits"] + l2_hits) / lookups, 4) if lookups else None
    return {"l1": l1, "l2": l2, "hit_ratio": ratio}


async def _l2(redis: RedisGateway, metrics: CacheAndRedisCounters) -> dict[str, Any]:
    entries = evictions = used = None
    try:
        info = await redis.run("info", lambda client: client.info())
        entries = await redis.run("dbsize", lambda client: client.dbsize())
        evictions, used = info.get("evicted_keys"), info.get("used_memory")
    except RedisUnavailable:
        pass  # the counts of this process are still worth showing
    return {
        "entries": entries,
        "hits": metrics.get("cache_hits", "l2"),
        "misses": metrics.get("cache_misses", "l2"),
        "evictions": evictions,
        "approx_bytes": used,
        "available": entries is not None,
    }
