"""The ASGI application: Starlette's router over the route classes, the middleware, the
OpenAPI document and /docs, and the lifespan.

Routes are classes whose constructors take the narrow services they use; `bind` builds them
from what the composition root hands over (`ApiServices`), so the route table (and the
OpenAPI document) exists before any service does.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from banking_es import __version__
from banking_es.api import openapi
from banking_es.api.forwarding import ForwardingMiddleware
from banking_es.api.middleware import RequestContextMiddleware
from banking_es.api.ratelimit import RateLimitMiddleware
from banking_es.api.routes.accounts import AccountRoutes
from banking_es.api.routes.admin import AdminRoutes
from banking_es.api.routes.admin_accounts import AdminAccountRoutes
from banking_es.api.routes.admin_dead_letters import DeadLetterRoutes
from banking_es.api.routes.admin_mail import MailRoutes
from banking_es.api.routes.admin_ops import AdminOpsRoutes
from banking_es.api.routes.admin_shards import ShardRoutes
from banking_es.api.routes.auth import AuthRoutes
from banking_es.api.routes.health import HealthRoutes
from banking_es.api.routes.holds import HoldRoutes
from banking_es.api.routes.metrics import MetricsRoutes
from banking_es.api.routes.statements import StatementRoutes
from banking_es.api.routes.transfers import TransferRoutes
from banking_es.api.routing import Endpoint, Gate, Operation, Router, operations
from banking_es.api.validation import RequestRules
from banking_es.application.accounts import AccountService
from banking_es.application.admin import AdminService
from banking_es.application.idempotency import IdempotencyService
from banking_es.application.ports import Clock, ProjectionStatus
from banking_es.application.validation import RequestValidator
from banking_es.config import Settings, load_settings
from banking_es.eventstore.base import EventStore
from banking_es.identity.access import AccountAccess
from banking_es.identity.service import IdentityService, require_admin
from banking_es.mail.sender import MailSender
from banking_es.messaging.dead_letters import DeadLetters
from banking_es.observability.gauges import refresh_gauges
from banking_es.observability.health import HealthChecks
from banking_es.observability.metrics import Metrics
from banking_es.observability.tracing import configure_tracing, shutdown_tracing
from banking_es.projections.queries import ReadModels
from banking_es.projections.runner import ProjectionRunner
from banking_es.ratelimit.limiter import RateLimiter

DESCRIPTION = """
An event-sourced banking service. Every change to an account is an immutable event;
balances and histories are derived from them.

Amounts are sent as JSON numbers or strings with at most as many decimals as the
account's ISO 4217 currency has (USD 2, JPY 0, BHD 3) and returned as strings with
exactly that many. Errors are `application/problem+json` with a stable
`code`. Write endpoints accept an `Idempotency-Key` header.
"""

#: The collector's thresholds in a serving worker (CPython's defaults are 700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 20)

#: The route classes, their OpenAPI tag and what their routes need besides a caller.
ROUTES: tuple[tuple[type, str, dict[str, Any]], ...] = (
    (AccountRoutes, "accounts", {"rate_limited": True}),
    (StatementRoutes, "accounts", {"rate_limited": True}),
    (TransferRoutes, "transfers", {"rate_limited": True}),
    (HoldRoutes, "holds", {"rate_limited": True}),
    (HealthRoutes, "operations", {}),
    (MetricsRoutes, "operations", {}),
    (AuthRoutes, "auth", {}),
    (AdminRoutes, "admin", {"role": require_admin}),
    (DeadLetterRoutes, "admin", {"role": require_admin}),
    (MailRoutes, "admin", {"role": require_admin}),
    (AdminOpsRoutes, "admin", {"role": require_admin}),
    (ShardRoutes, "admin", {"role": require_admin}),
    (AdminAccountRoutes, "admin", {"role": require_admin}),
)
#: Swagger UI's files that /docs loads (nothing else of the package is served).
DOCS_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})


class ProjectionStatuses(Protocol):
    """Whatever drives the projections (the runner, or with Kafka the consumer group)."""

    async def status(self) -> list[ProjectionStatus]: ...


class ApiServices(Protocol):
    """What the composition root hands the API (bootstrap's `Services` is one); read-only,
    so a container may hold narrower types."""

    @property
    def settings(self) -> Settings: ...
    @property
    def store(self) -> EventStore: ...
    @property
    def accounts(self) -> AccountService: ...
    @property
    def idempotency(self) -> IdempotencyService: ...
    @property
    def read_models(self) -> ReadModels: ...
    @property
    def projections(self) -> ProjectionRunner: ...
    @property
    def kafka(self) -> ProjectionStatuses | None: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def identity(self) -> IdentityService: ...
    @property
    def access(self) -> AccountAccess: ...
    @property
    def admin(self) -> AdminService: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def health(self) -> HealthChecks: ...
    @property
    def rate_limiter(self) -> RateLimiter | None: ...
    @property
    def validator(self) -> RequestValidator: ...
    @property
    def mail(self) -> MailSender | None: ...

    def export_metrics(self) -> None: ...
    def dead_letters(self) -> DeadLetters: ...
    async def shard_report(self) -> dict[str, Any]: ...
    async def rebalance_shards(self) -> list[dict[str, Any]]: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


def tune_gc() -> None:
    """Fewer and cheaper garbage collections in a serving worker, once it has started.

    What exists then lives as long as the process, so it leaves the collector's view
    (`gc.freeze`); young collections run every 20,000 allocations instead of every 700 (a
    request allocates a few thousand objects, nearly all freed by reference counting).
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _route_objects(services: ApiServices) -> dict[type, object]:
    """Each route class built over the services it uses."""
    settings = services.settings
    rules = RequestRules(services.validator, services.accounts.cached_account)

    async def scrape() -> bytes:
        metrics = services.metrics
        # With Kafka the consumer group drives the projections (as in readiness), not the runner.
        statuses = services.kafka or services.projections
        await refresh_gauges(metrics, services.store, statuses, services.clock)
        services.export_metrics()
        # Merging the workers' files reads the disk: keep it off the event loop.
        return await asyncio.to_thread(metrics.render)

    return {
        AccountRoutes: AccountRoutes(
            services.accounts,
            services.access,
            services.read_models,
            rules,
            services.idempotency,
            settings.default_currency,
            services.clock,
        ),
        TransferRoutes: TransferRoutes(
            services.accounts, services.access, rules, services.idempotency
        ),
        HoldRoutes: HoldRoutes(services.accounts, services.access, services.idempotency),
        HealthRoutes: HealthRoutes(services.health),
        MetricsRoutes: MetricsRoutes(scrape, services.metrics.content_type),
        AuthRoutes: AuthRoutes(services.identity, settings.password_reset_enabled),
        AdminRoutes: AdminRoutes(services.identity),
        DeadLetterRoutes: DeadLetterRoutes(services.dead_letters),
        MailRoutes: MailRoutes(
            services.mail.queue if services.mail is not None else None, services.clock
        ),
        AdminOpsRoutes: AdminOpsRoutes(services.admin),
        ShardRoutes: ShardRoutes(services.shard_report, services.rebalance_shards),
        StatementRoutes: StatementRoutes(
            services.accounts, services.access, services.clock, settings.bank_name
        ),
        AdminAccountRoutes: AdminAccountRoutes(
            services.accounts, services.idempotency, services.clock
        ),
    }


class BankingApp(Starlette):
    """The Starlette app, its endpoints (bound to services by `bind`) and its document."""

    def __init__(
        self,
        endpoints: list[tuple[type, str, Endpoint]],
        routes: list[BaseRoute],
        lifespan: Any,
    ) -> None:
        super().__init__()
        self.router = Router(routes, lifespan=lifespan)
        self.endpoints = endpoints
        self.services: ApiServices | None = None
        self._document: bytes | None = None

    def bind(self, services: ApiServices) -> None:
        self.services = self.state.services = services
        built = _route_objects(services)
        gate = Gate(services.identity, services.rate_limiter)
        for cls, name, endpoint in self.endpoints:
            endpoint.handler = getattr(built[cls], name)
            endpoint.gate = gate

    def build_middleware_stack(self) -> ASGIApp:
        """Our middleware around the router, without Starlette's two: the router answers its
        404 and 405 (`Router`), `RequestContextMiddleware` a bug's 500, and each endpoint its
        own errors."""
        app: ASGIApp = self.router
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

    def openapi(self) -> dict[str, Any]:
        ops: list[Operation] = [endpoint.op for _, _, endpoint in self.endpoints]
        return openapi.document(ops, "banking-es", __version__, DESCRIPTION)

    def openapi_json(self) -> bytes:
        if self._document is None:
            self._document = orjson.dumps(self.openapi())
        return self._document

    def current_metrics(self) -> Metrics | None:
        return self.services.metrics if self.services is not None else None

    def current_limiter(self) -> RateLimiter | None:
        return self.services.rate_limiter if self.services is not None else None


async def _openapi(request: Request) -> Response:
    app: BankingApp = request.app
    return Response(app.openapi_json(), media_type="application/json")


async def _docs(request: Request) -> Response:
    return Response(openapi.docs_page("banking-es"), media_type="text/html")


async def _docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in DOCS_ASSETS:
        raise HTTPException(404)
    return FileResponse(openapi.ASSETS_DIR / name)


def create_app(
    settings: Settings | None = None,
    services: ApiServices | None = None,
    *,
    build: Callable[[Settings], Awaitable[ApiServices]] | None = None,
) -> BankingApp:
    """The app over `services`, or over those `build` makes in the lifespan (a worker's own).

    With neither, only the documentation answers (the API says 503 until services exist)."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if build is None:
            yield
            return
        from banking_es.logging_setup import configure_logging

        configure_logging(settings)
        built = await build(settings)
        banking.bind(built)
        await built.start()
        tune_gc()
        try:
            yield
        finally:
            await built.close()
            shutdown_tracing()

    if build is not None:  # in the worker process: its own exporter thread
        configure_tracing(settings.otel_exporter_otlp_endpoint)
    endpoints = [
        (cls, name, Endpoint(op))
        for cls, tag, defaults in ROUTES
        for op, name in operations(cls, tag, **defaults)
    ]
    routes: list[BaseRoute] = [
        Route(endpoint.op.path, endpoint, methods=[endpoint.op.method])
        for _, _, endpoint in endpoints
    ]
    routes += [
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/docs", _docs, methods=["GET"]),
        Route("/docs/assets/{name}", _docs_asset, methods=["GET"]),
    ]
    banking = BankingApp(endpoints, routes, lifespan)
    if settings.rate_limit_enabled:  # inside the request context: its 429s are logged
        banking.add_middleware(RateLimitMiddleware, limiter=banking.current_limiter)
    banking.add_middleware(ForwardingMiddleware)  # before the limits: the owner applies them
    banking.add_middleware(
        RequestContextMiddleware,
        metrics=banking.current_metrics,
        docs_path="/docs",
        docs_policy=openapi.docs_policy(),
    )
    if services is not None:
        banking.bind(services)
    return banking
