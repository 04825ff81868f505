"""`banking-es verify`: a store written through the service is sound on both backends, and
each kind of damage, made with one SQL statement, is found and named."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from tests.db_support import run_sync
from tests.e2e.http_support import BOTH_BACKENDS
from tests.integration.verify_support import run_verify, service_settings, write_history

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import build_services
from banking_es.config import load_settings
from banking_es.db.base import Database
from banking_es.db.postgres import PostgresDatabase
from banking_es.db.sqlite import SqliteDatabase
from banking_es.domain import commands as cmd
from banking_es.verify import verify


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    backend = request.param
    url: str = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'banking.db'}"
    )
    run_sync(write_history(url, tmp_path, outbox=True))
    return url


async def _connect(url: str) -> Database:
    settings = load_settings(database_url=url)
    if settings.backend == "postgres":
        return await PostgresDatabase.connect(url, max_size=2)
    return await SqliteDatabase.connect(settings.sqlite_path)


def damage(url: str, *statements: str) -> None:
    """Run SQL on the store; `{json_set}` is the dialect's function that sets a JSON key
    (`{json_set}(data, amount, '"5.00"')`), `{key}` a key's path."""

    async def run() -> None:
        db = await _connect(url)
        try:
            pg = db.dialect == "postgres"
            for sql in statements:
                sql = sql.replace("{json_set}", "jsonb_set" if pg else "json_set")
                for name in ("amount", "transfer_id", "balance"):
                    key = f"'{{{name}}}'" if pg else f"'$.{name}'"
                    sql = sql.replace("{" + name + "}", key)
                if not pg:
                    sql = sql.replace("::jsonb", "").replace("'\"", "'").replace("\"'", "'")
                await db.execute(sql)
        finally:
            await db.close()

    run_sync(run())


@pytest.mark.parametrize("store_url", BOTH_BACKENDS, indirect=True)
def test_a_store_written_through_the_service_is_sound(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_verify(monkeypatch, store_url)
    assert result.exit_code == 0, result.output
    assert "sound" in result.stdout
    assert " 0 transfers" not in result.stdout
    assert " 0 snapshots" not in result.stdout
    assert " 0 outbox rows" not in result.stdout


_LAST_EVENT = "(SELECT max(position) FROM events)"
_FIRST = "(SELECT min(position) FROM events WHERE type = '{type}')"

DAMAGE = {
    "a gap": (
        [f"UPDATE events SET position = position + 1 WHERE position = {_LAST_EVENT}"],
        "positions: gap: no event at position ",
    ),
    "a version hole": (
        [
            "UPDATE events SET version = version + 1 WHERE position = "
            + _FIRST.format(type="AccountClosed")
        ],
        "versions: account ",
    ),
    "an unmatched transfer": (
        [
            "UPDATE events SET data = {json_set}(data, {transfer_id}, '\"bogus\"'::jsonb)"
            " WHERE position = " + _FIRST.format(type="TransferReceived")
        ],
        "transfers: transfer bogus: TransferReceived at position ",
    ),
    "a transfer of another amount": (
        [
            "UPDATE events SET data = {json_set}(data, {amount}, '\"6.00\"'::jsonb)"
            " WHERE position = " + _FIRST.format(type="TransferReceived")
        ],
        "sent 7.00 USD",
    ),
    "a negative balance": (
        [
            "UPDATE events SET data = {json_set}(data, {amount}, '\"900.00\"'::jsonb)"
            " WHERE position = " + _FIRST.format(type="MoneyWithdrawn")
        ],
        "balances: account ",
    ),
    "a summary row changed": (
        ["UPDATE account_summaries SET balance = balance + 1"],
        "account_summaries: account ",
    ),
    "a transactions row changed": (
        [
            "UPDATE transactions SET balance_after = balance_after - 1 WHERE position = "
            + _FIRST.format(type="MoneyDeposited")
        ],
        "transactions: account ",
    ),
    "a transactions row missing": (
        ["DELETE FROM transactions WHERE position = " + _FIRST.format(type="TransferSent")],
        ": no row (position ",
    ),
    "a checkpoint beyond the events": (
        ["UPDATE projection_checkpoints SET position = position + 5 WHERE name = 'transactions'"],
        "transactions: checkpoint ",
    ),
    "a snapshot changed": (
        ["UPDATE snapshots SET state = {json_set}(state, {balance}, '\"999.00\"'::jsonb)"],
        "snapshots: account ",
    ),
    "an outbox row missing": (
        [f"DELETE FROM outbox WHERE event_position = {_LAST_EVENT} - 3"],
        "outbox: no outbox row for the event(s) at position ",
    ),
}


@pytest.mark.parametrize("store_url", BOTH_BACKENDS, indirect=True)
@pytest.mark.parametrize("kind", list(DAMAGE))
def test_each_kind_of_damage_is_found_and_named(
    store_url: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements, line = DAMAGE[kind]
    damage(store_url, *statements)
    result = run_verify(monkeypatch, store_url)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a report, no crash
    assert line in result.stdout, result.stdout
    assert "NOT SOUND" in result.stdout


async def _verify_while_writing(url: str, data_dir: Path) -> list[int]:
    """Verify three times while the service deposits and transfers and its projections
    follow; answer the head each verify saw (each report must be sound)."""
    services = await build_services(service_settings(url, data_dir))
    await services.start()
    stop = asyncio.Event()
    try:
        service, context = services.accounts, CommandContext()
        accounts = []
        for name in ("Ann", "Bob"):
            opened = await service.open_account(cmd.OpenAccount(name, Decimal(500), "USD"), context)
            accounts.append(opened.id)  # type: ignore[union-attr]

        async def write() -> None:
            while not stop.is_set():
                await service.deposit(cmd.Deposit(accounts[0], Decimal("2.00")), context)
                await service.transfer(cmd.Transfer(accounts[0], accounts[1], Decimal(1)), context)

        writer = asyncio.create_task(write())
        heads = []
        for _ in range(3):
            await asyncio.sleep(0.3)
            report = await verify(services.db, page=7)
            assert report.sound, report.problems
            heads.append(report.head)
        stop.set()
        await writer
        return heads
    finally:
        stop.set()
        await services.close()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_verify_is_sound_while_the_service_writes_and_projects(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url: str = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'banking.db'}"
    )
    heads = run_sync(_verify_while_writing(url, tmp_path))
    assert heads == sorted(heads)
    assert heads[-1] > heads[0], heads  # the writes went on while it read
