"""The two-level account cache: L1 in this process in front of L2 in Redis (shared).

An entry at either level is a starting point, never the truth: appends check its version and
readers fast-forward it from the store, so Redis may lose, delay or reorder anything here.
`get` reads L1, then L2; `put` writes L1 at once and L2 soon after, by one background task
that coalesces the latest state per account (a Lua script never moves L2 backwards) and
announces each batch so other processes drop older L1 entries (docs/redis.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson
from redis.asyncio import Redis

from banking_es.cache.local import LocalAccountCache
from banking_es.cache.redis import RedisGateway, RedisUnavailable
from banking_es.domain.account import Account
from banking_es.observability.cache_and_redis import CacheAndRedisCounters
from banking_es.observability.tracing import cache_span
from banking_es.tasks import cancel_all

log = logging.getLogger("banking_es.cache")

# KEYS[1] = entry; ARGV = version, state JSON, ttl ms. Stored as "<version>|<json>".
_PUT_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local version = tonumber(string.match(current, '^(%d+)|'))
  if version and version > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
"""

MAX_PENDING = 10000


class TwoLevelAccountCache:
    """The `AggregateCache` port over L1 (always) and L2 Redis (when configured)."""

    def __init__(
        self,
        local: LocalAccountCache,
        redis: RedisGateway | None,
        *,
        ttl: float = 300,
        metrics: CacheAndRedisCounters | None = None,
    ) -> None:
        self.local = local
        self.redis = redis
        self.metrics = metrics or local.metrics
        self.ttl_ms = int(ttl * 1000)
        self.instance = uuid.uuid4().hex
        self.channel = redis.key("cache", "invalidate") if redis else ""
        self._pending: dict[str, Account] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._script: Any = redis.client.register_script(_PUT_IF_NEWER) if redis else None
        self.subscribed = False
        self._closing = False

    # ---- the port --------------------------------------------------------------------------

    async def get(self, account_id: str) -> Account | None:
        account = self.local.lookup(account_id)
        if account is not None or self.redis is None:
            return account
        key = self._key(account_id)
        try:
            with cache_span("get", "l2", key) as current:  # Redis unavailable: an error span
                raw = await self.redis.run("cache_get", lambda c: c.get(key))
                current.set_attribute("cache.hit", raw is not None)
        except RedisUnavailable:
            return None
        if raw is None:
            self.metrics.inc("cache_misses", "l2")
            return None
        self.metrics.inc("cache_hits", "l2")
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        _, _, state = data.partition(b"|")
        account = Account.from_snapshot(orjson.loads(state))
        self.local.put(account)
        return account

    def peek(self, account_id: str) -> Account | None:
        return self.local.peek(account_id)

    def version_of(self, account_id: str) -> int | None:
        return self.local.version_of(account_id)

    def put(self, account: Account, *, share: bool = True) -> None:
        if not self.local.put(account) or self.redis is None or not share:
            return  # nothing newer than what this process already had (and shared)
        if len(self._pending) >= MAX_PENDING and account.id not in self._pending:
            self.metrics.inc("redis_shed", "cache_put")
            return
        self._pending[account.id] = account.copy()
        self._wake.set()

    def invalidate(self, account_id: str) -> None:
        self.local.invalidate(account_id)
        self._pending.pop(account_id, None)

    # ---- background: L2 writer and invalidation listener ------------------------------------

    def start(self) -> None:
        if self.redis is None or self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._write_behind(), name="cache-l2-writer"),
            asyncio.create_task(self._listen(), name="cache-invalidation-listener"),
        ]

    async def close(self) -> None:
        self._closing = True  # the writer ends by itself should its cancellation be lost
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)

    async def flush(self) -> None:
        """Write what is pending to L2 now (tests and shutdown)."""
        if self._pending and self.redis is not None:
            batch, self._pending = self._pending, {}
            try:
                await self.redis.run("cache_put", lambda c: self._write(c, batch))
            except RedisUnavailable:
                self.metrics.inc("cache_l2_dropped", "", len(batch))

    async def _write_behind(self) -> None:
        # redis-py can swallow a cancellation that arrives while it finishes a pipeline, so
        # the loop also ends when it finds the cache closing.
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def _write(self, client: Redis, batch: dict[str, Account]) -> None:
        # `async with` releases the connection even when the call is cancelled (deadline).
        async with client.pipeline(transaction=False) as pipe:
            for account_id, account in batch.items():
                state = orjson.dumps(account.to_snapshot())
                await self._script(
                    keys=[self._key(account_id)],
                    args=[account.version, state, self.ttl_ms],
                    client=pipe,
                )
            message = {"src": self.instance, "e": [[a.id, a.version] for a in batch.values()]}
            pipe.publish(self.channel, orjson.dumps(message))
            await pipe.execute()

    async def _listen(self) -> None:
        assert self.redis is not None
        delay = 0.1
        while True:
            client = self.redis.pubsub_client()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed = True
                delay = 0.1
                async for message in pubsub.listen():
                    self._on_message(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: retry; meanwhile L1 is fast-forwarded anyway
                log.debug("cache invalidation listener: %s", exc)
            finally:
                self.subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _on_message(self, data: Any) -> None:
        try:
            message = orjson.loads(data)
            if message.get("src") == self.instance:
                return
            for account_id, version in message["e"]:
                cached = self.local.version_of(account_id)
                if cached is not None and cached < int(version):
                    self.local.invalidate(account_id)
                    self.metrics.inc("cache_invalidations", "pubsub")
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed cache invalidation message")

    def _key(self, account_id: str) -> str:
        assert self.redis is not None
        return self.redis.key("acct", account_id)

    def stats(self) -> dict[str, Any]:
        return {
            "l1_entries": len(self.local),
            "l2": self.redis is not None,
            "pending_l2_writes": len(self._pending),
            "invalidation_listener": self.subscribed,
            "invalidations_received": self.metrics.get("cache_invalidations", "pubsub"),
        }
