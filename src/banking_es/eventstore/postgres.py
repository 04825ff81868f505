"""PostgreSQL event store: batches serialized by a transaction-level advisory lock.

The lock is what makes the global position safe to tail: a sequence value is taken at
insert but becomes visible at commit, so without it a reader could pass a position
whose transaction commits later. Batching amortises the lock over many appends.

The common batch (no idempotency records, no snapshot rendered from the recorded events)
is ONE statement, outside any transaction block, so one round trip and one implicit
transaction: the function `banking_es_append_batch_v2` (migrations/postgres/
0009_append_batch_notice_bodies.sql) takes the lock, reads the head position, the clock
and the current version of every stream of the batch (each query of a VOLATILE function
takes a fresh snapshot, so these see every batch committed before the lock was granted),
refuses each append one of whose streams is not at the version it expects, and writes the
others: their events, outbox rows, snapshots and notice entries. The rows travel as one
JSON array per table, prepared before the lock (`Guess`): one `orjson` call for the
client, and no more work than `COPY` for the server; the notices' bodies come joined
(`NoticeBodies`), so the server only adds their heads. asyncpg hands back the answer after
the commit, so the lock is held only while the server works, never across a round trip,
also when another process has moved a stream (a refused append is retried by its caller).

Otherwise (the batch carries idempotency records, whose stored outcomes must be looked up
and rendered, or a snapshot rendered from the recorded events) the batch takes four round
trips (docs/performance.md):

1. `BEGIN; SELECT pg_advisory_xact_lock(...)` in one simple-protocol message;
2. one query for the head position, the clock and the current version of every stream
   (its snapshot is taken after the lock is held, so it sees every batch committed before;
   that is why the lock cannot share a statement with it), plus one for the idempotency
   keys when the batch carries any; `plan_batch` then decides each append on its own (a
   conflict fails only that append);
3. one statement that writes the events, outbox rows, snapshots and idempotency records
   (data-modifying CTEs) and the notices;
4. `COMMIT`.

The notices (at most `NOTICE_BYTES` each, see `stream_notices`) carry the new events of
every stream of the batch (or only its new version when they do not fit), so the other
processes of the service bring their cached copies forward without a query, or mark them
as behind (`eventstore/stream_notices.py`) and read the few new events before their next
command, instead of failing its append on a version conflict. They only save work: a
process that misses one still appends safely (the version check), it just conflicts once.
They carry no global positions (their readers fold events into account states, which
need none), so the statement can leave out the entries of the appends it refuses without
renumbering the others.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import orjson

from banking_es.db.base import Connection, DatabaseError, DatabaseUnavailable
from banking_es.eventstore.base import (
    EVENTS_TOPIC,
    AppendRequest,
    ConcurrencyError,
    IdempotencyRecord,
    MovedEvent,
    RecordedEvent,
    StoreUnavailable,
    StreamAppend,
    StreamMoved,
)
from banking_es.eventstore.batching import (
    BatchPlan,
    Grouper,
    touched_keys,
    touched_streams,
)
from banking_es.eventstore.sql import SqlEventStore, body_text, dumps, row_to_event, row_to_record

if TYPE_CHECKING:
    from banking_es.db.postgres import _PgConnection

APPEND_LOCK_KEY = 7_245_301_002
#: The channel of "these streams moved" notices (see the module docstring).
STREAMS_CHANNEL = "banking_es_streams"
#: PostgreSQL refuses notify payloads of 8,000 bytes or more.
NOTICE_BYTES = 7_000

#: Under load (the last group of reads had more than one), how long a group of stream reads
#: waits for more before its query is sent. Measured in the mixed bench row: without the
#: wait two or three `GET`s shared a query; with 1 ms the workers spent about a quarter less
#: CPU per request and PostgreSQL a third less (2 ms was no better). A read waits at most
#: this much longer, and its query's snapshot is only taken later, never earlier.
READ_WAIT_MS = 1.0

_BEGIN_AND_LOCK = f"BEGIN; SELECT pg_advisory_xact_lock({APPEND_LOCK_KEY})"

_STATE = (
    "SELECT h.head, h.now, s.id AS stream_id,"
    " (SELECT e.version FROM events e WHERE e.stream_id = s.id"
    "  ORDER BY e.version DESC LIMIT 1) AS version"
    " FROM (SELECT coalesce(max(position), 0) AS head, clock_timestamp() AS now FROM events) h"
    " LEFT JOIN unnest($1::text[]) AS s(id) ON true"
)

_KEYS = (
    "SELECT k.* FROM idempotency_keys k"
    " JOIN unnest($1::text[], $2::text[]) AS u(scope, key)"
    " ON k.scope = u.scope AND k.key = u.key"
)

_READ_MANY = (  # LATERAL: one index scan per read, never a scan of the events table
    # The reads come as one JSON array of [stream, after version]: cheaper for the driver
    # than an array per column (see `_array_of_json`).
    "SELECT q.i, e.* FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS q(r, i)"
    " CROSS JOIN LATERAL (SELECT position, stream_id, version, event_id, type, data, metadata,"
    " recorded_at FROM events WHERE stream_id = q.r->>0 AND version > (q.r->>1)::int"
    " ORDER BY version) e"
    " ORDER BY q.i, e.version"
)

_WRITE = (  # the events and outbox rows come as one JSON array each (see `_write_all`)
    "WITH ev AS ("
    " INSERT INTO events (position, stream_id, version, event_id, type, data, metadata,"
    " recorded_at)"
    " SELECT (r->>0)::bigint, r->>1, (r->>2)::int, r->>3, r->>4, r->5, r->6, $2"
    " FROM jsonb_array_elements($1::jsonb) AS r),"
    " ob AS ("
    " INSERT INTO outbox (topic, key, payload, event_position, created_at)"
    " SELECT r->>0, r->>1, nullif(r->2, 'null'::jsonb), (r->>3)::bigint, $2"
    " FROM jsonb_array_elements($3::jsonb) AS r),"
    " sn AS ("
    " INSERT INTO snapshots (stream_id, version, state)"
    " SELECT s, v, d::jsonb FROM unnest($4::text[], $5::int[], $6::text[]) AS u(s, v, d)"
    " ON CONFLICT (stream_id, version) DO NOTHING),"
    " ik AS ("
    " INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, created_at,"
    " expires_at)"
    " SELECT * FROM unnest($7::text[], $8::text[], $9::text[], $10::int[], $11::text[],"
    " $12::timestamptz[], $13::timestamptz[]))"
    f" SELECT pg_notify('{STREAMS_CHANNEL}', n) FROM unnest($14::text[]) AS n"
)


def _array_of_json(placeholder: int, cast: str = "") -> str:
    """The array of the JSON array (of strings or numbers) bound to `$placeholder`, in its
    order. asyncpg encodes a `text[]` or `int[]` parameter at 0.5-0.9 us per element (each
    is checked against three abstract base classes); orjson writes the JSON in a few
    nanoseconds, and the server turns it into the array before the function takes the lock."""
    return (
        f"ARRAY(SELECT x{cast} FROM json_array_elements_text(${placeholder}::json)"
        " WITH ORDINALITY AS t(x, i) ORDER BY i)"
    )


#: The common batch, with no planning in between (`Guess`): one statement, outside any
#: transaction block, so one round trip and one implicit transaction. The function
#: (migrations/postgres/0009_append_batch_notice_bodies.sql) takes the lock, reads the head, the
#: clock and the version of every stream with a snapshot taken after the lock is granted,
#: refuses the appends whose streams are not at the versions they expect and writes the
#: others (positions head + 1, head + 2, ... in batch order), their outbox rows, snapshots
#: and notices (their bodies ready, `NoticeBodies`). The result arrives after the commit
#: (asyncpg waits for ReadyForQuery), so an answer is a durable write.
_APPEND_BATCH = (
    "SELECT o_head AS head, o_now AS now, o_actual AS actual, o_refused AS refused"
    f" FROM banking_es_append_batch_v2($1, {_array_of_json(2)}, {_array_of_json(3, '::int')},"
    f" {_array_of_json(4, '::int')}, $5::jsonb, $6::jsonb, $7::jsonb, $8, $9::text[],"
    " $10::jsonb, $11)"
)


class PostgresEventStore(SqlEventStore):
    """Events in PostgreSQL; the common batch is one statement, one round trip (module
    docstring)."""

    #: Batches in flight at the append lock, over all the processes of a server: while one
    #: holds the lock the next is there, ready, so the lock is never idle between commits.
    #: Alone, a process keeps two in flight; one of each of two processes is enough, and a
    #: second of the same process would only wait at the lock while more appends queue
    #: behind it. Measured (docs/performance.md, sixth round): with WORKERS=2, one batch in
    #: flight per worker made batches larger and a deposit cheaper than two.
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
        # Every `GET /accounts/{id}` reads the events after its cached copy (it must reflect
        # every write acknowledged before it began), and so does a command whose copy is
        # behind: under load they come in crowds, and share a query as appends share a
        # transaction. A read is queued before the query that answers it is sent, so that
        # query's snapshot sees every write committed before the read began.
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
        from banking_es.db.postgres import PostgresDatabase

        db = cast(PostgresDatabase, self.db)
        guess = Guess.of(requests, outbox_events=self._outbox_events)  # before the lock
        async with db.connection() as conn:
            if guess is None:
                return await self._locked_batch(conn, requests)
            row = await conn.fetchrow(_APPEND_BATCH, APPEND_LOCK_KEY, *guess.arguments(self.origin))
        assert row is not None
        # Written and committed: every append but the refused ones.
        return guess.plan(requests, int(row["head"]), row["now"], row["actual"])

    async def _locked_batch(self, conn: _PgConnection, requests: list[AppendRequest]) -> BatchPlan:
        """The general batch in one locked transaction (module docstring)."""
        await conn.execute(_BEGIN_AND_LOCK)
        try:
            plan = await self._plan_and_write(conn, requests)
            await conn.execute("COMMIT")
        except BaseException:
            if conn.raw.is_in_transaction():
                try:
                    await conn.raw.execute("ROLLBACK")
                except Exception:  # a broken connection: the pool drops it on release
                    pass
            raise
        return plan

    async def _plan_and_write(self, conn: Connection, requests: list[AppendRequest]) -> BatchPlan:
        """The general batch (idempotency keys, snapshots): read the state, plan, write."""
        rows = await conn.fetch(_STATE, touched_streams(requests))
        head, now = int(rows[0]["head"]), rows[0]["now"]
        versions = {r["stream_id"]: r["version"] for r in rows if r["version"] is not None}
        keys = touched_keys(requests)
        existing = await self._existing_keys(conn, keys) if keys else {}
        plan = self._plan(requests, head, now, versions, existing)
        if plan.events or plan.outbox or plan.idempotency or plan.snapshots:
            await self._write_all(conn, plan, now, head)
        return plan

    async def _write_all(self, conn: Connection, plan: BatchPlan, now: datetime, head: int) -> None:
        for scope, key in plan.replaced_keys:  # rare: an expired key used again
            await conn.execute(
                "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2", scope, key
            )
        # One JSON document per table instead of one array per column: a single `orjson`
        # call instead of a dump per event and the driver's encoding of seven arrays, and
        # the server parses it as fast as `COPY` (docs/performance.md).
        events = orjson.dumps(
            [
                [e.position, e.stream_id, e.version, e.event_id, e.type, e.data, e.metadata]
                for e in plan.events
            ]
        ).decode()
        outbox = orjson.dumps(
            [[o.topic, o.key, o.payload, o.event_position] for o in plan.outbox]
        ).decode()
        snapshots: list[list[Any]] = [[], [], []]
        for s in plan.snapshots:
            snapshots[0].append(s.stream_id)
            snapshots[1].append(s.version)
            snapshots[2].append(dumps(s.state))
        keys: list[list[Any]] = [[], [], [], [], [], [], []]
        for r in plan.idempotency:
            keys[0].append(r.scope)
            keys[1].append(r.key)
            keys[2].append(r.fingerprint)
            keys[3].append(r.status)
            keys[4].append(body_text(r.body))
            keys[5].append(r.created_at)
            keys[6].append(r.expires_at)
        notices = stream_notices(self.origin, plan)
        await conn.execute(_WRITE, events, now, outbox, *snapshots, *keys, notices)

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        # One statement for the whole relay batch, not one UPDATE per row.
        try:
            await self.db.execute(
                "UPDATE outbox SET published_at = $1 WHERE id = ANY($2::bigint[])", at, list(ids)
            )
        except (DatabaseUnavailable, DatabaseError) as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _existing_keys(
        self, conn: Connection, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], IdempotencyRecord]:
        rows = await conn.fetch(_KEYS, [s for s, _ in keys], [k for _, k in keys])
        return {(r["scope"], r["key"]): row_to_record(r) for r in rows}


class Guess:
    """A batch written on the guess that every stream is at the version its append expects
    (`_APPEND_BATCH`): the common case, prepared before the lock is taken. The statement
    refuses the appends for which the guess was wrong and writes the rest.

    Only batches without idempotency records qualify (their stored outcomes must be looked
    up, and their bodies rendered from the recorded events), only with snapshots whose state
    is ready (not rendered from the recorded events), and only when no stream is in two
    appends of the batch (then no append depends on another; a process appends to a stream
    one chunk at a time, so this is the usual case). Positions are relative to the head (1,
    2, ... in batch order, the order `plan_batch` assigns them in), which the statement adds.
    """

    __slots__ = ("_appends", "_events", "_notices", "_outbox", "_snapshots", "expected")

    def __init__(
        self,
        expected: dict[str, int],
        appends: list[int],
        events: list[list[Any]],
        outbox: list[list[Any]],
        snapshots: list[list[Any]],
        notices: NoticeBodies,
    ) -> None:
        #: The version each stream must be at; its order is that of the statement's answer.
        self.expected = expected
        #: The append (1-based, batch order) of each stream of `expected`.
        self._appends = appends
        self._events = events
        self._outbox = outbox
        self._snapshots = snapshots
        #: The notice entry of each stream of `expected`, in the payloads' bodies.
        self._notices = notices

    @classmethod
    def of(cls, requests: Sequence[AppendRequest], *, outbox_events: bool) -> Guess | None:
        expected: dict[str, int] = {}
        appends: list[int] = []
        events: list[list[Any]] = []
        outbox: list[list[Any]] = []
        snapshots: list[list[Any]] = []
        moved: dict[str, list[list[Any]]] = {}
        for index, request in enumerate(requests, start=1):
            if request.idempotency:
                return None
            after: dict[str, int] = {}  # the version each stream reaches within this append
            for stream in request.streams:
                sid, version = stream.stream_id, stream.expected_version
                if sid in after:  # again in one request: it must continue the earlier part
                    if after[sid] != version:
                        return None
                elif sid in expected:  # in an earlier append of the batch
                    return None
                else:
                    expected[sid] = version
                    appends.append(index)
                    moved[sid] = []
                snapshot = stream.snapshot
                if snapshot is not None:
                    if callable(snapshot.state):
                        return None
                    snapshots.append([snapshot.stream_id, snapshot.version, snapshot.state, index])
                for event in stream.events:
                    version += 1
                    row = [sid, version, event.event_id, event.type, event.data, event.metadata]
                    events.append(row)
                    if outbox_events:
                        outbox.append([EVENTS_TOPIC, sid, None, len(events), index])
                    moved[sid].append(row[1:])
                after[sid] = version
            for message in request.messages:
                outbox.append([message.topic, message.key, message.payload, None, index])
        return cls(
            expected, appends, events, outbox, snapshots, NoticeBodies.of(_notice_entries(moved))
        )

    def plan(
        self, requests: Sequence[AppendRequest], head: int, now: datetime, actual: Sequence[int]
    ) -> BatchPlan:
        """The outcome of every append, once the statement has run: what `plan_batch` plans
        on the versions the statement read (`actual`, in the order of `expected`), without
        the rows the statement wrote itself (tests/unit/test_append_guess.py). Each stream
        is in one append only, so the statement refused exactly the appends with a stream
        not at its expected version, and numbered the others' events in batch order."""
        refused: dict[int, ConcurrencyError] = {}
        for (stream_id, expected), found, index in zip(
            self.expected.items(), actual, self._appends, strict=True
        ):
            if found != expected and index not in refused:  # the append's first such stream
                refused[index] = ConcurrencyError(stream_id, expected, found)
        plan = BatchPlan()
        position = head
        for index, request in enumerate(requests, start=1):
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
        plan.wrote_outbox = any(row[4] not in refused for row in self._outbox)
        return plan

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
        )


def _recorded(stream: StreamAppend, head: int, now: datetime) -> list[RecordedEvent]:
    """The stream's new events as recorded at `now`, the first at position `head + 1`."""
    sid, version = stream.stream_id, stream.expected_version
    return [  # positional: measurably cheaper for a frozen dataclass
        RecordedEvent(head + i, sid, version + i, e.event_id, e.type, e.data, e.metadata, now)
        for i, e in enumerate(stream.events, start=1)
    ]


#: Room for a notice's head: the origin, `{"at":"<ISO time>","s":[` and `]}`.
_NOTICE_HEAD = 100


def stream_notices(origin: str, plan: BatchPlan) -> list[str]:
    """The batch's moved streams as notify payloads of at most `NOTICE_BYTES` each.

    A payload is `<origin> {"at": <recorded_at>, "s": [entry, ...]}`; an entry is
    `[stream_id, version, [[version, event_id, type, data, metadata], ...]]` with the
    stream's new events, or `[stream_id, version]` when those do not fit in one payload.
    (The common batch has the server write the same payloads: `Guess`.)
    """
    moved: dict[str, list[list[Any]]] = {}
    for e in plan.events:
        moved.setdefault(e.stream_id, []).append(
            [e.version, e.event_id, e.type, e.data, e.metadata]
        )
    if not moved:
        return []
    at = orjson.dumps(plan.events[0].recorded_at).decode()
    bodies = NoticeBodies.of(_notice_entries(moved)).bodies
    return [f'{origin} {{"at":{at},"s":[{body}]}}' for body in bodies]


def _notice_entries(moved: dict[str, list[list[Any]]]) -> list[bytes | None]:
    """One notice entry (UTF-8 JSON) per stream of `moved` (stream -> its new events), in
    its order: the stream's new version and events, or only the version when the events do
    not fit in one payload beside its head; None for a stream without new events."""
    room = NOTICE_BYTES - _NOTICE_HEAD
    entries: list[bytes | None] = []
    for stream_id, events in moved.items():
        if not events:
            entries.append(None)
            continue
        version = events[-1][0]
        entry = orjson.dumps([stream_id, version, events])
        if len(entry) > room:
            entry = orjson.dumps([stream_id, version])
        entries.append(entry)
    return entries


@dataclass(slots=True)
class NoticeBodies:
    """Notice entries joined into payload bodies (`entry,entry,...`) that fit in a payload
    beside its head, and where each entry is in them: [body (1-based), its first byte in
    the body's UTF-8 (1-based), its length in bytes], or None for a missing entry.

    The batch function sends the bodies as they are when it writes every append, and cuts
    the entries of the written streams out of them when it refuses some (leaving entries
    out only makes a payload smaller)."""

    bodies: list[str]
    entries: list[tuple[int, int, int] | None]

    @classmethod
    def of(cls, entries: list[bytes | None]) -> NoticeBodies:
        room = NOTICE_BYTES - _NOTICE_HEAD
        joined = cls([], [])
        body: list[bytes] = []
        size = 0  # of the body so far, commas included
        for entry in entries:
            if entry is None:
                joined.entries.append(None)
                continue
            if body and size + 1 + len(entry) > room:
                joined.bodies.append(b",".join(body).decode())
                body, size = [], 0
            if body:
                size += 1
            joined.entries.append((len(joined.bodies) + 1, size + 1, len(entry)))
            body.append(entry)
            size += len(entry)
        if body:
            joined.bodies.append(b",".join(body).decode())
        return joined


def parse_notice(payload: str, *, unless_from: str | None = None) -> list[StreamMoved]:
    """The moved streams of a notice; none when it comes from `unless_from` (checked before
    anything is decoded) or is malformed (a malformed entry is skipped on its own)."""
    origin, _, body = payload.partition(" ")
    if origin == unless_from:
        return []
    try:
        notice = orjson.loads(body)
        at = datetime.fromisoformat(notice["at"])
        entries = notice["s"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return []
    moved: list[StreamMoved] = []
    for entry in entries if isinstance(entries, list) else ():
        try:
            stream_id, version, *rest = entry
            events = tuple(
                MovedEvent(v, event_id, type_, data, metadata, at)
                for v, event_id, type_, data, metadata in (rest[0] if rest else ())
            )
        except (TypeError, ValueError):
            continue
        if isinstance(stream_id, str) and isinstance(version, int):
            moved.append(StreamMoved(stream_id, version, events))
    return moved
