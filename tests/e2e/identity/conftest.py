"""Fixtures of the identity tests: the app in-process on SQLite and PostgreSQL, with a
clock the tests move (lock-out and reset-token expiry) and small limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.api_support import App, running_app
from tests.auth import LOCKOUT, MAX_ATTEMPTS, RESET_TTL
from tests.clock_support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=None)


@pytest.fixture
async def app(tmp_path: Path, database_url: str, clock: FakeClock) -> AsyncIterator[App]:
    async with running_app(
        tmp_path,
        database_url,
        clock=clock,
        max_login_attempts=MAX_ATTEMPTS,
        lockout_duration=LOCKOUT,
        password_reset_ttl=RESET_TTL,
    ) as pair:
        yield pair
