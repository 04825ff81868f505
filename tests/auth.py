"""Helpers for tests that call the API as somebody (identity is always on).

In-process (`running_app` is the harness of tests/api_support.py)::

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
from pathlib import Path
from typing import Any

import httpx
from tests.api_support import sent_mail
from tests.smtp_support import token_in

from banking_es.bootstrap import Services
from banking_es.mail.messages import RESET_SUBJECT

PASSWORD = "correct horse battery"
ADMIN_PASSWORD = "admin password 123"
#: Cheap Argon2 parameters: tests hash many passwords.
FAST_ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_COST": "8"}
#: The login lock-out and reset-token limits of the identity tests (tests/e2e/identity).
MAX_ATTEMPTS = 3
LOCKOUT = 60
RESET_TTL = 1800
_counter = itertools.count(1)

Headers = dict[str, str]


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


async def reset_token(services: Services, user_id: str, timeout: float = 10.0) -> str:
    """The token of the latest reset mail sent to the user (by `running_app`'s sender)."""
    user = await services.identity.users.by_id(user_id)
    assert user is not None
    sent = sent_mail(services)
    for _ in range(int(timeout / 0.02)):
        mails = [m for m in sent if m["To"] == user.email and m["Subject"] == RESET_SUBJECT]
        if mails:
            return token_in(mails[-1])
        await asyncio.sleep(0.02)
    raise AssertionError("no reset mail was sent")
