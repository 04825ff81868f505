"""Fixtures shared by every test suite.

Backends
    `backend` is parametrised as ``memory``, ``sqlite`` and ``postgres`` (the last one marked
    `postgres`); `event_store` yields a migrated store of that backend and closes it afterwards.
    A test that covers fewer backends overrides the parameter directly::

        @pytest.mark.parametrize("backend", SQL_BACKENDS)  # tests/contract/eventstore_helpers.py

    `open_event_store` opens more stores on the same database (another "server process"),
    `open_database` a raw, unmigrated `Database` on it.

PostgreSQL
    `pg_url` creates a uniquely named database on the server of `pg_admin_url`
    (``TEST_DATABASE_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``) and drops
    it afterwards, so tests never share state and may run in parallel. `database_url` is a fresh
    database's URL, parametrised over SQLite and PostgreSQL (for tests of the whole app).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from tests.db_support import (
    DatabaseOpener,
    StoreOpener,
    admin_execute,
    connect_database,
    run_sync,
    sql_event_store,
    url_of_database,
)
from tests.xdist_support import group_postgres_tests, turn

from banking_es.db.base import Database
from banking_es.db.migrate import migrate
from banking_es.eventstore.base import EventStore
from banking_es.eventstore.memory import MemoryEventStore

# Property tests judge results, not timings: Hypothesis's 200 ms deadline per example fails
# them ("Flaky") when a busy machine stalls one example.
hypothesis.settings.register_profile("banking-es", deadline=None)
hypothesis.settings.load_profile("banking-es")

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


# ---- running on pytest-xdist workers (tests/xdist_support.py) ------------------------------


@pytest.hookimpl(tryfirst=True)  # before xdist names the groups, and before `-m` selects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    group_postgres_tests(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[object]:
    with turn(item):
        return (yield)


# ---- locations ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG_ADMIN_URL)


def _fresh_pg_database(admin_url: str) -> Iterator[str]:
    name = f"test_bes_{uuid.uuid4().hex[:12]}"
    run_sync(admin_execute(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield url_of_database(admin_url, name)
    finally:
        run_sync(admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of its own, dropped after the test."""
    yield from _fresh_pg_database(pg_admin_url)


@pytest.fixture(scope="module")
def pg_module_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database shared by the tests of one module, dropped after them."""
    yield from _fresh_pg_database(pg_admin_url)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "banking.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh database, once on SQLite and once on PostgreSQL (`pg_url`)."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'banking.db'}"


# ---- event store backends -------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The event-store backend of this test: ``memory``, ``sqlite`` or ``postgres``."""
    name: str = request.param
    return name


@pytest.fixture
def store_location(backend: str, request: pytest.FixtureRequest) -> str | None:
    """Where the backend keeps its data: the SQLite file, the PostgreSQL URL, or None (memory).

    Resolved in a synchronous fixture so that `pg_url` is only created for PostgreSQL tests.
    """
    if backend == "sqlite":
        return str(request.getfixturevalue("sqlite_path"))
    if backend == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return None


@pytest.fixture
async def open_database(backend: str, store_location: str | None) -> AsyncIterator[DatabaseOpener]:
    """Open a new, *unmigrated* `Database` on this test's SQL backend; closed at teardown."""
    opened: list[Database] = []

    async def open_db() -> Database:
        if store_location is None:
            raise ValueError(f"the {backend} backend has no database")
        db = await connect_database(backend, store_location)
        opened.append(db)
        return db

    try:
        yield open_db
    finally:
        for db in reversed(opened):
            await db.close()


@pytest.fixture
async def open_event_store(backend: str, store_location: str | None) -> AsyncIterator[StoreOpener]:
    """Open (another) migrated store on this test's backend; all are closed at teardown.

    SQL backends get a new connection (pool) on the same database each call, like another
    server process would; the memory backend has one store, returned each time. Keyword
    arguments go to the store's constructor.
    """
    memory: MemoryEventStore | None = None
    opened: list[tuple[EventStore, Database | None]] = []

    async def open_store(**options: Any) -> EventStore:
        nonlocal memory
        if backend == "memory":
            if memory is None:
                memory = MemoryEventStore(**options)
                opened.append((memory, None))
            return memory
        assert store_location is not None
        db = await connect_database(backend, store_location)
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        store = sql_event_store(db, **options)
        opened.append((store, db))
        return store

    try:
        yield open_store
    finally:
        for store, db in reversed(opened):
            try:
                await store.close()
            finally:
                if db is not None:
                    await db.close()


@pytest.fixture
async def event_store(open_event_store: StoreOpener) -> EventStore:
    """A migrated, empty event store of the `backend` under test."""
    return await open_event_store()


@pytest.fixture
def event_store_db(event_store: EventStore) -> Database | None:
    """The `Database` under `event_store` (None for the memory backend)."""
    db: Database | None = getattr(event_store, "db", None)
    return db
