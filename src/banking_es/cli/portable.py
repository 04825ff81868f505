"""`banking-es export` and `banking-es import`: move a store to another database or backend
through one file (see `banking_es.portable`), and the progress bars of long replays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from banking_es.cli.common import console, read_settings

T = TypeVar("T")


def _progress(unit: str = "rows") -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{{task.fields[rate]}} {unit}/s"),
        TimeRemainingColumn(),
        console=console,
    )


def _reporter(progress: Progress) -> Callable[[str, int, int], None]:
    """`report(name, done, total)`: one bar per name, created on first report."""
    tasks: dict[str, tuple[Any, float]] = {}

    def report(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = (progress.add_task(name, total=total, rate="-"), time.monotonic())
        task, started = tasks[name]
        rate = done / max(time.monotonic() - started, 1e-6)
        progress.update(task, completed=done, total=total, rate=f"{rate:,.0f}")

    return report


async def rebuild_with_progress(
    runner: Any,
    names: Sequence[str],
    *,
    from_position: int = 0,
    types: list[str] | None = None,
) -> dict[str, int]:
    """Rebuild projections `names` with a progress bar each; answer the events replayed."""
    done: dict[str, int] = {}
    with _progress("events") as progress:
        report = _reporter(progress)
        for name in names:

            def step(count: int, total: int, name: str = name) -> None:
                report(name, count, total)

            done[name] = await runner.rebuild(
                name, from_position=from_position, types=types, progress=step
            )
    return done


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _run(coro: Coroutine[Any, Any, T], refused: str = "") -> T:
    """Run `coro`; a refusal (`refused` appended) or a failure is one line on stderr and
    exit status 1."""
    from banking_es.db.base import DatabaseError
    from banking_es.portable.fileformat import ExportFileError
    from banking_es.portable.load import ImportRefused

    try:
        return asyncio.run(coro)
    except (ExportFileError, ImportRefused) as exc:
        raise _fail(f"{exc}{refused}") from None
    except DatabaseError as exc:
        raise _fail(f"cannot use the database: {exc}") from None
    except OSError as exc:
        raise _fail(str(exc)) from None


def export_command(
    to: Annotated[Path, typer.Option("--to", help="The file to create (refused if it exists)")],
) -> None:
    """Write the whole store to one compressed file (mode 0600) for `banking-es import`.

    Events, users, roles and the role log, logins, revocations, reset tokens and idempotency
    records still in force, unsent outbox rows and dead letters. Safe while servers run.
    """
    settings = read_settings()
    if to.exists():
        raise _fail(f"{to} exists; remove it or choose another name")
    if not to.parent.is_dir():
        raise _fail(f"{to.parent} is not a directory")

    started = time.monotonic()

    async def work() -> dict[str, dict[str, Any]]:
        from banking_es.bootstrap.adapters import connect_database
        from banking_es.db.migrate import migrate
        from banking_es.portable.dump import export_store

        db = await connect_database(settings, pool_size=2)
        try:
            await migrate(db)
            with _progress() as progress:
                manifest = await export_store(
                    db,
                    to,
                    now=datetime.now(UTC),
                    access_token_expiry_s=settings.access_token_expiry,
                    progress=_reporter(progress),
                )
            return manifest.tables
        finally:
            await db.close()

    tables = _run(work())
    counts = ", ".join(f"{summary['rows']} {name}" for name, summary in tables.items())
    took = time.monotonic() - started
    typer.echo(f"exported {counts} to {to} ({to.stat().st_size:,} bytes) in {took:.1f} s")


def import_command(
    source: Annotated[Path, typer.Option("--from", help="A file written by `banking-es export`")],
) -> None:
    """Load an export into this (empty) database, then rebuild the read models.

    Checks the whole file first: a damaged file, or a target that holds data, is refused
    with nothing changed. Run it before any server starts on the new database.
    """
    settings = read_settings()
    if not source.is_file():
        raise _fail(f"{source} is not a file")

    took: dict[str, float] = {}

    async def work() -> tuple[dict[str, int], dict[str, int]]:
        from banking_es.bootstrap.adapters import (
            build_projection_runner,
            build_store,
            connect_database,
        )
        from banking_es.db.migrate import migrate
        from banking_es.portable.load import ImportRefused, check_file, first_nonempty, load_file

        console.print(f"checking {source}")
        started = time.monotonic()
        _header, totals = await asyncio.to_thread(check_file, source)
        took["check"] = time.monotonic() - started
        db = await connect_database(settings, pool_size=2)
        try:
            table = await first_nonempty(db)
            if table is not None:
                raise ImportRefused(
                    f"the target database is not empty (table {table} has rows);"
                    " import only into an empty database"
                )
            await migrate(db)
            started = time.monotonic()
            with _progress() as progress:
                await load_file(db, source, totals, _reporter(progress))
            took["load"] = time.monotonic() - started
            store = build_store(settings, db)
            try:
                started = time.monotonic()
                runner = build_projection_runner(settings, db, store)
                rebuilt = await rebuild_with_progress(runner, runner.names)
                took["rebuild"] = time.monotonic() - started
            finally:
                await store.close()
            return totals, rebuilt
        finally:
            await db.close()

    totals, rebuilt = _run(work(), "; nothing was imported")
    counts = ", ".join(f"{rows} {name}" for name, rows in totals.items())
    typer.echo(f"imported {counts} from {source}")
    for name, count in rebuilt.items():
        typer.echo(f"{name}: rebuilt from {count} events")
    typer.echo("took: " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in took.items()))
