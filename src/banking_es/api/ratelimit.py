"""Rate limiting over HTTP (docs/api.md); the limits and their windows are `ratelimit/`.

- `RateLimitMiddleware` (ASGI, before routing and authentication) limits every request per
  client IP (`RATE_LIMIT_PER_IP_PER_MINUTE`), and `/auth/login`, `/auth/register` and
  `/auth/reset-password` per IP (`AUTH_RATE_LIMIT_PER_MINUTE`): they cost an Argon2 hash each.
- `limit_client`, run by the routes of API resources (`rate_limited=True`, api/routing.py)
  after authentication, charges the user (`user:<id>`, the IP if anonymous), plus
  `user:<id>:client:<cid>` with `RATE_LIMIT_PER_CLIENT_PER_MINUTE`.
`/health` and `/metrics` are exempt. A refusal is 429 `rate_limited` with `Retry-After` and
`RateLimit-Limit/-Remaining/-Reset`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from banking_es.api.caller import Caller
from banking_es.api.problems import ApiError, problem_body
from banking_es.ratelimit.limiter import RateLimiter, Refusal

log = logging.getLogger("banking_es.ratelimit")

EXEMPT_PREFIXES = ("/health", "/metrics")


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


async def _send_refusal(send: Send, refusal: Refusal) -> None:
    body = problem_body(429, "rate_limited", refusal.message())
    headers = [(k.lower().encode(), v.encode()) for k, v in refusal.headers().items()]
    headers += [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
