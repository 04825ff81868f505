"""Export: every table of `tables.TABLES` read in key order, one page at a time, from one
consistent view of the store (a REPEATABLE READ transaction on PostgreSQL, a read
transaction on a connection of its own on SQLite), so servers may keep running."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import aiosqlite

from banking_es.db.base import Database, Row
from banking_es.db.migrate import available
from banking_es.db.sqlite import to_sqlite, translate
from banking_es.portable.fileformat import ExportWriter, Manifest, Source
from banking_es.portable.tables import TABLES, TableSpec, cutoff, quoted, row_values

#: Rows read per query.
PAGE = 5000

Fetch = Callable[..., Awaitable[list[Row]]]
#: `progress(table, done, total)` after each page.
Progress = Callable[[str, int, int], None]


@asynccontextmanager
async def consistent_view(db: Database) -> AsyncIterator[Fetch]:
    """A `fetch(sql, *args)` whose every query sees the same committed state."""
    if db.dialect == "postgres":
        async with db.transaction() as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn.fetch
        return
    # The adapter's reader runs each query in a transaction of its own; this one is held.
    path = cast(Any, db).path
    reader = await aiosqlite.connect(
        path, isolation_level=None, detect_types=sqlite3.PARSE_DECLTYPES, timeout=30
    )
    reader.row_factory = sqlite3.Row
    try:

        async def fetch(sql: str, *args: Any) -> list[Row]:
            try:
                return [dict(r) for r in await reader.execute_fetchall(to_sqlite(sql), args)]
            except sqlite3.Error as exc:
                raise translate(exc) from exc

        await reader.execute("BEGIN")
        yield fetch
        await reader.execute("COMMIT")
    finally:
        await reader.close()


def _page_sql(spec: TableSpec, first: bool) -> str:
    """The next page after the last key: `$1` is the cutoff if `spec.keep` uses one, the
    last key's values follow."""
    columns = ", ".join(quoted(c) for c in spec.column_names)
    conditions = [spec.keep] if spec.keep else []
    if not first:
        key = ", ".join(quoted(k) for k in spec.key)
        skip = 1 if spec.uses_cutoff else 0
        marks = ", ".join(f"${i + skip + 1}" for i in range(len(spec.key)))
        conditions.append(f"({key}) > ({marks})")
    order = ", ".join(quoted(k) for k in spec.key)
    where = " WHERE " + " AND ".join(f"({c})" for c in conditions) if conditions else ""
    return f"SELECT {columns} FROM {spec.name}{where} ORDER BY {order} LIMIT {PAGE}"


async def _count(fetch: Fetch, spec: TableSpec, at: datetime) -> int:
    where = f" WHERE {spec.keep}" if spec.keep else ""
    args = (at,) if spec.uses_cutoff else ()
    rows = await fetch(f"SELECT count(*) AS n FROM {spec.name}{where}", *args)
    return int(rows[0]["n"])


async def schema_version(fetch: Fetch) -> int:
    rows = await fetch("SELECT max(version) AS v FROM schema_migrations")
    return int(rows[0]["v"] or 0)


async def export_store(
    db: Database,
    path: Path,
    *,
    now: datetime,
    access_token_expiry_s: int,
    progress: Progress | None = None,
) -> Manifest:
    """Write the store behind `db` (migrated) to a new file at `path`."""
    writer = ExportWriter(path)
    try:
        async with consistent_view(db) as fetch:
            version = await schema_version(fetch)
            writer.header(Source(db.dialect, version), now.isoformat())
            for spec in TABLES:
                at = cutoff(spec, now, access_token_expiry_s)
                await _export_table(fetch, writer, spec, at, progress)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return writer.manifest


async def _export_table(
    fetch: Fetch, writer: ExportWriter, spec: TableSpec, at: datetime, progress: Progress | None
) -> None:
    total = await _count(fetch, spec, at)
    writer.begin_table(spec.name, spec.column_names)
    done, last = 0, None
    if progress is not None:
        progress(spec.name, 0, total)
    while True:
        args = ([at] if spec.uses_cutoff else []) + (last or [])
        rows = await fetch(_page_sql(spec, last is None), *args)
        if not rows:
            break
        writer.rows([row_values(spec, row) for row in rows])
        done += len(rows)
        last = [rows[-1][k] for k in spec.key]
        if progress is not None:
            progress(spec.name, done, max(total, done))
        if len(rows) < PAGE:
            break
    writer.end_table()


def newest_schema(dialect: str) -> int:
    """The last migration this version knows for `dialect` (0: an unknown dialect)."""
    if dialect not in ("sqlite", "postgres"):
        return 0
    return max((m.version for m in available(dialect)), default=0)
