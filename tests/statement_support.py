"""A statement checked line by line against the account's event log (unit and backend tests)."""

from __future__ import annotations

from decimal import Decimal

from banking_es.application.statements import Statement
from banking_es.domain.events import (
    AccountClosed,
    AccountCreated,
    DomainEvent,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferReceived,
    TransferSent,
)
from banking_es.eventstore.base import EventStore
from banking_es.eventstore.codec import to_domain


def signed(event: DomainEvent) -> Decimal:
    """What the event log says a line's amount is, written out independently of the fold."""
    match event:
        case AccountCreated():
            return event.initial_balance
        case MoneyDeposited() | TransferReceived():
            return event.amount
        case MoneyWithdrawn() | TransferSent():
            return -event.amount
    raise AssertionError(f"{event.type} moves no money")


async def check_against_log(store: EventStore, statement: Statement) -> None:
    """Every line is an event of the period, in order, with the log's amount and time; every
    money event of the period is a line; balances chain from opening to closing."""
    log = await store.read_stream(statement.account_id)
    period = [e for e in log if statement.period.start <= e.recorded_at <= statement.period.end]
    money = [e for e in period if e.type != AccountClosed.type]
    assert [line.version for line in statement.lines] == [e.version for e in money]
    balance = statement.opening_balance
    for line, recorded in zip(statement.lines, money, strict=True):
        event = to_domain(recorded)
        assert line.amount == signed(event)
        assert line.occurred_at == recorded.recorded_at
        assert line.description == getattr(event, "description", None)
        assert line.reference == getattr(event, "transfer_id", None)
        balance += line.amount
        assert line.balance_after == balance
    assert balance == statement.closing_balance
    before = [signed(to_domain(e)) for e in log if e.recorded_at < statement.period.start]
    assert statement.opening_balance == sum(before, Decimal("0.00"))
