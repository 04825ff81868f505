"""Fixtures of the identity tests: the app in-process on SQLite and PostgreSQL, with a
clock the tests move (lock-out and reset-token expiry) and small limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.auth import ShiftedClock, running_app

from banking_es.bootstrap import Services

MAX_ATTEMPTS = 3
LOCKOUT = 60
RESET_TTL = 1800

App = tuple[httpx.AsyncClient, Services]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'banking.db'}"


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
async def app(tmp_path: Path, database_url: str, clock: ShiftedClock) -> AsyncIterator[App]:
    async with running_app(
        tmp_path,
        database_url,
        clock=clock,
        max_login_attempts=MAX_ATTEMPTS,
        lockout_duration=LOCKOUT,
        password_reset_ttl=RESET_TTL,
    ) as pair:
        yield pair
