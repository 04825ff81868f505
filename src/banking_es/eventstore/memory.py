"""The in-memory event store: a real implementation of the contract, for tests and tools.

It keeps the same guarantees as the database backends inside one process: one lock
serializes commits, so positions are assigned in commit order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from banking_es.eventstore.base import (
    AppendRequest,
    EventRow,
    IdempotencyRecord,
    OutboxEntry,
    OutboxStats,
    RecordedEvent,
    Snapshot,
    encode_row,
)
from banking_es.eventstore.batching import (
    BatchOutcome,
    GroupCommitter,
    plan_batch,
    touched_keys,
    touched_streams,
)


class MemoryEventStore:
    """Events, snapshots, idempotency records and outbox rows in Python lists and dicts."""

    def __init__(
        self,
        *,
        outbox_events: bool = True,
        batch_max_size: int = 500,
        batch_max_wait_ms: float = 0.0,
        clock: type[datetime] = datetime,
    ) -> None:
        self._events: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._by_id: dict[str, RecordedEvent] = {}
        self._snapshots: dict[str, list[Snapshot]] = {}
        self._keys: dict[tuple[str, str], IdempotencyRecord] = {}
        self._outbox: dict[
            int, tuple[str, str, dict[str, object] | None, int | None, datetime]
        ] = {}
        self._outbox_seq = 0
        self._outbox_events = outbox_events
        self._lock = asyncio.Lock()
        self._clock = clock
        self._committer = GroupCommitter(
            self._commit_batch, max_size=batch_max_size, max_wait_ms=batch_max_wait_ms
        )
        #: The current epoch of each shard (the shard map of a database backend).
        self.shard_epochs: dict[int, int] = {}
        #: Set by tests to make the next commit fail as a database would.
        self.fail_next_commit: Exception | None = None

    @property
    def queue_length(self) -> int:
        return self._committer.queue_length

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        return await self._committer.submit(request)

    async def _commit_batch(self, requests: list[AppendRequest]) -> list[BatchOutcome]:
        async with self._lock:
            if self.fail_next_commit is not None:
                exc, self.fail_next_commit = self.fail_next_commit, None
                raise exc
            now = self._clock.now(UTC)
            versions = {s: len(self._streams.get(s, ())) for s in touched_streams(requests)}
            keys = {k: self._keys[k] for k in touched_keys(requests) if k in self._keys}
            plan = plan_batch(
                requests,
                head=len(self._events),
                now=now,
                versions=versions,
                existing_keys=keys,
                outbox_events=self._outbox_events,
                epochs=self.shard_epochs,
            )
            for event in plan.events:
                self._events.append(event)
                self._streams.setdefault(event.stream_id, []).append(event)
                self._by_id[event.event_id] = event
            for snapshot in plan.snapshots:
                self._snapshots.setdefault(snapshot.stream_id, []).append(snapshot)
            for record in plan.idempotency:
                self._keys[(record.scope, record.key)] = record
            for row in plan.outbox:
                self._outbox_seq += 1
                self._outbox[self._outbox_seq] = (
                    row.topic,
                    row.key,
                    row.payload,
                    row.event_position,
                    now,
                )
            return plan.outcomes

    async def read_stream(
        self,
        stream_id: str,
        after_version: int = 0,
        *,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        events = self._streams.get(stream_id, [])[after_version:]
        if to_version is not None:
            events = [e for e in events if e.version <= to_version]
        if recorded_until is not None:
            events = [e for e in events if e.recorded_at <= recorded_until]
        return events[:limit] if limit is not None else list(events)

    async def read_all(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        events = self._events[after_position:]
        if types:
            wanted = set(types)
            events = [e for e in events if e.type in wanted]
        return events[:limit]

    async def read_rows(self, after_position: int, limit: int) -> list[EventRow]:
        return [encode_row(e) for e in await self.read_all(after_position, limit)]

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        return self._by_id.get(event_id)

    async def head_position(self) -> int:
        return len(self._events)

    async def latest_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> Snapshot | None:
        candidates = [
            s
            for s in self._snapshots.get(stream_id, [])
            if max_version is None or s.version <= max_version
        ]
        return max(candidates, key=lambda s: s.version, default=None)

    async def get_idempotency(
        self, scope: str, key: str, now: datetime
    ) -> IdempotencyRecord | None:
        record = self._keys.get((scope, key))
        return record if record is not None and record.expires_at > now else None

    async def save_idempotency(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        async with self._lock:
            existing = self._keys.get((record.scope, record.key))
            if existing is not None and existing.expires_at > record.created_at:
                return existing
            self._keys[(record.scope, record.key)] = record
            return None

    async def purge_idempotency(self, now: datetime) -> int:
        expired = [k for k, r in self._keys.items() if r.expires_at <= now]
        for k in expired:
            del self._keys[k]
        return len(expired)

    async def outbox_pending(self, limit: int) -> list[OutboxEntry]:
        entries = []
        for row_id in sorted(self._outbox)[:limit]:
            topic, key, payload, position, created = self._outbox[row_id]
            event = self._events[position - 1] if position is not None else None
            entries.append(OutboxEntry(row_id, topic, key, payload, event, created))
        return entries

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        for row_id in ids:
            self._outbox.pop(row_id, None)

    async def outbox_stats(self) -> OutboxStats:
        oldest = min((row[4] for row in self._outbox.values()), default=None)
        return OutboxStats(len(self._outbox), oldest)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        await self._committer.drain()
