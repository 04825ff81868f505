"""Fixtures for the API tests: the app over `httpx.ASGITransport`, on SQLite or PostgreSQL.

`api` is an `httpx.AsyncClient` talking to `create_app(settings, services)` in process,
logged in as a new customer (its `Authorization` header is set); `services` is the same
`Services` container, so a test can look at the event store directly (`store_state`
snapshots it to prove a rejected request changed nothing). `world` is the module-wide set of
accounts of the bad-input tests (`tests/e2e/bad_input_support.py`).

The backend is SQLite unless a test asks for both (see `tests/e2e/http_support.py`)::

    @pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from tests.api_support import running_services
from tests.e2e.bad_input_support import World
from tests.e2e.http_support import E2E_SETTINGS, StoreState, api_client, snapshot_store

from banking_es.bootstrap import Services


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` unless parametrised indirectly with ``postgres``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def api_database_url(db_backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if db_backend == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'banking.db'}"


@pytest.fixture
async def services(api_database_url: str, tmp_path: Path) -> AsyncIterator[Services]:
    """Started services (projections and outbox relay running) on a fresh database."""
    async with running_services(tmp_path, api_database_url, **E2E_SETTINGS) as started:
        yield started


@pytest.fixture
async def api(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(services) as client:
        yield client


@pytest.fixture
def store_state(services: Services) -> Callable[[], Awaitable[StoreState]]:
    """`await store_state()`: the store's current head and events."""

    async def take() -> StoreState:
        return await snapshot_store(services)

    return take


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    data_dir = tmp_path_factory.mktemp("bad_input")
    async with (
        running_services(data_dir, **E2E_SETTINGS) as services,
        api_client(services) as api,
    ):
        yield await World(api, services, {}).fresh()
