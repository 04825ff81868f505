"""The app in process, through `httpx.ASGITransport`: the one harness of the tests that call it.

    async with running_app(tmp_path) as (http, services):   # SQLite in tmp_path, started
        ...
    async with running_services(tmp_path, url) as services, app_client(services) as http:
        ...

Test defaults: rate limits off, cheap Argon2, the generated secrets in `tmp_path / "data"`;
keyword arguments override any setting. Every mail the services send is kept (`sent_mail`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from banking_es.api.app import BankingApp, create_app
from banking_es.bootstrap import Overrides, Services, build_services
from banking_es.config import Settings, load_settings

App = tuple[httpx.AsyncClient, Services]

#: The mails each running app's sender handed over (keyed by id of its Services).
_SENT: dict[int, list[EmailMessage]] = {}


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "database_url": database_url or f"sqlite:///{tmp_path / 'banking.db'}",
        "data_dir": tmp_path / "data",
        "argon2_time_cost": 1,
        "argon2_memory_cost": 8,
        "rate_limit_enabled": False,  # tests of the limits turn them on
        **overrides,
    }
    return load_settings(**options)


@asynccontextmanager
async def running_services(
    tmp_path: Path,
    database_url: str | None = None,
    *,
    start: bool = True,
    clock: Any = None,
    parts: Overrides | None = None,
    **overrides: Any,
) -> AsyncIterator[Services]:
    """Services on `database_url` (SQLite in `tmp_path` by default), started unless `start` is
    False; `clock` replaces the identity service's clock (lock-out and token expiry), `parts`
    are further parts the services take as given (`Overrides`)."""
    settings = make_settings(tmp_path, database_url, **overrides)
    sent: list[EmailMessage] = []
    given = parts or Overrides()
    if clock is not None:
        given = replace(given, identity_clock=clock)
    services = await build_services(settings, overrides=replace(given, on_mail_sent=sent.append))
    _SENT[id(services)] = sent
    try:
        if start:
            await services.start()
        yield services
    finally:
        await services.close()
        _SENT.pop(id(services), None)


@asynccontextmanager
async def app_client(
    services: Services,
    *,
    app: BankingApp | None = None,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    raise_app_exceptions: bool = True,
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `create_app(settings, services)` (or of `app`), from the address `client`."""
    transport = httpx.ASGITransport(
        app=app or create_app(services.settings, services),
        client=client,
        raise_app_exceptions=raise_app_exceptions,
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@asynccontextmanager
async def running_app(
    tmp_path: Path,
    database_url: str | None = None,
    *,
    client: tuple[str, int] = ("127.0.0.1", 50000),
    **options: Any,
) -> AsyncIterator[App]:
    """`running_services` (same arguments) and an anonymous `app_client` of them."""
    async with (
        running_services(tmp_path, database_url, **options) as services,
        app_client(services, client=client) as http,
    ):
        yield http, services


def sent_mail(services: Services) -> list[EmailMessage]:
    """The mails the sender of `services` (from `running_services`) handed over so far."""
    return _SENT[id(services)]
