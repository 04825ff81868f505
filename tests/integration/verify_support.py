"""A small store written through the service, for `banking-es verify` and the restore drill.

`write_history` opens accounts, deposits, withdraws, transfers and closes one, with
snapshots every 3 versions and (optionally) an outbox row per event, as with Kafka on;
it answers every account's balance (`read_balances` reads them again;
`service_settings` are the settings). `run_verify` runs the
real command on a database URL.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import Result
from tests.e2e.http_support import TEST_SECRETS
from typer.testing import CliRunner

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import Overrides, build_services
from banking_es.cli import app as cli_app
from banking_es.config import Settings, load_settings
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account


async def write_history(database_url: str, data_dir: Path, *, outbox: bool) -> dict[str, Decimal]:
    """Write a small history through the service; answer each account's balance."""
    # outbox: as with KAFKA_BOOTSTRAP_SERVERS set, every event also gets its outbox row.
    services = await build_services(
        service_settings(database_url, data_dir), overrides=Overrides(outbox_events=outbox)
    )
    await services.start()
    try:
        service, context = services.accounts, CommandContext()
        ids = []
        for i, opening in enumerate(("100.00", "250.00", "0.00", "40.00")):
            opened = await service.open_account(
                cmd.OpenAccount(f"Owner {i}", Decimal(opening), "USD"), context
            )
            assert isinstance(opened, Account)
            ids.append(opened.id)
        a, b, c, d = ids
        for step in range(4):
            await service.deposit(cmd.Deposit(a, Decimal("10.50"), f"pay {step}"), context)
            await service.withdraw(cmd.Withdraw(b, Decimal("3.25")), context)
            await service.transfer(cmd.Transfer(a, c, Decimal("7.00"), "rent"), context)
            await service.transfer(cmd.Transfer(b, a, Decimal("1.99")), context)
        await service.withdraw(cmd.Withdraw(d, Decimal("40.00")), context)
        await service.close_account(cmd.CloseAccount(d, "moved away"), context)
        head = await services.store.head_position()
        assert await services.projections.wait_for(head, 10), "projections did not catch up"
        return {i: (await service.get_account(i)).balance for i in ids}
    finally:
        await services.close()


async def read_balances(database_url: str, data_dir: Path, ids: list[str]) -> dict[str, Decimal]:
    """Each account's balance, as the service loads it (snapshot and events)."""
    services = await build_services(service_settings(database_url, data_dir))
    try:
        return {i: (await services.accounts.get_account(i)).balance for i in ids}
    finally:
        await services.close()


def service_settings(database_url: str, data_dir: Path) -> Settings:
    return load_settings(
        database_url=database_url,
        data_dir=data_dir,
        projection_poll_interval_ms=10,
        rate_limit_enabled=False,
        snapshot_threshold=3,
        argon2_time_cost=1,
        argon2_memory_cost=8,
        **TEST_SECRETS,
    )


def run_verify(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Result:
    monkeypatch.setenv("DATABASE_URL", database_url)
    return CliRunner().invoke(cli_app, ["verify"])
