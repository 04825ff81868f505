"""Idempotency-Key handling: look up stored outcomes, track keys in flight, store outcomes.

The durable records in the event store are the truth (written in the same transaction as
a command's events). Keys in flight are tracked per process; a duplicate running in
another process is caught by the store when it commits, and replays the winner's record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import orjson

from banking_es.application.errors import IdempotencyInFlight, IdempotencyKeyReused
from banking_es.application.ports import Clock, CommandDedup
from banking_es.eventstore.base import EventStore, IdempotencyRecord


def fingerprint(method: str, path: str, body: object) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


class IdempotencyService:
    """The application's view of `Idempotency-Key`s."""

    def __init__(
        self,
        store: EventStore,
        clock: Clock,
        ttl_hours: float,
        fast_path: CommandDedup | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self.ttl_seconds = ttl_hours * 3600
        self._in_flight: set[tuple[str, str]] = set()
        self.fast_path = fast_path

    async def fast_lookup(self, scope: str, key: str, fingerprint: str) -> IdempotencyRecord | None:
        """The outcome from the fast path (no database), `IdempotencyInFlight` if the key is
        running elsewhere, or None: then the durable records decide, as without Redis."""
        if self.fast_path is None:
            return None
        found = await self.fast_path.claim(scope, key, fingerprint)
        if found == "pending":
            raise IdempotencyInFlight(
                "a request with this Idempotency-Key is still being processed"
            )
        if found == "claimed":
            return None
        self.check_same_request(found, fingerprint)
        return found

    async def remember(
        self, scope: str, key: str, fingerprint: str, status: int, body: bytes
    ) -> None:
        """Give the fast path the outcome (already stored durably) for the next retries."""
        if self.fast_path is not None:
            now = self._clock.now()
            expires = now + timedelta(seconds=self.ttl_seconds)
            await self.fast_path.remember(
                IdempotencyRecord(scope, key, fingerprint, status, body, now, expires)
            )

    async def release(self, scope: str, key: str) -> None:
        """The command was not executed (400, 5xx, cancelled): free the fast-path claim."""
        if self.fast_path is not None:
            await self.fast_path.release(scope, key)

    async def lookup(self, scope: str, key: str, fingerprint: str) -> IdempotencyRecord | None:
        """The stored outcome to replay, or None; `IdempotencyKeyReused` on another request."""
        record = await self._store.get_idempotency(scope, key, self._clock.now())
        if record is None:
            return None
        self.check_same_request(record, fingerprint)
        return record

    @staticmethod
    def check_same_request(record: IdempotencyRecord, fingerprint: str) -> None:
        if record.fingerprint != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different request"
            )

    @contextmanager
    def in_flight(self, scope: str, key: str) -> Iterator[None]:
        identity = (scope, key)
        if identity in self._in_flight:
            raise IdempotencyInFlight(
                "a request with this Idempotency-Key is still being processed"
            )
        self._in_flight.add(identity)
        try:
            yield
        finally:
            self._in_flight.discard(identity)

    async def save_outcome(
        self, scope: str, key: str, fingerprint: str, status: int, body: bytes
    ) -> IdempotencyRecord | None:
        """Store an outcome without events (404, 409, 422); return an earlier one if any."""
        now = self._clock.now()
        record = IdempotencyRecord(
            scope, key, fingerprint, status, body, now, now + timedelta(seconds=self.ttl_seconds)
        )
        return await self._store.save_idempotency(record)

    async def purge(self) -> int:
        return await self._store.purge_idempotency(self._clock.now())
