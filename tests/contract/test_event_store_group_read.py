"""Event-store contract, part 5: concurrent stream reads (PostgreSQL groups them).

`GET /accounts/{id}` reads the events after its cached copy, and must see every write
acknowledged before it began. Concurrent reads, however many share a query, each get
exactly their own stream's events after their own version.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.contract.eventstore_helpers import event, events, new_stream, one

from banking_es.eventstore.base import EventStore, RecordedEvent
from banking_es.eventstore.postgres import PostgresEventStore


def count_queries(store: EventStore) -> list[int]:
    """The number of reads each grouped PostgreSQL query answered (nothing elsewhere)."""
    sizes: list[int] = []
    if isinstance(store, PostgresEventStore):
        read_many = store._reader._run_batch

        async def counted(reads: Any) -> list[list[RecordedEvent]]:
            sizes.append(len(reads))
            return await read_many(reads)

        store._reader._run_batch = counted  # type: ignore[assignment]
    return sizes


async def test_concurrent_reads_each_get_their_own_stream_after_their_own_version(
    event_store: EventStore,
) -> None:
    streams = [new_stream() for _ in range(20)]
    for stream_id in streams:
        await event_store.append(one(stream_id, 0, events(5)))
    queries = count_queries(event_store)
    reads = [(s, after) for s in streams for after in (0, 2, 5)] + [(new_stream(), 0)]

    answers = await asyncio.gather(*(event_store.read_stream(s, after) for s, after in reads))

    for (stream_id, after), answer in zip(reads, answers, strict=True):
        assert [(e.stream_id, e.version) for e in answer] == [
            (stream_id, v) for v in range(after + 1, 6 if stream_id in streams else 1)
        ]
        expected = await event_store.read_stream(stream_id, after, limit=10)  # not grouped
        assert answer == expected
    if isinstance(event_store, PostgresEventStore):
        assert sum(queries) == len(reads)
        assert len(queries) < len(reads) / 4  # they shared queries


async def test_a_read_sees_every_append_acknowledged_before_it_began(
    event_store: EventStore,
) -> None:
    stream_id = new_stream()
    await event_store.append(one(stream_id, 0, [event()]))

    async def append_then_read(version: int) -> int:
        await event_store.append(one(stream_id, version, [event()]))
        return len(await event_store.read_stream(stream_id, 0))

    for version in range(1, 6):
        # Other reads keep a grouped query in flight while this append and read happen.
        noise = [asyncio.create_task(event_store.read_stream(stream_id, 0)) for _ in range(20)]
        assert await append_then_read(version) >= version + 1
        await asyncio.gather(*noise)
