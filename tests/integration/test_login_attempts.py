"""The lock-out table (`LoginAttempts`) on SQLite and PostgreSQL, on the fake clock: the
bound under concurrency from two connections pools, the sliding window, the resets, unlock
and purge; the migration keeps a user locked before it locked."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from tests.clock_support import FakeClock
from tests.contract.eventstore_helpers import SQL_BACKENDS
from tests.db_support import DatabaseOpener

from banking_es.db.base import Database
from banking_es.db.migrate import available, migrate, split_statements
from banking_es.identity.lockout import LoginAttempts, new_ticket

pytestmark = pytest.mark.parametrize("backend", SQL_BACKENDS)

MAX = 3
WINDOW = timedelta(seconds=60)


async def _attempts(open_database: DatabaseOpener) -> LoginAttempts:
    db: Database = await open_database()
    await migrate(db)
    return LoginAttempts(db, MAX, WINDOW)


async def _fail(attempts: LoginAttempts, clock: FakeClock, name: str = "ann") -> list[str]:
    ticket = new_ticket()
    assert await attempts.reserve([name], ticket, clock.now()) is None
    return await attempts.fail([name], ticket, clock.now())


async def test_concurrent_reservations_from_two_pools_allow_max_checks(
    open_database: DatabaseOpener,
) -> None:
    first, second = await _attempts(open_database), await _attempts(open_database)
    clock = FakeClock()
    waits = await asyncio.gather(
        *(
            (first if n % 2 else second).reserve(["ann"], new_ticket(), clock.now())
            for n in range(50)
        )
    )
    assert waits.count(None) == MAX
    assert all(w == 60 for w in waits if w is not None)


async def test_the_nth_failure_locks_in_a_sliding_window_and_the_lock_ends(
    open_database: DatabaseOpener,
) -> None:
    attempts = await _attempts(open_database)
    clock = FakeClock()
    assert await _fail(attempts, clock) == []  # t=0
    clock.advance(30)
    assert await _fail(attempts, clock) == []  # t=30
    clock.advance(31)
    assert await _fail(attempts, clock) == []  # t=61: the first failure slid out
    clock.advance(5)
    assert await _fail(attempts, clock) == ["ann"]  # t=66: the third within 60 s locks
    assert await attempts.reserve(["ann"], new_ticket(), clock.now()) == 60
    assert await attempts.reserve(["other"], new_ticket(), clock.now()) is None
    clock.advance(59)
    assert await attempts.reserve(["ann"], new_ticket(), clock.now()) == 1
    clock.advance(1)
    for _ in range(MAX - 1):  # the count started again with the lock's end
        assert await _fail(attempts, clock) == []
    assert await attempts.reserve(["ann"], new_ticket(), clock.now()) is None


async def test_a_success_starts_the_count_again(open_database: DatabaseOpener) -> None:
    attempts = await _attempts(open_database)
    clock = FakeClock()
    for _ in range(MAX - 1):
        await _fail(attempts, clock)
    ticket = new_ticket()
    assert await attempts.reserve(["ann"], ticket, clock.now()) is None
    async with attempts.db.transaction() as conn:
        await attempts.succeed(conn, ["ann"], ticket, clock.now())
    assert await attempts.db.fetchval("SELECT count(*) FROM login_attempts") == 0
    for _ in range(MAX - 1):
        assert await _fail(attempts, clock) == []


async def test_a_reservation_on_two_keys_takes_both_or_neither(
    open_database: DatabaseOpener,
) -> None:
    attempts = await _attempts(open_database)
    clock = FakeClock()
    for _ in range(MAX):
        await _fail(attempts, clock, "ann@example.com")
    assert await attempts.reserve(["ann", "ann@example.com"], new_ticket(), clock.now()) == 60
    for _ in range(MAX - 1):  # nothing was reserved on "ann"
        assert await _fail(attempts, clock, "ann") == []


async def test_unlock_forgets_the_keys_and_records_who(open_database: DatabaseOpener) -> None:
    attempts = await _attempts(open_database)
    clock = FakeClock()
    for _ in range(MAX):
        await _fail(attempts, clock)
    async with attempts.db.transaction() as conn:
        ended = await attempts.unlock(conn, ["ann", "nobody"], None, "cli:root", clock.now())
    assert ended == ["ann"]
    assert await attempts.reserve(["ann"], new_ticket(), clock.now()) is None
    [record] = await attempts.unlocks("ann")
    assert record["unlocked_by"] == "cli:root"
    assert record["locked_until"] == clock.now() + WINDOW


async def test_purge_drops_the_rows_that_ended(open_database: DatabaseOpener) -> None:
    attempts = await _attempts(open_database)
    clock = FakeClock()
    for name in ("ann", "bob"):
        await _fail(attempts, clock, name)
    clock.advance(30)
    await _fail(attempts, clock, "bob")
    clock.advance(31)
    await attempts.purge(clock.now())
    rows = await attempts.db.fetch("SELECT name_key FROM login_attempts")
    assert [r["name_key"] for r in rows] == ["bob"]


async def test_a_user_locked_before_the_migration_stays_locked_under_both_names(
    open_database: DatabaseOpener,
) -> None:
    db = await open_database()
    clock = FakeClock()
    lock_out_table = {"postgres": 10, "sqlite": 6}[db.dialect]
    async with db.transaction() as conn:  # the schema as it was before, with a locked user
        await conn.execute(
            "CREATE TABLE schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        for migration in available(db.dialect):
            if migration.version >= lock_out_table:
                break
            for statement in split_statements(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
                *(migration.version, migration.name, clock.now()),
            )
        await conn.execute(
            "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
            " roles, failed_logins, locked_until, created_at, updated_at)"
            " VALUES ('u1', 'Ann', 'ann', 'Ann@x.org', 'ann@x.org', 'h', 'customer', 0, $1,"
            " $2, $2)",
            *(clock.now() + WINDOW, clock.now()),
        )
    await migrate(db)
    attempts = LoginAttempts(db, MAX, WINDOW)
    for name in ("ann", "ann@x.org"):
        assert await attempts.reserve([name], new_ticket(), clock.now()) == 60
    assert await attempts.reserve(["bob"], new_ticket(), clock.now()) is None
