"""The `banking-es` command line: serve the API, migrate the database, manage projections
(outbox and dead letters: `cli_messaging`; export and import: `cli_portable`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from banking_es.config import Settings, SettingsError, load_settings

T = TypeVar("T")

app = typer.Typer(
    help=(
        "banking-es: an event-sourced banking service.\n\n"
        "Configuration comes from environment variables (DATABASE_URL, REDIS_URL, ...; see "
        "the README). With none set it uses an SQLite file under ./data/."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
projections_app = typer.Typer(
    help="Inspect and rebuild the read models (account summaries, transactions).",
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")
users_app = typer.Typer(help="Manage users and their roles.", no_args_is_help=True)
app.add_typer(users_app, name="users")
from banking_es.cli_mail import check_mail_or_exit, mail_app  # noqa: E402
from banking_es.cli_messaging import BIGINT_MAX, dlq_app, outbox_app, with_store  # noqa: E402
from banking_es.cli_portable import export_command, import_command, rebuild_with_progress  # noqa: E402
from banking_es.cli_verify import verify_command  # noqa: E402

app.add_typer(outbox_app, name="outbox")
app.add_typer(dlq_app, name="dlq")
app.command("verify")(verify_command)
app.add_typer(mail_app, name="mail")
app.command("export")(export_command)
app.command("import")(import_command)

console = Console(stderr=True, soft_wrap=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _run(coro: Coroutine[Any, Any, T]) -> T:
    from banking_es.db.base import DatabaseError

    try:
        return asyncio.run(coro)
    except DatabaseError as exc:
        console.print(f"[red]error:[/red] cannot use the database: {exc}")
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot reach the database: {exc}")
        raise typer.Exit(1) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [env HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env PORT, default 3000]")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Server processes sharing the port [env WORKERS]")
    ] = None,
    no_migrate: Annotated[
        bool,
        typer.Option(
            "--no-migrate",
            help="Do not migrate; refuse to start unless `banking-es migrate` has run",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (migrates the database first, unless --no-migrate). Docs at /docs."""
    settings = _settings(host=host, port=port, workers=workers)
    _ensure_secrets(settings)  # before the fork: every worker reads the same secrets
    check_mail_or_exit(settings)
    from banking_es.cli_serve import run_server

    run_server(settings, no_migrate=no_migrate)


async def _migrate(settings: Settings) -> list[Any]:
    from banking_es.bootstrap import connect_database
    from banking_es.db.migrate import migrate

    db = await connect_database(settings, pool_size=2)
    try:
        return await migrate(db)
    finally:
        await db.close()


@app.command("migrate")
def migrate_command(
    show_status: Annotated[
        bool, typer.Option("--status", help="Only show what is applied")
    ] = False,
) -> None:
    """Apply pending database migrations (safe to run twice, or from two servers at once)."""
    settings = _settings()

    async def show() -> list[tuple[Any, bool]]:
        from banking_es.bootstrap import connect_database
        from banking_es.db.migrate import status as migration_status

        db = await connect_database(settings, pool_size=2)
        try:
            return await migration_status(db)
        finally:
            await db.close()

    if show_status:
        table = Table("version", "name", "applied")
        for migration, is_applied in _run(show()):
            table.add_row(f"{migration.version:04d}", migration.name, "yes" if is_applied else "no")
        Console().print(table)
        return
    applied = _run(_migrate(settings))
    if applied:
        for migration in applied:
            typer.echo(f"applied {migration.version:04d}_{migration.name}")
    else:
        typer.echo("database is up to date")


async def _with_runner(settings: Settings, work: Any) -> Any:
    from banking_es.projections import default_projections
    from banking_es.projections.runner import ProjectionRunner

    async def run(db: Any, store: Any) -> Any:
        return await work(ProjectionRunner(db, store, default_projections()))

    return await with_store(settings, run)


async def _kafka_status(settings: Settings) -> Any:
    """The projections' status when a Kafka consumer group drives them (what `/health/ready`
    reports): checkpoints per partition against the topic's end offsets, plus the outbox."""
    from banking_es.messaging.wiring import kafka_config
    from banking_es.projections import default_projections
    from banking_es.projections.kafka_runner import (
        KafkaProjectionApplier,
        KafkaProjectionRunner,
        end_offsets,
    )

    config = kafka_config(settings)
    topic = config.topics.events

    async def status(db: Any, store: Any) -> Any:
        applier = KafkaProjectionApplier(db, store, default_projections(), topic)
        runner = KafkaProjectionRunner(applier, config)
        return await runner.status(store, await end_offsets(config, topic))

    return await with_store(settings, status)


@projections_app.command("status")
def projections_status() -> None:
    """Show each projection's checkpoint and how far it lags behind the event store (with
    KAFKA_BOOTSTRAP_SERVERS set: behind the outbox and the topic, as the consumer group sees)."""
    settings = _settings()

    async def work(runner: Any) -> Any:
        return await runner.status()

    if settings.kafka_bootstrap_servers:
        rows = _run(_kafka_status(settings))
    else:
        rows = _run(_with_runner(settings, work))
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
    settings = _settings()
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

    results = _run(_with_runner(settings, work))
    for name, count in results.items():
        typer.echo(f"{name}: replayed {count} events")


def _ensure_secrets(settings: Settings) -> Settings:
    from banking_es.identity.secrets_store import ensure_secrets

    try:
        return ensure_secrets(settings)
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)  # one line, however long
        raise typer.Exit(2) from None


async def _with_identity(settings: Settings, work: Any) -> Any:
    from banking_es.application.ports import SystemClock
    from banking_es.bootstrap import connect_database
    from banking_es.db.migrate import migrate
    from banking_es.identity.factory import build_identity

    db = await connect_database(settings, pool_size=2)
    try:
        await migrate(db)
        return await work(build_identity(settings, db, SystemClock()))
    finally:
        await db.close()


@users_app.command("create-admin")
def users_create_admin(
    username: Annotated[str, typer.Option(help="Login name (3-64 of A-Z a-z 0-9 _ . -)")],
    email: Annotated[str, typer.Option(help="Email address")],
) -> None:
    """Create a user with the admin role.

    The password is read from BANKING_ADMIN_PASSWORD or asked for (never an argument).
    """
    import os

    from banking_es.identity.errors import IdentityError

    settings = _settings()
    _ensure_secrets(settings)
    password = os.environ.get("BANKING_ADMIN_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )

    async def work(identity: Any) -> Any:
        return await identity.register(username, email, password, roles=("admin",))

    try:
        user = _run(_with_identity(settings, work))
    except IdentityError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"created admin {user.username} ({user.id})")


@users_app.command("list")
def users_list() -> None:
    """List users and their roles."""
    settings = _settings()

    async def work(identity: Any) -> list[Any]:
        found: list[Any] = []
        after = None
        while page := await identity.users.page(after, 500):
            found.extend(page)
            after = page[-1].id
        return found

    table = Table("id", "username", "email", "roles", "created")
    for user in _run(_with_identity(settings, work)):
        table.add_row(
            user.id, user.username, user.email, ",".join(user.roles), user.created_at.isoformat()
        )
    Console().print(table)


@users_app.command("set-role")
def users_set_role(
    username: Annotated[str, typer.Argument(help="Username or email")],
    roles: Annotated[list[str], typer.Argument(help="The new roles: customer, auditor, admin")],
) -> None:
    """Replace a user's roles (recorded as made from the command line; ends their logins)."""
    import getpass

    from banking_es.application.errors import NotFound
    from banking_es.identity.errors import IdentityError

    settings = _settings()

    async def work(identity: Any) -> Any:
        user = await identity.users.by_login_name(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return await identity.set_roles(user.id, roles, f"cli:{getpass.getuser()}")

    try:
        user = _run(_with_identity(settings, work))
    except (IdentityError, NotFound) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"{user.username} now has roles: {', '.join(user.roles)}")


@users_app.command("unlock")
def users_unlock(
    name: Annotated[str, typer.Argument(help="Username or email (or any name tried at login)")],
) -> None:
    """End a login lock-out: of the name, and of both names of the user it names (recorded
    as made from the command line)."""
    import getpass

    settings = _settings()

    async def work(identity: Any) -> list[str]:
        ended: list[str] = await identity.unlock(name, f"cli:{getpass.getuser()}")
        return ended

    ended = _run(_with_identity(settings, work))
    typer.echo(f"unlocked: {', '.join(ended)}" if ended else f"no lock-out on {name!r}")


def main() -> None:
    app()
