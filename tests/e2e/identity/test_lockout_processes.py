"""The lock-out across real processes: a server with two workers on PostgreSQL under a
burst of logins from many source addresses, and `banking-es users unlock`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from tests.api_support import running_app
from tests.auth import PASSWORD, login, register, run_cli
from tests.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MAX_ATTEMPTS = 5


async def _login_from(address: str, url: str, name: str, password: str) -> httpx.Response:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(transport=transport, base_url=url, timeout=60) as http:
        return await http.post("/auth/login", json={"username": name, "password": password})


async def _burst(url: str, name: str, right_at: int | None) -> list[int]:
    """50 logins at once, each from its own loopback address (so no per-IP limit applies)."""
    passwords = ["wrong-password"] * 50
    if right_at is not None:
        passwords[right_at] = PASSWORD
    answers = await asyncio.gather(
        *(_login_from(f"127.0.0.{n + 2}", url, name, p) for n, p in enumerate(passwords))
    )
    for answer in answers:
        if answer.status_code == 429:
            assert answer.json()["code"] == "account_locked"
            assert int(answer.headers["retry-after"]) > 0
        else:
            assert answer.status_code in (200, 401), answer.text
    return [a.status_code for a in answers]


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_fifty_concurrent_logins_from_fifty_addresses_check_at_most_max_attempts(
    database_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(
        database_url,
        workers=2,
        workdir=tmp_path,
        RATE_LIMIT_ENABLED="true",
        MAX_LOGIN_ATTEMPTS=str(MAX_ATTEMPTS),
    ).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            wrong_only, with_right = await register(http), await register(http)
            statuses = await _burst(server.url, wrong_only["username"], None)
            assert statuses.count(401) == MAX_ATTEMPTS, statuses
            assert statuses.count(429) == 50 - MAX_ATTEMPTS
            locked = await http.post(
                "/auth/login", json={"username": wrong_only["username"], "password": PASSWORD}
            )
            assert locked.status_code == 429

            statuses = await _burst(server.url, with_right["username"], 25)
            checked = statuses.count(200) + statuses.count(401)
            if statuses[25] == 200:  # checked before the lock: a success starts the count again
                assert checked <= 2 * MAX_ATTEMPTS, statuses
            else:
                assert statuses[25] == 429
                assert checked <= MAX_ATTEMPTS, statuses
    finally:
        server.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_users_unlock_ends_the_lockout_of_both_names_and_records_who(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(tmp_path, database_url, max_login_attempts=2) as (http, services):
        user = await register(http)
        names = (user["username"], user["email"])
        for name in names:
            for password in ("wrong-password", "wrong-password", PASSWORD):
                answer = await http.post(
                    "/auth/login", json={"username": name, "password": password}
                )
            assert answer.status_code == 429
        # In a thread: a blocked event loop could hold the app's SQLite write lock meanwhile.
        unlocked = await asyncio.to_thread(
            run_cli, ["users", "unlock", user["email"].upper()], tmp_path, DATABASE_URL=database_url
        )
        assert unlocked.returncode == 0, unlocked.stderr
        for name in names:
            assert name.casefold() in unlocked.stdout
            await login(http, name)
        [record] = await services.identity.attempts.unlocks(user["username"].casefold())
        assert record["unlocked_by"].startswith("cli:")
        assert record["user_id"] == user["id"]
        assert record["locked_until"] is not None
    nothing = run_cli(["users", "unlock", "ghost"], tmp_path, DATABASE_URL=database_url)
    assert nothing.returncode == 0, nothing.stderr
    assert "no lock-out" in nothing.stdout
