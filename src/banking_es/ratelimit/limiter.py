"""The rate limits of `Settings` (docs/api.md, "Rate limits"): moving windows in Redis
(`limits`) while it answers, else in this server (`ratelimit.windows`: a file the workers
share, or this process's memory), which tracks at most `RATE_LIMIT_MAX_CLIENTS` keys.
The HTTP side (`api/ratelimit.py`) decides whom to charge and answers a `Refusal` with a 429.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from banking_es.cache.redis import RedisGateway, RedisUnavailable
from banking_es.config import Settings
from banking_es.ratelimit.windows import Windows, local_windows

AUTH_PATHS = ("/auth/login", "/auth/register", "/auth/reset-password")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why and for how long a request is refused."""

    reason: str
    limit: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(self.retry_after),
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(self.retry_after),
        }

    def message(self) -> str:
        return f"rate limit exceeded ({self.reason}); retry in {self.retry_after}s"


class RateLimiter:
    """The limits of `Settings`, checked in Redis when it is there, else in this server."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisGateway | None = None,
        on_refused: Callable[[str], None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: Told the reason of every refusal (bootstrap: `Metrics.observe_rate_limited`).
        self.on_refused = on_refused
        self.clock = clock
        self._redis = redis
        self._local: Windows = local_windows(settings.rate_limit_max_clients)
        self._redis_limiter: MovingWindowRateLimiter | None = None
        if redis is not None:
            storage = RedisStorage(
                "async+" + redis.url,
                implementation="redispy",
                key_prefix=redis.key("ratelimit"),
                connection_pool=redis.client.connection_pool,  # type: ignore[arg-type]
            )
            self._redis_limiter = MovingWindowRateLimiter(storage)
        self.per_client = RateLimitItemPerMinute(settings.rate_limit_per_minute, namespace="client")
        self.burst = (
            RateLimitItemPerSecond(settings.rate_limit_burst, namespace="burst")
            if settings.rate_limit_burst > 0
            else None
        )
        self.per_app = (
            RateLimitItemPerMinute(settings.rate_limit_per_client_per_minute, namespace="app")
            if settings.rate_limit_per_client_per_minute is not None
            else None
        )
        self.per_ip = RateLimitItemPerMinute(settings.rate_limit_per_ip_per_minute, namespace="ip")
        self.auth = RateLimitItemPerMinute(settings.auth_rate_limit_per_minute, namespace="auth")
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    @property
    def tracked_keys(self) -> int:
        return self._local.tracked_keys

    async def check_ip(self, ip: str, path: str) -> Refusal | None:
        if path.startswith(AUTH_PATHS):
            return await self.hit_all([(self.auth, ip, "auth"), (self.per_ip, ip, "ip")])
        return await self.hit_all([(self.per_ip, ip, "ip")])

    async def check_client(self, key: str, client_id: str | None = None) -> Refusal | None:
        """Charge `key` (a user or an IP); then, if asked for, its window with `client_id`."""
        checks: list[tuple[RateLimitItem, str, str]] = []
        if self.burst is not None:
            checks.append((self.burst, key, "burst"))
        checks.append((self.per_client, key, "client"))
        if client_id is not None and self.per_app is not None:
            checks.append((self.per_app, f"{key}:client:{client_id}", "client_id"))
        return await self.hit_all(checks)

    async def hit_all(self, checks: Sequence[tuple[RateLimitItem, str, str]]) -> Refusal | None:
        """`hit` each (item, identifier, reason) in turn up to the first refusal; in this
        server's windows, all in one call (one lock of the workers' shared file)."""
        if self._redis_limiter is not None:
            for item, identifier, reason in checks:
                refusal = await self.hit(item, identifier, reason)
                if refusal is not None:
                    return refusal
            return None
        hits = [
            (_key(item, identifier), item.amount, item.get_expiry())
            for item, identifier, _ in checks
        ]
        found = self._local.hit_all(hits, self.clock())
        if found is None:
            return None
        item, _, reason = checks[found[0]]
        return self._refuse(item, found[1], reason)

    async def hit(self, item: RateLimitItem, identifier: str, reason: str) -> Refusal | None:
        """Take one request from `item`'s window for `identifier`; a `Refusal` when full."""
        limiter = self._redis_limiter
        if limiter is not None and self._redis is not None:
            try:
                allowed = await self._redis.run(
                    "ratelimit", lambda _: limiter.hit(item, identifier)
                )
                if allowed:
                    return None
                stats = await self._redis.run(
                    "ratelimit", lambda _: limiter.get_window_stats(item, identifier)
                )
                return self._refuse(item, stats.reset_time, reason)
            except RedisUnavailable:
                pass  # counted by the gateway; decide in memory meanwhile
        again = self._local.hit(
            _key(item, identifier), item.amount, item.get_expiry(), self.clock()
        )
        return None if again is None else self._refuse(item, again, reason)

    def _refuse(self, item: RateLimitItem, reset_time: float, reason: str) -> Refusal:
        if self.on_refused is not None:
            self.on_refused(reason)
        # floor + 1, not ceil: at a whole second the moving window still counts the oldest
        # request, so waiting exactly `ceil` seconds would be refused again.
        wait = max(1, math.floor(reset_time - self.clock()) + 1)
        return Refusal(reason, item.amount, wait)

    def client_ip(self, scope: Mapping[str, Any]) -> str:
        """The client's address: the peer, or the last untrusted hop of `X-Forwarded-For`
        when the peer is a trusted proxy (`scope`: the ASGI scope of the request)."""
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        forwarded = _header(scope, b"x-forwarded-for")
        if not forwarded:
            return peer
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop[:64]
        return hops[0][:64] if hops else peer

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)


def _key(item: RateLimitItem, identifier: str) -> str:
    """`identifier`'s key in this server's windows: each item of a limiter has its own
    namespace, and the windows live as long as the server (`limits`' `key_for` formats more)."""
    return f"{item.namespace}/{identifier}"


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
