"""The ASGI app of `banking-es serve`'s workers (uvicorn imports `create_served_app` in each):
the API over the services of the composition root, built in the worker's lifespan.

An entry point beside the CLI: api/ never imports bootstrap, and serving.py (the workers'
supervisor) imports neither.
"""

from __future__ import annotations

from banking_es.api.app import BankingApp, create_app
from banking_es.bootstrap import Services, build_services
from banking_es.config import Settings, load_settings


def build_app(settings: Settings | None = None, *, migrate: bool = True) -> BankingApp:
    """The app with services of its own, built (and started) in its lifespan."""

    async def build(settings: Settings) -> Services:
        return await build_services(settings, run_migrations=migrate)

    return create_app(settings or load_settings(), build=build)


def create_served_app() -> BankingApp:
    """The app of `serve`'s workers: the database was migrated (or, with `--no-migrate`,
    checked) before they started."""
    return build_app(migrate=False)
