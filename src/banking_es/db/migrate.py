"""A small runner of numbered SQL files, one folder per backend (`migrations/<dialect>/`).

Applied versions are recorded in `schema_migrations`. The whole run holds a lock
(PostgreSQL: a transaction-level advisory lock; SQLite: the write lock of
`BEGIN IMMEDIATE`), so servers starting at the same time apply each file once.
PostgreSQL runs all pending files in one transaction: a failure applies none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from banking_es.db.base import Connection, Database

MIGRATION_LOCK_KEY = 7_245_301_001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available(dialect: str) -> list[Migration]:
    folder = resources.files("banking_es.migrations") / dialect
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


#: A dollar-quoted string (`$fn$ ... $fn$`, e.g. a function's body): its `;` end no statement.
_DOLLAR_QUOTED = re.compile(r"(\$[A-Za-z_]*\$).*?\1", re.DOTALL)


def split_statements(sql: str) -> list[str]:
    """The statements of a migration, without comments; dollar-quoted bodies stay whole."""
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    statements: list[str] = []
    current: list[str] = []
    position = 0
    for quoted in _DOLLAR_QUOTED.finditer(body):
        _split(body[position : quoted.start()], current, statements)
        current.append(quoted.group(0))
        position = quoted.end()
    _split(body[position:], current, statements)
    statements.append("".join(current))
    return [statement.strip() for statement in statements if statement.strip()]


def _split(text: str, current: list[str], statements: list[str]) -> None:
    """Add `text` to the statement being read; each `;` in it ends one."""
    *ended, rest = text.split(";")
    for part in ended:
        statements.append("".join([*current, part]))
        current.clear()
    current.append(rest)


async def _applied(conn: Connection) -> set[int]:
    rows = await conn.fetch("SELECT version FROM schema_migrations")
    return {int(row["version"]) for row in rows}


async def migrate(db: Database) -> list[Migration]:
    """Apply every pending migration; return the ones applied now (none: already current)."""
    applied_now: list[Migration] = []
    async with db.transaction() as conn:
        if db.dialect == "postgres":
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        done = await _applied(conn)
        for migration in available(db.dialect):
            if migration.version in done:
                continue
            for statement in split_statements(migration.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                datetime.now(UTC),
            )
            applied_now.append(migration)
    return applied_now


async def status(db: Database) -> list[tuple[Migration, bool]]:
    """Every known migration and whether it is applied."""
    exists = await db.fetchval(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        if db.dialect == "postgres"
        else "SELECT count(*) FROM sqlite_master WHERE name = 'schema_migrations'"
    )
    done = (
        {int(r["version"]) for r in await db.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return [(m, m.version in done) for m in available(db.dialect)]


async def pending(db: Database) -> list[Migration]:
    """The known migrations not applied yet, without creating or locking anything."""
    return [migration for migration, applied in await status(db) if not applied]
