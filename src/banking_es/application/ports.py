"""Ports the application depends on, besides the `EventStore` (eventstore/base.py)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from banking_es.domain.account import Account
from banking_es.eventstore.base import Fence, IdempotencyRecord, RecordedEvent


class Clock(Protocol):
    """Where the application reads the time; tests use a fake one."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class Leadership(Protocol):
    """One process among many does a job (`db.lease.LeaseElection` fulfils it)."""

    async def ensure(self) -> bool:
        """Take or renew the lead; whether this process leads now."""
        ...


class IdGenerator(Protocol):
    def new_id(self) -> str:
        """An id for something clients name (an account): unguessable, reveals nothing."""
        ...

    def new_event_id(self) -> str:
        """An id for an event (and a transfer: its `TransferSent`'s): unique, and an id made
        in a later millisecond sorts after one made earlier, so the indexes on event ids
        grow at their right edge instead of on random pages."""
        ...


class UuidGenerator:
    """Random UUID4 strings for accounts, time-ordered UUID7 strings for events."""

    def new_id(self) -> str:
        # `str(uuid.uuid4())` builds a `UUID` (an int, checks) only to format it: this is the
        # same 122 random bits, version 4 and RFC 4122 variant, in under half the time.
        raw = bytearray(os.urandom(16))
        raw[6] = (raw[6] & 0x0F) | 0x40
        return _formatted(raw)

    def new_event_id(self) -> str:
        # RFC 9562 version 7 (Unix milliseconds, then 74 random bits): inserts into the
        # `event_id` and `transactions.id` indexes land on their last, cached pages.
        raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big"))
        raw += os.urandom(10)
        raw[6] = (raw[6] & 0x0F) | 0x70
        return _formatted(raw)


def _formatted(raw: bytearray) -> str:
    """`raw` (16 bytes, version nibble set) with the RFC variant bits, as canonical text."""
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """How far a projection is behind the store (readiness, metrics and the CLI report it)."""

    name: str
    #: The checkpoint: every event up to this global position is applied.
    position: int
    #: The store's head position.
    head: int
    lag_events: int
    #: Age of the oldest event not yet applied; 0 when caught up.
    lag_seconds: float
    #: When the checkpoint last moved (None: never).
    updated_at: datetime | None


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


@dataclass(frozen=True, slots=True)
class Job:
    """A background job started over the admin API (a projection rebuild), as stored."""

    id: str
    kind: str
    #: What the job works on (a projection's name).
    subject: str
    status: Literal["running", "done", "failed"]
    done: int
    total: int
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class JobStore(Protocol):
    """The `jobs` table: any instance reads a job; only the process running it writes it."""

    async def create(self, job: Job, owner: str) -> None: ...

    async def beat(self, job_id: str, done: int, total: int, now: datetime) -> None:
        """Record progress; the heartbeat that shows the owner is alive."""
        ...

    async def finish(self, job_id: str, job: Job) -> None:
        """Write the final status, counts, end time and error of a running job."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def running(self, kind: str) -> list[Job]: ...

    async def fail_stale(self, beat_before: datetime, now: datetime, reason: str) -> int:
        """Mark `failed` every running job whose heartbeat is older than `beat_before`."""
        ...


class ShardFences(Protocol):
    """This instance's shard leases (shards/, when several instances share the database)."""

    def fence_for(self, account_id: str) -> Fence | None:
        """The fence an append to `account_id` carries; None: its shard is not ours."""
        ...

    def fenced_out(self, shard: int, epoch: int) -> None:
        """The store refused an append of this epoch: the shard has a newer owner."""
        ...

    def executed(self, shard: int, commands: int) -> None:
        """`commands` were appended under this shard's fence (the shard's load)."""
        ...
