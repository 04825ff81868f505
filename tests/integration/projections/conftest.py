"""Fixtures of the projection tests: a migrated database plus event store, on SQLite and
PostgreSQL (`open_env` opens another one on the same database, as another process would).
They stand on the root conftest's `backend` and `open_event_store`, limited to SQL here."""

from __future__ import annotations

import pytest
from tests.db_support import StoreOpener
from tests.integration.projection_support import BACKENDS, Env, Opener

from banking_es.eventstore.sql import SqlEventStore
from banking_es.projections import runner as runner_module


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres``: projections live in SQL tables."""
    name: str = request.param
    return name


@pytest.fixture
def open_env(open_event_store: StoreOpener) -> Opener:
    """Open (another) database connection plus event store on this test's database."""

    async def open_() -> Env:
        store = await open_event_store()
        assert isinstance(store, SqlEventStore)
        return Env(store.db, store)

    return open_


@pytest.fixture
async def env(open_env: Opener) -> Env:
    return await open_env()


@pytest.fixture
def small_rebuild_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let rebuilds use the runner's (small) batch size, so they take many batches."""
    monkeypatch.setattr(runner_module, "REBUILD_BATCH_SIZE", 1)
