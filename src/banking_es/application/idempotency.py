"""Idempotency-Key: run a command once per key and answer every retry as the first time.

`IdempotencyService.run` is the whole workflow: the stored answer if there is one (the
fast path first, then the durable records), else the command, whose answer the store
records in the same transaction as its events. Keys in flight are tracked per process; a
duplicate running in another process is caught by the store and replays the winner's.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar, cast

import orjson

from banking_es.application.context import CommandContext, IdempotencyIntent, Replayed
from banking_es.application.errors import (
    ApplicationError,
    IdempotencyInFlight,
    IdempotencyKeyReused,
)
from banking_es.application.ports import Clock, CommandDedup
from banking_es.application.results import (
    STORED_ANSWER,
    HoldResult,
    Result,
    TransferResult,
    is_remembered,
    load_answer,
    store_refusal,
    store_result,
)
from banking_es.domain.account import Account
from banking_es.domain.errors import DomainError
from banking_es.eventstore.base import EventStore, IdempotencyRecord

T = TypeVar("T")


def fingerprint(method: str, path: str, body: object) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A request's `Idempotency-Key`: who used it (`scope`), the key, and the fingerprint
    of the request it came with."""

    scope: str
    key: str
    fingerprint: str


@dataclass(slots=True)
class Outcome(Generic[T]):
    """What a command came to: its `result`, or the `refusal` it met (a domain or
    application error), `replayed` when an earlier request with the key decided it; the
    validation rules' `warnings` go with a result. `earlier_release` is a record stored by
    an earlier release, which holds the HTTP status and body it answered with."""

    result: T | None = None
    refusal: Exception | None = None
    replayed: bool = False
    warnings: tuple[str, ...] = ()
    earlier_release: IdempotencyRecord | None = None


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

    async def run(
        self,
        action: Callable[[CommandContext], Awaitable[T | Replayed]],
        context: CommandContext,
        key: IdempotencyKey | None,
    ) -> Outcome[T]:
        """`action` once per `key`: its fresh outcome, or the one stored for the key.

        Without a key a refusal is raised; with one, a remembered refusal is an outcome.
        Raises `IdempotencyKeyReused` for another request with the key, and
        `IdempotencyInFlight` while the key's first request is running."""
        if key is None:
            result = await action(context)
            assert not isinstance(result, Replayed)
            return Outcome(result, warnings=context.warnings)
        fast = await self._fast_lookup(key)
        if fast is not None:
            return await self._replay(fast)
        try:
            outcome, record = await self._run_keyed(action, context, key)
        except BaseException:
            if self.fast_path is not None:
                await asyncio.shield(self.fast_path.release(key.scope, key.key))
            raise
        if self.fast_path is not None:
            if record is None:  # a fresh result: its answer, with the times its append set
                body = store_result(_stored(outcome.result), outcome.warnings)
                record = self._record(key, body)
            await self.fast_path.remember(record)
        return outcome

    async def _replay(self, record: IdempotencyRecord) -> Outcome[T]:
        if record.status != STORED_ANSWER:
            return Outcome(replayed=True, earlier_release=record)
        answer, warnings = load_answer(record.body)
        if isinstance(answer, Exception):
            return Outcome(refusal=answer, replayed=True)
        await self._add_recorded_time(answer)
        return Outcome(cast("T", answer), replayed=True, warnings=warnings)

    async def _add_recorded_time(self, result: Result) -> None:
        """The times an answer stored before its append leaves out, from its event."""
        if isinstance(result, HoldResult):
            if result.created_at is None:
                placed = await self._store.get_event(result.id)
                assert placed is not None, result.id  # recorded before or with the answer
                result.created_at = placed.recorded_at
        elif isinstance(result, TransferResult):
            if result.created_at is None:
                sent = await self._store.get_event(result.id)
                assert sent is not None, result.id  # stored with the answer
                result.created_at = sent.recorded_at
        elif result.updated_at is None:
            version = result.version
            [event] = await self._store.read_stream(result.id, version - 1, to_version=version)
            result.updated_at = event.recorded_at
            result.created_at = result.created_at or event.recorded_at

    async def _fast_lookup(self, key: IdempotencyKey) -> IdempotencyRecord | None:
        """The answer from the fast path (no database), `IdempotencyInFlight` if the key is
        running elsewhere, or None: then the durable records decide, as without Redis."""
        if self.fast_path is None:
            return None
        found = await self.fast_path.claim(key.scope, key.key, key.fingerprint)
        if found == "pending":
            raise IdempotencyInFlight(
                "a request with this Idempotency-Key is still being processed"
            )
        if found == "claimed":
            return None
        _check_same_request(found, key)
        return found

    async def _run_keyed(
        self,
        action: Callable[[CommandContext], Awaitable[T | Replayed]],
        context: CommandContext,
        key: IdempotencyKey,
    ) -> tuple[Outcome[T], IdempotencyRecord | None]:
        """The durable path: the stored answer, or run once and store it (with the events,
        or alone for a refusal); the outcome and its record (None for a fresh result)."""
        existing = await self._store.get_idempotency(key.scope, key.key, self._clock.now())
        if existing is not None:
            _check_same_request(existing, key)
            return await self._replay(existing), existing
        with self._running(key):
            intent = IdempotencyIntent(key.scope, key.key, key.fingerprint, self.ttl_seconds)
            keyed = CommandContext(context.user_id, context.request_id, intent, context.warnings)
            try:
                result = await action(keyed)
            except (DomainError, ApplicationError) as exc:
                if not is_remembered(exc):
                    raise  # not executed (a malformed request, an outage): nothing to store
                record = self._record(key, store_refusal(exc))
                earlier = await self._store.save_idempotency(record)
                if earlier is not None:
                    _check_same_request(earlier, key)
                    return await self._replay(earlier), earlier
                return Outcome(refusal=exc), record
        if isinstance(result, Replayed):
            _check_same_request(result.record, key)
            return await self._replay(result.record), result.record
        return Outcome(result, warnings=context.warnings), None

    def _record(self, key: IdempotencyKey, body: bytes) -> IdempotencyRecord:
        now = self._clock.now()
        expires = now + timedelta(seconds=self.ttl_seconds)
        return IdempotencyRecord(
            key.scope, key.key, key.fingerprint, STORED_ANSWER, body, now, expires
        )

    @contextmanager
    def _running(self, key: IdempotencyKey) -> Iterator[None]:
        identity = (key.scope, key.key)
        if identity in self._in_flight:
            raise IdempotencyInFlight(
                "a request with this Idempotency-Key is still being processed"
            )
        self._in_flight.add(identity)
        try:
            yield
        finally:
            self._in_flight.discard(identity)

    async def purge(self) -> int:
        return await self._store.purge_idempotency(self._clock.now())


def _check_same_request(record: IdempotencyRecord, key: IdempotencyKey) -> None:
    if record.fingerprint != key.fingerprint:
        raise IdempotencyKeyReused("this Idempotency-Key was already used for a different request")


def _stored(result: object) -> Result:
    assert isinstance(result, Account | TransferResult | HoldResult), result
    return result
