"""Contract types of the event store, shared by every backend.

    EventStoreError
    ├── ConcurrencyError        a stream was not at the expected version (nothing written)
    ├── IdempotencyKeyExists    an idempotency key of the append is already recorded
    ├── AppendRejected          the database refused this append's data (nothing written)
    └── StoreUnavailable        the database cannot be reached; safe to retry later
        └── FencedOut           the writer's shard epoch is not the shard's (nothing written)

An `AppendRequest` is one atomic unit: its stream appends, snapshots, idempotency
records and outbox rows are committed together or not at all (DESIGN.md guarantees 2, 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from orjson import dumps, loads

#: Outbox topic (without prefix) that carries every event.
EVENTS_TOPIC = "events"


class EventStoreError(Exception):
    """Base of every event-store failure."""


class ConcurrencyError(EventStoreError):
    """The stream is not at `expected_version`; the append wrote nothing."""

    def __init__(self, stream_id: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream_id} is at version {actual}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class IdempotencyKeyExists(EventStoreError):
    """An idempotency record with the same (scope, key) is already stored."""

    def __init__(self, existing: IdempotencyRecord) -> None:
        super().__init__(f"idempotency key {existing.key!r} is already recorded")
        self.existing = existing


class AppendRejected(EventStoreError):
    """The database refused this append's data (not a conflict, not an outage): a bug in
    validation upstream. Only this append fails; its neighbours in the batch are written."""


class StoreUnavailable(EventStoreError):
    """The database is unreachable or failed transiently; nothing is known to be written."""


class FencedOut(StoreUnavailable):
    """The append carried a shard epoch that is no longer the shard's: another instance
    claimed the shard since. Nothing was written; the request belongs to the new owner."""

    def __init__(self, shard: int, epoch: int) -> None:
        super().__init__(f"shard {shard} is no longer at epoch {epoch}")
        self.shard = shard
        self.epoch = epoch


@dataclass(frozen=True, slots=True)
class Fence:
    """The shard lease an append's writer holds: the store writes it only while `epoch` is
    still the shard's (shards/leases.py)."""

    shard: int
    epoch: int


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append; the store assigns its position, version and time."""

    event_id: str
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: `position` is global, `version` is 1-based within the stream."""

    position: int
    stream_id: str
    version: int
    event_id: str
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class NoticedEvent:
    """An event another process appended, as its stream notice carries it: everything a
    `RecordedEvent` holds but the global position (which a notice leaves out, see
    `eventstore/notices.py`)."""

    version: int
    event_id: str
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class AppendedElsewhere:
    """Another process appended to `stream_id`, up to `version`. `events` are the appended
    events when the notice could carry them (empty when they did not fit)."""

    stream_id: str
    version: int
    events: tuple[NoticedEvent, ...] = ()


#: An event as its row is stored, `data` and `metadata` still JSON text: (position,
#: stream_id, version, event_id, type, data, metadata, recorded_at). A batch of these costs
#: less to read and to hold than RecordedEvents: plain tuples of str, int and datetime,
#: no dicts, nothing the garbage collector keeps scanning. The projection runner reads its
#: batches so and decodes one event at a time (`decode_row`).
EventRow = tuple[int, str, int, str, str, str, str, datetime]
#: Indexes into an `EventRow`.
ROW_POSITION: Final = 0
ROW_STREAM: Final = 1
ROW_VERSION: Final = 2
ROW_TYPE: Final = 4


def decode_row(row: EventRow) -> RecordedEvent:
    """The RecordedEvent of a stored row (`EventStore.read_rows`)."""
    position, stream_id, version, event_id, type_, data, metadata, recorded_at = row
    return RecordedEvent(
        position, stream_id, version, event_id, type_, loads(data), loads(metadata), recorded_at
    )


def encode_row(event: RecordedEvent) -> EventRow:
    """The stored row of a RecordedEvent: `decode_row(encode_row(e)) == e`."""
    return (
        event.position,
        event.stream_id,
        event.version,
        event.event_id,
        event.type,
        dumps(event.data).decode(),
        dumps(event.metadata).decode(),
        event.recorded_at,
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An aggregate's state at `version`, so loading needs only the events after it."""

    stream_id: str
    version: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events for one stream; `expected_version` 0 means the stream must not exist yet."""

    stream_id: str
    expected_version: int
    events: Sequence[NewEvent]
    snapshot: Snapshot | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The stored answer of a command, replayed for a retry with the same key."""

    scope: str
    key: str
    fingerprint: str
    status: int
    body: bytes
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message for the outbox relay that is not itself an event (e.g. a notification)."""

    topic: str
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A row of the outbox waiting for the relay: an event's or a plain message."""

    id: int
    topic: str
    key: str
    payload: dict[str, Any] | None
    event: RecordedEvent | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One atomic append: every part is committed together, or none is."""

    streams: Sequence[StreamAppend]
    idempotency: Sequence[IdempotencyRecord] = ()
    messages: Sequence[OutboxMessage] = ()
    #: Set when shards are configured: refused with `FencedOut` unless its epoch is current.
    fence: Fence | None = None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    backlog: int
    oldest_created_at: datetime | None


class EventStore(Protocol):
    """The port the application uses; implemented by memory, SQLite and PostgreSQL."""

    @property
    def queue_length(self) -> int:
        """Appends waiting for the next batch (a metric)."""
        ...

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Append atomically; raise `ConcurrencyError` or `IdempotencyKeyExists` on conflict."""
        ...

    async def read_stream(
        self,
        stream_id: str,
        after_version: int = 0,
        *,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream with version > `after_version`, oldest first."""
        ...

    async def read_all(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        """Events with position > `after_position`, in position order; never skips one."""
        ...

    async def read_rows(self, after_position: int, limit: int) -> list[EventRow]:
        """`read_all` without `types`, as stored rows: the same events, JSON not decoded."""
        ...

    async def get_event(self, event_id: str) -> RecordedEvent | None: ...

    async def head_position(self) -> int:
        """The highest position a reader can see now (0 for an empty store)."""
        ...

    async def latest_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> Snapshot | None: ...

    async def get_idempotency(
        self, scope: str, key: str, now: datetime
    ) -> IdempotencyRecord | None:
        """The unexpired record for (scope, key), if any."""
        ...

    async def save_idempotency(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        """Store an outcome that produced no events; return the existing record on conflict."""
        ...

    async def purge_idempotency(self, now: datetime) -> int: ...

    async def outbox_pending(self, limit: int) -> list[OutboxEntry]: ...

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None: ...

    async def outbox_stats(self) -> OutboxStats: ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless a trivial query succeeds."""
        ...

    async def close(self) -> None: ...
