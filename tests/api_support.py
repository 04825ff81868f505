"""The app in-process, through `httpx.ASGITransport`, on a fresh SQLite file per app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from banking_es.api.app import create_app
from banking_es.bootstrap import Overrides, Services, build_services
from banking_es.config import load_settings


class FakeTime:
    """Stands in for the `time` module where the rate limiter reads the time."""

    def __init__(self, start: float = 2_000_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def api(
    tmp_path: Path,
    *,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    start: bool = False,
    name: str = "banking.db",
    parts: Overrides | None = None,
    **overrides: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """An app with its own services (rate limits off unless asked for) and a client for it;
    `overrides` are settings, `parts` what the services take as given (`Overrides`)."""
    overrides.setdefault("database_url", f"sqlite:///{tmp_path / name}")
    overrides.setdefault("rate_limit_enabled", False)
    overrides.setdefault("data_dir", tmp_path / "data")
    settings = load_settings(**overrides)
    services = await build_services(settings, overrides=parts)
    if start:
        await services.start()
    app = create_app(settings, services)
    transport = httpx.ASGITransport(app=app, client=client)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, services
    finally:
        await services.close()
