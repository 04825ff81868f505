"""`banking-es verify`: check a store from its events alone and against what is derived from them.

One pass over the events in position order, in pages, inside one read-only snapshot
transaction (safe while servers run): positions without gaps, versions 1, 2, 3... per stream,
every transfer's two sides matched, no balance below `lowest_allowed_balance`, every snapshot
equal to the fold at its version, and each read model equal to what its projection code makes
of the events up to its checkpoint. Then the outbox rows, against the events they point at.
Folds use `Account.apply`; the expected read-model rows come from the projections' functions.
State per stream is one `Account`, one summary and one balance.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from banking_es.application.codec import to_domain
from banking_es.db.base import Connection, Database, Row
from banking_es.domain.account import Account, lowest_allowed_balance
from banking_es.domain.events import AccountCreated, DomainEvent, TransferReceived, TransferSent
from banking_es.eventstore.base import EVENTS_TOPIC, RecordedEvent
from banking_es.projections.account_summaries import Summary, fold_summaries
from banking_es.projections.transactions import ROW_TYPES, transaction_rows

#: The checks, in the order the report lists them.
CHECKS = (
    "positions",
    "versions",
    "events",
    "transfers",
    "balances",
    "snapshots",
    "account_summaries",
    "transactions",
    "outbox",
)
#: Events per page read; the next page is asked for while this one is checked.
PAGE = 5000
#: Problems kept per check for the report (all are counted).
KEPT = 20
_T_COLUMNS = (
    "id, account_id, type, amount, balance_after, description, version, transfer_id,"
    " position, occurred_at"
)
_EVENTS = (
    "SELECT e.position, e.stream_id, e.version, e.event_id, e.type, e.data, e.metadata,"
    " e.recorded_at, s.state AS snapshot, "
    + ", ".join(f"t.{c.strip()} AS t_{c.strip()}" for c in _T_COLUMNS.split(","))
    + " FROM events e"
    " LEFT JOIN snapshots s ON s.stream_id = e.stream_id AND s.version = e.version"
    " LEFT JOIN transactions t ON t.account_id = e.stream_id AND t.version = e.version"
    " WHERE e.position > $1 ORDER BY e.position LIMIT $2"
)
_T_NAMES = tuple(c.strip() for c in _T_COLUMNS.split(","))
_OUTBOX = (
    "SELECT o.id, o.topic, o.key, o.event_position, e.stream_id FROM outbox o"
    " LEFT JOIN events e ON e.position = o.event_position"
    " WHERE o.id > $1 AND (o.event_position IS NOT NULL OR o.topic = $3) ORDER BY o.id LIMIT $2"
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing found wrong: which check, and a line that says what and where."""

    check: str
    detail: str


@dataclass
class Report:
    """What `verify` found; `sound` when no check found anything."""

    head: int = 0
    events: int = 0
    streams: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    #: Problems per check, also those beyond the `KEPT` listed.
    counts: Counter[str] = field(default_factory=Counter)
    #: Items compared per check (snapshots, read-model rows, outbox rows, transfers).
    compared: Counter[str] = field(default_factory=Counter)

    @property
    def sound(self) -> bool:
        return not self.counts

    def add(self, check: str, detail: str) -> None:
        self.counts[check] += 1
        if self.counts[check] <= KEPT:
            self.problems.append(Problem(check, detail))


@dataclass(slots=True)
class _Leg:
    sent: bool
    stream: str
    other: str
    amount: Decimal
    currency: str
    position: int


class _Verifier:
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
            report.add("positions", f"gap: no event at {_span(self.last + 1, position - 1)}")
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
        differ = [
            f.name for f in fields(Account) if getattr(stored, f.name) != getattr(account, f.name)
        ]
        if differ:
            shown = _differ([(n, getattr(stored, n), getattr(account, n)) for n in differ])
            self.report.add("snapshots", f"{where}: snapshot differs: {shown}")

    def _transaction_differs(
        self, recorded: RecordedEvent, stored: tuple[Any, ...] | None, want: tuple[Any, ...]
    ) -> None:
        where = f"account {recorded.stream_id} version {recorded.version}"
        if stored is None:
            self.report.add("transactions", f"{where}: no row (position {recorded.position})")
            return
        shown = _differ(list(zip(_T_NAMES, stored, want, strict=True)))
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


async def verify(
    db: Database,
    progress: Callable[[int, int], None] | None = None,
    *,
    page: int = PAGE,
) -> Report:
    """Check the store behind `db` (see the module docstring); `progress(done, head)` after
    each page."""
    started = time.perf_counter()
    report = Report()
    async with db.snapshot() as conn:
        report.head = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        checkpoints = {
            r["name"]: int(r["position"])
            for r in await conn.fetch("SELECT name, position FROM projection_checkpoints")
        }
        summaries_at = checkpoints.get("account_summaries", 0)
        verifier = _Verifier(report, summaries_at, checkpoints.get("transactions", 0))
        rows = await conn.fetch(_EVENTS, 0, page)
        while rows:
            last = rows[-1]["position"]
            crossing = verifier.summaries is not None and last > summaries_at
            # The next page is read while this one is checked, except when the summaries
            # are compared in between (one statement at a time on a connection).
            ahead = None if crossing else asyncio.ensure_future(conn.fetch(_EVENTS, last, page))
            verifier.page(rows)
            if crossing and verifier.summaries is not None:
                await _compare_summaries(conn, verifier.summaries, report)
                verifier.summaries = None
            report.events += len(rows)
            if progress is not None:
                progress(report.events, report.head)
            rows = await ahead if ahead is not None else await conn.fetch(_EVENTS, last, page)
        if verifier.summaries is not None:
            await _compare_summaries(conn, verifier.summaries, report)
        verifier.end()
        report.streams = len(verifier.accounts)
        await _count_unmatched(conn, report, verifier.rows_seen)
        await _check_outbox(conn, report, page)
    report.seconds = time.perf_counter() - started
    return report


async def _compare_summaries(
    conn: Connection, expected: dict[str, Summary], report: Report
) -> None:
    """Every `account_summaries` row against the projection's fold, page by page."""
    seen = 0
    after = ""
    while rows := await conn.fetch(
        "SELECT * FROM account_summaries WHERE account_id > $1 ORDER BY account_id LIMIT $2",
        after,
        PAGE,
    ):
        for row in rows:
            stored = Summary.from_row(row)
            want = expected.get(stored.account_id)
            if want is None:
                report.add("account_summaries", f"account {stored.account_id}: a row, no events")
                continue
            seen += 1
            report.compared["account_summaries"] += 1
            if stored.values() != want.values():
                shown = _differ(
                    [
                        (f.name, getattr(stored, f.name), getattr(want, f.name))
                        for f in fields(Summary)
                    ]
                )
                report.add(
                    "account_summaries", f"account {stored.account_id}: row differs: {shown}"
                )
        after = rows[-1]["account_id"]
    if seen < len(expected):
        report.add("account_summaries", f"{len(expected) - seen} accounts have no row")


async def _count_unmatched(conn: Connection, report: Report, rows_seen: int) -> None:
    """Read-model rows and snapshots that no event's (stream, version) has."""
    report.compared["transactions"] = rows_seen
    rows = int(await conn.fetchval("SELECT count(*) FROM transactions"))
    if rows > rows_seen:
        report.add("transactions", f"{rows - rows_seen} rows match no event")
    orphans = int(
        await conn.fetchval(
            "SELECT count(*) FROM snapshots s WHERE NOT EXISTS (SELECT 1 FROM events e"
            " WHERE e.stream_id = s.stream_id AND e.version = s.version)"
        )
    )
    if orphans:
        report.add("snapshots", f"{orphans} snapshots are at a version no event has")


async def _check_outbox(conn: Connection, report: Report, page: int) -> None:
    """Event rows of the outbox: each points at an event of its key, one row per event, and
    the events from the first covered to the last covered all have one (written in the
    events' transaction, in position order)."""
    after = 0
    previous = 0
    while rows := await conn.fetch(_OUTBOX, after, page, EVENTS_TOPIC):
        for row in rows:
            report.compared["outbox"] += 1
            position = row["event_position"]
            name = f"outbox row {row['id']}"
            if position is None or row["topic"] != EVENTS_TOPIC:
                report.add("outbox", f"{name}: topic {row['topic']!r}, event {position}")
                continue
            if row["stream_id"] is None:
                report.add("outbox", f"{name}: event position {position} has no event")
            elif row["stream_id"] != row["key"]:
                report.add(
                    "outbox", f"{name}: key {row['key']} but its event is of {row['stream_id']}"
                )
            if previous and position <= previous:
                report.add(
                    "outbox", f"{name}: event {position} again or out of order (after {previous})"
                )
                continue
            if previous and position > previous + 1:
                missing = _span(previous + 1, position - 1)
                report.add("outbox", f"no outbox row for the event(s) at {missing}")
            previous = position
        after = rows[-1]["id"]


def _where(recorded: RecordedEvent) -> str:
    return f"account {recorded.stream_id} version {recorded.version} (position {recorded.position})"


def _differ(columns: list[tuple[str, Any, Any]]) -> str:
    """`name stored (the events give expected)` for each column whose values differ."""
    return ", ".join(
        f"{name} {_show(stored)} (the events give {_show(expected)})"
        for name, stored, expected in columns
        if stored != expected
    )


def _show(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if isinstance(value, Decimal | int) else repr(value)


def _span(first: int, last: int) -> str:
    return f"position {first}" if first == last else f"positions {first}-{last}"
