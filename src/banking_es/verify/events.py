"""The checks made on each event, in position order: one fold per account with the domain's
`Account.apply`, the transfers' two sides, and the snapshot and `transactions` row joined to
the event (a `hold` row's status when its hold is settled, or at the end). The expected
read-model rows are read off that fold (not made by the projections' own code, which would
repeat a projection's mistake), with no per-event objects beyond the domain event."""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from orjson import loads

from banking_es.db.base import Row
from banking_es.domain.account import Account, lowest_allowed_balance
from banking_es.domain.events import (
    SCHEMA_VERSION,
    AccountCreated,
    DomainEvent,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldVoided,
    TransferReceived,
    TransferSent,
    event_from_stored,
)
from banking_es.eventstore.codec import upcast
from banking_es.projections.account_summaries import Summary
from banking_es.projections.transactions import PENDING, ROW_TYPES, SETTLED
from banking_es.verify.report import Report, differ, span

T_COLUMNS = (
    "id, account_id, type, amount, balance_after, description, version, transfer_id,"
    " position, occurred_at, status, settled_position"
)
_T_NAMES = tuple(c.strip() for c in T_COLUMNS.split(","))
# The row's copies of the event are compared by the database, one boolean instead of three
# decoded values (its join keys are equal by construction); amounts come as text (the
# driver's numeric decoding costs more than `Decimal(text)`).
_EVENTS = (
    "SELECT e.position, e.stream_id, e.version, e.event_id, e.type, {data}, {schema},"
    " e.recorded_at, s.state AS snapshot, t.id = e.event_id AND t.position = e.position"
    " AND t.occurred_at = e.recorded_at AS t_same, t.type AS t_type,"
    " CAST(t.amount AS TEXT) AS t_amount, CAST(t.balance_after AS TEXT) AS t_balance,"
    " t.description AS t_description,"
    " t.transfer_id AS t_transfer, t.status AS t_status, t.settled_position AS t_settled"
    " FROM events e"
    " LEFT JOIN snapshots s ON s.stream_id = e.stream_id AND s.version = e.version"
    " LEFT JOIN transactions t ON t.account_id = e.stream_id AND t.version = e.version"
    " WHERE e.position > $1 ORDER BY e.position LIMIT $2"
)
#: A page of events after $1, each with its snapshot and `transactions` row (or nulls).
EVENTS = {
    # PostgreSQL's `data` as text: one `orjson.loads` here costs less than the driver's codec.
    "postgres": _EVENTS.format(
        data="e.data::text AS data", schema="e.metadata->>'schema' AS schema"
    ),
    "sqlite": _EVENTS.format(
        data="e.data", schema="json_extract(e.metadata, '$.schema') AS schema"
    ),
}
#: One `transactions` row in full, read again only to show how it differs.
T_ROW = f"SELECT {T_COLUMNS} FROM transactions WHERE account_id = $1 AND version = $2"
_DECODE_ERRORS = (
    KeyError,
    TypeError,
    ValueError,
    ArithmeticError,
)  # orjson's errors are ValueErrors


@dataclass(slots=True)
class Leg:
    sent: bool
    stream: str
    other: str
    amount: Decimal
    currency: str
    position: int


class EventChecks:
    """The state of the pass over the events: small, per account."""

    def __init__(
        self, report: Report, summaries_at: int, transactions_at: int, *, whole: bool = True
    ) -> None:
        self.report = report
        #: False when SQL checks positions and versions and matches the transfers, and this
        #: fold sees only some accounts: then it reports neither and keeps its `legs`.
        self.whole = whole
        self.legs: list[tuple[str, Leg]] = []
        self.accounts: dict[str, Account] = {}
        #: Account -> position of its `AccountCreated` (the summary's `created_position`).
        self.created: dict[str, int] = {}
        #: The summaries the fold gives at `summaries_at`, once the pass is there.
        self.summaries: dict[str, Summary] | None = None
        self.summaries_at = summaries_at
        self.transactions_at = transactions_at
        self.pending: dict[str, Leg] = {}
        #: The expected rows where the stored one differs, to read it in full.
        self.differing: list[tuple[Any, ...]] = []
        self.last = 0
        self.rows_seen = 0
        #: Hold id -> its `hold` row's expected columns but the status, and the stored row.
        self.holds: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {}

    def page(self, rows: list[Row]) -> None:
        """Check a page of joined rows (`EVENTS`), in position order."""
        report, accounts, transactions_at = self.report, self.accounts, self.transactions_at
        # Locals, not attributes, in the loop: it runs once per event.
        last, waiting, summaries_at = self.last, self.summaries is None, self.summaries_at
        for row in rows:
            (position, stream, version, event_id, type_, data, schema, at, snapshot, t_same, t_type,
             t_amount, t_balance, t_description, t_transfer, t_status, t_settled
             ) = row.values()  # fmt: skip
            if waiting and position > summaries_at:
                self.take_summaries()
                waiting = False
            if position != last + 1 and self.whole:
                report.add("positions", f"gap: no event at {span(last + 1, position - 1)}")
            last = position
            account = accounts.get(stream)
            if account is None:
                account = accounts[stream] = Account(stream)
            if version != account.version + 1:
                if self.whole:
                    report.add(
                        "versions",
                        f"account {stream}: version {version} at position {position}"
                        f" follows version {account.version}",
                    )
                account.version = version - 1
            try:
                if type(data) is str:
                    data = loads(data)
                # As text on PostgreSQL: a damaged `schema` is reported here, not a failed query.
                if schema is not None and int(schema) != SCHEMA_VERSION:
                    data = upcast(type_, int(schema), data)
                event = event_from_stored(type_, data)
            except _DECODE_ERRORS as exc:
                report.add(
                    "events", f"{_where(stream, version, position)}: cannot decode {type_}: {exc}"
                )
                account.version = version
                continue
            created = type(event) is AccountCreated
            if (version == 1) != created:
                report.add(
                    "events",
                    f"{_where(stream, version, position)}: {type_} (only AccountCreated opens)",
                )
            # A capture for another account is a transfer's out leg (its `TransferReceived`
            # carries the hold id); where the money goes is in the hold, gone after apply.
            hold = account.holds.get(event.hold_id) if type(event) is HoldCaptured else None
            account.apply(event, at)
            if account.balance < lowest_allowed_balance(account):
                report.add(
                    "balances",
                    f"{_where(stream, version, position)}: balance {account.balance} after {type_},"
                    f" below the allowed {lowest_allowed_balance(account)}",
                )
            if created:
                self.created.setdefault(stream, position)
            elif type(event) is TransferSent:
                self._leg(
                    event.transfer_id,
                    Leg(
                        True, stream, event.to_account_id, event.amount, account.currency, position
                    ),
                )
            elif hold is not None and hold.to_account_id is not None:
                assert isinstance(event, HoldCaptured)
                self._leg(
                    event.hold_id,
                    Leg(True, stream, hold.to_account_id, event.amount, account.currency, position),
                )
            elif type(event) is TransferReceived:
                self._leg(
                    event.transfer_id,
                    Leg(
                        False,
                        stream,
                        event.from_account_id,
                        event.amount,
                        account.currency,
                        position,
                    ),
                )
            if snapshot is not None:
                report.compared["snapshots"] += 1
                compare_snapshot(report, snapshot, account)
            if isinstance(event, HoldCaptured | HoldVoided | HoldExpired):
                # A hold's status is known once it is settled (after the checkpoint: pending).
                settled = (SETTLED[type_], position) if position <= transactions_at else None
                self.settle(event.hold_id, settled)
            if t_same is not None:
                self.rows_seen += 1
            row_type = ROW_TYPES.get(type_)
            if row_type is None or position > transactions_at:
                if t_same is not None:
                    report.add(
                        "transactions",
                        f"account {stream} version {version}: a row for the {type_} at position"
                        f" {position} (checkpoint {transactions_at}; no row expected)",
                    )
                continue
            want = want_row(event, event_id, stream, version, position, at, account.balance)
            if t_same is None:
                report.add("transactions", f"account {stream} version {version}: no row"
                           f" (position {position})")  # fmt: skip
                continue
            stored = (t_same, t_type, t_amount, t_balance, t_description, t_transfer, t_status,
                      t_settled)  # fmt: skip
            if type(event) is HoldPlaced:
                if event.hold_id != event_id:
                    report.add("events", f"{_where(stream, version, position)}: hold id"
                               f" {event.hold_id} is not its HoldPlaced's id")  # fmt: skip
                self.holds[event.hold_id] = (want[:-2], stored)
                continue
            self.check_row(want, stored)
        self.last = last

    def check_row(self, want: tuple[Any, ...], stored: tuple[Any, ...]) -> None:
        """Keep `want` among the `differing` rows unless `stored` (the joined columns) has it."""
        t_same, t_type, t_amount, t_balance, t_description, t_transfer, t_status, t_settled = stored
        if not (
            t_same
            and t_type == want[2]
            and _money(t_amount) == want[3]
            and _money(t_balance) == want[4]
            and t_description == want[5]
            and t_transfer == want[7]
            and (t_status, t_settled) == want[10:]
        ):
            self.differing.append(want)

    def settle(self, hold_id: str, settled: tuple[str, int] | None) -> None:
        """Check the `hold` row of `hold_id` (if it has one) with its status: `settled` (status
        and position) or pending."""
        found = self.holds.pop(hold_id, None)
        if found is not None:
            want, stored = found
            self.check_row((*want, *(settled or (PENDING, None))), stored)

    def take_summaries(self) -> None:
        """The `account_summaries` rows the fold gives now (the pass is at their checkpoint)."""
        self.summaries = {
            a.id: Summary(a.id, a.owner_name, a.owner_id, a.balance, a.currency, a.status,
                          a.version, self.created[a.id], a.created_at, a.updated_at)  # type: ignore[arg-type]
            for a in self.accounts.values()
            if a.id in self.created
        }  # fmt: skip

    def differs(self, want: tuple[Any, ...], stored: Row | None) -> None:
        row_differs(self.report, want, stored)

    def _leg(self, transfer_id: str, leg: Leg) -> None:
        if not self.whole:
            self.legs.append((transfer_id, leg))
            return
        self.match(transfer_id, leg)

    def match(self, transfer_id: str, leg: Leg) -> None:
        """Pair `leg` with the other side of its transfer, or keep it until it comes."""
        mate = self.pending.pop(transfer_id, None)
        if mate is None:
            self.pending[transfer_id] = leg
            return
        if mate.sent == leg.sent:
            self.pending[transfer_id] = mate
            kind = "TransferSent" if leg.sent else "TransferReceived"
            self.report.add(
                "transfers",
                f"transfer {transfer_id}: a second {kind} at position {leg.position}"
                f" (first at {mate.position})",
            )
            return
        self.report.compared["transfers"] += 1
        out, into = (mate, leg) if mate.sent else (leg, mate)
        compare_pair(self.report, transfer_id, out, into)

    def end(self) -> None:
        for hold_id in list(self.holds):
            self.settle(hold_id, None)
        if self.summaries is None:
            self.take_summaries()
        if self.whole:
            self.unmatched()

    def unmatched(self) -> None:
        """Report the transfer legs still waiting for their other side."""
        for transfer_id, leg in self.pending.items():
            kind, missing = ("TransferSent", "TransferReceived")
            if not leg.sent:
                kind, missing = missing, kind
            self.report.add(
                "transfers",
                f"transfer {transfer_id}: {kind} at position {leg.position} ({leg.stream},"
                f" {leg.amount} {leg.currency}) has no {missing}",
            )


def row_differs(report: Report, want: tuple[Any, ...], stored: Row | None) -> None:
    """Report a `transactions` row that differs from `want` (`stored`: read again in
    full, or None past the problems the report keeps)."""
    where = f"account {want[1]} version {want[6]}"
    if stored is None:
        report.add("transactions", f"{where}: row differs")
        return
    shown = differ(list(zip(_T_NAMES, stored.values(), want, strict=True)))
    report.add("transactions", f"{where}: row differs: {shown}")


def compare_pair(report: Report, transfer_id: str, out: Leg, into: Leg) -> None:
    """The two sides of a transfer name each other and move the same money."""
    if (out.other, into.other) != (into.stream, out.stream):
        report.add(
            "transfers",
            f"transfer {transfer_id}: sent from {out.stream} to {out.other},"
            f" received by {into.stream} from {into.other}",
        )
    if (out.amount, out.currency) != (into.amount, into.currency):
        report.add(
            "transfers",
            f"transfer {transfer_id}: sent {out.amount} {out.currency} (position"
            f" {out.position}), received {into.amount} {into.currency}"
            f" (position {into.position})",
        )


def compare_snapshot(report: Report, state: Any, account: Account) -> None:
    """A stored snapshot against the fold at its version."""
    where = f"account {account.id} version {account.version}"
    try:
        stored = Account.from_snapshot(state)
    except _DECODE_ERRORS as exc:
        report.add("snapshots", f"{where}: snapshot unreadable: {exc}")
        return
    if stored != account:
        names = [f.name for f in fields(Account)]
        shown = differ([(n, getattr(stored, n), getattr(account, n)) for n in names])
        report.add("snapshots", f"{where}: snapshot differs: {shown}")


def want_row(
    event: DomainEvent,
    event_id: str,
    stream: str,
    version: int,
    position: int,
    at: Any,
    balance: Decimal,
) -> tuple[Any, ...]:
    """The `transactions` row the fold expects for `event` (balance: the fold's, after it);
    a `hold` row's status is the caller's to fill in (here: pending)."""
    if type(event) is AccountCreated:
        amount = balance = event.initial_balance
        description = transfer_id = None
    elif type(event) is HoldCaptured:
        amount, description, transfer_id = event.amount, None, event.hold_id
    elif type(event) is HoldPlaced:
        amount, description, transfer_id = event.amount, event.description, event.hold_id
    else:
        amount, description = event.amount, event.description  # type: ignore[attr-defined]
        transfer_id = getattr(event, "transfer_id", None)
    row_type = ROW_TYPES[event.type]
    status = (PENDING, None) if row_type == "hold" else (None, None)
    return (event_id, stream, row_type, amount, balance, description, version, transfer_id,
            position, at, *status)  # fmt: skip


def _money(text: str | None) -> Decimal | None:
    try:
        return Decimal(text)  # type: ignore[arg-type]
    except (TypeError, ArithmeticError):
        return None


def _where(stream: str, version: int, position: int) -> str:
    return f"account {stream} version {version} (position {position})"
