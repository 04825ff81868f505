"""The SQL event store, shared by PostgreSQL and SQLite: reads, side rows and the batch's
failure handling. Each backend writes a batch in its own way (`_apply_batch`): SQLite plans
it with `plan_batch` in its write transaction, PostgreSQL in one call of a stored function.

Database errors become the store's errors (eventstore/base.py) in one place, `store_errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

import orjson

from banking_es.db.base import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    Row,
    UniqueViolation,
)
from banking_es.eventstore.base import (
    AppendRejected,
    AppendRequest,
    ConcurrencyError,
    EventRow,
    EventStoreError,
    IdempotencyRecord,
    OutboxEntry,
    OutboxStats,
    RecordedEvent,
    Snapshot,
    StoreUnavailable,
)
from banking_es.eventstore.batching import BatchOutcome, BatchPlan, GroupCommitter
from banking_es.observability.tracing import span

_GET_KEY = "SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2"
DELETE_KEY = "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2"
INSERT_KEY = (
    "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, created_at,"
    " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
_EVENT_COLUMNS = "position, stream_id, version, event_id, type, data, metadata, recorded_at"
#: The columns of an `EventRow`: the JSON columns as text, which the driver does not decode.
_ROW_COLUMNS = (
    "position, stream_id, version, event_id, type, CAST(data AS TEXT) AS data,"
    " CAST(metadata AS TEXT) AS metadata, recorded_at"
)


def row_to_event(row: Row) -> RecordedEvent:
    return RecordedEvent(
        position=row["position"],
        stream_id=row["stream_id"],
        version=row["version"],
        event_id=row["event_id"],
        type=row["type"],
        data=row["data"],
        metadata=row["metadata"],
        recorded_at=row["recorded_at"],
    )


def row_to_record(row: Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        scope=row["scope"],
        key=row["key"],
        fingerprint=row["fingerprint"],
        status=row["status"],
        body=row["body"].encode(),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def store_error(exc: DatabaseError, *, append: bool = False) -> EventStoreError:
    """The store's error for a database error: the database is away (or failed on its own)
    unless it refused an append's data, which is that append's fault."""
    if append and not isinstance(exc, DatabaseUnavailable):
        return AppendRejected(f"the database refused this append: {exc}")
    return StoreUnavailable(str(exc))


@contextmanager
def store_errors() -> Iterator[None]:
    """Raise database errors as the store's (`store_error`)."""
    try:
        yield
    except DatabaseError as exc:
        raise store_error(exc) from exc


class SqlEventStore:
    """Reads and the batch transaction; subclasses supply the dialect-specific SQL."""

    commit_concurrency = 1

    def __init__(
        self,
        db: Database,
        *,
        outbox_events: bool = True,
        batch_max_size: int = 500,
        batch_max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
        on_commit: Callable[[bool], object] | None = None,
        on_append: Callable[[AppendRequest, list[RecordedEvent]], None] | None = None,
        on_snapshot_load: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self._outbox_events = outbox_events
        #: Called after every committed batch that wrote events or outbox rows, with whether
        #: it wrote outbox rows (wakes the projection runners, and the relay when it has work).
        self.on_commit = on_commit
        #: Called after every successful append and snapshot load (metrics).
        self.on_append = on_append
        self.on_snapshot_load = on_snapshot_load
        self._committer = GroupCommitter(
            self._commit_batch,
            max_size=batch_max_size,
            max_wait_ms=batch_max_wait_ms,
            concurrency=self.commit_concurrency,
            on_batch=on_batch,
        )

    @property
    def queue_length(self) -> int:
        return self._committer.queue_length

    # ---- writes ---------------------------------------------------------------------

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        with span("eventstore.append", {"eventstore.streams": len(request.streams)}):
            recorded = await self._committer.submit(request)
        if self.on_append is not None:
            self.on_append(request, recorded)
        return recorded

    async def _commit_batch(
        self, requests: list[AppendRequest], *, replan: bool = True
    ) -> list[BatchOutcome]:
        try:
            plan = await self._apply_batch(requests)
        except UniqueViolation as exc:
            # Only reachable if a row was written outside the append lock (e.g. a concurrent
            # `save_idempotency` of the same key, or a duplicate event id): the constraint
            # decides. It rolled back the whole batch, so commit its appends again one at a
            # time: the conflict then fails only its own append, never its neighbours.
            if replan:
                return [await self._commit_alone(request) for request in requests]
            first = requests[0].streams[0] if requests and requests[0].streams else None
            raise ConcurrencyError(first.stream_id if first else "?", -1, -1) from exc
        except DatabaseUnavailable as exc:
            raise store_error(exc) from exc
        except (DatabaseError, TypeError, ValueError) as exc:
            # The data of some append could not be stored or serialized: find which one,
            # the others must not fail with it.
            if replan and len(requests) > 1:
                return [await self._commit_alone(request) for request in requests]
            if isinstance(exc, DatabaseError):
                raise store_error(exc, append=True) from exc
            raise AppendRejected(f"the database refused this append: {exc}") from exc
        if self.on_commit is not None and (plan.events or plan.wrote_outbox):
            self.on_commit(plan.wrote_outbox)
        return plan.outcomes

    async def _apply_batch(self, requests: list[AppendRequest]) -> BatchPlan:
        """Write the batch in one locked transaction; the outcome of each of its appends."""
        raise NotImplementedError

    async def _commit_alone(self, request: AppendRequest) -> BatchOutcome:
        try:
            [outcome] = await self._commit_batch([request], replan=False)
        except EventStoreError as exc:
            return exc
        return outcome

    async def save_idempotency(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        with store_errors():
            try:
                async with self.db.transaction() as conn:
                    row = await conn.fetchrow(_GET_KEY, record.scope, record.key)
                    if row is not None:
                        existing = row_to_record(row)
                        if existing.expires_at > record.created_at:
                            return existing
                        await conn.execute(DELETE_KEY, record.scope, record.key)
                    await conn.execute(
                        INSERT_KEY,
                        record.scope,
                        record.key,
                        record.fingerprint,
                        record.status,
                        record.body.decode(),
                        record.created_at,
                        record.expires_at,
                    )
                    return None
            except UniqueViolation:
                # A concurrent writer stored the same key first: theirs is the outcome.
                row = await self.db.fetchrow(_GET_KEY, record.scope, record.key)
                return row_to_record(row) if row else None

    async def purge_idempotency(self, now: datetime) -> int:
        with store_errors():
            async with self.db.transaction() as conn:
                count = await conn.fetchval(
                    "SELECT count(*) FROM idempotency_keys WHERE expires_at <= $1", now
                )
                await conn.execute("DELETE FROM idempotency_keys WHERE expires_at <= $1", now)
        return int(count or 0)

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        with store_errors():
            async with self.db.transaction() as conn:
                await conn.executemany(
                    "UPDATE outbox SET published_at = $1 WHERE id = $2", [(at, i) for i in ids]
                )

    # ---- reads ----------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        after_version: int = 0,
        *,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = $1 AND version > $2"
        args: list[Any] = [stream_id, after_version]
        if to_version is not None:
            args.append(to_version)
            sql += f" AND version <= ${len(args)}"
        if recorded_until is not None:
            args.append(recorded_until)
            sql += f" AND recorded_at <= ${len(args)}"
        sql += " ORDER BY version"
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        return [row_to_event(r) for r in await self._read(sql, *args)]

    async def read_all(
        self, after_position: int, limit: int, types: Sequence[str] | None = None
    ) -> list[RecordedEvent]:
        if types:
            marks = ", ".join(f"${i + 3}" for i in range(len(types)))
            sql = (
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > $1 AND type IN ({marks})"
                " ORDER BY position LIMIT $2"
            )
            rows = await self._read(sql, after_position, limit, *types)
        else:
            rows = await self._read(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > $1"
                " ORDER BY position LIMIT $2",
                after_position,
                limit,
            )
        return [row_to_event(r) for r in rows]

    async def read_rows(self, after_position: int, limit: int) -> list[EventRow]:
        rows = await self._read(
            f"SELECT {_ROW_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            after_position,
            limit,
        )
        return cast(list[EventRow], [tuple(r.values()) for r in rows])

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        rows = await self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE event_id = $1", event_id
        )
        return row_to_event(rows[0]) if rows else None

    async def head_position(self) -> int:
        rows = await self._read("SELECT max(position) AS head FROM events")
        return int(rows[0]["head"] or 0)

    async def latest_snapshot(
        self, stream_id: str, max_version: int | None = None
    ) -> Snapshot | None:
        rows = await self._read(
            "SELECT stream_id, version, state FROM snapshots WHERE stream_id = $1"
            " AND version <= $2 ORDER BY version DESC LIMIT 1",
            stream_id,
            max_version if max_version is not None else 2**31 - 1,
        )
        if not rows:
            return None
        row = rows[0]
        if self.on_snapshot_load is not None:
            self.on_snapshot_load()
        return Snapshot(row["stream_id"], row["version"], row["state"])

    async def get_idempotency(
        self, scope: str, key: str, now: datetime
    ) -> IdempotencyRecord | None:
        rows = await self._read(
            "SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2 AND expires_at > $3",
            scope,
            key,
            now,
        )
        return row_to_record(rows[0]) if rows else None

    async def outbox_pending(self, limit: int) -> list[OutboxEntry]:
        rows = await self._read(
            "SELECT o.id, o.topic, o.key, o.payload, o.created_at,"
            " e.position, e.stream_id, e.version, e.event_id, e.type, e.data, e.metadata,"
            " e.recorded_at"
            " FROM outbox o LEFT JOIN events e ON e.position = o.event_position"
            " WHERE o.published_at IS NULL ORDER BY o.id LIMIT $1",
            limit,
        )
        return [
            OutboxEntry(
                id=r["id"],
                topic=r["topic"],
                key=r["key"],
                payload=r["payload"],
                event=row_to_event(r) if r["position"] is not None else None,
                created_at=r["created_at"],
            )
            for r in rows
        ]

    async def outbox_stats(self) -> OutboxStats:
        rows = await self._read(
            "SELECT count(*) AS backlog, min(created_at) AS oldest FROM outbox"
            " WHERE published_at IS NULL"
        )
        oldest = rows[0]["oldest"]
        if isinstance(oldest, str):  # SQLite: an aggregate has no declared type
            oldest = datetime.fromisoformat(oldest)
        return OutboxStats(int(rows[0]["backlog"]), oldest)

    async def ping(self) -> None:
        await self._read("SELECT 1 AS ok")

    async def close(self) -> None:
        await self._committer.drain()

    async def _read(self, sql: str, *args: Any) -> list[Row]:
        with store_errors():
            return await self.db.fetch(sql, *args)
