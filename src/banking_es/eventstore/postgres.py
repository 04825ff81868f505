"""PostgreSQL event store: batches serialized by a transaction-level advisory lock.

The lock is what makes the global position safe to tail: a sequence value is taken at
insert but becomes visible at commit, so without it a reader could pass a position
whose transaction commits later. Batching amortises the lock over many appends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from banking_es.db.base import Connection
from banking_es.eventstore.base import RecordedEvent
from banking_es.eventstore.sql import SqlEventStore, dumps

APPEND_LOCK_KEY = 7_245_301_002


class PostgresEventStore(SqlEventStore):
    """Events in PostgreSQL; each batch is a few statements in one locked transaction."""

    commit_concurrency = 2  # the next batch is gathered while one waits for the lock

    async def _lock(self, conn: Connection) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", APPEND_LOCK_KEY)

    async def _head_and_now(self, conn: Connection) -> tuple[int, datetime]:
        row = await conn.fetchrow(
            "SELECT coalesce(max(position), 0) AS head, clock_timestamp() AS now FROM events"
        )
        assert row is not None
        return int(row["head"]), row["now"]

    async def _now(self, conn: Connection) -> datetime:
        value: datetime = await conn.fetchval("SELECT clock_timestamp()")
        return value

    async def _current_versions(self, conn: Connection, streams: list[str]) -> dict[str, int]:
        if not streams:
            return {}
        rows = await conn.fetch(
            "SELECT s.id AS stream_id,"
            " (SELECT e.version FROM events e WHERE e.stream_id = s.id"
            "  ORDER BY e.version DESC LIMIT 1) AS version"
            " FROM unnest($1::text[]) AS s(id)",
            streams,
        )
        return {r["stream_id"]: r["version"] for r in rows if r["version"] is not None}

    async def _insert_events(self, conn: Connection, events: list[RecordedEvent]) -> None:
        columns: list[list[Any]] = [[], [], [], [], [], [], []]
        for e in events:
            columns[0].append(e.position)
            columns[1].append(e.stream_id)
            columns[2].append(e.version)
            columns[3].append(e.event_id)
            columns[4].append(e.type)
            columns[5].append(dumps(e.data))
            columns[6].append(dumps(e.metadata))
        await conn.execute(
            "INSERT INTO events (position, stream_id, version, event_id, type, data, metadata,"
            " recorded_at)"
            " SELECT p, s, v, i, t, d::jsonb, m::jsonb, $8 FROM unnest("
            "$1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[], $7::text[]"
            ") AS u(p, s, v, i, t, d, m)",
            *columns,
            events[0].recorded_at,
        )
