"""A migrated PostgreSQL event store with a listener on its stream notices (shared setup of
the tests that check what the append statement notifies)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.eventstore.notices import STREAMS_CHANNEL
from banking_es.eventstore.postgres import PostgresEventStore


@asynccontextmanager
async def store_and_notices(
    pg_url: str, **store_options: Any
) -> AsyncIterator[tuple[PostgresDatabase, PostgresEventStore, asyncio.Queue[str]]]:
    """The database, its store and a queue of every notify payload on `STREAMS_CHANNEL`."""
    db = await PostgresDatabase.connect(pg_url, max_size=4)
    await migrate(db)
    store = PostgresEventStore(db, **store_options)
    listener = await asyncpg.connect(pg_url)
    payloads: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(STREAMS_CHANNEL, lambda *args: payloads.put_nowait(args[3]))
    try:
        yield db, store, payloads
    finally:
        await listener.close()
        await store.close()
        await db.close()
