"""An in-process app on a real database, and a parser for /metrics (observability tests)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from tests.auth import record_mail

from banking_es.api.app import create_app
from banking_es.bootstrap import Services, build_services
from banking_es.config import Settings, load_settings


@asynccontextmanager
async def running_app(
    database_url: str, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Services, FastAPI]]:
    """Services with their background tasks, the app, and a client speaking ASGI to it.

    The client is anonymous: a test that calls /accounts or /transfers signs up first
    (`client.headers.update(await sign_up(client))`, tests/auth.py). Rate limiting is off
    and Argon2 cheap unless `overrides` say otherwise; the generated JWT secrets go to a
    temporary data directory, not the working directory.
    """
    with tempfile.TemporaryDirectory(prefix="banking-es-obs-") as data_dir:
        options: dict[str, Any] = {
            "database_url": database_url,
            "data_dir": data_dir,
            "rate_limit_enabled": False,
            "argon2_time_cost": 1,
            "argon2_memory_cost": 8,
            **overrides,
        }
        settings: Settings = load_settings(**options)
        services = await build_services(settings)
        record_mail(services)
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
