"""`banking-es outbox ...` and `banking-es dlq ...`: the outbox relay, its tools, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from banking_es.cli.common import BIGINT_MAX, console, read_settings, run, with_store
from banking_es.config import Settings

T = TypeVar("T")

outbox_app = typer.Typer(
    help="The transactional outbox: its backlog, the relay to Kafka, replays.",
    no_args_is_help=True,
)
dlq_app = typer.Typer(
    help="Dead letters of the Kafka consumers: list, retry after a fix, discard.",
    no_args_is_help=True,
)


def _require_kafka(settings: Settings) -> None:
    if not settings.kafka_bootstrap_servers:
        console.print("[red]error:[/red] KAFKA_BOOTSTRAP_SERVERS is not set")
        raise typer.Exit(2)


# ---- outbox ---------------------------------------------------------------------------------


@outbox_app.command("status")
def outbox_status() -> None:
    """Show the outbox backlog (rows not yet published) and the age of the oldest one."""
    settings = read_settings()

    async def work(db: Any, store: Any) -> Any:
        return await store.outbox_stats()

    stats = run(with_store(settings, work))
    age = 0.0
    if stats.oldest_created_at is not None:
        age = max(0.0, (datetime.now(UTC) - stats.oldest_created_at).total_seconds())
    table = Table("backlog", "oldest unsent age (s)")
    table.add_row(str(stats.backlog), f"{age:.1f}")
    Console().print(table)


@outbox_app.command("relay")
def outbox_relay() -> None:
    """Run the outbox relay to Kafka in this process until interrupted.

    Start as many as you like: one holds the lease and publishes, the others stand by.
    """
    settings = read_settings()
    _require_kafka(settings)
    from banking_es.logging_setup import configure_logging

    configure_logging(settings)

    async def work(db: Any, store: Any) -> None:
        from banking_es.application.ports import SystemClock
        from banking_es.bootstrap.kafka import build_relay, kafka_config
        from banking_es.messaging.kafka import KafkaPublisher

        relay = build_relay(settings, db, store, SystemClock(), kafka_config(settings))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        relay.start()
        console.print(f"outbox relay started (topic prefix {settings.kafka_topic_prefix})")
        try:
            await stop.wait()
        finally:
            await relay.stop()
            if isinstance(relay.publisher, KafkaPublisher):
                await relay.publisher.close()

    run(with_store(settings, work))


@outbox_app.command("replay")
def outbox_replay(
    from_position: Annotated[
        int,
        typer.Option(
            "--from-position",
            min=0,
            max=BIGINT_MAX,
            help="Republish the events after this position (0: from the beginning)",
        ),
    ],
    to_position: Annotated[
        int | None,
        typer.Option("--to-position", min=1, max=BIGINT_MAX, help="Last position (default: head)"),
    ] = None,
    event_type: Annotated[
        list[str] | None, typer.Option("--type", help="Only events of this type (repeatable)")
    ] = None,
) -> None:
    """Republish stored events to Kafka (for a new downstream consumer), with progress.

    `--from-position N` means after N, as a checkpoint does (0: from the beginning).
    Consumers of the service recognise the copies by (stream, version): no double effect.
    """
    settings = read_settings()
    _require_kafka(settings)
    if to_position is not None and to_position <= from_position:
        console.print("[red]error:[/red] --to-position must be after --from-position")
        raise typer.Exit(2)
    from banking_es.domain.events import EVENT_TYPES

    bad = [t for t in event_type or [] if t not in EVENT_TYPES]
    if bad:
        console.print(f"[red]error:[/red] unknown event type {bad[0]!r}")
        raise typer.Exit(2)

    async def work(db: Any, store: Any) -> int:
        from banking_es.bootstrap.kafka import kafka_config
        from banking_es.messaging.replay import count_events, replay_events

        last = to_position if to_position is not None else await store.head_position()
        total = await count_events(db, from_position, last, event_type)
        with Progress(
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} events/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("replay", total=total, rate="-")
            loop = asyncio.get_running_loop()
            started = loop.time()

            def report(done: int) -> None:
                elapsed = max(loop.time() - started, 1e-6)
                progress.update(task, completed=done, rate=f"{done / elapsed:,.0f}")

            return await replay_events(
                store, kafka_config(settings), from_position, last, event_type, report
            )

    sent = run(with_store(settings, work))
    typer.echo(f"republished {sent} events")


# ---- dead letters ---------------------------------------------------------------------------


async def _with_letters(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from banking_es.bootstrap.kafka import build_applier

    async def inner(db: Any, store: Any) -> T:
        return await work(build_applier(settings, db, store).dead_letters())

    return await with_store(settings, inner)


@dlq_app.command("list")
def dlq_list(
    status: Annotated[str, typer.Option(help="open, retried, discarded or all")] = "open",
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List dead letters, oldest first."""
    if status not in ("open", "retried", "discarded", "all"):
        console.print("[red]error:[/red] --status must be open, retried, discarded or all")
        raise typer.Exit(2)
    settings = read_settings()

    async def work(letters: Any) -> Any:
        return await letters.find(status=None if status == "all" else status, limit=limit)

    table = Table("id", "status", "key", "partition", "offset", "type", "attempts", "error")
    for letter in run(_with_letters(settings, work)):
        table.add_row(
            str(letter.id),
            letter.status,
            letter.key,
            str(letter.partition),
            str(letter.offset),
            letter.headers.get("event_type", "-"),
            str(letter.attempts),
            letter.error[:80],
        )
    Console().print(table)


@dlq_app.command("retry")
def dlq_retry(
    letter_id: Annotated[int, typer.Argument(min=1, max=BIGINT_MAX, help="The dead letter's id")],
) -> None:
    """Apply a dead letter now (after a fix), with the letters parked behind it."""
    from banking_es.messaging.dead_letters import DeadLetterError

    settings = read_settings()

    async def work(letters: Any) -> list[int]:
        result: list[int] = await letters.retry(letter_id)
        return result

    try:
        retried = run(_with_letters(settings, work))
    except DeadLetterError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"retried {len(retried)} dead letters: {', '.join(map(str, retried))}")


@dlq_app.command("discard")
def dlq_discard(
    letter_id: Annotated[int, typer.Argument(min=1, max=BIGINT_MAX, help="The dead letter's id")],
) -> None:
    """Discard a dead letter: its message is skipped for good."""
    from banking_es.messaging.dead_letters import DeadLetterError

    settings = read_settings()

    async def work(letters: Any) -> list[int]:
        parked: list[int] = await letters.discard(letter_id)
        return parked

    try:
        parked = run(_with_letters(settings, work))
    except DeadLetterError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"discarded dead letter {letter_id}")
    if parked:
        ids = ", ".join(map(str, parked))
        typer.echo(
            f"{len(parked)} dead letters parked behind it are still open ({ids}), so their key"
            f" stays parked: `banking-es dlq retry {parked[0]}` applies them in order,"
            f" `banking-es dlq discard {parked[0]}` skips the next one."
        )
