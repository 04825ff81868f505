"""`banking-es projections status|rebuild`: the read models' lag, and rebuilds with progress."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from banking_es.cli.common import BIGINT_MAX, console, read_settings, run, with_store
from banking_es.cli.portable import rebuild_with_progress
from banking_es.config import Settings

projections_app = typer.Typer(
    help="Inspect and rebuild the read models (account summaries, transactions).",
    no_args_is_help=True,
)


async def _with_runner(settings: Settings, work: Any) -> Any:
    from banking_es.projections import default_projections
    from banking_es.projections.runner import ProjectionRunner

    async def with_runner(db: Any, store: Any) -> Any:
        return await work(ProjectionRunner(db, store, default_projections()))

    return await with_store(settings, with_runner)


async def _kafka_status(settings: Settings) -> Any:
    """The projections' status when a Kafka consumer group drives them (what `/health/ready`
    reports): checkpoints per partition against the topic's end offsets, plus the outbox."""
    from banking_es.bootstrap.kafka import build_kafka_runner, kafka_config
    from banking_es.messaging.kafka import end_offsets

    config = kafka_config(settings)

    async def status(db: Any, store: Any) -> Any:
        runner = build_kafka_runner(settings, db, store, config)
        return await runner.status(store, await end_offsets(config, config.topics.events))

    return await with_store(settings, status)


@projections_app.command("status")
def projections_status() -> None:
    """Show each projection's checkpoint and how far it lags behind the event store (with
    KAFKA_BOOTSTRAP_SERVERS set: behind the outbox and the topic, as the consumer group sees)."""
    settings = read_settings()

    async def work(runner: Any) -> Any:
        return await runner.status()

    if settings.kafka_bootstrap_servers:
        rows = run(_kafka_status(settings))
    else:
        rows = run(_with_runner(settings, work))
    table = Table("projection", "position", "head", "lag (events)", "lag (seconds)")
    for row in rows:
        table.add_row(
            row.name,
            str(row.position),
            str(row.head),
            str(row.lag_events),
            f"{row.lag_seconds:.1f}",
        )
    Console().print(table)


@projections_app.command("rebuild")
def projections_rebuild(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Projections to rebuild (default: all): account_summaries, transactions"
        ),
    ] = None,
    from_position: Annotated[
        int,
        typer.Option(
            "--from-position",
            min=0,
            max=BIGINT_MAX,
            help="Replay events after this position only",
        ),
    ] = 0,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", help="Replay only events of this type (repeatable)"),
    ] = None,
) -> None:
    """Rebuild read models by replaying the event store, with a progress bar.

    Safe while servers run: each batch takes the projection's lock.
    """
    settings = read_settings()
    from banking_es.projections import default_projections

    known = [p.name for p in default_projections()]
    chosen = names or known
    unknown = [n for n in chosen if n not in known]
    if unknown:
        console.print(
            f"[red]error:[/red] unknown projection {unknown[0]!r}; known: {', '.join(known)}"
        )
        raise typer.Exit(2)
    from banking_es.domain.events import EVENT_TYPES

    bad_types = [t for t in event_type or [] if t not in EVENT_TYPES]
    if bad_types:
        known_types = ", ".join(EVENT_TYPES)
        console.print(
            f"[red]error:[/red] unknown event type {bad_types[0]!r}; known: {known_types}"
        )
        raise typer.Exit(2)

    async def work(runner: Any) -> dict[str, int]:
        return await rebuild_with_progress(
            runner, chosen, from_position=from_position, types=event_type or None
        )

    results = run(_with_runner(settings, work))
    for name, count in results.items():
        typer.echo(f"{name}: replayed {count} events")
