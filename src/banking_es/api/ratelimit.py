"""Rate limiting (API.md): moving windows, in Redis (`limits`) or in this server (`ratewindows`).

Two places apply the limits, both cheap and both plain (no `BaseHTTPMiddleware`):

- `RateLimitMiddleware` (ASGI, before routing and authentication) limits every request per
  client IP (`RATE_LIMIT_PER_IP_PER_MINUTE`), and `/auth/login`, `/auth/register` and
  `/auth/reset-password` per IP (`AUTH_RATE_LIMIT_PER_MINUTE`): they cost an Argon2 hash
  each, and floods of unauthenticated requests are cut before anything runs.
- `limit_client`, run by the routes of API resources (`rate_limited=True`, api/routing.py)
  after authentication, charges the user (`user:<id>`, the IP if
  anonymous): `RATE_LIMIT_PER_MINUTE` per minute and at most `RATE_LIMIT_BURST` per second.
  `x-client-id` never replaces the user: with `RATE_LIMIT_PER_CLIENT_PER_MINUTE` it adds a
  second window, `user:<id>:client:<cid>`.

The IP is the peer address, or the last untrusted hop of `X-Forwarded-For` when the peer is
one of `TRUSTED_PROXIES` (addresses or CIDR networks). `/health` and `/metrics` are exempt.

Storage: with `REDIS_URL` the windows live in Redis (every process shares them), through the
`RedisGateway` breaker; while Redis is away, and without it, in this server (`ratewindows`:
a file the workers share, or this process's memory), which tracks at most
`RATE_LIMIT_MAX_CLIENTS` keys (least recently seen forgotten first).
A refusal is 429 `rate_limited` with `Retry-After` and `RateLimit-Limit/-Remaining/-Reset`.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from banking_es.api.caller import Caller
from banking_es.api.problems import ApiError, problem_body
from banking_es.api.ratewindows import Windows, local_windows
from banking_es.cache.redis import RedisGateway, RedisUnavailable
from banking_es.config import Settings

log = logging.getLogger("banking_es.ratelimit")

EXEMPT_PREFIXES = ("/health", "/metrics")
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
            refusal = await self.hit(self.auth, ip, "auth")
            if refusal is not None:
                return refusal
        return await self.hit(self.per_ip, ip, "ip")

    async def check_client(self, key: str, client_id: str | None = None) -> Refusal | None:
        """Charge `key` (a user or an IP); then, if asked for, its window with `client_id`."""
        if self.burst is not None:
            refusal = await self.hit(self.burst, key, "burst")
            if refusal is not None:
                return refusal
        refusal = await self.hit(self.per_client, key, "client")
        if refusal is not None or client_id is None or self.per_app is None:
            return refusal
        return await self.hit(self.per_app, f"{key}:client:{client_id}", "client_id")

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
            item.key_for(identifier), item.amount, item.get_expiry(), self.clock()
        )
        return None if again is None else self._refuse(item, again, reason)

    def _refuse(self, item: RateLimitItem, reset_time: float, reason: str) -> Refusal:
        if self.on_refused is not None:
            self.on_refused(reason)
        # floor + 1, not ceil: at a whole second the moving window still counts the oldest
        # request, so waiting exactly `ceil` seconds would be refused again.
        wait = max(1, math.floor(reset_time - self.clock()) + 1)
        return Refusal(reason, item.amount, wait)

    def client_ip(self, scope: Scope) -> str:
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


def _exempt(path: str) -> bool:
    return path.startswith(EXEMPT_PREFIXES)


class RateLimitMiddleware:
    """Per-IP limits (and the login/reset limits) before anything else runs."""

    def __init__(self, app: ASGIApp, limiter: Callable[[], RateLimiter | None]) -> None:
        self.app = app
        self.limiter = limiter  # None until the services exist, and with limits off

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _exempt(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        limiter = self.limiter()
        if limiter is not None:
            ip = limiter.client_ip(scope)
            scope.setdefault("state", {})["client_ip"] = ip
            refusal = await limiter.check_ip(ip, scope.get("path", ""))
            if refusal is not None:
                log.info("rate limited ip %s (%s)", ip, refusal.reason)
                await _send_refusal(send, refusal)
                return
        await self.app(scope, receive, send)


async def limit_client(limiter: RateLimiter, scope: Scope, caller: Caller) -> None:
    """The per-client limit, after authentication (429 `rate_limited` when full)."""
    if _exempt(scope.get("path", "")):
        return
    # The user pays for every request: a client id is the caller's word, never a key alone.
    if caller.user_id:
        key = f"user:{caller.user_id}"
    else:
        ip = scope.get("state", {}).get("client_ip") or limiter.client_ip(scope)
        key = f"ip:{ip}"
    client_id = caller.client_id if caller.user_id else None
    refusal = await limiter.check_client(key, client_id)
    if refusal is not None:
        log.info("rate limited %s (%s)", key, refusal.reason)
        raise ApiError(429, "rate_limited", refusal.message(), headers=refusal.headers())


#: The 429 in the OpenAPI document of the routes that are rate limited.
RATE_LIMIT_RESPONSES: dict[int, dict[str, Any]] = {
    429: {"description": "rate_limited: too many requests (with Retry-After, RateLimit-*)"}
}


def build_rate_limiter(
    settings: Settings, redis: RedisGateway | None, on_refused: Callable[[str], None]
) -> RateLimiter | None:
    return RateLimiter(settings, redis, on_refused) if settings.rate_limit_enabled else None


async def _send_refusal(send: Send, refusal: Refusal) -> None:
    body = problem_body(429, "rate_limited", refusal.message())
    headers = [(k.lower().encode(), v.encode()) for k, v in refusal.headers().items()]
    headers += [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None
