"""Identity across real processes: shared secrets, revocation seen by another server,
the users CLI, and the production secret check of `banking-es serve`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.api_support import running_app
from tests.auth import ADMIN_PASSWORD, bearer, create_admin_cli, login, register, run_cli
from tests.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def servers(database_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two servers (two workers each) on one database, sharing the development secrets."""
    first = ServerProcess(database_url, workers=2, workdir=tmp_path).start()
    try:
        second = ServerProcess(database_url, workers=2, workdir=tmp_path).start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


async def _status(http: httpx.AsyncClient, url: str, token: str) -> int:
    return (await http.get(f"{url}/auth/me", headers=bearer(token))).status_code


async def test_logouts_and_role_changes_are_seen_by_every_worker_of_another_server(
    servers: tuple[ServerProcess, ServerProcess], database_url: str, tmp_path: Path
) -> None:
    first, second = servers
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as http:
        user = await register(http)
        pair = await login(http, user["username"])
        token = pair["access_token"]
        # Every worker of both servers signs and checks with the same secret.
        statuses = await asyncio.gather(
            *(_status(http, server.url, token) for server in servers for _ in range(20))
        )
        assert set(statuses) == {200}
        assert (await http.post("/auth/logout", headers=bearer(token))).status_code == 204
        # Every worker of both servers learns of it (a notice, or SQLite's poll), well within
        # 10 s even on a busy machine (usually within 0.1 s) ...
        deadline = time.monotonic() + 10.0
        while True:
            statuses = await asyncio.gather(
                *(_status(http, server.url, token) for server in servers for _ in range(20))
            )
            if set(statuses) == {401}:
                break
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.02)
        # ... and stays rejected by every worker, on both servers.
        await asyncio.sleep(0.3)
        statuses = await asyncio.gather(
            *(_status(http, server.url, token) for server in servers for _ in range(20))
        )
        assert set(statuses) == {401}
        refreshed = await http.post(
            f"{second.url}/auth/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert refreshed.status_code == 401

        # A role change made through one server ends the user's logins on the other.
        created = create_admin_cli(database_url, tmp_path, "boss")
        assert created.returncode == 0, created.stderr
        admin = bearer((await login(http, "boss", ADMIN_PASSWORD))["access_token"])
        customer = (await login(http, user["username"]))["access_token"]
        assert await _status(http, second.url, customer) == 200
        patched = await http.patch(
            f"{first.url}/admin/users/{user['id']}", json={"roles": ["auditor"]}, headers=admin
        )
        assert patched.status_code == 200, patched.text
        deadline = time.monotonic() + 10.0
        while set(
            await asyncio.gather(*(_status(http, second.url, customer) for _ in range(10)))
        ) != {401}:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    "database_url", ["sqlite"], indirect=True
)  # the CLI's SQL is the service's
async def test_users_cli_creates_an_admin_lists_users_and_sets_roles(
    database_url: str, tmp_path: Path
) -> None:
    created = create_admin_cli(database_url, tmp_path, "root")
    assert created.returncode == 0, created.stderr
    assert "created admin root" in created.stdout
    again = create_admin_cli(database_url, tmp_path, "root")
    assert again.returncode == 1
    assert "exists" in again.stderr
    with_argument = run_cli(
        ["users", "create-admin", "--username", "x1", "--email", "x1@e.com", "--password", "p"],
        tmp_path,
        DATABASE_URL=database_url,
    )
    assert with_argument.returncode == 2  # there is no way to pass a password as an argument
    async with running_app(tmp_path, database_url) as (http, services):
        admin = bearer((await login(http, "root", ADMIN_PASSWORD))["access_token"])
        assert (await http.get("/admin/users", headers=admin)).status_code == 200
        user = await register(http)
        changed = run_cli(
            ["users", "set-role", user["username"], "auditor", "customer"],
            tmp_path,
            DATABASE_URL=database_url,
        )
        assert changed.returncode == 0, changed.stderr
        assert "customer, auditor" in changed.stdout
        changes = await services.identity.users.role_changes(user["id"])
        assert changes[-1]["new_roles"] == "customer,auditor"
        assert changes[-1]["changed_by"].startswith("cli:")
    listed = run_cli(["users", "list"], tmp_path, DATABASE_URL=database_url, COLUMNS="200")
    assert listed.returncode == 0, listed.stderr
    assert "root" in listed.stdout
    assert user["username"] in listed.stdout
    unknown = run_cli(["users", "set-role", "ghost", "admin"], tmp_path, DATABASE_URL=database_url)
    assert unknown.returncode == 1
    bad_role = run_cli(["users", "set-role", "root", "king"], tmp_path, DATABASE_URL=database_url)
    assert bad_role.returncode == 1
    assert "roles" in bad_role.stderr


REFRESH_SECRET = "bQ7-wE3rT9yU1iO5pA8sD2fG6hJ0kL4zX_cV"


@pytest.mark.parametrize(
    ("jwt_secret", "problem"),
    [
        (None, "JWT_SECRET is missing"),
        ("short-secret", "JWT_SECRET is shorter than 32 bytes"),
        ("default-secret", "JWT_SECRET is a well-known default"),
        ("ab" * 20, "JWT_SECRET has fewer than 16 different characters"),
        (REFRESH_SECRET, "JWT_SECRET and REFRESH_TOKEN_SECRET are the same"),
    ],
)
def test_serve_refuses_weak_secrets_in_production(
    tmp_path: Path, jwt_secret: str | None, problem: str
) -> None:
    env = {
        "BANKING_ENV": "production",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'banking.db'}",
        "REFRESH_TOKEN_SECRET": REFRESH_SECRET,
        "PORT": "1",
    }
    if jwt_secret is not None:
        env["JWT_SECRET"] = jwt_secret
    base = {k: v for k, v in os.environ.items() if k not in ("JWT_SECRET",)}
    result = subprocess.run(
        [sys.executable, "-m", "banking_es", "serve"],
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert problem in lines[0]
    assert not (tmp_path / "data").exists()  # nothing generated in production
