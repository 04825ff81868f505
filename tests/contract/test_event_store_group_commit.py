"""Event-store contract, part 2: group commit (DESIGN.md guarantee 4) and failed batches.

Appends are started with `asyncio.gather`, so they are all queued before the committer's
flusher runs and share batches; `record_batches` proves they did.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.contract.eventstore_helpers import (
    SQL_BACKENDS,
    event,
    events,
    everything,
    idem,
    new_stream,
    one,
    record_batches,
)

from banking_es.db.base import DatabaseUnavailable
from banking_es.eventstore.base import (
    AppendRejected,
    AppendRequest,
    ConcurrencyError,
    EventStore,
    IdempotencyKeyExists,
    RecordedEvent,
    Snapshot,
    StoreUnavailable,
    StreamAppend,
)
from banking_es.eventstore.memory import MemoryEventStore


async def test_many_concurrent_appends_share_batches_and_all_succeed(
    event_store: EventStore,
) -> None:
    batches = record_batches(event_store)
    streams = [new_stream() for _ in range(200)]

    results = await asyncio.gather(*(event_store.append(one(s, 0, events(2))) for s in streams))

    assert sum(batches) == 200
    assert len(batches) < 20, batches  # gathered, not one transaction per append
    assert max(batches) > 1
    for stream, recorded in zip(streams, results, strict=True):
        assert [(e.stream_id, e.version) for e in recorded] == [(stream, 1), (stream, 2)]
    stored = await everything(event_store)
    assert [e.position for e in stored] == list(range(1, 401))
    assert sorted(e.event_id for r in results for e in r) == sorted(e.event_id for e in stored)
    # one append's events stay adjacent in the global order
    for recorded in results:
        assert recorded[1].position == recorded[0].position + 1


async def test_a_conflict_fails_only_its_own_append_not_its_batch_neighbours(
    event_store: EventStore,
) -> None:
    hot = new_stream("hot")
    await event_store.append(one(hot, 0, events(1)))
    batches = record_batches(event_store)
    streams = [new_stream() for _ in range(200)]
    requests = [one(s, 0, events(1)) for s in streams]
    requests.insert(100, one(hot, 0, [event(stale=True)]))  # stale: `hot` is at version 1

    results = await asyncio.gather(
        *(event_store.append(r) for r in requests), return_exceptions=True
    )

    assert batches == [201]  # the conflicting append really was in the neighbours' batch
    failed = [(i, r) for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert len(failed) == 1
    index, error = failed[0]
    assert index == 100
    assert isinstance(error, ConcurrencyError)
    assert (error.stream_id, error.expected, error.actual) == (hot, 0, 1)
    for stream in streams:
        assert [e.version for e in await event_store.read_stream(stream)] == [1]
    assert len(await event_store.read_stream(hot)) == 1
    assert await event_store.head_position() == 201
    assert [e.position for e in await everything(event_store)] == list(range(1, 202))


async def test_a_batch_of_conflicts_only_writes_nothing_and_reports_each(
    event_store: EventStore,
) -> None:
    """Behind or ahead of its stream, each append hears its own conflict with the version the
    stream is at (on PostgreSQL, the appends that are behind fail without a planned batch)."""
    a, b = new_stream(), new_stream()
    await event_store.append(one(a, 0, events(2)))
    await event_store.append(one(b, 0, events(1)))
    head = await event_store.head_position()
    batches = record_batches(event_store)

    results = await asyncio.gather(
        event_store.append(one(a, 1, events(1))),  # behind: `a` is at version 2
        event_store.append(one(b, 3, events(1))),  # ahead: `b` is at version 1
        event_store.append(one(a, 0, events(1))),  # behind
        return_exceptions=True,
    )

    assert batches == [3]
    assert all(isinstance(r, ConcurrencyError) for r in results), results
    conflicts = [(r.stream_id, r.expected, r.actual) for r in results]  # type: ignore[union-attr]
    assert conflicts == [(a, 1, 2), (b, 3, 1), (a, 0, 2)]
    assert await event_store.head_position() == head
    assert [e.version for e in await event_store.read_stream(a)] == [1, 2]


async def test_same_stream_twice_in_one_batch_the_stale_second_append_fails(
    event_store: EventStore,
) -> None:
    stream = new_stream()
    batches = record_batches(event_store)

    first, second = await asyncio.gather(
        event_store.append(one(stream, 0, [event(n="first")])),
        event_store.append(one(stream, 0, [event(n="second")])),
        return_exceptions=True,
    )

    assert batches == [2]
    assert isinstance(first, list)
    assert [(e.version, e.data["n"]) for e in first] == [(1, "first")]
    assert isinstance(second, ConcurrencyError)
    assert (second.expected, second.actual) == (0, 1)
    assert await event_store.read_stream(stream) == first


async def test_same_stream_in_one_batch_sees_the_version_of_earlier_appends(
    event_store: EventStore,
) -> None:
    stream = new_stream()
    batches = record_batches(event_store)

    results = await asyncio.gather(
        event_store.append(one(stream, 0, events(2))),
        event_store.append(one(stream, 2, events(1))),
        event_store.append(one(stream, 3, events(3))),
    )

    assert batches == [3]
    assert [[e.version for e in r] for r in results] == [[1, 2], [3], [4, 5, 6]]
    assert [e.version for e in await event_store.read_stream(stream)] == [1, 2, 3, 4, 5, 6]


async def test_a_failed_append_in_a_batch_does_not_shift_its_neighbours_positions(
    event_store: EventStore,
) -> None:
    stream = new_stream()
    a, b, c = new_stream(), new_stream(), new_stream()
    await event_store.append(one(stream, 0, events(1)))

    results = await asyncio.gather(
        event_store.append(one(a, 0, events(2))),
        event_store.append(one(stream, 0, events(5))),  # stale
        event_store.append(one(b, 0, events(1))),
        event_store.append(
            AppendRequest(streams=[StreamAppend(c, 0, events(1)), StreamAppend(stream, 0, [])])
        ),  # stale as well, although it adds nothing to `stream`
        return_exceptions=True,
    )

    assert isinstance(results[1], ConcurrencyError)
    assert isinstance(results[3], ConcurrencyError)
    assert [e.position for e in results[0]] == [2, 3]  # type: ignore[union-attr]
    assert [e.position for e in results[2]] == [4]  # type: ignore[union-attr]
    assert await event_store.read_stream(c) == []
    assert [e.position for e in await everything(event_store)] == [1, 2, 3, 4]


async def test_sequential_appends_still_work_after_concurrent_bursts(
    event_store: EventStore,
) -> None:
    for burst in range(3):
        streams = [new_stream() for _ in range(30)]
        await asyncio.gather(*(event_store.append(one(s, 0, events(1))) for s in streams))
        assert await event_store.head_position() == 30 * (burst + 1)
    stream = new_stream()
    for version in range(5):
        await event_store.append(one(stream, version, events(1)))
    assert await event_store.head_position() == 95


# ---- a whole batch that fails in the database ---------------------------------------------


def fail_next_commit(store: EventStore) -> None:
    """Make the store's next batch transaction fail as a database error would.

    Memory: `fail_next_commit`. SQL: the last write of the transaction (PostgreSQL: the
    statement that stores the rendered idempotency records, after the batch function; SQLite:
    the outbox insert, after events, idempotency records and snapshots) runs, then raises a
    driver error, once. The batch must therefore carry idempotency records.
    """
    if isinstance(store, MemoryEventStore):
        store.fail_next_commit = StoreUnavailable("injected: connection lost")
        return
    hook = "_store_records" if hasattr(store, "_store_records") else "_insert_outbox"
    original = getattr(store, hook)

    async def failing(*args: Any) -> None:
        setattr(store, hook, original)
        await original(*args)
        raise DatabaseUnavailable("injected: connection lost")

    setattr(store, hook, failing)


async def test_a_failed_batch_fails_every_caller_and_writes_nothing(
    event_store: EventStore,
) -> None:
    existing = new_stream()
    await event_store.append(one(existing, 0, events(1)))
    backlog = (await event_store.outbox_stats()).backlog
    batches = record_batches(event_store)
    streams = [new_stream() for _ in range(10)]
    keys = [idem() for _ in streams]
    requests = [
        one(s, 0, events(2), idempotency=[k], snapshot=Snapshot(s, 2, {"balance": "3.00"}))
        for s, k in zip(streams, keys, strict=True)
    ]
    requests.append(one(existing, 1, events(1)))
    fail_next_commit(event_store)

    results = await asyncio.gather(
        *(event_store.append(r) for r in requests), return_exceptions=True
    )

    assert batches == []  # the batch did not commit
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert await event_store.head_position() == 1
    assert [e.version for e in await event_store.read_stream(existing)] == [1]
    assert (await event_store.outbox_stats()).backlog == backlog
    for stream, key in zip(streams, keys, strict=True):
        assert await event_store.read_stream(stream) == []
        assert await event_store.latest_snapshot(stream) is None
        assert await event_store.get_idempotency(key.scope, key.key, key.created_at) is None

    # the store keeps working: the same requests succeed when retried
    retried = await asyncio.gather(*(event_store.append(r) for r in requests))
    assert [len(r) for r in retried] == [2] * 10 + [1]
    assert await event_store.head_position() == 22
    assert await event_store.latest_snapshot(streams[0]) == Snapshot(
        streams[0], 2, {"balance": "3.00"}
    )


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_an_append_the_database_cannot_store_fails_alone(event_store: EventStore) -> None:
    """Data that cannot be stored (here: not serializable) is a bug upstream; it must fail
    only its own append, never the valid neighbours gathered into the same batch."""
    streams = [new_stream() for _ in range(6)]
    poison = one(new_stream(), 0, [event("Odd", bad={1, 2})])
    requests = [one(s, 0, events(1)) for s in streams]
    requests.insert(3, poison)

    results = await asyncio.gather(
        *(event_store.append(r) for r in requests), return_exceptions=True
    )

    assert isinstance(results[3], AppendRejected), results[3]
    assert all(isinstance(r, list) and len(r) == 1 for i, r in enumerate(results) if i != 3)
    assert await event_store.head_position() == 6
    for stream in streams:
        assert [e.version for e in await event_store.read_stream(stream)] == [1]


async def test_idempotency_keys_conflict_within_one_batch(event_store: EventStore) -> None:
    """Two appends with the same key in one batch: the first is stored, the second is refused
    with the record that won."""
    winner_key = idem("same-key", body=b'{"winner":1}')
    loser_key = idem("same-key", body=b'{"winner":2}')
    a, b = new_stream(), new_stream()
    batches = record_batches(event_store)

    first, second = await asyncio.gather(
        event_store.append(one(a, 0, events(1), idempotency=[winner_key])),
        event_store.append(one(b, 0, events(1), idempotency=[loser_key])),
        return_exceptions=True,
    )

    assert batches == [2]
    assert isinstance(first, list)
    assert isinstance(second, IdempotencyKeyExists)
    assert second.existing == winner_key
    assert await event_store.read_stream(b) == []
    stored = await event_store.get_idempotency("user-1", "same-key", winner_key.created_at)
    assert stored == winner_key


async def test_appends_keep_working_with_slow_and_fast_callers_interleaved(
    event_store: EventStore,
) -> None:
    """Appends that arrive while a batch is committing are picked up by a later batch."""
    results: list[list[RecordedEvent]] = []

    async def writer(delay: float) -> None:
        stream = new_stream()
        for version in range(5):
            await asyncio.sleep(delay)
            results.append(await event_store.append(one(stream, version, events(1))))

    await asyncio.gather(*(writer(0.001 * (i % 4)) for i in range(20)))

    assert len(results) == 100
    stored = await everything(event_store)
    assert [e.position for e in stored] == list(range(1, 101))


@pytest.mark.parametrize("size", [1, 7])
async def test_batch_max_size_is_respected(open_event_store: Any, size: int) -> None:
    store: EventStore = await open_event_store(batch_max_size=size)
    batches = record_batches(store)

    await asyncio.gather(*(store.append(one(new_stream(), 0, events(1))) for _ in range(30)))

    assert sum(batches) == 30
    assert max(batches) <= size
    assert await store.head_position() == 30


@pytest.mark.parametrize("backend", SQL_BACKENDS)
@pytest.mark.parametrize("neighbours", [0, 3])
async def test_a_key_saved_by_another_process_during_a_batch_fails_only_its_own_append(
    open_event_store: Any, neighbours: int
) -> None:
    """Another server's `save_idempotency` commits the key while this batch is in flight.

    The batch read the keys before that commit, so the unique constraint rejects its insert;
    the append holding the key must get IdempotencyKeyExists with the other server's record,
    and its neighbours in the batch must still be written.
    """
    store: EventStore = await open_event_store()
    other: EventStore = await open_event_store()  # another process, its own connections
    theirs = idem("raced", body=b'{"theirs":1}')
    mine, others = new_stream(), [new_stream() for _ in range(neighbours)]

    async with other.db.transaction() as conn:  # type: ignore[attr-defined]
        # What `save_idempotency` does, held open until the batch is waiting on it.
        await conn.execute(
            "INSERT INTO idempotency_keys"
            " (scope, key, fingerprint, status, body, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            theirs.scope,
            theirs.key,
            theirs.fingerprint,
            theirs.status,
            theirs.body.decode(),  # type: ignore[union-attr]
            theirs.created_at,
            theirs.expires_at,
        )
        appends = asyncio.gather(
            store.append(one(mine, 0, events(1), idempotency=[idem("raced")])),
            *(store.append(one(stream, 0, events(1))) for stream in others),
            return_exceptions=True,
        )
        await asyncio.sleep(0.3)
        assert not appends.done()
    results = await appends

    assert isinstance(results[0], IdempotencyKeyExists), results[0]
    assert results[0].existing == theirs
    for stream, result in zip(others, results[1:], strict=True):
        assert isinstance(result, list), result
        assert await store.read_stream(stream) == result
    assert await store.read_stream(mine) == []
    assert await store.get_idempotency("user-1", "raced", theirs.created_at) == theirs
    assert await store.head_position() == neighbours
