"""SQLite event store: `BEGIN IMMEDIATE` serializes batches across threads and processes."""

from __future__ import annotations

from datetime import UTC, datetime

from banking_es.db.base import Connection
from banking_es.eventstore.base import RecordedEvent
from banking_es.eventstore.sql import SqlEventStore, dumps


class SqliteEventStore(SqlEventStore):
    """Events in an SQLite file; the write transaction itself is the lock."""

    async def _lock(self, conn: Connection) -> None:
        return None  # SqliteDatabase.transaction() already began IMMEDIATE

    async def _head_and_now(self, conn: Connection) -> tuple[int, datetime]:
        head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
        return int(head), datetime.now(UTC)

    async def _now(self, conn: Connection) -> datetime:
        return datetime.now(UTC)

    async def _current_versions(self, conn: Connection, streams: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for stream in streams:
            version = await conn.fetchval(
                "SELECT max(version) FROM events WHERE stream_id = $1", stream
            )
            if version is not None:
                found[stream] = int(version)
        return found

    async def _insert_events(self, conn: Connection, events: list[RecordedEvent]) -> None:
        await conn.executemany(
            "INSERT INTO events (position, stream_id, version, event_id, type, data, metadata,"
            " recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (
                    e.position,
                    e.stream_id,
                    e.version,
                    e.event_id,
                    e.type,
                    dumps(e.data),
                    dumps(e.metadata),
                    e.recorded_at,
                )
                for e in events
            ],
        )
