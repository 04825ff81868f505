"""Migrations of the SQL backends: recorded, applied once, safe when servers start together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
from tests.contract.eventstore_helpers import SQL_BACKENDS

from banking_es.db import migrate as runner
from banking_es.db.base import Database
from banking_es.db.migrate import available, migrate, status

pytestmark = pytest.mark.parametrize("backend", SQL_BACKENDS)

Opener = Callable[[], Awaitable[Database]]

#: Tables of the event store every backend's migrations must create.
EVENT_STORE_TABLES = {"events", "snapshots", "idempotency_keys", "outbox", "schema_migrations"}


async def _tables(db: Database) -> set[str]:
    if db.dialect == "sqlite":
        rows = await db.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await db.fetch(
            "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    return {r["name"] for r in rows}


async def _recorded_versions(db: Database) -> list[int]:
    rows = await db.fetch("SELECT version FROM schema_migrations ORDER BY version")
    return [int(r["version"]) for r in rows]


async def test_migrate_applies_every_file_once_and_nothing_the_second_time(
    open_database: Opener,
) -> None:
    db = await open_database()
    known = available(db.dialect)
    assert known, "no migration files packaged"
    assert [m.version for m in known] == sorted({m.version for m in known})

    first = await migrate(db)
    second = await migrate(db)

    assert [m.version for m in first] == [m.version for m in known]
    assert second == []
    assert await _recorded_versions(db) == [m.version for m in known]
    assert await _tables(db) >= EVENT_STORE_TABLES
    assert all(applied for _, applied in await status(db))


async def test_status_before_migrating_lists_everything_as_pending(open_database: Opener) -> None:
    db = await open_database()
    assert [applied for _, applied in await status(db)] == [False] * len(available(db.dialect))
    assert "events" not in await _tables(db)


async def test_migrate_from_a_new_connection_applies_nothing(open_database: Opener) -> None:
    assert await migrate(await open_database())
    assert await migrate(await open_database()) == []


async def test_concurrent_migrations_from_two_servers_apply_each_file_once(
    open_database: Opener,
) -> None:
    """Two servers starting at once on a fresh database: both succeed, each file runs once."""
    databases = [await open_database(), await open_database()]

    results = await asyncio.gather(*(migrate(db) for db in databases))

    applied = sorted(m.version for result in results for m in result)
    assert applied == [m.version for m in available(databases[0].dialect)]
    assert sorted(len(r) for r in results)[0] == 0  # one of them found nothing to do
    for db in databases:
        assert await _recorded_versions(db) == applied
        assert await _tables(db) >= EVENT_STORE_TABLES


async def test_mail_queue_migration_scrubs_reset_tokens_left_in_the_outbox(
    open_database: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older versions kept the reset token in the notification's payload after sending."""
    db = await open_database()
    everything = available(db.dialect)
    mail = next(m for m in everything if m.name == "mail_queue")
    monkeypatch.setattr(runner, "available", lambda d: [m for m in everything if m is not mail])
    await migrate(db)
    old = {"type": "password_reset", "user_id": "u1", "token": "LEAKED-TOKEN", "expires_at": "x"}
    await db.execute(
        "INSERT INTO outbox (topic, key, payload, event_position, created_at, published_at)"
        " VALUES ('notifications', 'u1', $1, NULL, $2, $2)",
        old,
        datetime.now(UTC),
    )
    monkeypatch.setattr(runner, "available", lambda d: everything)
    assert [m.name for m in await migrate(db)] == ["mail_queue"]
    [row] = await db.fetch("SELECT payload FROM outbox")
    assert row["payload"] == {"type": "password_reset", "user_id": "u1", "expires_at": "x"}
