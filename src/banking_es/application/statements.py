"""Account statements: a period of UTC days, its opening and closing balance and every movement.

Read from the account's events, never from the `transactions` read model: events are immutable
and ordered by version, so a period that is over always folds to the same statement, while the
read model may lag or be mid-rebuild. Each amount is the change `Account.apply` made to the
balance (the one money rule), signed: credits positive, debits negative. The period is the
contiguous run of versions from the first event recorded on or after its first day up to the
first event recorded after its last day, so opening + movements == closing by construction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

from banking_es.application.errors import ApplicationError, NotFound
from banking_es.application.validation import FieldError
from banking_es.domain.account import Account
from banking_es.domain.events import (
    AccountCreated,
    DomainEvent,
    HoldCaptured,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferReceived,
    TransferSent,
)
from banking_es.domain.money import ZERO
from banking_es.eventstore.base import EventStore, RecordedEvent
from banking_es.eventstore.codec import to_domain

#: The longest period, in days counting both ends (a leap year).
MAX_DAYS = 366
#: Events read per query while folding a stream.
CHUNK = 1000
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

#: Event class -> the `type` of its statement line (the `transactions` row types). An event
#: not listed here makes a line only if it changes the balance; see `line_type`.
LINE_TYPES: dict[type[DomainEvent], str] = {
    AccountCreated: "opening",
    MoneyDeposited: "deposit",
    MoneyWithdrawn: "withdrawal",
    TransferSent: "transfer_out",
    TransferReceived: "transfer_in",
    HoldCaptured: "hold_capture",
}


class InvalidPeriod(ApplicationError):
    """`from`/`to` unusable: the API answers 400 `validation_error` listing `errors`."""

    code = "validation_error"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(", ".join(f"{e.field} {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Period:
    """UTC days `first` to `last`, both included."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time.min, UTC)

    @property
    def end(self) -> datetime:
        """The last instant of the period (inclusive, as `read_stream`'s `recorded_until`);
        not the next midnight, which would overflow on 9999-12-31."""
        return datetime.combine(self.last, time.max, UTC)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def is_over(self, now: datetime) -> bool:
        """After this, the statement of the period no longer changes (but for commits in
        flight at the period's end, which keep the time their append was decided)."""
        return now > self.end


def parse_period(first: str | None, last: str | None) -> Period:
    """The period of `?from=YYYY-MM-DD&to=YYYY-MM-DD`; `InvalidPeriod` lists every problem."""
    errors: list[FieldError] = []
    days = [_parse_day("from", first, errors), _parse_day("to", last, errors)]
    if days[0] is None or days[1] is None:
        raise InvalidPeriod(errors)
    period = Period(days[0], days[1])
    if period.last < period.first:
        errors.append(FieldError("to", "must not be before from"))
    elif period.days > MAX_DAYS:
        errors.append(FieldError("to", f"must be at most {MAX_DAYS} days after from, inclusive"))
    if errors:
        raise InvalidPeriod(errors)
    return period


def _parse_day(name: str, text: str | None, errors: list[FieldError]) -> date | None:
    if text is None or text == "":
        errors.append(FieldError(name, "is required"))
        return None
    # fromisoformat alone also takes 20300101 and 2030-W01-1: the contract says YYYY-MM-DD.
    if _DAY.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    errors.append(FieldError(name, "must be a date YYYY-MM-DD"))
    return None


@dataclass(frozen=True, slots=True)
class StatementLine:
    occurred_at: datetime
    type: str
    description: str | None
    amount: Decimal  # signed: credits positive, debits negative
    balance_after: Decimal
    reference: str | None  # the transfer (or hold) id, if any
    version: int


@dataclass(frozen=True, slots=True)
class Statement:
    """`opening_balance + total_in + total_out == closing_balance`; `total_out` is <= 0."""

    account_id: str
    owner_name: str
    currency: str
    period: Period
    opening_balance: Decimal
    closing_balance: Decimal
    total_in: Decimal
    total_out: Decimal
    lines: tuple[StatementLine, ...]


def line_type(event: DomainEvent) -> str:
    """An unlisted event that moves money still gets a line, named after its stored type."""
    return LINE_TYPES.get(type(event)) or event.type


def build_statement(
    account_id: str, period: Period, events: Iterable[RecordedEvent]
) -> Statement | None:
    """The statement folded from `events` (the stream from version 1, in order; it may go on
    past the period); None if there are none (the caller decides whether the account exists)."""
    account = Account(account_id)
    opening = ZERO
    lines: list[StatementLine] = []
    in_period = False
    for recorded in events:
        if recorded.version != account.version + 1 or recorded.recorded_at > period.end:
            break  # past the period, or a version recorded later than it (a gap): stop
        event = to_domain(recorded)
        before = account.balance if account.exists else ZERO
        account.apply(event, recorded.recorded_at)
        if not in_period and recorded.recorded_at < period.start:
            opening = account.balance
            continue
        in_period = True
        amount = account.balance - before
        if amount or isinstance(event, AccountCreated):
            reference = getattr(event, "transfer_id", None) or getattr(event, "hold_id", None)
            lines.append(
                StatementLine(
                    recorded.recorded_at,
                    line_type(event),
                    getattr(event, "description", None),
                    amount,
                    account.balance,
                    reference,
                    recorded.version,
                )
            )
    if not account.exists:
        return None
    return Statement(
        account_id,
        account.owner_name,
        account.currency,
        period,
        opening,
        account.balance,
        sum((line.amount for line in lines if line.amount > 0), ZERO),
        sum((line.amount for line in lines if line.amount < 0), ZERO),
        tuple(lines),
    )


async def read_statement(store: EventStore, account_id: str, period: Period) -> Statement:
    """The statement of `account_id` for `period`, from its events; `NotFound` if the account
    does not exist. A period before the account was opened has zero balances and no lines."""
    events: list[RecordedEvent] = []
    while True:  # in chunks: one query per CHUNK events up to the period's end
        after = events[-1].version if events else 0
        chunk = await store.read_stream(account_id, after, recorded_until=period.end, limit=CHUNK)
        events.extend(chunk)
        if len(chunk) < CHUNK:
            break
    statement = build_statement(account_id, period, events)
    if statement is not None:
        return statement
    first = await store.read_stream(account_id, 0, limit=1)
    if not first:
        raise NotFound(f"account {account_id} not found")
    opened = Account(account_id).fold([(to_domain(first[0]), first[0].recorded_at)])
    return Statement(
        account_id, opened.owner_name, opened.currency, period, ZERO, ZERO, ZERO, ZERO, ()
    )
