"""What each layer of the HTTP stack costs per request, driven in process (no sockets).

The service's own app (`create_app`: the whole route table and middleware) answers the real
`GET /health/live` route and a deposit-shaped route (UUID path, bearer caller, JSON body
checked against `MoneyRequest`) through the real `Endpoint` with a stub handler and caller,
with its layers turned on one at a time, so the numbers are the stack's own cost, without
the service's work:

    .venv/bin/python -m bench.layers [--requests 20000] [--rounds 5]

(As a module: run as a file, `bench/http.py` would shadow the standard library's `http`.)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from starlette.responses import Response

from banking_es.api.app import create_app
from banking_es.api.routes.accounts import AccountRoutes
from banking_es.api.routes.health import HealthRoutes
from banking_es.api.routing import Gate
from banking_es.config import load_settings
from banking_es.identity.service import Principal
from banking_es.logging_setup import configure_logging
from banking_es.observability import tracing
from banking_es.observability.metrics import Metrics
from banking_es.ratelimit.limiter import RateLimiter
from banking_es.ratelimit.windows import SHARED_FILE_ENV, SharedWindows
from bench.common import positive_int
from bench.frameworks_apps.bare import app as bare_app

ACCOUNT = "6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01"
DEPOSIT = b'{"amount": "1.00", "description": "bench"}'
ANSWER = b'{"id":"6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01","balance":"1.00","version":2}'


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class StubIdentity:
    """Any bearer token is this user (the real check is a JWT verification)."""

    principal = Principal("u-1", "l-1", frozenset({"customer"}))

    def authenticate(self, token: str) -> Principal:
        return self.principal


async def _deposit(call: Any) -> Response:
    return Response(ANSWER, media_type="application/json")


def service_app(metrics: Metrics | None, limiter: RateLimiter | None) -> Any:
    """`create_app`'s app (its rate-limit middleware stacked when `limiter` is given) with
    the live and deposit routes bound to stubs, over services that are only `metrics`, `limiter`
    and the settings (one instance: no sharding)."""
    settings = load_settings(rate_limit_enabled=limiter is not None)
    app = create_app(settings)
    for cls, name, endpoint in app.endpoints:
        if (cls, name) == (HealthRoutes, "live"):
            endpoint.handler = HealthRoutes(None).live  # type: ignore[arg-type]
        elif (cls, name) == (AccountRoutes, "deposit"):
            endpoint.handler = _deposit
        endpoint.gate = Gate(StubIdentity(), limiter)  # type: ignore[arg-type]
    app.services = SimpleNamespace(
        metrics=metrics, rate_limiter=limiter, settings=settings, sharding=None
    )
    return app


def router() -> Any:
    """The service's router alone (its whole route table), no middleware."""
    return service_app(None, None).router


async def drive(app: Any, count: int, method: str = "GET", path: str = "/health/live") -> float:
    """CPU seconds per request of `method path` through `app`."""
    body = DEPOSIT if method == "POST" else b""
    headers = [(b"host", b"bench"), (b"authorization", b"Bearer t")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"42")]
    base = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    for _ in range(500):  # warm up
        await app(dict(base), receive, send)
    started = time.process_time()  # CPU time: a busy machine delays, not inflates, it
    for _ in range(count):
        await app(dict(base), receive, send)
    return (time.process_time() - started) / count


async def main(requests: int, rounds: int) -> None:
    # The windows `serve` gives its workers: a file they share (ratelimit/windows.py).
    shared = Path(tempfile.mkdtemp(prefix="bench-layers-")) / "windows"
    SharedWindows.create(shared, 10_000)
    os.environ[SHARED_FILE_ENV] = str(shared)
    limits = load_settings(
        rate_limit_per_minute=10**9, rate_limit_burst=10**9, rate_limit_per_ip_per_minute=10**9
    )
    configure_logging(load_settings(log_format="json", log_level="warning"))
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(io.StringIO())  # written, then dropped
    metrics = Metrics()
    deposit = f"/accounts/{ACCOUNT}/deposit"
    modes: dict[str, Callable[[], Any]] = {
        "bare ASGI app": lambda: drive(bare_app, requests),
        "+ the service's router (all routes) and Endpoint": lambda: drive(router(), requests),
        "+ its app and middleware, no metrics, no limits": lambda: drive(
            service_app(None, None), requests
        ),
        "+ metrics": lambda: drive(service_app(metrics, None), requests),
        "+ rate limits (/health is exempt)": lambda: drive(
            service_app(metrics, RateLimiter(limits)), requests
        ),
        "deposit shape: router, Endpoint, caller, body": lambda: drive(
            router(), requests, "POST", deposit
        ),
        "deposit shape, whole app (limits per IP, user, burst: shared file)": lambda: drive(
            service_app(metrics, RateLimiter(limits)), requests, "POST", deposit
        ),
    }
    results: dict[str, list[float]] = {name: [] for name in modes}
    logged: list[float] = []
    traced: list[float] = []
    for _ in range(rounds):
        for name, run in modes.items():
            results[name].append(await run())
        logging.getLogger().setLevel(logging.INFO)  # the access line of every request written
        whole = service_app(metrics, RateLimiter(limits))
        logged.append(await drive(whole, requests, "POST", deposit))
        logging.getLogger().setLevel(logging.WARNING)
        tracing.configure_tracing(None, exporter=DropExporter(), batch=False)
        traced.append(await drive(whole, requests, "POST", deposit))
        tracing.shutdown_tracing()
    results["deposit shape, whole app + access log line (INFO, JSON)"] = logged
    results["deposit shape, whole app + tracing on (spans dropped)"] = traced
    print(f"in-process ASGI, median of {rounds} rounds of {requests} requests (CPU us/request)")
    for name, values in results.items():
        print(f"  {name:<66} {statistics.median(values) * 1e6:8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.layers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=positive_int, default=20000, help="per round and mode")
    parser.add_argument("--rounds", type=positive_int, default=5, help="the median is reported")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
