"""Applying a batch of one partition's messages to the projections, exactly once.

One database transaction parks messages whose key has an open dead letter, drops duplicates
and fills gaps by (stream, version) (`kafka_stream_versions`), applies the events and writes
the (projection, partition) checkpoints with the rows. `kafka_runner` drives it from a
consumer group. Details: docs/kafka.md ("Consumers").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from banking_es.application.ports import ProjectionStatus
from banking_es.db.base import Connection, Database, DatabaseUnavailable
from banking_es.eventstore.base import EventStore, RecordedEvent, StoreUnavailable
from banking_es.messaging import dead_letters
from banking_es.messaging.kafka import decode_event
from banking_es.observability.tracing import span
from banking_es.projections.base import Projection

log = logging.getLogger(__name__)

#: The name under which this consumer keeps stream versions and dead letters.
CONSUMER = "projections"
TRANSIENT = (DatabaseUnavailable, StoreUnavailable)


@dataclass(frozen=True, slots=True)
class Message:
    """What the consumer needs of a Kafka record (also rebuilt from a dead letter)."""

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, str]


def message_of(record: Any) -> Message:
    return Message(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=(record.key or b"").decode(errors="replace"),
        value=record.value or b"",
        headers={k: v.decode(errors="replace") for k, v in (record.headers or ())},
    )


class KafkaProjectionApplier:
    """Applies event messages to the projections, exactly once (steps 1-4 of the module)."""

    def __init__(
        self, db: Database, store: EventStore, projections: Sequence[Projection], topic: str
    ) -> None:
        self._db = db
        self._store = store
        self._projections = list(projections)
        self.topic = topic

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._projections]

    @property
    def db(self) -> Database:
        return self._db

    async def apply_batch(
        self, partition: int, messages: Sequence[Message]
    ) -> tuple[list[Message], int]:
        """Apply one partition's messages in one transaction; return the parked ones and
        the number of duplicates dropped."""
        events = [decode_event(m.value) for m in messages]  # ValueError: a poison message
        async with self._db.transaction() as conn:
            blocked = await dead_letters.open_keys(conn, CONSUMER, [m.key for m in messages])
            parked: list[Message] = []
            ready: list[RecordedEvent] = []
            for message, event in zip(messages, events, strict=True):
                if message.key in blocked:
                    await dead_letters.add_letter(
                        conn,
                        consumer=CONSUMER,
                        topic=message.topic,
                        partition=message.partition,
                        offset=message.offset,
                        key=message.key,
                        value=message.value.decode(errors="replace"),
                        headers=message.headers,
                        error=f"parked behind dead letter {blocked[message.key]}",
                        attempts=0,
                    )
                    parked.append(message)
                else:
                    ready.append(event)
            duplicates = await self.apply_events(conn, ready)
            last = ready[-1].recorded_at if ready else None
            await self.write_checkpoints(conn, partition, messages[-1].offset, last)
        return parked, duplicates

    async def apply_events(self, conn: Connection, events: Sequence[RecordedEvent]) -> int:
        """Drop duplicates, fill gaps from the store, apply, and record the stream versions;
        return the number of duplicates dropped."""
        if not events:
            return 0
        streams = list(dict.fromkeys(e.stream_id for e in events))
        known: dict[str, int] = {}
        for stream in streams:
            value = await conn.fetchval(
                "SELECT version FROM kafka_stream_versions WHERE consumer = $1 AND stream_id = $2",
                CONSUMER,
                stream,
            )
            known[stream] = int(value) if value is not None else 0
        start = dict(known)
        todo: list[RecordedEvent] = []
        duplicates = 0
        for event in events:
            current = known[event.stream_id]
            if event.version <= current:
                duplicates += 1
                continue
            if event.version > current + 1:
                missing = await self._store.read_stream(
                    event.stream_id, current, to_version=event.version - 1
                )
                if len(missing) != event.version - 1 - current:
                    raise StoreUnavailable(
                        f"stream {event.stream_id}: versions {current + 1}..{event.version - 1}"
                        " are not readable yet"
                    )
                todo.extend(missing)
            todo.append(event)
            known[event.stream_id] = event.version
        if not todo:
            return duplicates
        for projection in self._projections:
            with span(f"projection {projection.name}", {"projection.events": len(todo)}):
                await projection.apply(conn, todo)
        for stream, version in known.items():
            if version != start[stream]:
                await self.set_version(conn, stream, version)
        return duplicates

    @staticmethod
    async def set_version(conn: Connection, stream: str, version: int) -> None:
        await conn.execute(
            "INSERT INTO kafka_stream_versions (consumer, stream_id, version) VALUES ($1, $2, $3)"
            " ON CONFLICT (consumer, stream_id) DO UPDATE SET version = excluded.version"
            " WHERE kafka_stream_versions.version < excluded.version",
            CONSUMER,
            stream,
            version,
        )

    async def write_checkpoints(
        self, conn: Connection, partition: int, offset: int, last: datetime | None
    ) -> None:
        now = datetime.now(UTC)
        for name in self.names:
            await conn.execute(
                'INSERT INTO kafka_checkpoints (projection, topic, partition, "offset",'
                " last_recorded_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)"
                ' ON CONFLICT (projection, topic, partition) DO UPDATE SET "offset" ='
                ' excluded."offset", last_recorded_at = coalesce(excluded.last_recorded_at,'
                " kafka_checkpoints.last_recorded_at), updated_at = excluded.updated_at",
                name,
                self.topic,
                partition,
                offset,
                last,
                now,
            )

    async def checkpoints(self) -> dict[int, int]:
        """The lowest checkpointed offset of each partition over the projections."""
        rows = await self._db.fetch(
            'SELECT partition, min("offset") AS offset FROM kafka_checkpoints'
            " WHERE topic = $1 GROUP BY partition",
            self.topic,
        )
        return {int(r["partition"]): int(r["offset"]) for r in rows}

    # ---- dead letters ---------------------------------------------------------------------

    async def apply_letter(self, conn: Connection, letter: dead_letters.DeadLetter) -> None:
        """Apply a dead letter's event now (a retry after a fix)."""
        await self.apply_events(conn, [decode_event(letter.value)])

    async def skip_letter(self, conn: Connection, letter: dead_letters.DeadLetter) -> None:
        """A discarded event counts as applied, so later versions of its stream go on."""
        try:
            event = decode_event(letter.value)
        except ValueError:
            return  # not an event: nothing to skip
        await self.set_version(conn, event.stream_id, event.version)

    def dead_letters(self) -> dead_letters.DeadLetters:
        return dead_letters.DeadLetters(self._db, self.apply_letter, self.skip_letter)

    async def status(self, store: EventStore, ends: dict[int, int]) -> list[ProjectionStatus]:
        """Lag per projection: events not yet published plus messages not yet applied, against
        `ends` (partition -> end offset)."""
        rows = await self.db.fetch(
            'SELECT projection, partition, "offset", updated_at FROM kafka_checkpoints'
            " WHERE topic = $1",
            self.topic,
        )
        stats = await store.outbox_stats()
        head = await store.head_position()
        now = datetime.now(UTC)
        backlog_age = (
            max(0.0, (now - stats.oldest_created_at).total_seconds())
            if stats.oldest_created_at is not None
            else 0.0
        )
        result = []
        for name in self.names:
            mine = {int(r["partition"]): r for r in rows if r["projection"] == name}
            lag = stats.backlog
            lag_seconds = backlog_age
            updated = [r["updated_at"] for r in mine.values()]
            for partition, end in ends.items():
                row = mine.get(partition)
                behind = end - (int(row["offset"]) + 1 if row is not None else 0)
                if behind > 0:
                    lag += behind
                    if row is not None:
                        since = (now - row["updated_at"]).total_seconds()
                        lag_seconds = max(lag_seconds, since)
            result.append(
                ProjectionStatus(
                    name=name,
                    position=head - lag if lag <= head else 0,
                    head=head,
                    lag_events=lag,
                    lag_seconds=lag_seconds,
                    updated_at=max(updated) if updated else None,
                )
            )
        return result
