"""`banking-es verify` on a store with holds, overdraft limits and freezes: sound on both
backends, and a capture pushed past the overdraft limit is found."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.db_support import run_sync
from tests.e2e.http_support import BOTH_BACKENDS
from tests.integration.test_verify import damage
from tests.integration.verify_support import run_verify, service_settings

from banking_es.application.accounts import CommandContext, HoldResult
from banking_es.bootstrap import build_services
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account

D = __import__("decimal").Decimal


async def _write(url: str, data_dir: Path) -> None:
    services = await build_services(service_settings(url, data_dir))
    await services.start()
    try:
        service, ctx = services.accounts, CommandContext()
        ids = []
        for owner, opening in (("Payer", "100.00"), ("Shop", "0.00"), ("Plain", "5.00")):
            opened = await service.open_account(cmd.OpenAccount(owner, D(opening), "USD"), ctx)
            assert isinstance(opened, Account)
            ids.append(opened.id)
        payer, shop, plain = ids
        await service.set_overdraft_limit(cmd.SetOverdraftLimit(payer, D("50"), "admin"), ctx)
        to_shop = await service.place_hold(cmd.PlaceHold(payer, D("120"), shop), ctx)
        own = await service.place_hold(cmd.PlaceHold(payer, D("20")), ctx)
        spare = await service.place_hold(cmd.PlaceHold(payer, D("5")), ctx)
        assert isinstance(to_shop, HoldResult)
        assert isinstance(own, HoldResult)
        assert isinstance(spare, HoldResult)
        await service.capture_hold(cmd.CaptureHold(to_shop.id, D("110")), ctx)
        await service.capture_hold(cmd.CaptureHold(own.id), ctx)
        await service.void_hold(cmd.VoidHold(spare.id), ctx)
        await service.set_overdraft_limit(cmd.SetOverdraftLimit(payer, D("10"), "admin"), ctx)
        await service.freeze_account(cmd.FreezeAccount(payer, "review", "admin"), ctx)
        await service.deposit(cmd.Deposit(payer, D("1")), ctx)
        await service.freeze_account(cmd.FreezeAccount(plain, "review", "admin"), ctx)
        await service.unfreeze_account(cmd.UnfreezeAccount(plain, "admin"), ctx)
        assert (await service.get_account(payer)).balance == D("-29.00")
        head = await services.store.head_position()
        assert await services.projections.wait_for(head, 10), "projections did not catch up"
    finally:
        await services.close()


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url: str = (
        request.getfixturevalue("pg_url")
        if request.param == "postgres"
        else f"sqlite:///{tmp_path / 'banking.db'}"
    )
    run_sync(_write(url, tmp_path))
    return url


@pytest.mark.parametrize("store_url", BOTH_BACKENDS, indirect=True)
def test_a_store_with_holds_limits_and_freezes_is_sound(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_verify(monkeypatch, store_url)
    assert result.exit_code == 0, result.output
    assert "sound" in result.stdout


@pytest.mark.parametrize("store_url", BOTH_BACKENDS, indirect=True)
def test_a_capture_beyond_the_limit_is_found(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The own-account capture of 20.00 made 200.00: the balance goes below -50.00.
    damage(
        store_url,
        "UPDATE events SET data = {json_set}(data, {amount}, '\"200.00\"'::jsonb)"
        " WHERE type = 'HoldCaptured' AND data->>'amount' = '20.00'",
    )
    result = run_verify(monkeypatch, store_url)
    assert result.exit_code != 0, result.output
    assert "balances" in result.output or "below the allowed" in result.output, result.output


@pytest.mark.parametrize("store_url", BOTH_BACKENDS, indirect=True)
@pytest.mark.parametrize(
    ("statements", "found"),
    [
        pytest.param(
            ["UPDATE transactions SET status = 'voided' WHERE type = 'hold' AND amount = '20.00'"],
            "status 'voided' (the events give 'captured')",
            id="a captured hold shown voided",
        ),
        pytest.param(
            [
                "UPDATE transactions SET status = 'pending', settled_position = NULL"
                " WHERE type = 'hold' AND amount = '5.00'"
            ],
            "status 'pending' (the events give 'voided')",
            id="a voided hold shown pending",
        ),
        pytest.param(
            ["UPDATE transactions SET amount = '1.00' WHERE type = 'hold' AND amount = '120.00'"],
            "amount 1.00",
            id="a hold row's amount",
        ),
        pytest.param(
            ["DELETE FROM transactions WHERE type = 'hold' AND amount = '120.00'"],
            ": no row",
            id="a hold row missing",
        ),
        pytest.param(
            # The shop's account has no hold event: on PostgreSQL its rows are checked in SQL.
            ["UPDATE transactions SET status = 'captured' WHERE type = 'transfer_in'"],
            "status 'captured' (the events give None)",
            id="a status on a row of no hold",
        ),
    ],
)
def test_a_damaged_hold_row_is_found(
    store_url: str, statements: list[str], found: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    damage(store_url, *statements)
    result = run_verify(monkeypatch, store_url)
    assert result.exit_code != 0, result.output
    assert "transactions" in result.output
    assert found in result.output, result.output
