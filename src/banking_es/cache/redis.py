"""Redis access for every Redis user in the process (L2 cache, pub/sub, rate limits, de-dup).

Every call goes through `RedisGateway.run`: a circuit breaker, short timeouts with one
bounded retry, and load shedding when too many calls already wait (docs/redis.md). A failed
or skipped call raises `RedisUnavailable`; callers fall back to L1, memory and the database,
which always have the answer. Nothing here ever decides correctness.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from banking_es.cache.breaker import CircuitBreaker
from banking_es.observability.cache_and_redis import CacheAndRedisCounters

T = TypeVar("T")
log = logging.getLogger("banking_es.redis")


class RedisUnavailable(Exception):
    """Redis was not used for this call (breaker open, shed, timeout or error)."""


class RedisGateway:
    """One pooled `redis.asyncio` client behind a breaker, a deadline and a load limit."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "banking-es",
        timeout_ms: float = 100,
        breaker_failures: int = 5,
        breaker_reset: float = 2.0,
        max_in_flight: int = 64,
        metrics: CacheAndRedisCounters | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout_ms / 1000
        self.metrics = metrics or CacheAndRedisCounters()
        self.max_in_flight = max_in_flight
        self.client: Redis = Redis.from_url(
            url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(ExponentialWithJitterBackoff(cap=self.timeout, base=0.002), retries=1),
            max_connections=max_in_flight + 8,
        )
        self.breaker = CircuitBreaker(
            breaker_failures, breaker_reset, on_change=self._breaker_changed
        )
        # A call may retry once and must connect first: allow for that, and no more.
        self._deadline = self.timeout * 3 + 0.05
        self._in_flight = 0
        self.last_error: str | None = None

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def available(self) -> bool:
        return self.breaker.state == "closed"

    async def run(self, op: str, call: Callable[[Redis], Awaitable[T]]) -> T:
        """`call(client)` under the breaker, the deadline and the load limit."""
        if self._in_flight >= self.max_in_flight:
            self.metrics.inc("redis_shed", op)
            raise RedisUnavailable("redis is slow: call shed")
        if not self.breaker.allow():
            self.metrics.inc("redis_rejected", op)
            raise RedisUnavailable(f"redis circuit breaker is {self.breaker.state}")
        self._in_flight += 1
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._deadline):
                result = await call(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            self.breaker.failure()
            self.metrics.inc("redis_errors", op)
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise RedisUnavailable(self.last_error) from exc
        except BaseException:
            self.breaker.abandon()  # cancelled: neither a success nor a failure
            raise
        finally:
            self._in_flight -= 1
        self.metrics.redis_latency.observe(time.perf_counter() - started)
        self.breaker.success()
        return result

    async def health(self) -> dict[str, Any]:
        """Readiness of Redis; a ping here is also the breaker's probe when nobody calls."""
        started = time.perf_counter()
        try:
            await self.run("ping", lambda client: client.ping())
        except RedisUnavailable as exc:
            return {"status": "degraded", "breaker": self.breaker.state, "error": str(exc)}
        return {
            "status": "ok",
            "breaker": self.breaker.state,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    def pubsub_client(self) -> Redis:
        """A separate client for blocking pub/sub reads (no short socket timeout)."""
        return Redis.from_url(self.url, socket_connect_timeout=max(self.timeout, 1.0))

    def _breaker_changed(self, state: str) -> None:
        self.metrics.breaker_state = state
        self.metrics.inc("redis_breaker_transitions", state)
        if state == "open":
            log.warning("redis unavailable (%s): using L1 and the database", self.last_error)
        elif state == "closed":
            log.info("redis available again")

    async def close(self) -> None:
        await self.client.aclose()
