"""Fixtures of the projection tests: a migrated database plus event store, on SQLite and
PostgreSQL (`open_env` opens another one on the same database, as another process would)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.integration.projection_support import BACKENDS, Env, Opener

from banking_es.db.base import Database
from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.db.sqlite import SqliteDatabase
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.eventstore.sqlite import SqliteEventStore
from banking_es.projections import runner as runner_module


@pytest.fixture(params=BACKENDS)
def sql_backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def db_location(sql_backend: str, request: pytest.FixtureRequest) -> str:
    if sql_backend == "sqlite":
        path: Path = request.getfixturevalue("sqlite_path")
        return str(path)
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def open_env(sql_backend: str, db_location: str) -> AsyncIterator[Opener]:
    """Open (another) database connection plus event store on this test's database."""
    opened: list[Env] = []

    async def open_() -> Env:
        db: Database
        if sql_backend == "sqlite":
            db = await SqliteDatabase.connect(db_location)
        else:
            db = await PostgresDatabase.connect(db_location)
        try:
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        store = SqliteEventStore(db) if sql_backend == "sqlite" else PostgresEventStore(db)
        env = Env(db, store)
        opened.append(env)
        return env

    try:
        yield open_
    finally:
        for env in reversed(opened):
            try:
                await env.store.close()
            finally:
                await env.db.close()


@pytest.fixture
async def env(open_env: Opener) -> Env:
    return await open_env()


@pytest.fixture
def small_rebuild_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let rebuilds use the runner's (small) batch size, so they take many batches."""
    monkeypatch.setattr(runner_module, "REBUILD_BATCH_SIZE", 1)
