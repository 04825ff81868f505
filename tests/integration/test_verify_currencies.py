"""Accounts in JPY, BHD and KWD through the service: events, snapshots and projections keep each
currency's digits, and `banking-es verify` finds the store sound on both backends."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from tests.db_support import run_sync
from tests.e2e.http_support import BOTH_BACKENDS
from tests.integration.verify_support import run_verify, service_settings

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import build_services
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account

#: currency, opening, deposit, withdrawal, transfer: the texts events must carry.
CASES = [
    ("JPY", "150", "1500", "7", "25"),
    ("BHD", "1.500", "0.125", "0.005", "0.250"),
    ("KWD", "2.000", "10.001", "1.000", "0.333"),
]


async def _write(url: str, data_dir: Path) -> dict[str, list[str]]:
    services = await build_services(service_settings(url, data_dir))
    await services.start()
    try:
        service, context = services.accounts, CommandContext()
        amounts: dict[str, list[str]] = {}
        for currency, opening, paid, taken, moved in CASES:
            ids = []
            for owner in ("Ada", "Bob"):
                opened = await service.open_account(
                    cmd.OpenAccount(owner, Decimal(opening), currency), context
                )
                assert isinstance(opened, Account)
                ids.append(opened.id)
            for _ in range(2):  # past SNAPSHOT_THRESHOLD=3: snapshots are written and read
                await service.deposit(cmd.Deposit(ids[0], Decimal(paid)), context)
                await service.withdraw(cmd.Withdraw(ids[0], Decimal(taken)), context)
                await service.transfer(cmd.Transfer(ids[0], ids[1], Decimal(moved)), context)
            events = await services.store.read_stream(ids[0])
            amounts[currency] = [
                e.data.get("amount") or e.data["initial_balance"] for e in events[:4]
            ]
        head = await services.store.head_position()
        assert await services.projections.wait_for(head, 10), "projections did not catch up"
        return amounts
    finally:
        await services.close()


@pytest.mark.parametrize("backend", BOTH_BACKENDS)
def test_minor_units_survive_the_store_and_verify_finds_it_sound(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url: str = (
        request.getfixturevalue("pg_url")
        if backend == "postgres"
        else f"sqlite:///{tmp_path / 'banking.db'}"
    )
    amounts = run_sync(_write(url, tmp_path))
    assert amounts == {c: [opening, paid, taken, moved] for c, opening, paid, taken, moved in CASES}

    result = run_verify(monkeypatch, url)
    assert result.exit_code == 0, result.output
    assert "sound" in result.stdout
