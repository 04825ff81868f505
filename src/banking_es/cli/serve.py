"""`banking-es serve` and `banking-es migrate`: migrate (or, with --no-migrate, check) the
database, then start the workers, each with its own listening socket where the platform
allows (serving.py)."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from banking_es.cli.common import console, ensure_secrets, migrate_database, read_settings, run
from banking_es.cli.mail import check_mail_or_exit
from banking_es.config import Settings

#: The workers' app (banking_es/asgi.py): `serve` migrates (or checks) the database once,
#: before they start.
APP_FACTORY = "banking_es.asgi:create_served_app"


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
    settings = read_settings(host=host, port=port, workers=workers)
    ensure_secrets(settings)  # before the fork: every worker reads the same secrets
    check_mail_or_exit(settings)
    _check_sharding(settings)
    run_server(settings, no_migrate=no_migrate)


def _check_sharding(settings: Settings) -> None:
    """Exit 2 with one line when INSTANCE_URL comes with settings instances cannot share."""
    from banking_es.bootstrap.shards import sharding_on
    from banking_es.config import SettingsError

    try:
        sharding_on(settings)
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


def migrate_command(
    show_status: Annotated[
        bool, typer.Option("--status", help="Only show what is applied")
    ] = False,
) -> None:
    """Apply pending database migrations (safe to run twice, or from two servers at once)."""
    settings = read_settings()

    async def show() -> list[tuple[Any, bool]]:
        from banking_es.bootstrap.adapters import connect_database
        from banking_es.db.migrate import status as migration_status

        db = await connect_database(settings, pool_size=2)
        try:
            return await migration_status(db)
        finally:
            await db.close()

    if show_status:
        table = Table("version", "name", "applied")
        for migration, is_applied in run(show()):
            table.add_row(f"{migration.version:04d}", migration.name, "yes" if is_applied else "no")
        Console().print(table)
        return
    applied = run(migrate_database(settings))
    if applied:
        for migration in applied:
            typer.echo(f"applied {migration.version:04d}_{migration.name}")
    else:
        typer.echo("database is up to date")


def run_server(settings: Settings, *, no_migrate: bool) -> None:
    """Serve until SIGTERM or SIGINT; `settings` has its secrets checked (cli.serve)."""
    # Before anything imports prometheus-client: it reads PROMETHEUS_MULTIPROC_DIR at import.
    from banking_es.observability.multiproc import prepare_multiprocess_dir

    prepare_multiprocess_dir(settings.data_dir)
    from banking_es.logging_setup import configure_logging

    configure_logging(settings)
    log = logging.getLogger("banking_es")
    if no_migrate:
        _require_migrated(settings)
        log.info("database %s ready (--no-migrate: checked, nothing applied)", settings.backend)
    else:
        applied = run(migrate_database(settings))
        log.info("database %s ready (%d migrations applied now)", settings.backend, len(applied))
    import uvicorn

    from banking_es import serving

    # Workers re-read settings from the environment: pass the CLI overrides down.
    os.environ["HOST"], os.environ["PORT"] = settings.host, str(settings.port)
    os.environ["WORKERS"] = str(settings.workers)
    # One instance id for all its workers (`x-served-by`, `/admin/shards`), not one per process.
    os.environ["INSTANCE_ID"] = settings.effective_instance_id
    # A listening socket per worker, so that connections spread over them (serving.py).
    spread = settings.workers > 1 and serving.spreads_connections()
    sockets = []
    if spread:
        try:
            sockets = serving.bind_worker_sockets(settings.host, settings.port, settings.workers)
        except OSError as exc:
            where = f"{settings.host}:{settings.port}"
            console.print(f"[red]error:[/red] cannot listen on {where}: {exc}")
            raise typer.Exit(1) from None
    console.print(
        f"banking-es serving on http://{settings.host}:{settings.port} "
        f"(docs: http://{settings.host}:{settings.port}/docs, workers: {settings.workers})"
    )
    options: dict[str, Any] = {
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "log_level": settings.log_level,
        "access_log": False,
        "log_config": None,
        "loop": "uvloop",
        "http": "httptools",
        "timeout_graceful_shutdown": 10,
        # uvicorn kills a worker that misses a 5 s health ping; a busy worker on a loaded
        # machine is not hung, and killing it drops its requests in flight.
        "timeout_worker_healthcheck": 30,
    }
    with serving.shared_rate_limits(settings):
        if not spread:
            uvicorn.run(APP_FACTORY, **options)
            return
        serving.SpreadSupervisor(uvicorn.Config(APP_FACTORY, **options), sockets).run()


def _require_migrated(settings: Settings) -> None:
    """Exit 1 naming the pending migrations, if any (the pods of a rollout whose migration
    job has not run, or failed, must not serve a schema they do not know)."""

    async def pending() -> list[Any]:
        from banking_es.bootstrap.adapters import connect_database
        from banking_es.db.migrate import pending
        from banking_es.shards.leases import ShardLeases

        db = await connect_database(settings, pool_size=2)
        try:
            missing = await pending(db)
            if not missing:  # the shard count stored by `banking-es migrate`, checked
                shards = ShardLeases(db, ttl=settings.shard_lease_ttl)
                await shards.ensure_shard_count(settings.shard_count)
            return missing
        finally:
            await db.close()

    missing = run(pending())
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        console.print(
            f"[red]error:[/red] the database is not migrated ({len(missing)} pending: {names}); "
            "run `banking-es migrate` first (serve --no-migrate never migrates)"
        )
        raise typer.Exit(1)
