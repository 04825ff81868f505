"""Statements on every event-store backend: real recorded times, the SQL `recorded_until`."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from tests.statement_support import check_against_log
from tests.unit.account_service_support import deposit, open_account, transfer, withdraw

from banking_es.application import statements
from banking_es.application.accounts import AccountService, TransferResult
from banking_es.application.errors import NotFound
from banking_es.application.ports import SystemClock, UuidGenerator
from banking_es.application.statements import Period
from banking_es.cache.local import LocalAccountCache
from banking_es.eventstore.base import EventStore


def around_today() -> Period:
    """Yesterday to tomorrow (UTC): every event of the test, even across a midnight."""
    today = datetime.now(UTC).date()
    return Period(today - timedelta(days=1), today + timedelta(days=1))


async def test_a_statement_matches_the_event_log_line_by_line(
    event_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = AccountService(
        event_store, LocalAccountCache(), clock=SystemClock(), ids=UuidGenerator()
    )
    a = await open_account(bank, "100", owner="Ada")
    b = await open_account(bank, "0", owner="Bob")
    await deposit(bank, a.id, "0.10", description="tip")
    await withdraw(bank, a.id, "20.05", description="cash")
    out = await transfer(bank, a.id, b.id, "30")
    back = await transfer(bank, b.id, a.id, "12.34")
    assert isinstance(out, TransferResult)
    assert isinstance(back, TransferResult)
    monkeypatch.setattr(statements, "CHUNK", 2)  # several reads of the stream

    statement = await bank.statement(a.id, around_today())
    assert [(line.type, line.amount, line.reference) for line in statement.lines] == [
        ("opening", Decimal("100.00"), None),
        ("deposit", Decimal("0.10"), None),
        ("withdrawal", Decimal("-20.05"), None),
        ("transfer_out", Decimal("-30.00"), out.id),
        ("transfer_in", Decimal("12.34"), back.id),
    ]
    assert statement.closing_balance == Decimal("62.39")
    assert (statement.total_in, statement.total_out) == (Decimal("112.44"), Decimal("-50.05"))
    await check_against_log(event_store, statement)
    await check_against_log(event_store, await bank.statement(b.id, around_today()))

    before = await bank.statement(a.id, Period(date(2000, 1, 1), date(2000, 12, 31)))
    assert (before.lines, before.closing_balance, before.owner_name) == ((), Decimal(0), "Ada")
    with pytest.raises(NotFound):
        await bank.statement("00000000-0000-4000-8000-000000000000", around_today())
