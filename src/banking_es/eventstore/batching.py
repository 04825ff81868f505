"""Group commit: concurrent appends in one process share one transaction.

`GroupCommitter` gathers appends while a commit is in flight (and for up to
`max_wait_ms` under load) and hands them to the backend as one batch. `plan_batch`
decides, inside the backend's locked transaction, which appends of the batch may be
written: a version conflict, a known idempotency key or a stale shard epoch fails only its
own append.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from banking_es.eventstore.base import (
    EVENTS_TOPIC,
    AppendRequest,
    ConcurrencyError,
    EventStoreError,
    FencedOut,
    IdempotencyKeyExists,
    IdempotencyRecord,
    RecordedEvent,
    Snapshot,
)

BatchOutcome = list[RecordedEvent] | EventStoreError
Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass(slots=True)
class OutboxRow:
    topic: str
    key: str
    payload: dict[str, object] | None
    event_position: int | None


@dataclass(slots=True)
class BatchPlan:
    """What one locked transaction writes, and the outcome of every request."""

    events: list[RecordedEvent] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    idempotency: list[IdempotencyRecord] = field(default_factory=list)
    replaced_keys: list[tuple[str, str]] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    outcomes: list[BatchOutcome] = field(default_factory=list)
    #: Whether the batch writes outbox rows (the relay has work). `outbox` is left empty
    #: when the database builds the rows itself (`eventstore/postgres.py`).
    wrote_outbox: bool = False


def plan_batch(
    requests: Sequence[AppendRequest],
    *,
    head: int,
    now: datetime,
    versions: dict[str, int],
    existing_keys: dict[tuple[str, str], IdempotencyRecord],
    outbox_events: bool,
    epochs: Mapping[int, int] | None = None,
) -> BatchPlan:
    """Check every request against the current state and assign positions in order.

    `versions` holds the current version of every stream the batch touches (absent: 0);
    `existing_keys` the stored idempotency records (expired ones are replaced); `epochs`
    the current epoch of every shard the batch's fences name (`touched_shards`).
    """
    plan = BatchPlan()
    versions = dict(versions)
    taken = {k for k, rec in existing_keys.items() if rec.expires_at > now}
    # The record that holds each key: stored, or planned by an earlier request of this batch.
    holders = dict(existing_keys)
    position = head
    for request in requests:
        fence = request.fence
        if fence is not None and (epochs or {}).get(fence.shard) != fence.epoch:
            plan.outcomes.append(FencedOut(fence.shard, fence.epoch))
            continue
        failure = _check(request, versions, taken, holders)
        if failure is not None:
            plan.outcomes.append(failure)
            continue
        recorded: list[RecordedEvent] = []
        for stream in request.streams:
            version = stream.expected_version
            for event in stream.events:
                position += 1
                version += 1
                recorded.append(  # positional: measurably cheaper for a frozen dataclass
                    RecordedEvent(
                        position,
                        stream.stream_id,
                        version,
                        event.event_id,
                        event.type,
                        event.data,
                        event.metadata,
                        now,
                    )
                )
                if outbox_events:
                    plan.outbox.append(OutboxRow(EVENTS_TOPIC, stream.stream_id, None, position))
            versions[stream.stream_id] = version
            if stream.snapshot is not None:
                plan.snapshots.append(stream.snapshot)
        for record in request.idempotency:
            identity = (record.scope, record.key)
            taken.add(identity)
            if identity in existing_keys:
                plan.replaced_keys.append(identity)
            holders[identity] = record
            plan.idempotency.append(record)
        for message in request.messages:
            plan.outbox.append(OutboxRow(message.topic, message.key, message.payload, None))
        plan.events.extend(recorded)
        plan.outcomes.append(recorded)
    plan.wrote_outbox = bool(plan.outbox)
    return plan


def _check(
    request: AppendRequest,
    versions: dict[str, int],
    taken: set[tuple[str, str]],
    holders: dict[tuple[str, str], IdempotencyRecord],
) -> EventStoreError | None:
    # A stream may appear twice in one request: the second part continues from the first.
    ahead: dict[str, int] = {}
    for stream in request.streams:
        actual = ahead.get(stream.stream_id, versions.get(stream.stream_id, 0))
        if actual != stream.expected_version:
            return ConcurrencyError(stream.stream_id, stream.expected_version, actual)
        ahead[stream.stream_id] = actual + len(stream.events)
    own: set[tuple[str, str]] = set()
    for record in request.idempotency:
        identity = (record.scope, record.key)
        if identity in taken:
            return IdempotencyKeyExists(holders.get(identity, record))
        if identity in own:  # one request carrying the same key twice
            return IdempotencyKeyExists(record)
        own.add(identity)
    return None


def touched_streams(requests: Sequence[AppendRequest]) -> list[str]:
    return sorted({s.stream_id for r in requests for s in r.streams})


def touched_shards(requests: Sequence[AppendRequest]) -> list[int]:
    return sorted({r.fence.shard for r in requests if r.fence is not None})


def touched_keys(requests: Sequence[AppendRequest]) -> list[tuple[str, str]]:
    return sorted({(i.scope, i.key) for r in requests for i in r.idempotency})


class Grouper(Generic[Req, Res]):
    """Gathers concurrent requests into batches and runs each batch once.

    While `concurrency` batches are in flight new requests wait in the queue, so batches
    grow with load by themselves; under load the flusher also waits up to `max_wait_ms` for
    more before it runs one, until the queue is as large as the last batch. `run` answers
    with one outcome per request, a result or an exception, delivered to each caller
    separately.

    `GroupCommitter` (appends, one transaction per batch) is the main one; PostgreSQL stream
    reads are grouped too (`eventstore/postgres.py`).
    """

    def __init__(
        self,
        run: Callable[[list[Req]], Awaitable[Sequence[Res | BaseException]]],
        *,
        max_size: int = 500,
        max_wait_ms: float = 2.0,
        concurrency: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self._run_batch = run
        self._max_size = max_size
        self._max_wait = max_wait_ms / 1000
        self._slots = asyncio.Semaphore(concurrency)
        self._queue: deque[tuple[Req, asyncio.Future[Res]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._last_batch = 0
        #: While the flusher waits for more: done once the queue is as large as the last batch.
        self._filled: asyncio.Future[None] | None = None
        self._on_batch = on_batch
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def queue_length(self) -> int:
        return len(self._queue)

    async def submit(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        filled = self._filled
        if filled is not None and len(self._queue) >= self._last_batch and not filled.done():
            filled.set_result(None)  # as large as the last batch: the flusher waits no more
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        try:
            return await future
        finally:
            # A refused append raises its error here, and the error's traceback holds this
            # frame: without this, frame -> future -> error -> traceback -> frame would be a
            # cycle, left to the garbage collector (tests/unit/test_group_commit.py).
            del future

    async def _flush_loop(self) -> None:
        while self._queue:
            await self._slots.acquire()
            waiting = len(self._queue)
            if self._max_wait and self._last_batch > 1 and waiting < self._last_batch:
                await self._wait_for_more()
            if not self._queue:
                self._slots.release()
                break
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_size))]
            self._last_batch = len(batch)
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _wait_for_more(self) -> None:
        """Under load: up to `max_wait_ms` for the queue to hold as many requests as the last
        batch. Waiting longer rarely makes a batch larger (the callers are those of the last
        batch, coming back), it only leaves the database idle (docs/performance.md)."""
        self._filled = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._max_wait):
                await self._filled
        except TimeoutError:
            pass
        finally:
            self._filled = None

    async def _run(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            outcomes = await self._run_batch([request for request, _ in batch])
        except BaseException as exc:  # the whole batch failed: every caller hears it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._slots.release()
            if self._queue and (self._flusher is None or self._flusher.done()):
                self._flusher = asyncio.create_task(self._flush_loop())
        if self._on_batch is not None:
            self._on_batch(len(batch), loop.time() - started)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def drain(self) -> None:
        """Wait until every queued request has been run (used at shutdown)."""
        while self._queue or self._in_flight:
            pending = [t for t in (self._flusher, *self._in_flight) if t and not t.done()]
            if pending:
                await asyncio.wait(pending)
            else:
                await asyncio.sleep(0)


class GroupCommitter(Grouper[AppendRequest, list[RecordedEvent]]):
    """Group commit: concurrent appends, one transaction per batch (`plan_batch` decides
    each append of it on its own)."""
