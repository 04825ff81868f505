"""Leader election with a lease row, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from banking_es.application.ports import SystemClock
from banking_es.db.base import Database
from banking_es.db.lease import LeaseElection
from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.db.sqlite import SqliteDatabase


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        database: Database = await SqliteDatabase.connect(tmp_path / "lease.db")
    else:
        database = await PostgresDatabase.connect(request.getfixturevalue("pg_url"))
    await migrate(database)
    yield database
    await database.close()


async def test_one_holder_leads_until_it_releases_or_its_lease_expires(db: Database) -> None:
    clock = SystemClock()
    # A lease of seconds: a busy machine may stall between two statements for a good part
    # of a second, which a shorter one would not survive.
    first = LeaseElection(db, "job", clock, holder="first", ttl=3.0)
    second = LeaseElection(db, "job", clock, holder="second", ttl=3.0)
    assert await first.ensure()
    assert not await second.ensure()
    assert first.is_leader
    assert not second.is_leader

    await first.release()
    await asyncio.sleep(second.standby_poll + 0.05)  # the stand-by's next attempt
    assert await second.ensure()
    assert not await first.ensure()

    # The leader dies (no renewal, no release): the lease expires and the other takes over.
    await asyncio.sleep(3.1)
    assert await first.ensure()
    assert await db.fetchval("SELECT holder FROM leases WHERE name = 'job'") == "first"


async def test_the_metrics_hook_hears_each_change_of_leadership_once(db: Database) -> None:
    """It drives `banking_es_leader{role}`, whose sum 0 is the "leader missing" alert."""
    heard: list[tuple[str, bool]] = []

    def election(holder: str) -> LeaseElection:
        def told(held: bool) -> None:
            heard.append((holder, held))

        return LeaseElection(db, "job", SystemClock(), holder=holder, ttl=3.0, on_change=told)

    first, second = election("first"), election("second")
    assert await first.ensure()
    assert await first.ensure()  # a renewal is no change
    assert not await second.ensure()  # never led: nothing to say
    await first.release()
    await asyncio.sleep(second.standby_poll + 0.05)
    assert await second.ensure()
    assert heard == [("first", True), ("first", False), ("second", True)]


def test_the_ttl_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ttl"):
        LeaseElection(None, "job", SystemClock(), ttl=0)  # type: ignore[arg-type]
