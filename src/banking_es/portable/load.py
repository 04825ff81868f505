"""Import: check the whole file first, then the target is empty, then load every table in
one transaction (a fault anywhere rolls it all back). Rows keep their keys: events their
positions (the next append takes the maximum plus one), other tables their ids, with
PostgreSQL's sequences moved past them.

    ExportFileError (fileformat)   the file is damaged or not one this version reads
    ImportRefused                  the target holds data, or the file is from a newer schema
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from banking_es.db.base import Connection, Database
from banking_es.portable.dump import newest_schema
from banking_es.portable.fileformat import (
    DamagedFile,
    ExportReader,
    Header,
    Rows,
    TableEnd,
    TableStart,
    UnsupportedFile,
)
from banking_es.portable.tables import BY_NAME, REBUILT, TABLES, TableSpec, quoted

#: `progress(table, done, total)` after each batch.
Progress = Callable[[str, int, int], None]
_PG_ARRAY = {"int": "bigint[]", "text": "text[]", "json": "text[]", "ts": "timestamptz[]"}


class ImportRefused(Exception):
    """The target cannot take this import (the message says why, in one line)."""


def check_file(path: Path) -> tuple[Header, dict[str, int]]:
    """Read the whole file, checking it; answer its header and its tables' row counts."""
    counts: dict[str, int] = {}
    with ExportReader(path) as reader:
        header = reader.header
        if header.source.schema_version > newest_schema(header.source.dialect):
            raise UnsupportedFile(
                f"{path} comes from a newer banking-es ({header.source.dialect} schema"
                f" {header.source.schema_version}); upgrade this one first"
            )
        for item in reader.items(decode=False):
            if isinstance(item, TableStart):
                spec = BY_NAME.get(item.name)
                if spec is None:
                    raise UnsupportedFile(f"{path} holds table {item.name}, unknown here")
                if item.columns != spec.column_names:
                    raise UnsupportedFile(f"{path}: the columns of {item.name} differ from here")
            elif isinstance(item, TableEnd):
                counts[item.name] = item.rows
    return header, counts


async def _exists(db: Database, table: str) -> bool:
    if db.dialect == "postgres":
        sql = (
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = $1"
        )
    else:
        sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1"
    return bool(await db.fetchval(sql, table))


async def first_nonempty(db: Database) -> str | None:
    """The first table that holds a row (of those an import writes or rebuilds), if any."""
    for table in [*(spec.name for spec in TABLES), *REBUILT]:
        if await _exists(db, table) and await db.fetchval(f"SELECT 1 FROM {table} LIMIT 1"):
            return table
    return None


def _decoder(spec: TableSpec) -> Callable[[list[Any]], list[Any]]:
    """Row from the file -> values to insert: times parsed (SQLite's adapter then writes
    them in its one spelling), JSON texts as they are."""
    times = [i for i, c in enumerate(spec.columns) if c.kind == "ts"]

    def decode(row: list[Any]) -> list[Any]:
        for i in times:
            if row[i] is not None:
                row[i] = datetime.fromisoformat(row[i])
        return row

    return decode


def _insert_sql(spec: TableSpec, postgres: bool) -> str:
    names = ", ".join(quoted(c) for c in spec.column_names)
    if not postgres:
        marks = ", ".join(f"${i + 1}" for i in range(len(spec.columns)))
        return f"INSERT INTO {spec.name} ({names}) VALUES ({marks})"
    # One statement per batch: each column as an array, unnested back into rows.
    arrays = ", ".join(f"${i + 1}::{_PG_ARRAY[c.kind]}" for i, c in enumerate(spec.columns))
    picks = ", ".join(
        f"u.c{i}::jsonb" if c.kind == "json" else f"u.c{i}" for i, c in enumerate(spec.columns)
    )
    aliases = ", ".join(f"c{i}" for i in range(len(spec.columns)))
    override = " OVERRIDING SYSTEM VALUE" if spec.serial else ""
    return (
        f"INSERT INTO {spec.name} ({names}){override}"
        f" SELECT {picks} FROM unnest({arrays}) AS u({aliases})"
    )


async def _insert(conn: Connection, spec: TableSpec, rows: Sequence[list[Any]], pg: bool) -> None:
    if pg:
        await conn.execute(_insert_sql(spec, True), *(list(col) for col in zip(*rows, strict=True)))
    else:
        await conn.executemany(_insert_sql(spec, False), rows)


async def load_file(db: Database, path: Path, totals: dict[str, int], progress: Progress) -> None:
    """Load a checked file into the migrated, empty `db` in one transaction: a fault the
    reader finds on the way (the file changed since it was checked) rolls it all back."""
    postgres = db.dialect == "postgres"
    with ExportReader(path) as reader:
        async with db.transaction() as conn:
            spec: TableSpec | None = None
            done = 0
            for item in reader.items():
                if isinstance(item, TableStart):
                    spec, done = BY_NAME[item.name], 0
                    decode = _decoder(spec)
                    progress(spec.name, 0, totals.get(spec.name, 0))
                elif isinstance(item, Rows):
                    if spec is None:
                        raise DamagedFile(f"{path} has rows outside any table")
                    await _insert(conn, spec, [decode(r) for r in item.rows], postgres)
                    done += len(item.rows)
                    progress(spec.name, done, max(done, totals.get(spec.name, 0)))
                elif isinstance(item, TableEnd) and spec is not None and spec.serial and postgres:
                    await _advance_sequence(conn, spec)


async def _advance_sequence(conn: Connection, spec: TableSpec) -> None:
    column = spec.serial
    await conn.execute(
        f"SELECT setval(pg_get_serial_sequence('{spec.name}', '{column}'), max({column}))"
        f" FROM {spec.name} HAVING max({column}) IS NOT NULL"
    )
