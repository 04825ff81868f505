"""PostgreSQL through an asyncpg pool; driver errors are translated here and only here."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, cast

import asyncpg
import orjson

from banking_es.db.base import Connection, DatabaseError, DatabaseUnavailable, Row, UniqueViolation

#: Seconds to wait for a pooled connection before answering "unavailable".
ACQUIRE_TIMEOUT = 10.0
#: Errors that mean "the server or the connection is gone", not "your query is wrong".
TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
)
#: What `pg_export_snapshot()` answers (hex words and a number, e.g. 00000003-0000001B-1).
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+(-[0-9A-F]+)+")


def translate(exc: BaseException) -> BaseException:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return UniqueViolation(str(exc))
    if isinstance(exc, TRANSIENT):
        return DatabaseUnavailable(f"PostgreSQL unavailable: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        return DatabaseError(str(exc))
    return exc


def _encode_json(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog"
        )


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own rollback of an open
    transaction. The default reset (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL`) costs a round trip on every release; this code keeps no session state on
    pooled connections (advisory locks are transaction-level, no SET, no LISTEN), so there
    is nothing to reset. Code that needs session state must use its own connection.
    """


def normalize_url(url: str) -> str:
    return (
        "postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url
    )


class _PgConnection:
    dialect: Literal["postgres"] = "postgres"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.raw = conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return cast(list[Row], await self.raw.fetch(sql, *args))
        except Exception as exc:
            raise translate(exc) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            return cast(Row | None, await self.raw.fetchrow(sql, *args))
        except Exception as exc:
            raise translate(exc) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self.raw.fetchval(sql, *args)
        except Exception as exc:
            raise translate(exc) from exc

    async def execute(self, sql: str, *args: Any) -> None:
        try:
            await self.raw.execute(sql, *args)
        except Exception as exc:
            raise translate(exc) from exc

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        try:
            await self.raw.executemany(sql, args)
        except Exception as exc:
            raise translate(exc) from exc

    async def copy_records(
        self, table: str, columns: Sequence[str], records: Iterable[Sequence[Any]]
    ) -> None:
        """`COPY table (columns) FROM STDIN` in binary format (see `BulkCopy`); `records` may
        be a generator: rows are sent in chunks while it runs."""
        try:
            await self.raw.copy_records_to_table(table, columns=list(columns), records=records)
        except Exception as exc:
            raise translate(exc) from exc


class PostgresDatabase:
    """An asyncpg pool; `transaction()` checks out one connection for its duration."""

    dialect: Literal["postgres"] = "postgres"

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def connect(
        cls, url: str, *, min_size: int = 2, max_size: int = 20, timeout: float = 10.0
    ) -> PostgresDatabase:
        url = normalize_url(url)
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                init=init_connection,
                reset=keep_session,
                timeout=timeout,
                command_timeout=60,
            )
        except Exception as exc:
            raise translate(exc) from exc
        return cls(pool, url)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_PgConnection]:
        try:
            # asyncio.timeout, not acquire(timeout=): asyncpg's timeout runs the acquire
            # in a task of its own (wait_for), a measurable cost on every query.
            async with asyncio.timeout(ACQUIRE_TIMEOUT):
                conn = await self.pool.acquire()
        except Exception as exc:
            raise translate(exc) from exc
        try:
            yield _PgConnection(cast(asyncpg.Connection, conn))
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn:
            tx = conn.raw.transaction()
            try:
                await tx.start()
            except Exception as exc:
                raise translate(exc) from exc
            try:
                yield conn
            except BaseException:
                try:
                    await tx.rollback()
                except Exception:  # the connection is already broken; the pool drops it
                    pass
                raise
            try:
                await tx.commit()
            except Exception as exc:
                raise translate(exc) from exc

    @asynccontextmanager
    async def snapshot(self, shared: str | None = None) -> AsyncIterator[Connection]:
        """`shared`: the id `pg_export_snapshot()` gave in another snapshot transaction,
        to see exactly what it sees (two connections reading one moment)."""
        if shared is not None and not _SNAPSHOT_ID.fullmatch(shared):
            raise ValueError(f"not a snapshot id: {shared!r}")
        async with self.connection() as conn:
            tx = conn.raw.transaction(isolation="repeatable_read", readonly=True)
            try:
                await tx.start()
                if shared is not None:
                    await conn.raw.execute(f"SET TRANSACTION SNAPSHOT '{shared}'")
            except Exception as exc:
                raise translate(exc) from exc
            try:
                yield conn
            finally:
                with contextlib.suppress(Exception):  # a broken connection: the pool drops it
                    await tx.rollback()

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self.connection() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self.connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self.connection() as conn:
            await conn.execute(sql, *args)

    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None:
        async with self.connection() as conn:
            await conn.executemany(sql, args)

    async def close(self) -> None:
        await self.pool.close()


async def listen(
    url: str,
    channel: str,
    on_notify: Callable[[str], None],
    on_lost: Callable[[], None],
) -> asyncpg.Connection:
    """A dedicated connection LISTENing on `channel` (never a pooled one: LISTEN is session
    state): `on_notify(payload)` for each notification, `on_lost()` when it closes."""
    conn = await asyncpg.connect(url, timeout=5)
    await conn.add_listener(channel, lambda _c, _pid, _ch, payload: on_notify(str(payload)))
    conn.add_termination_listener(lambda _c: on_lost())
    return conn


async def close_quietly(conn: asyncpg.Connection | None) -> None:
    """Close a dedicated connection that may already be broken."""
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()
