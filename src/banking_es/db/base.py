"""The `Database` port: a few async query methods over PostgreSQL or SQLite.

SQL is written once with PostgreSQL's `$1` placeholders; the SQLite adapter turns them
into `?1`. Values: datetimes (aware, UTC), Decimals, str, int and JSON (dict/list) go
in and come back as the same Python types on both backends.

    DatabaseError
    ├── UniqueViolation     a unique or primary key constraint said no
    └── DatabaseUnavailable the server cannot be reached or the connection broke
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol, runtime_checkable

Row = Mapping[str, Any]
#: The SQL a connection speaks: the few statements that differ pick their form from it.
Dialect = Literal["postgres", "sqlite"]


class DatabaseError(Exception):
    """Base of translated driver errors."""


class UniqueViolation(DatabaseError):
    """A unique constraint rejected the write."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached, or the connection was lost mid-way."""


class Connection(Protocol):
    """Queries on one connection, inside a transaction when obtained from `transaction()`."""

    @property
    def dialect(self) -> Dialect: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, args: Iterable[Sequence[Any]]) -> None: ...


@runtime_checkable
class BulkCopy(Protocol):
    """A connection that can stream many rows into a table in one statement (PostgreSQL
    `COPY`): cheaper than an INSERT of the same rows on both ends of the wire. Like a plain
    INSERT it fails as a whole on a duplicate key. Only PostgreSQL connections have it;
    callers test with `isinstance` and use an INSERT otherwise."""

    async def copy_records(
        self, table: str, columns: Sequence[str], records: Iterable[Sequence[Any]]
    ) -> None: ...


class Database(Connection, Protocol):
    """A pool (PostgreSQL) or a pair of connections (SQLite) behind one interface."""

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A write transaction; on SQLite it holds the database's write lock throughout."""
        ...

    def snapshot(self) -> AbstractAsyncContextManager[Connection]:
        """A read-only transaction that sees one snapshot of the database throughout
        (PostgreSQL: repeatable read; SQLite: a read transaction on a connection of its own).
        Writers go on meanwhile; nothing is locked."""
        ...

    async def close(self) -> None: ...
