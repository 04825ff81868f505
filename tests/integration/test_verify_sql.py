"""`banking-es verify` on PostgreSQL runs its checks as SQL: on every kind of damage it must
find and word exactly what the Python fold (the reference, `in_sql=False`) finds, and the
rule of funds in SQL must agree with `lowest_allowed_balance`."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from tests.conftest import run_sync
from tests.integration.test_verify import _FIRST, _LAST_EVENT, DAMAGE, damage
from tests.integration.verify_support import write_history

from banking_es.db.postgres import PostgresDatabase
from banking_es.domain.account import CLOSED, OPEN, Account, lowest_allowed_balance
from banking_es.verify import Report, verify
from banking_es.verify.sql import LOWEST_ALLOWED

pytestmark = pytest.mark.postgres

_TRANSFER_RECEIVED = _FIRST.format(type="TransferReceived")
#: Damage only the SQL pass's own paths see: accounts it leaves to the Python fold (an
#: amount it does not read, an undecodable event), transfers that are not one clean pair,
#: rows and checkpoints out of line, a snapshot it cannot read.
MORE_DAMAGE = {
    "an amount written as a JSON number": [
        "UPDATE events SET data = jsonb_set(data, {amount}, '7') WHERE position = "
        + _TRANSFER_RECEIVED
    ],
    "an undecodable amount": [
        "UPDATE events SET data = jsonb_set(data, {amount}, '\"seven\"') WHERE position = "
        + _FIRST.format(type="MoneyDeposited")
    ],
    "an unknown event type": [f"UPDATE events SET type = 'Bogus' WHERE position = {_LAST_EVENT}"],
    "an older schema (upcast)": [
        "UPDATE events SET metadata = jsonb_set(metadata, '{schema}', '0') WHERE position = "
        + _FIRST.format(type="MoneyWithdrawn")
    ],
    "an account closed twice": [
        f"INSERT INTO events SELECT {_LAST_EVENT} + 1, stream_id, version + 1, 'again', type,"
        " data, metadata, recorded_at FROM events WHERE type = 'AccountClosed'"
    ],
    "a transfer id used twice": [
        "UPDATE events SET data = jsonb_set(data, {transfer_id}, (SELECT data->'transfer_id'"
        " FROM events WHERE position = " + _FIRST.format(type="TransferSent") + "))"
        " WHERE position = (SELECT max(position) FROM events WHERE type = 'TransferSent')"
    ],
    "a transfer to another account": [
        "UPDATE events SET data = jsonb_set(data, '{to_account_id}', '\"elsewhere\"')"
        " WHERE position = " + _FIRST.format(type="TransferSent")
    ],
    "an unreadable snapshot": [
        "UPDATE snapshots SET state = jsonb_set(state, {balance}, '\"lots\"')"
        " WHERE version = (SELECT min(version) FROM snapshots)"
    ],
    "a transactions checkpoint behind": [
        "UPDATE projection_checkpoints SET position = position - 4 WHERE name = 'transactions'"
    ],
    "a summary row missing and one extra": [
        "DELETE FROM account_summaries WHERE account_id = (SELECT min(account_id)"
        " FROM account_summaries)",
        "INSERT INTO account_summaries SELECT 'ghost', owner_name, owner_id, balance, currency,"
        " status, version, created_position, created_at, updated_at FROM account_summaries"
        " LIMIT 1",
    ],
    "a transactions row without an event": [
        "INSERT INTO transactions SELECT 'stray', account_id, type, amount, balance_after,"
        " description, 999, transfer_id, position, occurred_at FROM transactions LIMIT 1"
    ],
    "a status on a row of no hold": [
        "UPDATE transactions SET status = 'pending' WHERE position = "
        + _FIRST.format(type="MoneyDeposited")
    ],
    "an outbox row of another key": [
        f"UPDATE outbox SET key = 'someone' WHERE event_position = {_LAST_EVENT} - 1"
    ],
}


#: Changes both passes read as a sound store: the domain decodes the same events, and a
#: second close (which the domain refuses to emit) breaks no rule verify checks.
_SOUND = (
    "an amount written as a JSON number",
    "an older schema (upcast)",
    "an account closed twice",
)


@pytest.fixture
def pg_store(pg_url: str, tmp_path: Path) -> str:
    run_sync(write_history(pg_url, tmp_path, outbox=True))
    return pg_url


async def _both(url: str) -> tuple[Report, Report]:
    db = await PostgresDatabase.connect(url, max_size=2)
    try:
        return await verify(db), await verify(db, in_sql=False)
    finally:
        await db.close()


def _same(in_sql: Report, folded: Report) -> None:
    assert Counter(in_sql.problems) == Counter(folded.problems), (
        in_sql.problems,
        folded.problems,
    )
    assert in_sql.counts == folded.counts
    assert in_sql.compared == folded.compared
    assert (in_sql.head, in_sql.events, in_sql.streams) == (
        folded.head,
        folded.events,
        folded.streams,
    )


def test_a_sound_store_gives_the_same_report(pg_store: str) -> None:
    in_sql, folded = run_sync(_both(pg_store))
    assert in_sql.sound, in_sql.problems
    _same(in_sql, folded)


@pytest.mark.parametrize(
    "statements",
    [pytest.param(statements, id=kind) for kind, (statements, _) in DAMAGE.items()]
    + [pytest.param(statements, id=kind) for kind, statements in MORE_DAMAGE.items()],
)
def test_sql_and_the_python_fold_find_the_same_problems(
    pg_store: str, statements: list[str]
) -> None:
    damage(pg_store, *statements)
    in_sql, folded = run_sync(_both(pg_store))
    _same(in_sql, folded)
    if statements in (MORE_DAMAGE[kind] for kind in _SOUND):
        assert in_sql.sound, in_sql.problems
    else:
        assert not in_sql.sound


async def _lowest_in_sql(url: str, account: Account) -> Decimal:
    db = await PostgresDatabase.connect(url, min_size=1, max_size=1)
    try:
        value = await db.fetchval(
            f"SELECT ({LOWEST_ALLOWED}) FROM (VALUES ($1::text, $2::int, $3::numeric,"
            " $4::text)) AS w(stream_id, version, balance, closed_reason)",
            account.id,
            account.version,
            account.balance,
            account.closed_reason,
        )
    finally:
        await db.close()
    return Decimal(value)


@pytest.mark.parametrize(
    "account",
    [
        Account("a", "Ann", None, Decimal("0.00"), "USD", OPEN, 1),
        Account("b", "Bob", "u1", Decimal("-5.00"), "EUR", OPEN, 7),
        Account("c", "Cy", None, Decimal("123456.78"), "JPY", CLOSED, 3, closed_reason="gone"),
        Account("d", "Di", None, Decimal("1.00"), "USD", OPEN, 40, datetime.now(UTC)),
    ],
    ids=["empty", "negative", "closed", "later"],
)
def test_the_rule_of_funds_in_sql_is_the_domains(pg_url: str, account: Account) -> None:
    assert run_sync(_lowest_in_sql(pg_url, account)) == lowest_allowed_balance(account)


async def _shared_snapshot(url: str) -> tuple[int, int, int]:
    db = await PostgresDatabase.connect(url, min_size=3, max_size=3)
    try:
        await db.execute("CREATE TABLE seen (n int)")
        await db.execute("INSERT INTO seen VALUES (1)")
        async with db.snapshot() as first:
            shared = await first.fetchval("SELECT pg_export_snapshot()")
            await db.execute("INSERT INTO seen VALUES (2)")
            async with db.snapshot(shared) as second:
                together = await second.fetchval("SELECT count(*) FROM seen")
            alone = await first.fetchval("SELECT count(*) FROM seen")
        return together, alone, await db.fetchval("SELECT count(*) FROM seen")
    finally:
        await db.close()


def test_a_second_connection_reads_the_same_snapshot(pg_url: str) -> None:
    # verify reads the transfers and the outbox on a second connection in the same snapshot
    assert run_sync(_shared_snapshot(pg_url)) == (1, 1, 2)


async def _bad_snapshot_id(url: str) -> None:
    db = await PostgresDatabase.connect(url, min_size=1, max_size=1)
    try:
        async with db.snapshot("x'; DROP TABLE events; --"):
            pass
    finally:
        await db.close()


def test_a_snapshot_id_is_checked_before_it_is_sent(pg_url: str) -> None:
    with pytest.raises(ValueError, match="not a snapshot id"):
        run_sync(_bad_snapshot_id(pg_url))


async def _on_one_connection(url: str) -> tuple[Report, Report]:
    one = await PostgresDatabase.connect(url, min_size=1, max_size=1)
    try:
        alone = await verify(one)
    finally:
        await one.close()
    return alone, (await _both(url))[0]


def test_with_one_connection_the_same_statements_run_after_the_fold(pg_store: str) -> None:
    damage(pg_store, *DAMAGE["an outbox row missing"][0])
    alone, shared = run_sync(_on_one_connection(pg_store))
    assert not alone.sound
    _same(alone, shared)
