"""Event-store contract, part 1: versions, atomic appends, global positions and reads.

Every test runs on the memory, SQLite and PostgreSQL backends (the `backend` fixture) unless it
says otherwise. DESIGN.md, "The event store", guarantees 1-3.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from tests.contract.eventstore_helpers import (
    SQL_BACKENDS,
    event,
    events,
    everything,
    new_stream,
    one,
)

from banking_es.db.base import Database, UniqueViolation
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamAppend,
    decode_row,
    encode_row,
)

# ---- guarantee 1: optimistic concurrency -----------------------------------------------------


async def test_versions_start_at_one_and_are_contiguous(event_store: EventStore) -> None:
    stream = new_stream()
    first = await event_store.append(one(stream, 0, events(3)))
    second = await event_store.append(one(stream, 3, events(2)))

    assert [e.version for e in first] == [1, 2, 3]
    assert [e.version for e in second] == [4, 5]
    assert [e.version for e in await event_store.read_stream(stream)] == [1, 2, 3, 4, 5]


async def test_append_returns_exactly_what_is_stored(event_store: EventStore) -> None:
    stream = new_stream()
    new = [
        NewEvent(
            event_id="5f0c6a1e-0000-4000-8000-000000000001",
            type="AccountOpened",
            data={"owner": "Zoë Ångström", "amount": "100.00", "tags": ["a", "b"], "n": 7},
            metadata={"correlation_id": "c-1", "user": {"id": "u-1"}, "ratio": 0.5},
        ),
        event("MoneyDeposited", amount="5.25"),
    ]
    recorded = await event_store.append(one(stream, 0, new))

    assert [(e.stream_id, e.event_id, e.type, e.data, e.metadata) for e in recorded] == [
        (stream, n.event_id, n.type, n.data, n.metadata) for n in new
    ]
    assert all(e.recorded_at.tzinfo is not None for e in recorded)
    assert await event_store.read_stream(stream) == recorded
    assert await event_store.read_all(0, 10) == recorded


async def test_new_stream_requires_expected_version_zero(event_store: EventStore) -> None:
    stream = new_stream()
    with pytest.raises(ConcurrencyError) as caught:
        await event_store.append(one(stream, 1, events(1)))

    assert (caught.value.stream_id, caught.value.expected, caught.value.actual) == (stream, 1, 0)
    assert await event_store.read_stream(stream) == []
    assert await event_store.head_position() == 0


@pytest.mark.parametrize("stale", [0, 1, 3, 5])
async def test_wrong_expected_version_raises_with_actual_and_writes_nothing(
    event_store: EventStore, stale: int
) -> None:
    stream = new_stream()
    before = await event_store.append(one(stream, 0, events(2)))
    outbox_before = (await event_store.outbox_stats()).backlog

    with pytest.raises(ConcurrencyError) as caught:
        await event_store.append(one(stream, stale, events(1)))

    assert caught.value.stream_id == stream
    assert caught.value.expected == stale
    assert caught.value.actual == 2
    assert await event_store.read_stream(stream) == before
    assert await event_store.head_position() == 2
    assert (await event_store.outbox_stats()).backlog == outbox_before


async def test_only_one_of_two_racing_appends_at_the_same_version_wins(
    event_store: EventStore,
) -> None:
    stream = new_stream()
    await event_store.append(one(stream, 0, events(1)))

    results = await asyncio.gather(
        event_store.append(one(stream, 1, [event(winner="a")])),
        event_store.append(one(stream, 1, [event(winner="b")])),
        return_exceptions=True,
    )

    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], ConcurrencyError)
    assert errors[0].actual == 2
    stored = await event_store.read_stream(stream)
    assert [e.version for e in stored] == [1, 2]
    winner = next(r for r in results if not isinstance(r, BaseException))
    assert stored[1] == winner[0]


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_versions_are_checked_in_the_database_not_in_a_process_cache(
    open_event_store: Any,
) -> None:
    """Two stores on one database (two server processes): the second sees the first's writes."""
    first: EventStore = await open_event_store()
    second: EventStore = await open_event_store()
    stream = new_stream()
    await first.append(one(stream, 0, events(2)))
    await second.append(one(stream, 2, events(1)))  # warms any cache `second` might keep

    await first.append(one(stream, 3, events(1)))
    with pytest.raises(ConcurrencyError) as caught:
        await second.append(one(stream, 3, events(1)))

    assert caught.value.actual == 4
    assert [e.version for e in await second.read_stream(stream)] == [1, 2, 3, 4]
    assert await second.head_position() == 4


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_unique_stream_version_constraint_is_the_last_line_of_defence(
    event_store: EventStore, event_store_db: Database
) -> None:
    stream = new_stream()
    [stored] = await event_store.append(one(stream, 0, events(1)))

    with pytest.raises(UniqueViolation):
        await event_store_db.execute(
            "INSERT INTO events (position, stream_id, version, event_id, type, data, metadata,"
            " recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            stored.position + 100,
            stream,
            1,
            "another-event-id",
            "MoneyDeposited",
            "{}" if event_store_db.dialect == "sqlite" else {},
            "{}" if event_store_db.dialect == "sqlite" else {},
            datetime.now(UTC),
        )
    assert await event_store.read_stream(stream) == [stored]


# ---- guarantee 2: atomic multi-stream append -------------------------------------------------


async def test_multi_stream_append_writes_all_streams_with_consecutive_positions(
    event_store: EventStore,
) -> None:
    await event_store.append(one(new_stream(), 0, events(2)))
    source, target = new_stream("src"), new_stream("dst")
    await event_store.append(one(source, 0, events(1)))

    recorded = await event_store.append(
        AppendRequest(
            streams=[
                StreamAppend(source, 1, [event("TransferDebited"), event("FeeCharged")]),
                StreamAppend(target, 0, [event("TransferCredited")]),
            ]
        )
    )

    assert [(e.stream_id, e.version, e.type) for e in recorded] == [
        (source, 2, "TransferDebited"),
        (source, 3, "FeeCharged"),
        (target, 1, "TransferCredited"),
    ]
    assert [e.position for e in recorded] == [4, 5, 6]
    assert len({e.recorded_at for e in recorded}) == 1
    assert (await event_store.read_stream(source))[1:] == recorded[:2]
    assert await event_store.read_stream(target) == recorded[2:]


@pytest.mark.parametrize("conflicting", ["first", "second"])
async def test_multi_stream_append_with_one_conflict_writes_neither_stream(
    event_store: EventStore, conflicting: str
) -> None:
    source, target = new_stream("src"), new_stream("dst")
    await event_store.append(one(source, 0, events(1)))
    await event_store.append(one(target, 0, events(1)))
    stale_source = 0 if conflicting == "first" else 1
    stale_target = 0 if conflicting == "second" else 1
    head = await event_store.head_position()
    backlog = (await event_store.outbox_stats()).backlog

    with pytest.raises(ConcurrencyError) as caught:
        await event_store.append(
            AppendRequest(
                streams=[
                    StreamAppend(source, stale_source, [event("TransferDebited")]),
                    StreamAppend(target, stale_target, [event("TransferCredited")]),
                ]
            )
        )

    assert caught.value.stream_id == (source if conflicting == "first" else target)
    assert caught.value.actual == 1
    assert [e.version for e in await event_store.read_stream(source)] == [1]
    assert [e.version for e in await event_store.read_stream(target)] == [1]
    assert await event_store.head_position() == head
    assert (await event_store.outbox_stats()).backlog == backlog


async def test_multi_stream_append_to_a_new_and_an_existing_stream(
    event_store: EventStore,
) -> None:
    existing, fresh = new_stream(), new_stream()
    await event_store.append(one(existing, 0, events(2)))

    recorded = await event_store.append(
        AppendRequest(
            streams=[StreamAppend(fresh, 0, events(1)), StreamAppend(existing, 2, events(1))]
        )
    )

    assert [(e.stream_id, e.version, e.position) for e in recorded] == [
        (fresh, 1, 3),
        (existing, 3, 4),
    ]


# ---- guarantee 3 (single process): global position ------------------------------------------


async def test_global_positions_are_strictly_increasing_without_gaps(
    event_store: EventStore,
) -> None:
    versions = {new_stream(): 0 for _ in range(5)}
    for round_ in range(4):
        for stream, version in versions.items():
            count = 1 + round_ % 2
            await event_store.append(one(stream, version, events(count)))
            versions[stream] = version + count

    stored = await everything(event_store)
    assert [e.position for e in stored] == list(range(1, 31))
    assert await event_store.head_position() == 30
    assert len({e.event_id for e in stored}) == 30


async def test_head_position_of_an_empty_store_is_zero(event_store: EventStore) -> None:
    assert await event_store.head_position() == 0
    assert await event_store.read_all(0, 10) == []


async def test_read_all_pages_through_everything_in_order(event_store: EventStore) -> None:
    written: list[RecordedEvent] = []
    streams = [new_stream() for _ in range(3)]
    for i in range(23):
        stream = streams[i % 3]
        written += await event_store.append(one(stream, i // 3, events(1)))

    pages: list[list[RecordedEvent]] = []
    checkpoint = 0
    while page := await event_store.read_all(checkpoint, 5):
        pages.append(page)
        checkpoint = page[-1].position

    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [e for p in pages for e in p] == written
    assert await event_store.read_all(10, 3) == written[10:13]
    assert await event_store.read_all(23, 5) == []
    assert await event_store.read_all(1000, 5) == []


async def test_read_rows_are_the_events_of_read_all_as_stored(event_store: EventStore) -> None:
    stream = new_stream()
    odd = NewEvent(
        event_id="5f0c6a1e-0000-4000-8000-000000000002",
        type="AccountOpened",
        data={"owner": "Zoë Ångström", "amount": "100.00", "tags": ["a", None], "n": 7},
        metadata={"schema": 1, "user": {"id": "u-1"}, "ratio": 0.5, "quote": 'say "hi"'},
    )
    await event_store.append(one(stream, 0, [odd, *events(11)]))
    written = await everything(event_store)

    rows = await event_store.read_rows(0, 100)
    assert all(type(row) is tuple and len(row) == 8 for row in rows)
    assert all(isinstance(row[5], str) and isinstance(row[6], str) for row in rows)
    assert [decode_row(row) for row in rows] == written
    assert [encode_row(event) for event in written] == [encode_row(decode_row(row)) for row in rows]
    assert [decode_row(r) for r in await event_store.read_rows(4, 5)] == written[4:9]
    assert await event_store.read_rows(12, 5) == []


async def test_read_all_filters_by_type_and_keeps_position_order(event_store: EventStore) -> None:
    stream = new_stream()
    types = ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "MoneyDeposited"] * 3
    written = await event_store.append(one(stream, 0, [event(t) for t in types]))

    deposits = await event_store.read_all(0, 100, types=["MoneyDeposited"])
    assert deposits == [e for e in written if e.type == "MoneyDeposited"]

    both = await event_store.read_all(0, 100, types=["MoneyWithdrawn", "AccountOpened"])
    assert both == [e for e in written if e.type in {"MoneyWithdrawn", "AccountOpened"}]

    # the limit counts matching events; `after_position` pages through them
    first = await event_store.read_all(0, 2, types=["MoneyDeposited"])
    rest = await event_store.read_all(first[-1].position, 100, types=["MoneyDeposited"])
    assert first + rest == deposits
    assert len(first) == 2
    assert await event_store.read_all(0, 10, types=["NoSuchType"]) == []


# ---- reads -----------------------------------------------------------------------------------


async def test_read_stream_after_and_to_version(event_store: EventStore) -> None:
    stream = new_stream()
    written = await event_store.append(one(stream, 0, events(6)))
    await event_store.append(one(new_stream(), 0, events(2)))  # another stream is not included

    assert await event_store.read_stream(stream) == written
    assert await event_store.read_stream(stream, 2) == written[2:]
    assert await event_store.read_stream(stream, 2, to_version=4) == written[2:4]
    assert await event_store.read_stream(stream, to_version=1) == written[:1]
    assert await event_store.read_stream(stream, 6) == []
    assert await event_store.read_stream(stream, 4, to_version=4) == []


async def test_read_stream_limit(event_store: EventStore) -> None:
    stream = new_stream()
    written = await event_store.append(one(stream, 0, events(6)))

    assert await event_store.read_stream(stream, limit=2) == written[:2]
    assert await event_store.read_stream(stream, 3, limit=2) == written[3:5]
    assert await event_store.read_stream(stream, 3, to_version=4, limit=5) == written[3:4]


async def test_read_stream_recorded_until(event_store: EventStore) -> None:
    stream = new_stream()
    early = await event_store.append(one(stream, 0, events(2)))
    await asyncio.sleep(0.02)
    late = await event_store.append(one(stream, 2, events(2)))
    assert early[-1].recorded_at < late[0].recorded_at

    assert await event_store.read_stream(stream, recorded_until=early[-1].recorded_at) == early
    assert await event_store.read_stream(stream, recorded_until=late[-1].recorded_at) == (
        early + late
    )
    assert (
        await event_store.read_stream(stream, recorded_until=datetime(2000, 1, 1, tzinfo=UTC)) == []
    )


async def test_read_of_an_unknown_stream_is_empty(event_store: EventStore) -> None:
    await event_store.append(one(new_stream(), 0, events(1)))
    assert await event_store.read_stream("no-such-stream") == []


async def test_get_event_by_id(event_store: EventStore) -> None:
    stream = new_stream()
    written = await event_store.append(one(stream, 0, events(3)))

    for recorded in written:
        assert await event_store.get_event(recorded.event_id) == recorded
    assert await event_store.get_event("00000000-0000-4000-8000-000000000000") is None


async def test_ping_succeeds_on_a_healthy_store(event_store: EventStore) -> None:
    await event_store.ping()


async def test_a_stream_twice_in_one_request_continues_from_its_first_part(
    event_store: EventStore,
) -> None:
    stream, other = new_stream(), new_stream()

    recorded = await event_store.append(
        AppendRequest(
            streams=[
                StreamAppend(stream, 0, events(2)),
                StreamAppend(other, 0, events(1)),
                StreamAppend(stream, 2, events(1)),
            ]
        )
    )

    assert [(e.stream_id, e.version) for e in recorded] == [
        (stream, 1),
        (stream, 2),
        (other, 1),
        (stream, 3),
    ]
    assert await event_store.read_stream(stream) == [recorded[0], recorded[1], recorded[3]]


async def test_a_stream_twice_at_the_same_version_in_one_request_fails_alone(
    event_store: EventStore,
) -> None:
    """A request whose parts claim the same version twice is refused; its batch neighbours
    and the stream itself are unaffected (no duplicate version is ever stored)."""
    stream, neighbour = new_stream(), new_stream()
    bad = AppendRequest(
        streams=[StreamAppend(stream, 0, events(1)), StreamAppend(stream, 0, events(1))]
    )

    results = await asyncio.gather(
        event_store.append(bad),
        event_store.append(one(neighbour, 0, events(1))),
        return_exceptions=True,
    )

    assert isinstance(results[0], ConcurrencyError)
    assert (results[0].stream_id, results[0].expected, results[0].actual) == (stream, 0, 1)
    assert isinstance(results[1], list)
    assert await event_store.read_stream(stream) == []
    assert await event_store.read_stream(neighbour) == results[1]


async def test_read_stream_recorded_until_in_another_time_zone(event_store: EventStore) -> None:
    """`recorded_until` is an instant: the same instant in UTC+02:00 selects the same events."""
    stream = new_stream()
    early = await event_store.append(one(stream, 0, events(2)))
    await asyncio.sleep(0.02)
    await event_store.append(one(stream, 2, events(2)))
    plus_two = timezone(timedelta(hours=2))
    minus_five = timezone(timedelta(hours=-5))

    for zone in (plus_two, minus_five):
        until = early[-1].recorded_at.astimezone(zone)
        assert await event_store.read_stream(stream, recorded_until=until) == early
