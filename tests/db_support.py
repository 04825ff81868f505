"""Helpers around the test databases: PostgreSQL administration, raw connections and stores.

The fixtures built on them are in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from banking_es.db.base import Database
from banking_es.db.postgres import PostgresDatabase, normalize_url
from banking_es.db.sqlite import SqliteDatabase
from banking_es.eventstore.base import EventStore
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.eventstore.sqlite import SqliteEventStore

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion from synchronous code, whether or not a loop is running here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def url_of_database(admin_url: str, name: str) -> str:
    """`admin_url` pointing at database `name` instead."""
    parts = urlsplit(normalize_url(admin_url))
    return urlunsplit(parts._replace(path=f"/{name}"))


async def admin_execute(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(normalize_url(admin_url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def connect_database(backend: str, location: str) -> Database:
    """A `Database` for an SQL backend (not migrated)."""
    if backend == "sqlite":
        return await SqliteDatabase.connect(location)
    if backend == "postgres":
        return await PostgresDatabase.connect(location)
    raise ValueError(f"{backend} has no database")


def sql_event_store(db: Database, **options: Any) -> SqliteEventStore | PostgresEventStore:
    if db.dialect == "sqlite":
        return SqliteEventStore(db, **options)
    return PostgresEventStore(db, **options)


StoreOpener = Callable[..., Awaitable[EventStore]]
DatabaseOpener = Callable[[], Awaitable[Database]]
