"""`banking-es serve`: migrate (or, with --no-migrate, check) the database, then start the
workers, each with its own listening socket where the platform allows (serving.py)."""

from __future__ import annotations

import logging
import os
from typing import Any

import typer

from banking_es.cli import _migrate, _run, console
from banking_es.config import Settings


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
        applied = _run(_migrate(settings))
        log.info("database %s ready (%d migrations applied now)", settings.backend, len(applied))
    import uvicorn

    from banking_es import serving

    # Workers re-read settings from the environment: pass the CLI overrides down.
    os.environ["HOST"], os.environ["PORT"] = settings.host, str(settings.port)
    os.environ["WORKERS"] = str(settings.workers)
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
            uvicorn.run(serving.APP_FACTORY, **options)
            return
        serving.SpreadSupervisor(uvicorn.Config(serving.APP_FACTORY, **options), sockets).run()


def _require_migrated(settings: Settings) -> None:
    """Exit 1 naming the pending migrations, if any (the pods of a rollout whose migration
    job has not run, or failed, must not serve a schema they do not know)."""

    async def pending() -> list[Any]:
        from banking_es.bootstrap import connect_database
        from banking_es.db.migrate import pending

        db = await connect_database(settings, pool_size=2)
        try:
            return await pending(db)
        finally:
            await db.close()

    missing = _run(pending())
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
        console.print(
            f"[red]error:[/red] the database is not migrated ({len(missing)} pending: {names}); "
            "run `banking-es migrate` first (serve --no-migrate never migrates)"
        )
        raise typer.Exit(1)
