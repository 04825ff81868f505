"""The PostgreSQL pass: the checks run as SQL (`verify/sql.py`) inside the snapshot, and
Python reads only what SQL found and what SQL does not read.

Python words each problem, says how a row differs, and folds with the domain's code the
accounts SQL does not read strictly (`irregular`: an event it cannot decode as the domain
does, an upcast, a second opening or closing): decoding and upcasting live in Python, and
such accounts are rare. Transfers that are not one clean pair are matched by that fold's
code too, together with the irregular accounts' legs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import fields

from orjson import loads

from banking_es.db.base import Connection, Database, DatabaseError, Row
from banking_es.db.postgres import PostgresDatabase
from banking_es.domain.account import CLOSED, OPEN, Account
from banking_es.domain.events import SCHEMA_VERSION, event_from_stored
from banking_es.eventstore.base import EVENTS_TOPIC
from banking_es.projections.account_summaries import Summary
from banking_es.verify import sql
from banking_es.verify.events import (
    EVENTS,
    T_ROW,
    EventChecks,
    Leg,
    compare_pair,
    compare_snapshot,
    row_differs,
    want_row,
)
from banking_es.verify.report import KEPT, Report, differ, outbox_row, span

#: Events of the irregular accounts ($3), with their snapshot and `transactions` row.
_IRREGULAR = EVENTS["postgres"].replace(
    "WHERE e.position > $1", "WHERE e.position > $1 AND e.stream_id = ANY($3::text[])"
)
_EVENT = "SELECT event_id, type, data::text AS data, recorded_at FROM events WHERE position = $1"
_STORED = "SELECT * FROM account_summaries WHERE account_id = ANY($1::text[]) ORDER BY account_id"
#: Whole-store sorts and hashes fit in memory; JIT compiling costs more than it saves here.
SETTINGS = ("SET LOCAL work_mem = '256MB'", "SET LOCAL jit = off")


async def check(
    db: Database,
    conn: Connection,
    report: Report,
    checkpoints: dict[str, int],
    page: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Run every check on `conn` (in its snapshot) into `report`."""
    summaries_at = checkpoints.get("account_summaries", 0)
    transactions_at = checkpoints.get("transactions", 0)
    for setting in SETTINGS:
        await conn.execute(setting)
    side = None
    if isinstance(db, PostgresDatabase) and db.pool.get_max_size() >= 2:
        shared = await conn.fetchval("SELECT pg_export_snapshot()")
        side = asyncio.ensure_future(_side(db, shared))
    try:
        rows = await conn.fetch(
            sql.FOLD, str(SCHEMA_VERSION), transactions_at, summaries_at, OPEN, CLOSED
        )
        # Without a second connection, the same statements after FOLD on this one.
        groups, outbox, outbox_rows = await (side or _side_queries(conn))
    finally:
        if side is not None:
            side.cancel()
            with contextlib.suppress(asyncio.CancelledError, DatabaseError):
                await side
    irregular = sorted({r["stream_id"] for r in rows if r["irregular"]})
    if irregular:  # their legs are the fold's: pair the others again without them
        groups = await conn.fetch(sql.TRANSFERS, irregular)
    folded_apart = set(irregular)
    missing = 0
    for row in rows:
        if row["bad_version"]:
            report.add(
                "versions",
                f"account {row['stream_id']}: version {row['version']} at position"
                f" {row['position']} follows version {row['previous'] or 0}",
            )
        if row["last"]:
            report.events += row["events"]
            report.streams += 1
        if row["stream_id"] in folded_apart:
            continue
        if row["last"]:
            report.compared["transactions"] += row["rows_seen"]
        await _row(conn, report, row, transactions_at)
        if row["summary"]:
            report.compared["account_summaries"] += row["has_row"]
            missing += not row["has_row"]
            if row["summary_differs"] and row["has_row"]:
                await _summary_differs(conn, report, _summary(row))
    if progress is not None:
        progress(report.events, report.head)
    if report.events != report.head:
        for gap in await conn.fetch(sql.GAPS):
            report.add(
                "positions", f"gap: no event at {span(gap['previous'] + 1, gap['position'] - 1)}"
            )
    folded = await _fold(conn, report, irregular, summaries_at, transactions_at, page)
    missing += await _irregular_summaries(conn, report, folded, irregular)
    for orphan in await conn.fetch(sql.SUMMARY_ORPHANS, summaries_at, irregular):
        report.add("account_summaries", f"account {orphan['account_id']}: a row, no events")
    if missing:
        report.add("account_summaries", f"{missing} accounts have no row")
    await _transfers(conn, report, groups, folded, irregular)
    report.compared["outbox"] += outbox_rows
    _outbox(report, outbox)


async def _side(db: PostgresDatabase, shared: str) -> tuple[list[Row], list[Row], int]:
    """The transfers (as if every account were regular) and the outbox, read while `FOLD`
    runs, on a second connection that shares the snapshot `shared` (exported)."""
    async with db.snapshot(shared) as other:
        for setting in SETTINGS:
            await other.execute(setting)
        return await _side_queries(other)


async def _side_queries(conn: Connection) -> tuple[list[Row], list[Row], int]:
    """The transfers (as if every account were regular), the outbox's problems and how
    many event rows the outbox has."""
    groups = await conn.fetch(sql.TRANSFERS, [])
    outbox = await conn.fetch(sql.OUTBOX, EVENTS_TOPIC)
    return groups, outbox, int(await conn.fetchval(sql.OUTBOX_ROWS, EVENTS_TOPIC))


async def _row(conn: Connection, report: Report, row: Row, transactions_at: int) -> None:
    """The problems SQL found at one event of a regular account."""
    stream, version, position = row["stream_id"], row["version"], row["position"]
    where = f"account {stream} version {version} (position {position})"
    if row["bad_balance"]:
        report.add(
            "balances",
            f"{where}: balance {row['balance']} after {row['type']},"
            f" below the allowed {row['lowest']}",
        )
    problem = row["t_problem"]
    if problem == "unexpected":
        report.add(
            "transactions",
            f"account {stream} version {version}: a row for the {row['type']} at position"
            f" {position} (checkpoint {transactions_at}; no row expected)",
        )
    elif problem == "missing":
        report.add("transactions", f"account {stream} version {version}: no row"
                   f" (position {position})")  # fmt: skip
    elif problem == "differs":
        await _row_differs(conn, report, row)
    if row["snapshot"]:
        report.compared["snapshots"] += 1
        if row["state"] is not None:
            compare_snapshot(report, row["state"], _account(row))


async def _row_differs(conn: Connection, report: Report, row: Row) -> None:
    """A `transactions` row that differs, shown in full (the first `KEPT`)."""
    where = f"account {row['stream_id']} version {row['version']}"
    if report.counts["transactions"] >= KEPT:
        report.add("transactions", f"{where}: row differs")
        return
    event = await conn.fetchrow(_EVENT, row["position"])
    assert event is not None
    want = want_row(
        event_from_stored(event["type"], loads(event["data"])),
        event["event_id"],
        row["stream_id"],
        row["version"],
        row["position"],
        event["recorded_at"],
        row["balance"],
    )
    row_differs(report, want, await conn.fetchrow(T_ROW, row["stream_id"], row["version"]))


def _account(row: Row) -> Account:
    """The fold of a regular account at one of its events, as SQL gives it."""
    return Account(
        row["stream_id"], row["owner_name"], row["owner_id"], row["balance"], row["currency"],
        row["status"], row["version"], row["created_at"], row["recorded_at"],
        row["closed_reason"],
    )  # fmt: skip


def _summary(row: Row) -> Summary:
    return Summary(
        row["stream_id"], row["owner_name"], row["owner_id"], row["balance"], row["currency"],
        row["status"], row["version"], row["created_position"], row["created_at"],
        row["recorded_at"],
    )  # fmt: skip


async def _summary_differs(conn: Connection, report: Report, want: Summary) -> None:
    """A summary row that differs, read again to show how (the first `KEPT`)."""
    if report.counts["account_summaries"] >= KEPT:
        report.add("account_summaries", f"account {want.account_id}: row differs")
        return
    for stored in await conn.fetch(_STORED, [want.account_id]):
        _compare_summary(report, Summary.from_row(stored), want)


def _compare_summary(report: Report, stored: Summary, want: Summary) -> None:
    if stored.values() != want.values():
        shown = differ(
            [(f.name, getattr(stored, f.name), getattr(want, f.name)) for f in fields(Summary)]
        )
        report.add("account_summaries", f"account {stored.account_id}: row differs: {shown}")


async def _fold(
    conn: Connection,
    report: Report,
    irregular: list[str],
    summaries_at: int,
    transactions_at: int,
    page: int,
) -> EventChecks:
    """The Python fold of the irregular accounts' events (none in a sound store)."""
    checks = EventChecks(report, summaries_at, transactions_at, whole=False)
    if irregular:
        after = 0
        while rows := await conn.fetch(_IRREGULAR, after, page, irregular):
            checks.page(rows)
            after = rows[-1]["position"]
            for want in checks.differing:
                full = report.counts["transactions"] < KEPT
                checks.differs(want, await conn.fetchrow(T_ROW, want[1], want[6]) if full else None)
            checks.differing.clear()
    checks.end()
    report.compared["transactions"] += checks.rows_seen
    return checks


async def _irregular_summaries(
    conn: Connection, report: Report, folded: EventChecks, irregular: list[str]
) -> int:
    """Compare the irregular accounts' summaries; answer how many have no row."""
    expected = folded.summaries or {}
    seen = 0
    for row in await conn.fetch(_STORED, irregular):
        stored = Summary.from_row(row)
        want = expected.get(stored.account_id)
        if want is None:
            report.add("account_summaries", f"account {stored.account_id}: a row, no events")
            continue
        seen += 1
        report.compared["account_summaries"] += 1
        _compare_summary(report, stored, want)
    return len(expected) - seen


async def _transfers(
    conn: Connection,
    report: Report,
    groups: list[Row],
    folded: EventChecks,
    irregular: list[str],
) -> None:
    """Pairs of one `TransferSent` and one `TransferReceived` in SQL (counted in the row
    with no `transfer_id`); the other transfers, and the irregular accounts' legs, are
    matched in position order by the fold's code."""
    odd: list[str] = []
    for group in groups:
        if group["transfer_id"] is None:
            report.compared["transfers"] += group["n"]
        elif group["n"] == 2 and group["sent"] == 1:  # counted with the clean pairs
            compare_pair(report, group["transfer_id"], _leg(group, "out"), _leg(group, "into"))
        else:
            odd.append(group["transfer_id"])
    legs = list(folded.legs)
    for row in await conn.fetch(sql.LEGS, odd, irregular) if odd else []:
        sent = row["type"] == "TransferSent"
        leg = Leg(sent, row["stream_id"], row["other"], row["amount"], row["currency"],
                  row["position"])  # fmt: skip
        legs.append((row["transfer_id"], leg))
    matcher = EventChecks(report, 0, 0)
    for transfer_id, leg in sorted(legs, key=lambda item: item[1].position):
        matcher.match(transfer_id, leg)
    matcher.unmatched()


def _leg(group: Row, side: str) -> Leg:
    return Leg(
        side == "out",
        group[f"{side}_stream_id"],
        group[f"{side}_other"],
        group[f"{side}_amount"],
        group[f"{side}_currency"],
        group[f"{side}_position"],
    )


def _outbox(report: Report, rows: list[Row]) -> None:
    """The outbox's event rows that SQL found wrong, worded as the rows are read."""
    for row in rows:
        row_id, topic, key, position, stream, previous = row.values()
        outbox_row(report, row_id, topic, key, position, stream, previous or 0)
