"""SQLite through aiosqlite: one writer connection guarded by a lock, one reader (WAL).

Several processes may share the file: `BEGIN IMMEDIATE` takes SQLite's write lock for
the whole transaction and `busy_timeout` waits for it, so writes are serialized across
processes and global positions are assigned in commit order.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import orjson

from banking_es.db.base import Connection, DatabaseError, DatabaseUnavailable, Row, UniqueViolation
from banking_es.private_files import narrow_if_exists, private_dir, private_file

_PLACEHOLDER = re.compile(r"\$(\d+)")
BUSY_TIMEOUT_MS = 30_000


def _adapt_datetime(value: datetime) -> str:
    """ISO 8601 text, aware values in UTC: SQLite compares these columns as text, so one
    instant must have one spelling (12:00+02:00 and 10:00+00:00 would order wrongly)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.isoformat()


def _register_types() -> None:
    sqlite3.register_adapter(Decimal, str)
    sqlite3.register_adapter(datetime, _adapt_datetime)
    sqlite3.register_adapter(dict, lambda v: orjson.dumps(v).decode())
    sqlite3.register_adapter(list, lambda v: orjson.dumps(v).decode())
    sqlite3.register_converter("TIMESTAMPTZ", lambda b: datetime.fromisoformat(b.decode()))
    sqlite3.register_converter("DECTEXT", lambda b: Decimal(b.decode()))
    sqlite3.register_converter("JSONTEXT", orjson.loads)


_register_types()


def to_sqlite(sql: str) -> str:
    """`$1` placeholders (PostgreSQL) become `?1` (SQLite's numbered form)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


def translate(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc).upper():
        return UniqueViolation(str(exc))
    if isinstance(exc, sqlite3.OperationalError):
        message = str(exc)
        if "locked" in message or "unable to open" in message or "disk" in message:
            return DatabaseUnavailable(f"SQLite unavailable: {message}")
        return DatabaseError(message)
    if isinstance(exc, sqlite3.Error):
        return DatabaseError(str(exc))
    return exc


class _SqliteConnection:
    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.raw = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        # One hop to the connection's thread runs the statement to its end: no other read on
        # this connection may run inside its read transaction and see its older snapshot.
        try:
            rows = await self.raw.execute_fetchall(to_sqlite(sql), args)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return [dict(row) for row in rows]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return next(iter(row.values())) if row else None

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self.raw.execute(to_sqlite(sql), args)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        try:
            await self.raw.executemany(to_sqlite(sql), args)
        except sqlite3.Error as exc:
            raise translate(exc) from exc


async def _open(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(
        path, isolation_level=None, detect_types=sqlite3.PARSE_DECLTYPES, timeout=30
    )
    conn.row_factory = sqlite3.Row
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA foreign_keys = ON")
    return conn


class SqliteDatabase:
    """A writer connection (serialized by an asyncio lock) and a reader connection."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, path: str):
        self._writer = _SqliteConnection(writer)
        self._reader = _SqliteConnection(reader)
        self._lock = asyncio.Lock()
        self.path = path

    @classmethod
    async def connect(cls, path: str | Path) -> SqliteDatabase:
        target = Path(path)
        # 0600 before SQLite opens it: its -wal and -shm files take the database's mode.
        private_dir(target.parent, narrow_existing=False)
        private_file(target)
        try:
            writer = await _open(str(target))
            await writer.execute("PRAGMA journal_mode = WAL")
            for suffix in ("-wal", "-shm"):  # left wider by an older version
                narrow_if_exists(target.with_name(target.name + suffix))
            # FULL: a commit is on disk before it is acknowledged, also in WAL mode.
            await writer.execute("PRAGMA synchronous = FULL")
            reader = await _open(str(target))
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return cls(writer, reader, str(target))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._lock:
            conn = self._writer
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                # Cancelled (or failed) while BEGIN was queued on the connection's thread: it
                # may still run, so end any transaction it opened before the next user comes.
                with contextlib.suppress(sqlite3.Error):
                    await asyncio.shield(conn.raw.rollback())
                raise
            try:
                yield conn
            except BaseException:
                try:
                    await conn.raw.rollback()
                except sqlite3.Error:
                    pass
                raise
            try:
                await conn.execute("COMMIT")
            except BaseException:
                try:
                    await conn.raw.rollback()
                except sqlite3.Error:
                    pass
                raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        # A connection of its own: a read transaction held on the shared reader would keep
        # every other read of this process on the same old snapshot.
        try:
            raw = await _open(self.path)
            await raw.execute("BEGIN")
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        try:
            yield _SqliteConnection(raw)
        finally:
            with contextlib.suppress(sqlite3.Error):
                await raw.rollback()
            await raw.close()

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._reader.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._reader.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._reader.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.transaction() as conn:
            await conn.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, args)

    async def close(self) -> None:
        async with self._lock:
            await self._reader.raw.close()
            await self._writer.raw.close()
