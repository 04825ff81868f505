"""Ports the application depends on, besides the `EventStore` (eventstore/base.py)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Literal, Protocol

from banking_es.domain.account import Account
from banking_es.eventstore.base import IdempotencyRecord, RecordedEvent


class Clock(Protocol):
    """Where the application reads the time; tests use a fake one."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class IdGenerator(Protocol):
    def new_id(self) -> str: ...


class UuidGenerator:
    """Random UUID4 strings."""

    def new_id(self) -> str:
        # `str(uuid.uuid4())` builds a `UUID` (an int, checks) only to format it: this is the
        # same 122 random bits, version 4 and RFC 4122 variant, in under half the time.
        raw = bytearray(os.urandom(16))
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class AggregateCache(Protocol):
    """Recently seen account states. An entry is a starting point, never the truth:
    readers fast-forward it from the store, writers append against its version.
    `get` may ask a shared cache (Redis); `put` and `invalidate` never wait for one."""

    async def get(self, account_id: str) -> Account | None: ...

    def peek(self, account_id: str) -> Account | None:
        """This process's entry (a copy), without asking a shared cache or counting a hit."""
        ...

    def version_of(self, account_id: str) -> int | None:
        """The version of this process's entry (None: none), like `peek` without the copy."""
        ...

    def put(self, account: Account, *, share: bool = True) -> None:
        """Keep `account` here and, with `share`, in a shared cache too."""
        ...

    def invalidate(self, account_id: str) -> None: ...


class CommandDedup(Protocol):
    """A fast path in front of the durable `Idempotency-Key` records (Redis `SET NX`).

    `claim` answers "claimed" (go on: the durable records decide), "pending" (the same key
    is running somewhere right now) or the finished outcome to replay. It never raises:
    when the fast path is unavailable it answers "claimed"."""

    async def claim(
        self, scope: str, key: str, fingerprint: str
    ) -> IdempotencyRecord | Literal["claimed", "pending"]: ...

    async def remember(self, record: IdempotencyRecord) -> None: ...

    async def release(self, scope: str, key: str) -> None: ...


class EventPageCache(Protocol):
    """Full pages of a stream's events (immutable once full); partial pages are not kept."""

    async def get(
        self, account_id: str, after_version: int, limit: int
    ) -> list[RecordedEvent] | None: ...

    async def put(
        self, account_id: str, after_version: int, limit: int, events: list[RecordedEvent]
    ) -> None: ...
