"""Small SQL helpers shared by the projections: set parameters and JSON rows.

The few statements that differ (PostgreSQL arrays and `unnest`, SQLite `json_each`) pick
their form from the connection's `dialect`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from banking_es.db.base import Dialect


def in_set(dialect: Dialect, placeholder: int, cast: str = "text") -> str:
    """`<column> <this>` tests membership in the list bound to `$placeholder`.

    PostgreSQL binds the list as an array; SQLite binds it as JSON text (the SQLite
    adapter encodes lists with orjson), so the statement text is the same for any length.
    """
    if dialect == "postgres":
        return f"= ANY(${placeholder}::{cast}[])"
    return f"IN (SELECT value FROM json_each(${placeholder}))"


def json_rows_select(types: str) -> str:
    """`SELECT` of the rows of a JSON array bound to `$1` (PostgreSQL), one column per type
    of the space-separated `types`.

    Projections write their batches as ONE JSON document (`json_rows`) rather than one
    array per column: one `orjson` call is far cheaper than the driver encoding every value
    (docs/performance.md).
    """
    columns = ", ".join(f"(r->>{i})::{t}" for i, t in enumerate(types.split()))
    return f"SELECT {columns} FROM jsonb_array_elements($1::jsonb) AS r"


def json_rows(rows: Iterable[Sequence[Any]]) -> str:
    """The rows as a JSON array of arrays (`Decimal` as its exact text, times in RFC 3339)."""
    return orjson.dumps(list(rows), default=str).decode()
