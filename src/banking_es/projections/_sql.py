"""Small SQL helpers shared by the projections: dialect detection and set parameters.

A projection receives a `Connection`, which does not say which database it talks to;
the few statements that differ (PostgreSQL arrays and `unnest`, SQLite `json_each`)
pick their form from `dialect_of(conn)`.
"""

from __future__ import annotations

from typing import Literal

import aiosqlite
import asyncpg
import asyncpg.pool

from banking_es.db.base import Connection

Dialect = Literal["postgres", "sqlite"]


def dialect_of(conn: Connection) -> Dialect:
    """The backend behind `conn` (a connection from `Database.transaction()` or a Database)."""
    declared = getattr(conn, "dialect", None)
    if declared in ("postgres", "sqlite"):
        return "postgres" if declared == "postgres" else "sqlite"
    raw = getattr(conn, "raw", None)
    if isinstance(raw, aiosqlite.Connection):
        return "sqlite"
    if isinstance(raw, asyncpg.Connection | asyncpg.pool.PoolConnectionProxy):
        return "postgres"
    raise TypeError(f"cannot tell the SQL dialect of {type(conn).__name__}")


def in_set(dialect: Dialect, placeholder: int, cast: str = "text") -> str:
    """`<column> <this>` tests membership in the list bound to `$placeholder`.

    PostgreSQL binds the list as an array; SQLite binds it as JSON text (the SQLite
    adapter encodes lists with orjson), so the statement text is the same for any length.
    """
    if dialect == "postgres":
        return f"= ANY(${placeholder}::{cast}[])"
    return f"IN (SELECT value FROM json_each(${placeholder}))"
