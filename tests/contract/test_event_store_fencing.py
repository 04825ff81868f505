"""Event-store contract, fencing: an append that carries a shard epoch is written only while
that epoch is the shard's; otherwise it is refused with `FencedOut` in the transaction that
would have written it, and nothing of it is stored (docs/architecture.md, "Many instances").
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from eventstore_helpers import events, idem, new_stream, one

from banking_es.db.base import Database
from banking_es.eventstore.base import (
    EventStore,
    Fence,
    FencedOut,
    OutboxMessage,
    StoreUnavailable,
)
from banking_es.eventstore.memory import MemoryEventStore
from banking_es.shards.leases import ShardLeases

SHARD = 2


async def _claims(store: EventStore, db: Database | None, times: int) -> int:
    """Claim shard `SHARD` `times` times (each claim is a new owner's term); its epoch."""
    if db is None:
        assert isinstance(store, MemoryEventStore)
        store.shard_epochs[SHARD] = store.shard_epochs.get(SHARD, 0) + times
        return store.shard_epochs[SHARD]
    leases = ShardLeases(db, ttl=60)
    await leases.ensure_shard_count(4)
    lease = None
    for term in range(times):
        lease = await leases.claim(SHARD, f"instance-{term}")
        assert lease is not None
        await leases.release(lease)
    assert lease is not None
    return lease.epoch


async def test_an_append_with_a_stale_epoch_is_refused_and_nothing_is_written(
    event_store: EventStore, event_store_db: Database | None
) -> None:
    stale = await _claims(event_store, event_store_db, 1)
    current = await _claims(event_store, event_store_db, 1)
    assert current == stale + 1
    stream = new_stream()
    head = await event_store.head_position()
    backlog = (await event_store.outbox_stats()).backlog
    request = one(
        stream,
        0,
        events(2),
        idempotency=[idem("fenced-key")],
        messages=[OutboxMessage("notifications", "k", {"n": 1})],
    )

    with pytest.raises(FencedOut) as refused:
        await event_store.append(replace(request, fence=Fence(SHARD, stale)))

    assert (refused.value.shard, refused.value.epoch) == (SHARD, stale)
    assert isinstance(refused.value, StoreUnavailable)  # callers answer 503, never 500
    assert await event_store.read_stream(stream) == []
    assert await event_store.head_position() == head
    assert (await event_store.outbox_stats()).backlog == backlog
    assert await event_store.get_idempotency("user-1", "fenced-key", datetime.now(UTC)) is None
    recorded = await event_store.append(replace(request, fence=Fence(SHARD, current)))
    assert [e.version for e in recorded] == [1, 2]


async def test_a_fenced_append_fails_alone_in_its_batch(
    event_store: EventStore, event_store_db: Database | None
) -> None:
    current = await _claims(event_store, event_store_db, 2)
    streams = [new_stream() for _ in range(6)]
    fences = [Fence(SHARD, current), Fence(SHARD, current - 1), None] * 2
    outcomes = await asyncio.gather(
        *(
            event_store.append(replace(one(s, 0, events(1)), fence=f))
            for s, f in zip(streams, fences, strict=True)
        ),
        return_exceptions=True,
    )
    for stream, fence, outcome in zip(streams, fences, outcomes, strict=True):
        stale = fence is not None and fence.epoch != current
        assert isinstance(outcome, FencedOut) == stale
        assert len(await event_store.read_stream(stream)) == (0 if stale else 1)


async def test_an_append_naming_an_unknown_shard_is_refused(
    event_store: EventStore, event_store_db: Database | None
) -> None:
    await _claims(event_store, event_store_db, 1)
    stream = new_stream()
    with pytest.raises(FencedOut):
        await event_store.append(replace(one(stream, 0, events(1)), fence=Fence(99, 1)))
    assert await event_store.read_stream(stream) == []
