"""The checks made on each event, in position order: one fold per account with the domain's
code, the transfers' two sides, and the snapshot and `transactions` row joined to the event."""

from __future__ import annotations

from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from banking_es.application.codec import to_domain
from banking_es.db.base import Row
from banking_es.domain.account import Account, lowest_allowed_balance
from banking_es.domain.events import AccountCreated, DomainEvent, TransferReceived, TransferSent
from banking_es.eventstore.base import RecordedEvent
from banking_es.projections.account_summaries import Summary, fold_summaries
from banking_es.projections.transactions import ROW_TYPES, transaction_rows
from banking_es.verify.report import Report, differ, span

T_COLUMNS = (
    "id, account_id, type, amount, balance_after, description, version, transfer_id,"
    " position, occurred_at"
)
#: A page of events after $1, each with its snapshot and `transactions` row (or nulls).
EVENTS = (
    "SELECT e.position, e.stream_id, e.version, e.event_id, e.type, e.data, e.metadata,"
    " e.recorded_at, s.state AS snapshot, "
    + ", ".join(f"t.{c.strip()} AS t_{c.strip()}" for c in T_COLUMNS.split(","))
    + " FROM events e"
    " LEFT JOIN snapshots s ON s.stream_id = e.stream_id AND s.version = e.version"
    " LEFT JOIN transactions t ON t.account_id = e.stream_id AND t.version = e.version"
    " WHERE e.position > $1 ORDER BY e.position LIMIT $2"
)
_T_NAMES = tuple(c.strip() for c in T_COLUMNS.split(","))


@dataclass(slots=True)
class _Leg:
    sent: bool
    stream: str
    other: str
    amount: Decimal
    currency: str
    position: int


class EventChecks:
    """The state of the pass over the events: small, per account."""

    def __init__(self, report: Report, summaries_at: int, transactions_at: int) -> None:
        self.report = report
        self.accounts: dict[str, Account] = {}
        self.summaries: dict[str, Summary] | None = {}
        self.summaries_at = summaries_at
        self.transactions_at = transactions_at
        self.balances: dict[str, Decimal] = {}
        self.pending: dict[str, _Leg] = {}
        self.last = 0
        self.rows_seen = 0

    def page(self, rows: list[Row]) -> None:
        """Check a page of joined rows (`_EVENTS`), in position order."""
        decoded: dict[str, DomainEvent] = {}
        summarized: list[RecordedEvent] = []
        relevant: list[RecordedEvent] = []
        stored_rows: list[tuple[Any, ...] | None] = []
        for row in rows:
            position, stream, version, event_id, type_, data, metadata, at, snapshot, *t = (
                row.values()
            )
            recorded = RecordedEvent(position, stream, version, event_id, type_, data, metadata, at)
            event = self._fold(recorded)
            if event is None:
                continue
            decoded[event_id] = event
            if snapshot is not None:
                self._snapshot(snapshot, recorded)
            if self.summaries is not None and position <= self.summaries_at:
                summarized.append(recorded)
            stored = tuple(t) if t[0] is not None else None
            if stored is not None:
                self.rows_seen += 1
            if position <= self.transactions_at and type_ in ROW_TYPES:
                relevant.append(recorded)
                stored_rows.append(stored)
            elif stored is not None:
                self.report.add(
                    "transactions",
                    f"account {stream} version {version}: a row for the {type_} at position"
                    f" {position} (checkpoint {self.transactions_at}; no row expected)",
                )
        if self.summaries is not None:
            fold_summaries(self.summaries, summarized, set(), lambda r: decoded[r.event_id])
        expected = transaction_rows(relevant, self.balances, None, lambda r: decoded[r.event_id])
        for recorded, stored, want in zip(relevant, stored_rows, expected, strict=True):
            if stored != want:
                self._transaction_differs(recorded, stored, want)

    def _fold(self, recorded: RecordedEvent) -> DomainEvent | None:
        """Fold one event into its account, checking position, version, balance and transfer."""
        report = self.report
        position, stream = recorded.position, recorded.stream_id
        if position != self.last + 1:
            report.add("positions", f"gap: no event at {span(self.last + 1, position - 1)}")
        self.last = position
        account = self.accounts.get(stream)
        if account is None:
            account = self.accounts[stream] = Account(stream)
        if recorded.version != account.version + 1:
            report.add(
                "versions",
                f"account {stream}: version {recorded.version} at position {position}"
                f" follows version {account.version}",
            )
            account.version = recorded.version - 1
        try:
            event = to_domain(recorded)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            report.add("events", f"{_where(recorded)}: cannot decode {recorded.type}: {exc}")
            account.version = recorded.version
            return None
        if (recorded.version == 1) != (recorded.type == AccountCreated.type):
            report.add("events", f"{_where(recorded)}: {recorded.type} (only AccountCreated opens)")
        account.apply(event, recorded.recorded_at)
        floor = lowest_allowed_balance(account)
        if account.balance < floor:
            report.add(
                "balances",
                f"{_where(recorded)}: balance {account.balance} after {recorded.type},"
                f" below the allowed {floor}",
            )
        if isinstance(event, TransferSent):
            leg = _Leg(True, stream, event.to_account_id, event.amount, account.currency, position)
            self._leg(event.transfer_id, leg)
        elif isinstance(event, TransferReceived):
            leg = _Leg(
                False, stream, event.from_account_id, event.amount, account.currency, position
            )
            self._leg(event.transfer_id, leg)
        return event

    def _leg(self, transfer_id: str, leg: _Leg) -> None:
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
        if (out.other, into.other) != (into.stream, out.stream):
            self.report.add(
                "transfers",
                f"transfer {transfer_id}: sent from {out.stream} to {out.other},"
                f" received by {into.stream} from {into.other}",
            )
        if (out.amount, out.currency) != (into.amount, into.currency):
            self.report.add(
                "transfers",
                f"transfer {transfer_id}: sent {out.amount} {out.currency} (position"
                f" {out.position}), received {into.amount} {into.currency}"
                f" (position {into.position})",
            )

    def _snapshot(self, state: Any, recorded: RecordedEvent) -> None:
        self.report.compared["snapshots"] += 1
        account = self.accounts[recorded.stream_id]
        where = f"account {recorded.stream_id} version {recorded.version}"
        try:
            stored = Account.from_snapshot(state)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            self.report.add("snapshots", f"{where}: snapshot unreadable: {exc}")
            return
        if stored != account:
            names = [f.name for f in fields(Account)]
            shown = differ([(n, getattr(stored, n), getattr(account, n)) for n in names])
            self.report.add("snapshots", f"{where}: snapshot differs: {shown}")

    def _transaction_differs(
        self, recorded: RecordedEvent, stored: tuple[Any, ...] | None, want: tuple[Any, ...]
    ) -> None:
        where = f"account {recorded.stream_id} version {recorded.version}"
        if stored is None:
            self.report.add("transactions", f"{where}: no row (position {recorded.position})")
            return
        shown = differ(list(zip(_T_NAMES, stored, want, strict=True)))
        self.report.add("transactions", f"{where}: row differs: {shown}")

    def end(self) -> None:
        for transfer_id, leg in self.pending.items():
            kind, missing = ("TransferSent", "TransferReceived")
            if not leg.sent:
                kind, missing = missing, kind
            self.report.add(
                "transfers",
                f"transfer {transfer_id}: {kind} at position {leg.position} ({leg.stream},"
                f" {leg.amount} {leg.currency}) has no {missing}",
            )


def _where(recorded: RecordedEvent) -> str:
    return f"account {recorded.stream_id} version {recorded.version} (position {recorded.position})"
