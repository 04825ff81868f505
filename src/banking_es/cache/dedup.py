"""The Redis fast path for command de-duplication (`Idempotency-Key`), in front of the
durable records in the event store, which stay the truth.

`claim` sets a short-lived "pending" marker per (scope, key), or returns the key's value in
the same round trip (a Lua script): "pending" (running in some process: 409) or the stored
answer (replayed without the database). `remember` replaces the marker with the answer once
it is stored durably; `release` frees it for a command that was not executed. A marker left
by a dead process expires after `pending_ttl`; with Redis away every call is "claimed".
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from banking_es.cache.redis import RedisGateway, RedisUnavailable
from banking_es.eventstore.base import IdempotencyRecord

log = logging.getLogger("banking_es.cache")

_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
PENDING = b"pending:"


class RedisCommandDedup:
    """`CommandDedup` over Redis; every failure means "ask the database"."""

    def __init__(self, redis: RedisGateway, *, ttl_seconds: float, pending_ttl: float) -> None:
        self.redis = redis
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.pending_ms = max(1, int(pending_ttl * 1000))
        self.metrics = redis.metrics
        self._claim: Any = redis.client.register_script(_CLAIM)
        self._release: Any = redis.client.register_script(_RELEASE)
        self._tokens: dict[str, bytes] = {}  # our own pending markers, by Redis key

    def _key(self, scope: str, key: str) -> str:
        return self.redis.key("idem", scope, key)

    async def claim(
        self, scope: str, key: str, fingerprint: str
    ) -> IdempotencyRecord | Literal["claimed", "pending"]:
        name = self._key(scope, key)
        token = PENDING + uuid.uuid4().hex.encode()
        try:
            found = await self.redis.run(
                "dedup_claim",
                lambda c: self._claim(keys=[name], args=[token, self.pending_ms], client=c),
            )
        except RedisUnavailable:
            self.metrics.inc("dedup", "unavailable")
            return "claimed"
        if not found:
            self._tokens[name] = token
            self.metrics.inc("dedup", "claimed")
            return "claimed"
        if bytes(found).startswith(PENDING):
            self.metrics.inc("dedup", "pending")
            return "pending"
        try:
            data = orjson.loads(found)
            record = IdempotencyRecord(
                scope,
                key,
                data["fingerprint"],
                int(data["status"]),
                data["body"].encode(),
                datetime.fromtimestamp(data["created_at"], UTC),
                datetime.fromtimestamp(data["expires_at"], UTC),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed de-duplication entry %s", name)
            return "claimed"
        self.metrics.inc("dedup", "replayed")
        return record

    async def remember(self, record: IdempotencyRecord) -> None:
        if not isinstance(record.body, bytes):
            return
        value = orjson.dumps(
            {
                "fingerprint": record.fingerprint,
                "status": record.status,
                "body": record.body.decode(),
                "created_at": record.created_at.timestamp(),
                "expires_at": record.expires_at.timestamp(),
            }
        )
        ttl = int((record.expires_at - record.created_at) / timedelta(milliseconds=1))
        name = self._key(record.scope, record.key)
        self._tokens.pop(name, None)
        try:
            await self.redis.run(
                "dedup_remember", lambda c: c.set(name, value, px=max(1, min(ttl, self.ttl_ms)))
            )
        except RedisUnavailable:
            pass

    async def release(self, scope: str, key: str) -> None:
        name = self._key(scope, key)
        token = self._tokens.pop(name, None)
        if token is None:
            return  # not ours (or Redis was away when we claimed)
        try:
            await self.redis.run(
                "dedup_release", lambda c: self._release(keys=[name], args=[token], client=c)
            )
        except RedisUnavailable:
            pass  # the marker expires by itself
