"""Export: every table of `tables.TABLES` read in key order, one page at a time, from one
consistent view of the store (a REPEATABLE READ transaction on PostgreSQL, a read
transaction on a connection of its own on SQLite), so servers may keep running."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import aiosqlite

from banking_es.db.base import Database
from banking_es.db.migrate import available
from banking_es.db.sqlite import to_sqlite, translate
from banking_es.portable.fileformat import ExportWriter, Manifest, Source
from banking_es.portable.tables import TABLES, TableSpec, cutoff, quoted

#: Rows read per query.
PAGE = 5000

#: `fetch(sql, *args)`: rows as tuples of the file's values (JSON as text, times as
#: datetimes or ISO text), so that nothing is parsed only to be written again.
Fetch = Callable[..., Awaitable[Sequence[Sequence[Any]]]]
#: `progress(table, done, total)` after each page.
Progress = Callable[[str, int, int], None]


@asynccontextmanager
async def consistent_view(db: Database) -> AsyncIterator[Fetch]:
    """A `fetch(sql, *args)` whose every query sees the same committed state."""
    if db.dialect == "postgres":
        async with db.transaction() as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

            async def fetch_pg(sql: str, *args: Any) -> list[tuple[Any, ...]]:
                return [tuple(row.values()) for row in await conn.fetch(sql, *args)]

            yield fetch_pg
        return
    # The adapter's reader runs each query in a transaction of its own; this one is held.
    # No type detection: SQLite's texts are already what the file holds.
    reader = await aiosqlite.connect(cast(Any, db).path, isolation_level=None, timeout=30)
    try:

        async def fetch(sql: str, *args: Any) -> Sequence[Sequence[Any]]:
            try:
                return list(await reader.execute_fetchall(to_sqlite(sql), args))
            except sqlite3.Error as exc:
                raise translate(exc) from exc

        await reader.execute("BEGIN")
        yield fetch
        await reader.execute("COMMIT")
    finally:
        await reader.close()


def _page_sql(spec: TableSpec, first: bool, postgres: bool) -> str:
    """The next page after the last key: `$1` is the cutoff if `spec.keep` uses one, the
    last key's values follow."""
    columns = ", ".join(
        f"{quoted(c.name)}::text" if c.kind == "json" and postgres else quoted(c.name)
        for c in spec.columns
    )
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
    rows = await fetch(f"SELECT count(*) FROM {spec.name}{where}", *args)
    return int(rows[0][0])


async def schema_version(fetch: Fetch) -> int:
    rows = await fetch("SELECT max(version) FROM schema_migrations")
    return int(rows[0][0] or 0)


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
                await _export_table(fetch, writer, spec, at, db.dialect == "postgres", progress)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return writer.manifest


async def _export_table(
    fetch: Fetch,
    writer: ExportWriter,
    spec: TableSpec,
    at: datetime,
    postgres: bool,
    progress: Progress | None,
) -> None:
    total = await _count(fetch, spec, at)
    writer.begin_table(spec.name, spec.column_names)
    done, last = 0, None
    key = [spec.column_names.index(k) for k in spec.key]
    if progress is not None:
        progress(spec.name, 0, total)
    while True:
        args = ([at] if spec.uses_cutoff else []) + (last or [])
        rows = await fetch(_page_sql(spec, last is None, postgres), *args)
        if not rows:
            break
        writer.rows(rows)
        done += len(rows)
        last = [rows[-1][i] for i in key]
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
