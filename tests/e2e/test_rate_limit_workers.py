"""The limits of a real server with two workers and no Redis: one limit, not one per worker.

Every request opens its own connection, so the kernel spreads them over both workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.auth import PASSWORD, bearer, new_username
from tests.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        f"sqlite:///{tmp_path / 'banking.db'}",
        workers=2,
        workdir=tmp_path,
        RATE_LIMIT_ENABLED="true",
        AUTH_RATE_LIMIT_PER_MINUTE="10",
        RATE_LIMIT_BURST="10",
        RATE_LIMIT_PER_MINUTE="1000",
        MAX_LOGIN_ATTEMPTS="100",  # the logins below test the rate limit, not the lock-out
    ).start()
    try:
        yield process
    finally:
        process.stop()


async def admitted(server: ServerProcess, send: int, method: str, path: str, **kw: object) -> int:
    """How many of `send` requests sent at once, each on a connection of its own, are not
    refused with `rate_limited`."""
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=fresh) as http:
        answers = await asyncio.gather(
            *(http.request(method, path, **kw) for _ in range(send))  # type: ignore[arg-type]
        )
    refused = [a for a in answers if a.status_code == 429]
    assert all(a.json()["code"] == "rate_limited" for a in refused)
    return send - len(refused)


async def test_the_auth_limit_holds_across_workers(server: ServerProcess) -> None:
    body = {"username": new_username(), "password": "not the password"}
    assert 9 <= await admitted(server, 30, "POST", "/auth/login", json=body) <= 11


async def test_the_burst_limit_holds_across_workers(server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        username = new_username()
        user = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        assert (await http.post("/auth/register", json=user)).status_code == 201
        login = await http.post("/auth/login", json={"username": username, "password": PASSWORD})
        headers = bearer(login.json()["access_token"])
    started = time.monotonic()
    count = await admitted(server, 30, "GET", "/accounts", headers=headers)
    if time.monotonic() - started < 1:  # all within one window of the burst
        assert 9 <= count <= 11
    else:  # a slow machine: still nowhere near one window per worker
        assert count <= 10 * (time.monotonic() - started + 1) + 1
