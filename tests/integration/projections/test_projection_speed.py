"""The speed of a full rebuild of both projections over 100,000 events on PostgreSQL (slow)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from decimal import Decimal

import pytest
from tests.integration.projection_support import SUMMARIES, TRANSACTIONS, new_event

from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.domain.events import AccountCreated, MoneyDeposited, MoneyWithdrawn
from banking_es.eventstore.base import AppendRequest, EventStore, NewEvent, StreamAppend
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.projections import default_projections
from banking_es.projections.runner import ProjectionRunner


async def bulk_populate(store: EventStore, accounts: int, events: int) -> None:
    """About `events` events over `accounts` accounts, appended in large requests."""
    rng = random.Random(11)
    ids = [str(uuid.uuid4()) for _ in range(accounts)]
    versions = dict.fromkeys(ids, 0)
    balances = dict.fromkeys(ids, Decimal("1000.00"))
    for start in range(0, accounts, 200):
        chunk = ids[start : start + 200]
        await store.append(
            AppendRequest(
                [
                    StreamAppend(
                        a, 0, [new_event(AccountCreated(a, "Bulk", Decimal("1000.00"), "USD", "o"))]
                    )
                    for a in chunk
                ]
            )
        )
        for a in chunk:
            versions[a] = 1
    written = accounts
    while written < events:
        parts = []
        for a in rng.sample(ids, 50):
            batch: list[NewEvent] = []
            for _ in range(20):
                amount = Decimal(rng.randint(1, 5000)) / 100
                if rng.random() < 0.5 and balances[a] >= amount:
                    balances[a] -= amount
                    batch.append(new_event(MoneyWithdrawn(amount, None)))
                else:
                    balances[a] += amount
                    batch.append(new_event(MoneyDeposited(amount, "bulk")))
            parts.append(StreamAppend(a, versions[a], batch))
            versions[a] += len(batch)
            written += len(batch)
        await store.append(AppendRequest(parts))


@pytest.mark.slow
@pytest.mark.postgres
async def test_rebuild_speed_on_postgres(pg_url: str) -> None:
    db = await PostgresDatabase.connect(pg_url)
    store = PostgresEventStore(db)
    try:
        await migrate(db)
        await bulk_populate(store, accounts=2000, events=100_000)
        head = await store.head_position()
        runner = ProjectionRunner(db, store, default_projections())

        started = time.perf_counter()
        counts = await asyncio.gather(*(runner.rebuild(n) for n in (SUMMARIES, TRANSACTIONS)))
        elapsed = time.perf_counter() - started
        assert counts == [head, head]
        print(
            f"\nrebuilt both projections over {head} events in {elapsed:.2f} s:"
            f" {head / elapsed:,.0f} events/s ({2 * head / elapsed:,.0f} applications/s)"
        )
        for name in (SUMMARIES, TRANSACTIONS):
            started = time.perf_counter()
            await runner.rebuild(name)
            one = time.perf_counter() - started
            print(f"{name} alone: {head / one:,.0f} events/s")
        assert await db.fetchval("SELECT count(*) FROM transactions") == head
    finally:
        await store.close()
        await db.close()
