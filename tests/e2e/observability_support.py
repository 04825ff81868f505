"""An in-process app on a real database, and a parser for /metrics (observability tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Receive, Scope, Send

from banking_es.api.app import create_app
from banking_es.bootstrap import Services, build_services
from banking_es.config import Settings, load_settings


@asynccontextmanager
async def running_app(
    database_url: str, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Services, FastAPI]]:
    """Services with their background tasks, the app, and a client speaking ASGI to it."""
    settings: Settings = load_settings(database_url=database_url, **overrides)
    services = await build_services(settings)
    await services.start()
    app = create_app(settings, services)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, services, app
    finally:
        await services.close()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, keyed by (sample name, labels)."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


class FakeIdentity:
    """Stands in for the identity middleware: puts the caller's id into the scope state."""

    @classmethod
    def install(cls, app: FastAPI) -> None:
        app.add_middleware(cls)
        app.middleware_stack = app.build_middleware_stack()

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["user_id"] = "user-42"
        await self.app(scope, receive, send)
