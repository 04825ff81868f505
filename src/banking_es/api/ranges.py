"""The ranges of the integers the API hands to SQL: those of their PostgreSQL columns.

Versions are `integer` (int32); positions and dead-letter ids `bigint` (int64), see
migrations/postgres. A number outside its column is refused where it is parsed (a 400),
before any driver sees it: asyncpg raises on it, and SQLite's own range is wider.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1

#: `?version=` of an account (a stream version counts from 1).
VersionQuery = Annotated[int, Meta(ge=1, le=INT4_MAX)]
#: A dead letter's id (an identity column: from 1).
LetterId = Annotated[int, Meta(ge=1, le=INT8_MAX)]
