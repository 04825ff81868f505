"""Holds in /accounts/{id}/transactions: a `hold` row with its status, and a `hold_capture`."""

from __future__ import annotations

from decimal import Decimal

import httpx
from tests.e2e.http_support import both_backends, open_account, wait_for_projections

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import Services
from banking_es.domain import commands as cmd


@both_backends
async def test_hold_rows_carry_their_status_and_other_rows_keep_their_shape(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = (await open_account(api, balance="100"))["id"]
    accounts = services.accounts
    kept = await accounts.place_hold(cmd.PlaceHold(account, Decimal("30")), CommandContext())
    voided = await accounts.place_hold(cmd.PlaceHold(account, Decimal("5")), CommandContext())
    await accounts.void_hold(cmd.VoidHold(voided.id), CommandContext())  # type: ignore[union-attr]
    await accounts.capture_hold(
        cmd.CaptureHold(kept.id, Decimal("20")),  # type: ignore[union-attr]
        CommandContext(),
    )
    await wait_for_projections(services)

    rows = (await api.get(f"/accounts/{account}/transactions")).json()["data"]

    by_type = [(r["type"], r["amount"], r["balance_after"], r.get("status")) for r in rows]
    assert by_type == [
        ("hold_capture", "20.00", "80.00", None),
        ("hold", "5.00", "100.00", "voided"),
        ("hold", "30.00", "100.00", "captured"),
        ("opening", "100.00", "100.00", None),
    ]
    assert "status" not in rows[0]
    assert "status" not in rows[-1]
