"""How many batches of appends one process keeps in flight at PostgreSQL's append lock:
two alone, one each when the server's workers share the lock (`PostgresEventStore`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.api_support import make_settings
from tests.contract.eventstore_helpers import events, new_stream, one

from banking_es.bootstrap.adapters import build_store
from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.eventstore.batching import BatchPlan
from banking_es.eventstore.postgres import PostgresEventStore

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize(("processes", "in_flight"), [(1, 2), (2, 1), (3, 1)])
async def test_batches_in_flight_share_the_lock_between_processes(
    pg_url: str, processes: int, in_flight: int
) -> None:
    db = await PostgresDatabase.connect(pg_url, max_size=6)
    await migrate(db)
    store = PostgresEventStore(db, processes=processes, batch_max_wait_ms=0)
    running, most = 0, 0
    apply_batch = store._apply_batch

    async def slow_batch(requests: list[Any]) -> BatchPlan:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)  # long enough for every other append to queue
            return await apply_batch(requests)
        finally:
            running -= 1

    store._apply_batch = slow_batch  # type: ignore[method-assign]
    try:
        appends = []
        for _ in range(60):  # arriving over 0.12 s, while the first batches are in flight
            appends.append(asyncio.create_task(store.append(one(new_stream(), 0, events(1)))))
            await asyncio.sleep(0.002)
        results = await asyncio.gather(*appends)
    finally:
        await db.close()
    assert all(len(r) == 1 for r in results)
    assert most == in_flight


def test_the_server_tells_the_store_how_many_workers_share_the_lock(tmp_path: Path) -> None:
    url = "postgresql://postgres@127.0.0.1:5432/postgres"  # build_store does not connect
    for workers, concurrency in ((1, 2), (2, 1), (4, 1)):
        settings = make_settings(tmp_path, url, workers=workers)
        store = build_store(settings, PostgresDatabase(pool=None, url=url))  # type: ignore[arg-type]
        assert store.commit_concurrency == concurrency
