"""`banking-es verify`: a store checked from its events and against what is derived from them.

Inside one read-only snapshot transaction (safe while servers run): positions without gaps,
versions 1, 2, 3... per stream, every transfer's two sides matched, no balance below
`lowest_allowed_balance`, every snapshot equal to the fold at its version, each read model
equal to the fold of the events up to its checkpoint, and the outbox against its events.
PostgreSQL runs these as SQL (`verify/postgres.py`); SQLite, which has no exact decimal
arithmetic in SQL, runs one Python pass over the events in pages (`EventChecks`, the
reference the SQL is tested against). Folds use `Account.apply`, not the projections' code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import fields
from typing import Any

from banking_es.db.base import Connection, Database, Row
from banking_es.eventstore.base import EVENTS_TOPIC
from banking_es.projections.account_summaries import Summary
from banking_es.verify import postgres
from banking_es.verify.events import EVENTS, T_ROW, EventChecks
from banking_es.verify.report import CHECKS, KEPT, Problem, Report, differ, outbox_row

__all__ = ["CHECKS", "KEPT", "PAGE", "Problem", "Report", "verify"]

#: Events per page read; the next page is asked for while this one is checked.
PAGE = 5000
_OUTBOX = (
    "SELECT o.id, o.topic, o.key, o.event_position, e.stream_id FROM outbox o"
    " LEFT JOIN events e ON e.position = o.event_position"
    " WHERE o.id > $1 AND (o.event_position IS NOT NULL OR o.topic = $3) ORDER BY o.id LIMIT $2"
)


async def verify(
    db: Database,
    progress: Callable[[int, int], None] | None = None,
    *,
    page: int = PAGE,
    in_sql: bool = True,
) -> Report:
    """Check the store behind `db` (see the module docstring); `progress(done, head)` after
    each page. `in_sql=False` runs the Python pass on PostgreSQL too (the reference the
    tests hold the SQL checks to)."""
    started = time.perf_counter()
    report = Report()
    async with db.snapshot() as conn:
        report.head = int(await conn.fetchval("SELECT coalesce(max(position), 0) FROM events"))
        checkpoints = {
            r["name"]: int(r["position"])
            for r in await conn.fetch("SELECT name, position FROM projection_checkpoints")
        }
        for name, position in sorted(checkpoints.items()):
            if position > report.head and name in CHECKS:
                report.add(name, f"checkpoint {position} is beyond the last event {report.head}")
        if in_sql and conn.dialect == "postgres":
            await postgres.check(db, conn, report, checkpoints, page, progress)
        else:
            await _fold_all(conn, report, checkpoints, page, progress)
        await _count_unmatched(conn, report)
    report.seconds = time.perf_counter() - started
    return report


async def _fold_all(
    conn: Connection,
    report: Report,
    checkpoints: dict[str, int],
    page: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Every check in one Python pass over the events, in pages."""
    verifier = EventChecks(
        report, checkpoints.get("account_summaries", 0), checkpoints.get("transactions", 0)
    )
    events = EVENTS[conn.dialect]
    compared = False
    rows = await conn.fetch(events, 0, page)
    while rows:
        # The next page is read while this one is checked.
        ahead = await _read_ahead(conn.fetch(events, rows[-1]["position"], page))
        verifier.page(rows)
        report.events += len(rows)
        if progress is not None:
            progress(report.events, report.head)
        rows = await ahead
        # One statement at a time on a connection: these wait for the page read ahead.
        await _read_differing(conn, verifier)
        if verifier.summaries is not None and not compared:
            await _compare_summaries(conn, verifier.summaries, report)
            compared = True
    verifier.end()
    await _read_differing(conn, verifier)
    if not compared:
        assert verifier.summaries is not None
        await _compare_summaries(conn, verifier.summaries, report)
    report.streams = len(verifier.accounts)
    report.compared["transactions"] = verifier.rows_seen
    await _check_outbox(conn, report, page)


async def _read_ahead(query: Coroutine[Any, Any, list[Row]]) -> asyncio.Future[list[Row]]:
    """Start `query` and let it send its statement before the caller's checks, which do not
    yield to the event loop: otherwise the database would start only once they are done."""
    ahead = asyncio.ensure_future(query)
    await asyncio.sleep(0)
    return ahead


async def _read_differing(conn: Connection, verifier: EventChecks) -> None:
    """Read in full the `transactions` rows that differ, to show how (the first `KEPT`)."""
    for want in verifier.differing:
        full = verifier.report.counts["transactions"] < KEPT
        verifier.differs(want, await conn.fetchrow(T_ROW, want[1], want[6]) if full else None)
    verifier.differing.clear()


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
                shown = differ(
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


async def _count_unmatched(conn: Connection, report: Report) -> None:
    """Read-model rows and snapshots that no event's (stream, version) has."""
    rows_seen = report.compared["transactions"]
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
    previous = 0
    rows = await conn.fetch(_OUTBOX, 0, page, EVENTS_TOPIC)
    while rows:
        # The next page is read while this one is checked.
        ahead = await _read_ahead(conn.fetch(_OUTBOX, rows[-1]["id"], page, EVENTS_TOPIC))
        report.compared["outbox"] += len(rows)
        for row in rows:
            row_id, topic, key, position, stream = row.values()
            if outbox_row(report, row_id, topic, key, position, stream, previous):
                previous = position
        rows = await ahead
