"""What `banking-es verify` found: problems by check, counts, and how values are shown."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from banking_es.eventstore.base import EVENTS_TOPIC

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
#: Problems kept per check for the report (all are counted).
KEPT = 20


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


def differ(columns: list[tuple[str, Any, Any]]) -> str:
    """`name stored (the events give expected)` for each column whose values differ."""
    return ", ".join(
        f"{name} {show(stored)} (the events give {show(expected)})"
        for name, stored, expected in columns
        if stored != expected
    )


def show(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if isinstance(value, Decimal | int) else repr(value)


def span(first: int, last: int) -> str:
    return f"position {first}" if first == last else f"positions {first}-{last}"


def outbox_row(
    report: Report,
    row_id: int,
    topic: str,
    key: str,
    position: int | None,
    stream: str | None,
    previous: int,
) -> bool:
    """Word what is wrong with one outbox row, read after the row of event `previous` (0: none);
    False when the row does not move the covered events on (the next is read after `previous`)."""
    if position is None or topic != EVENTS_TOPIC:
        report.add("outbox", f"outbox row {row_id}: topic {topic!r}, event {position}")
        return False
    if stream is None:
        report.add("outbox", f"outbox row {row_id}: event position {position} has no event")
    elif stream != key:
        report.add("outbox", f"outbox row {row_id}: key {key} but its event is of {stream}")
    if previous and position <= previous:
        report.add(
            "outbox",
            f"outbox row {row_id}: event {position} again or out of order (after {previous})",
        )
        return False
    if previous and position > previous + 1:
        missing = span(previous + 1, position - 1)
        report.add("outbox", f"no outbox row for the event(s) at {missing}")
    return True
