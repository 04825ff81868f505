"""What every command shares: the console, settings and event-loop runners, the database
set-up, and the usage limits of numbers given on the command line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import typer
from rich.console import Console

from banking_es.config import Settings, SettingsError, load_settings

T = TypeVar("T")

#: The largest id or position the databases store (a PostgreSQL `bigint`, a SQLite integer):
#: a larger one on the command line is a usage error, not a driver's overflow.
BIGINT_MAX = 2**63 - 1

console = Console(stderr=True, soft_wrap=True)


def read_settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def run(coro: Coroutine[Any, Any, T]) -> T:
    from banking_es.db.base import DatabaseError

    try:
        return asyncio.run(coro)
    except SettingsError as exc:  # found in the database, e.g. another SHARD_COUNT
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    except DatabaseError as exc:
        console.print(f"[red]error:[/red] cannot use the database: {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot reach the database: {exc}")
        raise typer.Exit(1) from None


def ensure_secrets(settings: Settings) -> Settings:
    from banking_es.identity.secrets_store import ensure_secrets as check

    try:
        return check(settings)
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from None


async def migrate_database(settings: Settings) -> list[Any]:
    from banking_es.bootstrap.adapters import connect_database
    from banking_es.db.migrate import migrate
    from banking_es.shards.leases import ShardLeases

    db = await connect_database(settings, pool_size=2)
    try:
        applied = await migrate(db)
        # The shard count is stored with the database at its first start, then checked.
        shards = ShardLeases(db, ttl=settings.shard_lease_ttl)
        await shards.ensure_shard_count(settings.shard_count)
        return applied
    finally:
        await db.close()


async def with_store(settings: Settings, work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """`work(db, store)` on a migrated database, both closed afterwards (the CLI commands'
    shared set-up, also of `banking-es projections`)."""
    from banking_es.bootstrap.adapters import build_store, connect_database
    from banking_es.db.migrate import migrate

    db = await connect_database(settings, pool_size=4)
    try:
        await migrate(db)
        store = build_store(settings, db)
        try:
            return await work(db, store)
        finally:
            await store.close()
    finally:
        await db.close()
