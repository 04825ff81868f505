"""Fencing on PostgreSQL when a claim and an append race: the append of the old term waits
for the claim's transaction and is then refused, so it never lands after its epoch ended
(the store decides, not the timing)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import asyncpg
import pytest
from tests.contract.eventstore_helpers import events, new_stream, one

from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.eventstore.base import Fence, FencedOut
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.shards.leases import ShardLeases

pytestmark = pytest.mark.postgres


async def test_an_append_racing_a_claim_is_refused_once_the_claim_commits(pg_url: str) -> None:
    db = await PostgresDatabase.connect(pg_url)
    await migrate(db)
    store = PostgresEventStore(db)
    claimer = await asyncpg.connect(pg_url)
    try:
        leases = ShardLeases(db, ttl=60)
        await leases.ensure_shard_count(4)
        old = await leases.claim(1, "paused")
        assert old is not None
        stream = new_stream()
        # Another instance's claim, in flight: the row is updated, not yet committed.
        claim = claimer.transaction()
        await claim.start()
        await claimer.execute(
            "UPDATE shard_leases SET owner = 'taker', epoch = epoch + 1 WHERE shard = 1"
        )
        append = asyncio.create_task(
            store.append(replace(one(stream, 0, events(1)), fence=Fence(1, old.epoch)))
        )
        await asyncio.sleep(0.5)
        assert not append.done()  # waiting for the claim: it cannot commit under it
        await claim.commit()
        with pytest.raises(FencedOut):
            await asyncio.wait_for(append, 10)
        assert await store.read_stream(stream) == []
    finally:
        await claimer.close()
        await store.close()
        await db.close()
