"""Statements from the event log: periods, lines checked against the events, the invariant."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.clock_support import EPOCH, FakeClock, ticking_datetime
from tests.statement_support import check_against_log, signed
from tests.unit.account_service_support import deposit, open_account, transfer, withdraw

from banking_es.application import statements
from banking_es.application.accounts import AccountService, TransferResult
from banking_es.application.errors import NotFound
from banking_es.application.ports import UuidGenerator
from banking_es.application.statements import (
    InvalidPeriod,
    Period,
    build_statement,
    parse_period,
)
from banking_es.application.validation import FieldError
from banking_es.cache.local import LocalAccountCache
from banking_es.domain.events import (
    EVENT_TYPES,
    AccountClosed,
    AccountCreated,
    AccountFrozen,
    AccountUnfrozen,
    DomainEvent,
    HoldExpired,
    HoldPlaced,
    HoldVoided,
    MoneyDeposited,
    MoneyWithdrawn,
    OverdraftLimitSet,
)
from banking_es.eventstore.base import RecordedEvent
from banking_es.eventstore.codec import to_domain
from banking_es.eventstore.memory import MemoryEventStore

JAN = 1


def day(n: int) -> date:
    """Day n of January 2030 (the store below records its n-th batch at day n + 1, 00:00)."""
    return date(2030, JAN, n)


@pytest.fixture
def daily_store() -> MemoryEventStore:
    """Batch n is recorded at midnight of 2030-01-(n + 1): one batch a day."""
    return MemoryEventStore(clock=ticking_datetime(step=timedelta(days=1)))


@pytest.fixture
def bank(daily_store: MemoryEventStore) -> AccountService:
    return AccountService(daily_store, LocalAccountCache(), clock=FakeClock(), ids=UuidGenerator())


async def history(bank: AccountService) -> tuple[str, str, str, str]:
    """A's and B's accounts and the ids of the transfers A->B and B->A."""
    a = await open_account(bank, "100", owner="Ada")  # Jan 2
    b = await open_account(bank, "50", owner="Bob")  # Jan 3
    await deposit(bank, a.id, "25.50", description="salary")  # Jan 4
    await withdraw(bank, a.id, "10", description="cash")  # Jan 5
    out = await transfer(bank, a.id, b.id, "30")  # Jan 6
    back = await transfer(bank, b.id, a.id, "5.25")  # Jan 7
    await deposit(bank, a.id, "1")  # Jan 8
    assert isinstance(out, TransferResult)
    assert isinstance(back, TransferResult)
    return a.id, b.id, out.id, back.id


async def test_a_period_in_the_middle_starts_from_the_balance_before_it(
    bank: AccountService, daily_store: MemoryEventStore
) -> None:
    a, _, out, _ = await history(bank)
    statement = await bank.statement(a, Period(day(4), day(6)))
    assert (statement.owner_name, statement.currency) == ("Ada", "USD")
    assert statement.opening_balance == Decimal("100.00")
    rows = [
        (line.occurred_at.day, line.type, line.amount, line.balance_after, line.reference)
        for line in statement.lines
    ]
    assert rows == [
        (4, "deposit", Decimal("25.50"), Decimal("125.50"), None),
        (5, "withdrawal", Decimal("-10.00"), Decimal("115.50"), None),
        (6, "transfer_out", Decimal("-30.00"), Decimal("85.50"), out),
    ]
    assert (statement.total_in, statement.total_out) == (Decimal("25.50"), Decimal("-40.00"))
    assert statement.closing_balance == Decimal("85.50")
    await check_against_log(daily_store, statement)


async def test_a_period_from_before_the_opening_shows_the_opening_and_both_transfers(
    bank: AccountService, daily_store: MemoryEventStore
) -> None:
    a, b, out, back = await history(bank)
    statement = await bank.statement(a, Period(date(2029, 12, 15), day(31)))
    assert statement.opening_balance == Decimal("0.00")
    assert [(line.type, line.amount) for line in statement.lines] == [
        ("opening", Decimal("100.00")),
        ("deposit", Decimal("25.50")),
        ("withdrawal", Decimal("-10.00")),
        ("transfer_out", Decimal("-30.00")),
        ("transfer_in", Decimal("5.25")),
        ("deposit", Decimal("1.00")),
    ]
    assert [line.description for line in statement.lines][1:3] == ["salary", "cash"]
    assert statement.closing_balance == Decimal("91.75")
    assert (statement.total_in, statement.total_out) == (Decimal("131.75"), Decimal("-40.00"))
    await check_against_log(daily_store, statement)
    other = await bank.statement(b, Period(day(1), day(31)))
    assert [(line.type, line.reference) for line in other.lines] == [
        ("opening", None),
        ("transfer_in", out),
        ("transfer_out", back),
    ]
    await check_against_log(daily_store, other)


async def test_the_first_and_last_days_are_included_to_the_microsecond(
    bank: AccountService,
) -> None:
    a, *_ = await history(bank)  # the deposit of Jan 4 is recorded at 00:00:00 that day
    statement = await bank.statement(a, Period(day(4), day(4)))
    assert [line.type for line in statement.lines] == ["deposit"]
    before = await bank.statement(a, Period(day(3), day(3)))
    assert (before.lines, before.opening_balance) == ((), Decimal("100.00"))
    assert Period(day(3), day(3)).end == datetime(2030, 1, 3, 23, 59, 59, 999999, tzinfo=UTC)


async def test_a_period_without_movements_has_equal_opening_and_closing(
    bank: AccountService, daily_store: MemoryEventStore
) -> None:
    a, *_ = await history(bank)
    statement = await bank.statement(a, Period(day(20), day(25)))
    assert statement.lines == ()
    assert statement.opening_balance == statement.closing_balance == Decimal("91.75")
    assert statement.total_in == statement.total_out == Decimal("0.00")
    await check_against_log(daily_store, statement)


async def test_a_period_before_the_account_was_opened_is_empty_with_zero_balances(
    bank: AccountService,
) -> None:
    a, *_ = await history(bank)
    statement = await bank.statement(a, Period(date(2029, 12, 1), date(2029, 12, 31)))
    assert (statement.owner_name, statement.currency, statement.lines) == ("Ada", "USD", ())
    assert statement.opening_balance == statement.closing_balance == Decimal("0.00")


async def test_an_unknown_account_has_no_statement(bank: AccountService) -> None:
    with pytest.raises(NotFound):
        await bank.statement("ghost", Period(day(1), day(31)))


async def test_a_period_that_is_over_keeps_its_statement_whatever_comes_later(
    bank: AccountService,
) -> None:
    a, b, *_ = await history(bank)
    period = Period(day(1), day(6))
    first = await bank.statement(a, period)
    await deposit(bank, a, "7")
    await transfer(bank, b, a, "1")
    assert await bank.statement(a, period) == first


async def test_a_long_stream_is_read_in_chunks_to_the_same_statement(
    bank: AccountService, daily_store: MemoryEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, *_ = await history(bank)
    whole = await bank.statement(a, Period(day(3), day(31)))
    monkeypatch.setattr(statements, "CHUNK", 2)
    assert await bank.statement(a, Period(day(3), day(31))) == whole


def recorded(version: int, event: DomainEvent, at: datetime) -> RecordedEvent:
    return RecordedEvent(
        version, "acc", version, f"e{version}", event.type, event.to_data(), {"schema": 1}, at
    )


def test_a_version_recorded_after_the_period_ends_it_even_if_later_ones_are_within() -> None:
    # Clocks of two processes may disagree: the statement is a prefix of the stream, so its
    # lines still chain from opening to closing.
    noon = datetime(2030, 1, 2, 12, tzinfo=UTC)
    log = [
        recorded(1, AccountCreated("acc", "Ada", Decimal("10.00"), "USD"), noon),
        recorded(2, MoneyDeposited(Decimal("5.00")), noon),
        recorded(3, MoneyDeposited(Decimal("7.00")), noon + timedelta(days=5)),
        recorded(4, MoneyWithdrawn(Decimal("1.00")), noon),
    ]
    statement = build_statement("acc", Period(day(2), day(2)), log)
    assert statement is not None
    assert [line.version for line in statement.lines] == [1, 2]
    assert statement.closing_balance == Decimal("15.00")
    # The store's `recorded_until` leaves version 3 out: the gap ends the period just the same.
    assert build_statement("acc", Period(day(2), day(2)), [log[0], log[1], log[3]]) == statement


def test_every_event_type_is_either_a_line_type_or_moves_no_money() -> None:
    # A new event type that moves money must be named here (and in the API's type list).
    no_money = {
        AccountClosed,
        HoldPlaced,
        HoldVoided,
        HoldExpired,
        OverdraftLimitSet,
        AccountFrozen,
        AccountUnfrozen,
    }
    assert set(EVENT_TYPES.values()) == set(statements.LINE_TYPES) | no_money


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)
operations = st.lists(
    st.tuples(st.sampled_from(["deposit", "withdraw"]), amounts, st.integers(0, 40)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    initial=st.decimals(min_value=0, max_value=Decimal("1000"), places=2),
    ops=operations,
    first=st.integers(-5, 45),
    length=st.integers(1, 30),
)
def test_opening_plus_movements_is_the_closing_balance(
    initial: Decimal, ops: list[tuple[str, Decimal, int]], first: int, length: int
) -> None:
    start = EPOCH + timedelta(hours=1)
    log = [recorded(1, AccountCreated("acc", "Ada", initial, "USD"), start)]
    at = start
    for version, (kind, amount, gap_hours) in enumerate(ops, start=2):
        at += timedelta(hours=gap_hours)
        event = MoneyDeposited(amount) if kind == "deposit" else MoneyWithdrawn(amount)
        log.append(recorded(version, event, at))
    period = Period(
        EPOCH.date() + timedelta(days=first), EPOCH.date() + timedelta(days=first + length - 1)
    )
    statement = build_statement("acc", period, log)
    if statement is None:  # the period ended before the account was opened
        assert log[0].recorded_at > period.end
        return
    movements = sum((line.amount for line in statement.lines), Decimal("0"))
    assert statement.opening_balance + movements == statement.closing_balance
    assert statement.total_in + statement.total_out == movements
    assert statement.total_in >= 0 >= statement.total_out
    # The closing balance is the whole log's balance at the period's end, however it splits.
    until_end = [signed(to_domain(e)) for e in log if e.recorded_at <= period.end]
    assert statement.closing_balance == sum(until_end, Decimal("0.00"))


# ---- the period --------------------------------------------------------------------------

BAD_DAY = "must be a date YYYY-MM-DD"


def test_a_period_of_366_days_is_accepted() -> None:
    period = parse_period("2028-01-01", "2028-12-31")
    assert (period.first, period.last, period.days) == (date(2028, 1, 1), date(2028, 12, 31), 366)
    assert parse_period("2030-05-05", "2030-05-05").days == 1


@pytest.mark.parametrize(
    ("first", "last", "errors"),
    [
        (None, None, [("from", "is required"), ("to", "is required")]),
        ("", "2030-01-01", [("from", "is required")]),
        ("2030-1-1", "2030-01-01", [("from", "must be a date YYYY-MM-DD")]),
        ("20300101", "2030-01-01", [("from", "must be a date YYYY-MM-DD")]),
        (
            "2030-W01-1",
            "2030-02-30",
            [("from", "must be a date YYYY-MM-DD"), ("to", "must be a date YYYY-MM-DD")],
        ),
        ("2030-01-01", "2030-01-01\n", [("to", "must be a date YYYY-MM-DD")]),
        ("２０３０-01-01", "2030-01-01", [("from", "must be a date YYYY-MM-DD")]),
        ("2030-01-02", "2030-01-01", [("to", "must not be before from")]),
        ("2029-01-01", "2030-01-02", [("to", "must be at most 366 days after from, inclusive")]),
    ],
)
def test_an_unusable_period_lists_every_problem(
    first: str | None, last: str | None, errors: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidPeriod) as caught:
        parse_period(first, last)
    assert caught.value.errors == [FieldError(field, message) for field, message in errors]
    assert caught.value.code == "validation_error"
    assert str(caught.value) == ", ".join(f"{f} {m}" for f, m in errors)


def test_the_last_possible_day_does_not_overflow() -> None:
    period = parse_period("9999-01-01", "9999-12-31")
    assert period.end.year == 9999
    assert not period.is_over(datetime(2030, 1, 1, tzinfo=UTC))
    assert Period(day(1), day(31)).is_over(datetime(2030, 2, 1, tzinfo=UTC))
    assert not Period(day(1), day(31)).is_over(datetime(2030, 1, 31, 23, tzinfo=UTC))
