"""Cached pages of an account's audit log (`GET /accounts/{id}/events`).

Events never change and versions are contiguous, so a *full* page (as many events as asked
for) stays correct forever; only those are cached. The last, partial page is always read
from the store, so a new event is never hidden. L1 is an LRU in this process; L2 (Redis,
when configured) shares pages between processes, under the same breaker as everything else.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import orjson
from cachetools import LRUCache

from banking_es.cache.redis import RedisGateway, RedisUnavailable
from banking_es.eventstore.base import RecordedEvent
from banking_es.observability.cache_and_redis import CacheAndRedisCounters
from banking_es.observability.tracing import cache_span

PageKey = tuple[str, int, int]


class EventPageCache:
    """The `EventPageCache` port: full pages by (account, after_version, limit)."""

    def __init__(
        self,
        redis: RedisGateway | None = None,
        *,
        size: int = 1000,
        ttl: float = 300,
        metrics: CacheAndRedisCounters | None = None,
    ) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl * 1000)
        self.metrics = metrics or CacheAndRedisCounters()
        self._local: LRUCache[PageKey, tuple[RecordedEvent, ...]] = LRUCache(maxsize=size)

    async def get(
        self, account_id: str, after_version: int, limit: int
    ) -> list[RecordedEvent] | None:
        key = (account_id, after_version, limit)
        page = self._local.get(key)
        if page is not None:
            self.metrics.inc("page_cache_hits", "l1")
            return list(page)
        self.metrics.inc("page_cache_misses", "l1")
        if self.redis is None:
            return None
        name = self._name(key)
        try:
            with cache_span("get", "l2", name) as current:  # Redis unavailable: an error span
                raw = await self.redis.run("page_get", lambda c: c.get(name))
                current.set_attribute("cache.hit", raw is not None)
        except RedisUnavailable:
            return None
        if raw is None:
            self.metrics.inc("page_cache_misses", "l2")
            return None
        self.metrics.inc("page_cache_hits", "l2")
        events = [_event(item) for item in orjson.loads(raw)]
        self._local[key] = tuple(events)
        return events

    async def put(
        self, account_id: str, after_version: int, limit: int, events: list[RecordedEvent]
    ) -> None:
        if len(events) != limit:
            return  # a partial page may still grow
        key = (account_id, after_version, limit)
        self._local[key] = tuple(events)
        if self.redis is None:
            return
        name = self._name(key)
        value = orjson.dumps([_plain(e) for e in events])
        with contextlib.suppress(RedisUnavailable), cache_span("put", "l2", name):
            await self.redis.run("page_put", lambda c: c.set(name, value, px=self.ttl_ms))

    def _name(self, key: PageKey) -> str:
        assert self.redis is not None
        return self.redis.key("page", key[0], str(key[1]), str(key[2]))


def _plain(event: RecordedEvent) -> dict[str, Any]:
    return {
        "position": event.position,
        "stream_id": event.stream_id,
        "version": event.version,
        "event_id": event.event_id,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "recorded_at": event.recorded_at.isoformat(),
    }


def _event(item: dict[str, Any]) -> RecordedEvent:
    return RecordedEvent(
        position=int(item["position"]),
        stream_id=item["stream_id"],
        version=int(item["version"]),
        event_id=item["event_id"],
        type=item["type"],
        data=item["data"],
        metadata=item["metadata"],
        recorded_at=datetime.fromisoformat(item["recorded_at"]),
    )
