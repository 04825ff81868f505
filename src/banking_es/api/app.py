"""The FastAPI application: routers, error handlers, middleware and the lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from banking_es import __version__
from banking_es.api import errors, identity_errors, openapi
from banking_es.api.forwarding import ForwardingMiddleware
from banking_es.api.hotpath import HotPathMiddleware
from banking_es.api.middleware import RequestContextMiddleware
from banking_es.api.ratelimit import RateLimitMiddleware
from banking_es.api.routes import (
    accounts,
    admin,
    admin_dead_letters,
    admin_mail,
    admin_ops,
    auth,
    health,
    metrics,
    transfers,
)
from banking_es.bootstrap import Services, build_services
from banking_es.config import Settings, load_settings
from banking_es.observability.tracing import (
    configure_tracing,
    fastapi_telemetry,
    shutdown_tracing,
)

DESCRIPTION = """
An event-sourced banking service. Every change to an account is an immutable event;
balances and histories are derived from them.

Amounts are sent as JSON numbers or strings with at most 2 decimals and returned as
strings with exactly 2 decimals. Errors are `application/problem+json` with a stable
`code`. Write endpoints accept an `Idempotency-Key` header.
"""


#: The collector's thresholds in a serving worker (CPython's defaults are 700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Fewer and cheaper garbage collections in a serving worker, once it has started.

    What exists then (modules, the app, the services) lives as long as the process, so it
    leaves the collector's view (`gc.freeze`) instead of being traversed by every full
    collection; and young collections run every 20,000 allocations instead of every 700 (a
    request allocates a few thousand objects, nearly all freed by reference counting). Under
    the deposit load of `make bench` this cut p99 latency by about half (docs/performance.md).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(
    settings: Settings | None = None,
    services: Services | None = None,
    *,
    hot_path: bool = True,
    migrate: bool = True,
) -> FastAPI:
    """Build the app. Services are built in the lifespan unless given (tests may pass them).

    `hot_path=False` leaves every request to FastAPI (tests compare the two); `migrate=False`
    serves the database as it is.
    """
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        if own:
            from banking_es.logging_setup import configure_logging

            configure_logging(settings)
        built = services or await build_services(settings, run_migrations=migrate)
        app.state.services = built
        if own:
            await built.start()
            tune_gc()
        try:
            yield
        finally:
            if own:
                await built.close()
                shutdown_tracing()

    if services is None:  # in the worker process: its own exporter thread
        configure_tracing(settings.otel_exporter_otlp_endpoint)
    app = FastAPI(
        telemetry=fastapi_telemetry(),
        title="banking-es",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,  # /docs is the documentation; ReDoc would need more in its policy
        swagger_ui_oauth2_redirect_url=None,  # bearer tokens only: no OAuth2 flow to finish
    )
    if services is not None:
        app.state.services = services
    app.include_router(accounts.router)
    app.include_router(transfers.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(auth.router)
    app.include_router(admin.router)
    app.include_router(admin_dead_letters.router)
    app.include_router(admin_mail.router)
    app.include_router(admin_ops.router)
    errors.install(app)
    identity_errors.install(app)
    openapi.install(app)
    if hot_path:  # innermost: after the request id, the access log and the per-IP limit
        app.add_middleware(HotPathMiddleware, fastapi=app)
    if settings.rate_limit_enabled:
        app.add_middleware(RateLimitMiddleware)
    app.add_middleware(ForwardingMiddleware)  # before the limits: the owner applies them
    app.add_middleware(
        RequestContextMiddleware, docs_path=app.docs_url, docs_policy=openapi.docs_policy(app)
    )
    return app


def create_served_app() -> FastAPI:
    """The app of `banking-es serve`'s workers: serve migrated the database (or, with
    `--no-migrate`, checked that it is migrated) before starting them."""
    return create_app(migrate=False)
