"""Helpers for tests that call the API as somebody (identity is always on).

In-process::

    async with running_app(tmp_path) as (http, services):
        headers = await sign_up(http)                      # a new customer, logged in
        admin = await admin_headers(http, services)        # an admin, logged in
        await http.post("/accounts", json={...}, headers=headers)

Against a real server (`tests.server.ServerProcess`): `sign_up(http)` works the same, and
`create_admin_cli(...)` makes an admin through `banking-es users create-admin`;
`run_cli(args, workdir, DATABASE_URL=...)` runs any other `banking-es` command.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

from banking_es.api.app import create_app
from banking_es.bootstrap import Overrides, Services, build_services
from banking_es.config import Settings, load_settings

PASSWORD = "correct horse battery"
ADMIN_PASSWORD = "admin password 123"
#: Cheap Argon2 parameters: tests hash many passwords.
FAST_ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "8"}
_counter = itertools.count(1)
#: The mails each running app's sender handed over (keyed by id of its Services).
_SENT: dict[int, list[EmailMessage]] = {}

Headers = dict[str, str]


class ShiftedClock:
    """The real time plus an offset a test can move forward (tokens' `exp` is checked
    against the real time by PyJWT, so this clock must stay near it)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


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
async def running_app(
    tmp_path: Path,
    database_url: str | None = None,
    *,
    clock: Any = None,
    **overrides: Any,
) -> AsyncIterator[tuple[httpx.AsyncClient, Services]]:
    """The app in-process (httpx ASGITransport) with its services started."""
    settings = make_settings(tmp_path, database_url, **overrides)
    sent: list[EmailMessage] = []
    services = await build_services(
        settings, overrides=Overrides(identity_clock=clock, on_mail_sent=sent.append)
    )
    keep_mail(services, sent)
    await services.start()
    try:
        transport = httpx.ASGITransport(app=create_app(settings, services))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, services
    finally:
        await services.close()
        _SENT.pop(id(services), None)


def bearer(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def new_username(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter)}_{uuid.uuid4().hex[:6]}"


async def register(
    http: httpx.AsyncClient, username: str | None = None, password: str = PASSWORD
) -> dict[str, Any]:
    username = username or new_username()
    response = await http.post(
        "/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


async def login(http: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await http.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    pair: dict[str, Any] = response.json()
    return pair


async def sign_up(http: httpx.AsyncClient, username: str | None = None) -> Headers:
    """Register a new customer, log in, and return its Authorization header."""
    user = await register(http, username)
    return bearer((await login(http, user["username"]))["access_token"])


async def admin_headers(
    http: httpx.AsyncClient, services: Services, roles: tuple[str, ...] = ("admin",)
) -> Headers:
    """Create a user with `roles` through the service (as the CLI does) and log it in."""
    username = new_username("_".join(roles))
    await services.identity.register(
        username, f"{username}@example.com", ADMIN_PASSWORD, roles=roles
    )
    return bearer((await login(http, username, ADMIN_PASSWORD))["access_token"])


def run_cli(args: list[str], workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`banking-es ARGS` in `workdir` (its data in `workdir/data`), with cheap Argon2."""
    return subprocess.run(
        [sys.executable, "-m", "banking_es", *args],
        cwd=workdir,
        env={**os.environ, **FAST_ARGON2, "DATA_DIR": str(workdir / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def create_admin_cli(
    database_url: str, workdir: Path, username: str = "admin", password: str = ADMIN_PASSWORD
) -> subprocess.CompletedProcess[str]:
    """`banking-es users create-admin` with the password in BANKING_ADMIN_PASSWORD."""
    env = {
        **os.environ,
        **FAST_ARGON2,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(workdir / "data"),
        "BANKING_ADMIN_PASSWORD": password,
    }
    return subprocess.run(
        [
            *(sys.executable, "-m", "banking_es", "users", "create-admin"),
            *("--username", username, "--email", f"{username}@example.com"),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def keep_mail(services: Services, sent: list[EmailMessage]) -> None:
    """Where `reset_token` finds the mails of `services`: the list their sender fills
    (`Overrides(on_mail_sent=sent.append)`)."""
    _SENT[id(services)] = sent


async def reset_token(services: Services, user_id: str, timeout: float = 10.0) -> str:
    """The token of the latest reset mail sent to the user (by `running_app`'s sender)."""
    from tests.smtp_support import token_in

    from banking_es.mail.messages import RESET_SUBJECT

    user = await services.identity.users.by_id(user_id)
    assert user is not None
    sent = _SENT[id(services)]  # see `keep_mail`
    for _ in range(int(timeout / 0.02)):
        mails = [m for m in sent if m["To"] == user.email and m["Subject"] == RESET_SUBJECT]
        if mails:
            return token_in(mails[-1])
        await asyncio.sleep(0.02)
    raise AssertionError("no reset mail was sent")
