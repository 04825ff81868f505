"""PostgreSQL event store: every batch of appends is one call of a stored function.

`banking_es_append_batch_v3` (migrations/postgres/0015, over 0009's v2) takes a
transaction-level advisory lock, reads the head, the clock, each stream's version and each
fenced shard's epoch, refuses the appends whose streams are not at the versions they expect
or whose shards moved to another epoch, and writes the others' events, outbox rows,
snapshots and stream notices. The lock makes the global position safe to tail; it is never
held across a round trip of a batch without idempotency records. Those are stored by one
more statement in the call's transaction.
docs/architecture.md describes the batch, docs/performance.md why it is so.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import orjson

from banking_es.db.base import Connection, UniqueViolation
from banking_es.eventstore.base import (
    EVENTS_TOPIC,
    AppendRequest,
    ConcurrencyError,
    EventStoreError,
    FencedOut,
    IdempotencyKeyExists,
    RecordedEvent,
    StreamAppend,
)
from banking_es.eventstore.batching import BatchPlan, Grouper
from banking_es.eventstore.notices import STREAMS_CHANNEL, NoticeBodies, notice_entries
from banking_es.eventstore.sql import (
    SqlEventStore,
    row_to_event,
    row_to_record,
    store_errors,
)

if TYPE_CHECKING:
    from banking_es.db.postgres import PostgresDatabase

APPEND_LOCK_KEY = 7_245_301_002

#: Under load, how long a group of stream reads waits for more before its query is sent
#: (docs/performance.md). A read's snapshot is only taken later by it, never earlier.
READ_WAIT_MS = 1.0

_READ_MANY = (  # LATERAL: one index scan per read, never a scan of the events table
    # The reads come as one JSON array of [stream, after version] (see `_array_of_json`).
    "SELECT q.i, e.* FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS q(r, i)"
    " CROSS JOIN LATERAL (SELECT position, stream_id, version, event_id, type, data, metadata,"
    " recorded_at FROM events WHERE stream_id = q.r->>0 AND version > (q.r->>1)::int"
    " ORDER BY version) e"
    " ORDER BY q.i, e.version"
)


def _array_of_json(placeholder: int, cast: str = "") -> str:
    """The array of the JSON array bound to `$placeholder`, in its order: the driver encodes
    one JSON string far faster than an array parameter (docs/performance.md)."""
    return (
        f"ARRAY(SELECT x{cast} FROM json_array_elements_text(${placeholder}::json)"
        " WITH ORDINALITY AS t(x, i) ORDER BY i)"
    )


#: One call of the batch function (module docstring); its answer arrives after the commit
#: when it runs alone, so an answer is a durable write.
_APPEND_BATCH = (
    "SELECT o_head AS head, o_now AS now, o_actual AS actual, o_fenced AS fenced"
    f" FROM banking_es_append_batch_v3($1, {_array_of_json(2)}, {_array_of_json(3, '::int')},"
    f" {_array_of_json(4, '::int')}, $5::jsonb, $6::jsonb, $7::jsonb, $8, $9::text[],"
    " $10::jsonb, $11, $12::jsonb)"
)

#: The written appends' idempotency records, in the function's transaction. An expired
#: record is replaced; a key whose record has not expired is left out of the answer (its
#: append is then refused).
_STORE_RECORDS = (
    "INSERT INTO idempotency_keys AS k"
    " (scope, key, fingerprint, status, body, created_at, expires_at)"
    " SELECT DISTINCT ON (x.r->>0, x.r->>1) x.r->>0, x.r->>1, x.r->>2, (x.r->>3)::int,"
    " x.r->>4, (x.r->>5)::timestamptz, (x.r->>6)::timestamptz"
    " FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS x(r, o)"
    " ORDER BY x.r->>0, x.r->>1, x.o"
    " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,"
    " status = excluded.status, body = excluded.body, created_at = excluded.created_at,"
    " expires_at = excluded.expires_at WHERE k.expires_at <= $2"
    " RETURNING k.scope, k.key"
)


class PostgresEventStore(SqlEventStore):
    """Events in PostgreSQL; each batch is one call of the batch function (module
    docstring)."""

    #: Batches in flight at the append lock, over all the processes of a server: while one
    #: holds the lock the next is ready behind it (docs/performance.md).
    LOCK_QUEUE = 2

    def __init__(self, *args: Any, processes: int = 1, **kwargs: Any) -> None:
        """`processes`: how many processes of the server append to this database (its
        `WORKERS`); each keeps its share of `LOCK_QUEUE` batches in flight, at least one."""
        self.commit_concurrency = math.ceil(self.LOCK_QUEUE / processes)
        super().__init__(*args, **kwargs)
        #: Names this process in its notices, so it can skip its own.
        self.origin = uuid.uuid4().hex[:12]
        #: Group reads: concurrent "events of S after version V" share one query (below).
        self._reader: Grouper[tuple[str, int], list[RecordedEvent]] = Grouper(
            self._read_many, max_wait_ms=READ_WAIT_MS, concurrency=2
        )

    async def read_stream(
        self,
        stream_id: str,
        after_version: int = 0,
        *,
        to_version: int | None = None,
        recorded_until: datetime | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        # Reads of a stream's new events come in crowds under load and share a query as
        # appends share a transaction; a read is queued before the query that answers it
        # is sent, so it sees every write committed before it began.
        if to_version is None and recorded_until is None and limit is None:
            return await self._reader.submit((stream_id, after_version))
        return await super().read_stream(
            stream_id,
            after_version,
            to_version=to_version,
            recorded_until=recorded_until,
            limit=limit,
        )

    async def _read_many(self, reads: Sequence[tuple[str, int]]) -> list[list[RecordedEvent]]:
        if len(reads) == 1:
            return [await super().read_stream(*reads[0])]
        rows = await self._read(_READ_MANY, orjson.dumps(reads).decode())
        answers: list[list[RecordedEvent]] = [[] for _ in reads]
        for row in rows:
            answers[row["i"] - 1].append(row_to_event(row))
        return answers

    async def _apply_batch(self, requests: list[AppendRequest]) -> BatchPlan:
        db = cast("PostgresDatabase", self.db)
        calls = [BatchCall.of(run, self._outbox_events) for run in _runs(requests)]  # unlocked
        keyed = any(r.idempotency for r in requests)
        plan = BatchPlan()
        now: datetime | None = None
        # One call alone is its own transaction; several calls, or idempotency records, share
        # one, so a failure writes nothing and every append can be retried.
        single = len(calls) == 1 and not keyed
        async with db.connection() if single else db.transaction() as conn:
            for call in calls:
                row = await conn.fetchrow(
                    _APPEND_BATCH, APPEND_LOCK_KEY, *call.arguments(self.origin)
                )
                assert row is not None
                now = row["now"]
                call.answer(plan, int(row["head"]), now, row["actual"], row["fenced"])
            if keyed and now is not None:
                await self._store_records(conn, requests, plan, now)
        return plan

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        with store_errors():  # one statement for the relay's whole batch
            await self.db.execute(
                "UPDATE outbox SET published_at = $1 WHERE id = ANY($2::bigint[])", at, list(ids)
            )

    async def _store_records(
        self, conn: Connection, requests: list[AppendRequest], plan: BatchPlan, now: datetime
    ) -> None:
        """Store the written appends' idempotency records; a key held by an unexpired record
        refuses its append."""
        records = [
            r
            for request, outcome in zip(requests, plan.outcomes, strict=True)
            if isinstance(outcome, list)
            for r in request.idempotency
        ]
        if not records:
            return  # every append refused
        rows = await conn.fetch(
            _STORE_RECORDS,
            orjson.dumps(
                [[r.scope, r.key, r.fingerprint, r.status, r.body.decode(), r.created_at,
                  r.expires_at] for r in records]
            ).decode(),
            now,
        )  # fmt: skip
        stored = {(row["scope"], row["key"]) for row in rows}
        taken: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for r in records:  # held by an unexpired record, or earlier in the batch
            if (r.scope, r.key) not in stored or (r.scope, r.key) in seen:
                taken.append((r.scope, r.key))
            seen.add((r.scope, r.key))
        if taken:
            row = None
            if len(requests) == 1:
                row = await conn.fetchrow(
                    "SELECT * FROM idempotency_keys WHERE scope = $1 AND key = $2", *taken[0]
                )
            if row is None:
                # Which append holds it is decided one append at a time (`_commit_batch`).
                raise UniqueViolation("an idempotency key of the batch is taken")
            raise IdempotencyKeyExists(row_to_record(row))


def _runs(requests: list[AppendRequest]) -> list[list[AppendRequest]]:
    """The batch cut into runs in which no stream is in two appends, one call each: the
    function decides every append of a call on the versions read before any is written."""
    runs: list[list[AppendRequest]] = [[]]
    seen: set[str] = set()
    for request in requests:
        streams = {s.stream_id for s in request.streams}
        if not seen.isdisjoint(streams):
            runs.append([])
            seen = set()
        runs[-1].append(request)
        seen |= streams
    return runs


class BatchCall:
    """One call of the batch function: its arguments, prepared before the lock is taken,
    and the outcome of each append once it has answered.

    Every stream is in one append of the call, so the function refuses exactly the appends
    one of whose streams is not at the version it expects, and numbers the others' events
    head + 1, head + 2, ... in batch order.
    """

    __slots__ = (
        "_appends", "_events", "_fences", "_notices", "_outbox", "_refused", "_requests",
        "_snapshots", "expected",
    )  # fmt: skip

    def __init__(self, requests: Sequence[AppendRequest]) -> None:
        self._requests = requests
        #: The version each stream must be at; its order is that of the function's answer.
        self.expected: dict[str, int] = {}
        #: The append (1-based, in the call) of each stream of `expected`.
        self._appends: list[int] = []
        self._events: list[list[Any]] = []
        self._outbox: list[list[Any]] = []
        self._snapshots: list[list[Any]] = []
        #: [append, shard, epoch] of each fenced append of the call.
        self._fences: list[list[int]] = []
        self._notices = NoticeBodies([], [])
        #: Appends refused before the call: a stream of them does not continue itself.
        self._refused: dict[int, ConcurrencyError] = {}

    @classmethod
    def of(cls, requests: Sequence[AppendRequest], outbox_events: bool) -> BatchCall:
        call = cls(requests)
        appended: dict[str, list[list[Any]]] = {}
        for index, request in enumerate(requests, start=1):
            ahead: dict[str, int] = {}  # the version each stream reaches within this append
            for stream in request.streams:
                reached = ahead.get(stream.stream_id)
                if reached is not None and reached != stream.expected_version:
                    call._refused[index] = ConcurrencyError(
                        stream.stream_id, stream.expected_version, reached
                    )
                ahead[stream.stream_id] = stream.expected_version + len(stream.events)
            if index not in call._refused:
                call._add(index, request, appended, outbox_events)
        call._notices = NoticeBodies.of(notice_entries(appended))
        return call

    def _add(
        self,
        index: int,
        request: AppendRequest,
        appended: dict[str, list[list[Any]]],
        outbox_events: bool,
    ) -> None:
        if request.fence is not None:
            self._fences.append([index, request.fence.shard, request.fence.epoch])
        for stream in request.streams:
            sid, version = stream.stream_id, stream.expected_version
            if sid not in self.expected:
                self.expected[sid] = version
                self._appends.append(index)
                appended[sid] = []
            snapshot = stream.snapshot
            if snapshot is not None:
                self._snapshots.append([sid, snapshot.version, snapshot.state, index])
            for event in stream.events:
                version += 1
                row = [sid, version, event.event_id, event.type, event.data, event.metadata]
                self._events.append(row)
                if outbox_events:
                    self._outbox.append([EVENTS_TOPIC, sid, None, len(self._events), index])
                appended[sid].append(row[1:])
        for message in request.messages:
            self._outbox.append([message.topic, message.key, message.payload, None, index])

    def arguments(self, origin: str) -> tuple[Any, ...]:
        """The function's arguments after the lock key (`_APPEND_BATCH`)."""
        return (
            orjson.dumps(list(self.expected)).decode(),
            orjson.dumps(list(self.expected.values())).decode(),
            orjson.dumps(self._appends).decode(),
            orjson.dumps(self._events).decode(),
            orjson.dumps(self._outbox).decode(),
            orjson.dumps(self._snapshots).decode(),
            origin,
            self._notices.bodies,
            orjson.dumps(self._notices.entries).decode(),
            STREAMS_CHANNEL,
            orjson.dumps(self._fences).decode(),
        )

    def answer(
        self,
        plan: BatchPlan,
        head: int,
        now: datetime,
        actual: Sequence[int],
        fenced: Sequence[int] = (),
    ) -> None:
        """Add the outcome of each of the call's appends to `plan`, from the function's
        answer (`actual`: the versions it read, in the order of `expected`; `fenced`: the
        appends refused for their shard's epoch)."""
        refused: dict[int, EventStoreError] = dict(self._refused)
        for index in fenced:
            fence = self._requests[index - 1].fence
            assert fence is not None
            refused[index] = FencedOut(fence.shard, fence.epoch)
        for (stream_id, expected), found, index in zip(
            self.expected.items(), actual, self._appends, strict=True
        ):
            if found != expected and index not in refused:  # the append's first such stream
                refused[index] = ConcurrencyError(stream_id, expected, found)
        position = head
        for index, request in enumerate(self._requests, start=1):
            failure = refused.get(index)
            if failure is not None:
                plan.outcomes.append(failure)
                continue
            recorded: list[RecordedEvent] = []
            for stream in request.streams:
                recorded += _recorded(stream, position + len(recorded), now)
            position += len(recorded)
            plan.events += recorded
            plan.outcomes.append(recorded)
        plan.wrote_outbox |= any(row[4] not in refused for row in self._outbox)


def _recorded(stream: StreamAppend, head: int, now: datetime) -> list[RecordedEvent]:
    """The stream's new events as recorded at `now`, the first at position `head + 1`."""
    sid, version = stream.stream_id, stream.expected_version
    return [  # positional: cheaper for a frozen dataclass
        RecordedEvent(head + i, sid, version + i, e.event_id, e.type, e.data, e.metadata, now)
        for i, e in enumerate(stream.events, start=1)
    ]
