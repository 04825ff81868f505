"""SQLite event store: `BEGIN IMMEDIATE` serializes batches across threads and processes.

Inside the write transaction it reads the head, the versions of the batch's streams, its
idempotency keys and the epochs of the shards its fences name, lets `plan_batch` decide each
append, and writes the plan.
"""

from __future__ import annotations

from datetime import UTC, datetime

from banking_es.db.base import Connection
from banking_es.eventstore.base import AppendRequest, IdempotencyRecord
from banking_es.eventstore.batching import (
    BatchPlan,
    plan_batch,
    touched_keys,
    touched_shards,
    touched_streams,
)
from banking_es.eventstore.sql import (
    DELETE_KEY,
    INSERT_KEY,
    SqlEventStore,
    dumps,
    row_to_record,
)


class SqliteEventStore(SqlEventStore):
    """Events in an SQLite file; the write transaction itself is the lock."""

    async def _apply_batch(self, requests: list[AppendRequest]) -> BatchPlan:
        async with self.db.transaction() as conn:  # BEGIN IMMEDIATE: the lock
            head = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            versions: dict[str, int] = {}
            for stream in touched_streams(requests):
                version = await conn.fetchval(
                    "SELECT max(version) FROM events WHERE stream_id = $1", stream
                )
                if version is not None:
                    versions[stream] = int(version)
            existing: dict[tuple[str, str], IdempotencyRecord] = {}
            for scope, key in touched_keys(requests):
                row = await conn.fetchrow(
                    "SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2", scope, key
                )
                if row is not None:
                    existing[(scope, key)] = row_to_record(row)
            epochs: dict[int, int] = {}
            for shard in touched_shards(requests):  # under the write lock, as the claims are
                epoch = await conn.fetchval(
                    "SELECT epoch FROM shard_leases WHERE shard = $1", shard
                )
                if epoch is not None:
                    epochs[shard] = int(epoch)
            plan = plan_batch(
                requests,
                head=int(head),
                now=datetime.now(UTC),
                versions=versions,
                existing_keys=existing,
                outbox_events=self._outbox_events,
                epochs=epochs,
            )
            await self._write(conn, plan)
        return plan

    async def _write(self, conn: Connection, plan: BatchPlan) -> None:
        if not (plan.events or plan.idempotency or plan.snapshots or plan.outbox):
            return  # every append refused
        await conn.executemany(
            "INSERT INTO events (position, stream_id, version, event_id, type, data, metadata,"
            " recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (e.position, e.stream_id, e.version, e.event_id, e.type, dumps(e.data),
                 dumps(e.metadata), e.recorded_at)
                for e in plan.events
            ],
        )  # fmt: skip
        for scope, key in plan.replaced_keys:
            await conn.execute(DELETE_KEY, scope, key)
        await conn.executemany(
            INSERT_KEY,
            [
                (r.scope, r.key, r.fingerprint, r.status, r.body.decode(), r.created_at,
                 r.expires_at)
                for r in plan.idempotency
            ],
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO snapshots (stream_id, version, state) VALUES ($1, $2, $3)"
            " ON CONFLICT (stream_id, version) DO NOTHING",
            [(s.stream_id, s.version, dumps(s.state)) for s in plan.snapshots],
        )
        if plan.outbox:
            await self._insert_outbox(conn, plan)

    async def _insert_outbox(self, conn: Connection, plan: BatchPlan) -> None:
        created = plan.events[0].recorded_at if plan.events else datetime.now(UTC)
        await conn.executemany(
            "INSERT INTO outbox (topic, key, payload, event_position, created_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            [
                (o.topic, o.key, dumps(o.payload) if o.payload is not None else None,
                 o.event_position, created)
                for o in plan.outbox
            ],
        )  # fmt: skip
