"""`banking-es verify`: check the store and print a readable report (exit 1 when unsound)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from banking_es.cli.common import read_settings, run
from banking_es.config import Settings

console = Console(stderr=True, soft_wrap=True)


def verify_command() -> None:
    """Check the store from its events (read-only, safe while servers run; exit 1: damaged).

    Positions, versions, transfers, balances, snapshots, read models and the outbox are
    checked; the report has a line per problem."""
    from banking_es.verify import CHECKS, KEPT

    report = run(_verify(read_settings()))
    out = Console(soft_wrap=True)
    rate = report.events / report.seconds if report.seconds else 0.0
    if report.sound:
        out.print(
            f"[green]sound[/green]: {report.events:,} events, {report.streams:,} accounts,"
            f" {report.compared['transfers']:,} transfers, {report.compared['snapshots']:,}"
            f" snapshots, {report.compared['account_summaries']:,} summaries,"
            f" {report.compared['transactions']:,} transactions rows,"
            f" {report.compared['outbox']:,} outbox rows checked in {report.seconds:.1f} s"
            f" ({rate:,.0f} events/s)"
        )
        return
    table = Table("check", "result", "problems", title="banking-es verify")
    for check in CHECKS:
        found = report.counts[check]
        table.add_row(check, "[red]FAILED[/red]" if found else "[green]ok[/green]", str(found))
    out.print(table)
    for problem in sorted(report.problems, key=lambda p: CHECKS.index(p.check)):
        out.print(f"[red]{problem.check}[/red]: {problem.detail}", highlight=False)
    for check in CHECKS:
        if report.counts[check] > KEPT:
            out.print(f"{check}: {report.counts[check] - KEPT} more not shown")
    total = sum(report.counts.values())
    out.print(
        f"[red]NOT SOUND[/red]: {total} problems in {report.events:,} events"
        f" ({report.seconds:.1f} s); see docs/operations.md, section Verify"
    )
    raise typer.Exit(1)


async def _verify(settings: Settings) -> Any:
    from banking_es.bootstrap.adapters import connect_database
    from banking_es.verify import verify

    db = await connect_database(settings, pool_size=2)
    try:
        with Progress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("events", total=None)

            def report(done: int, head: int) -> None:
                progress.update(task, completed=done, total=head)

            return await verify(db, report)
    finally:
        await db.close()
