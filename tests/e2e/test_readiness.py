"""/health/ready with each dependency healthy, lagging, hanging or stopped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from tests.api_support import running_app
from tests.auth import bearer, login, register, sign_up
from tests.tcp_proxy import TcpProxy

from banking_es.observability.health import HealthChecks

#: API.md: "Answers within 1 s even when a component hangs".
LIMIT = 1.0

#: Each check has 0.6 s (`CHECK_TIMEOUT`): another test's load could make a healthy one "down".
pytestmark = pytest.mark.alone


async def timed_ready(client: httpx.AsyncClient) -> tuple[int, dict[str, Any], float]:
    started = time.perf_counter()
    response = await client.get("/health/ready")
    return response.status_code, response.json(), time.perf_counter() - started


# ---- the registry on its own ----------------------------------------------------------------


async def test_a_hanging_check_is_down_in_time_and_only_critical_ones_make_the_service_down() -> (
    None
):
    checks = HealthChecks(timeout=0.2)

    async def ok() -> dict[str, Any]:
        return {"status": "ok"}

    async def hangs() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {"status": "ok"}

    async def broken() -> dict[str, Any]:
        raise ConnectionRefusedError("connection refused")

    checks.add("store", ok, critical=True)
    checks.add("cache", hangs)
    checks.add("broker", broken)
    started = time.perf_counter()
    readiness = await checks.run()
    assert time.perf_counter() - started < 0.5
    assert readiness.status == "degraded"
    assert readiness.http_status == 200
    assert readiness.components["cache"] == {"status": "down", "error": "no answer within 0.2s"}
    assert readiness.components["broker"] == {"status": "down", "error": "connection refused"}

    checks.add("store", hangs, critical=True)
    readiness = await checks.run()
    assert readiness.status == "down"
    assert readiness.http_status == 503


async def test_a_check_answering_nonsense_counts_as_down() -> None:
    checks = HealthChecks()

    async def odd() -> dict[str, Any]:
        return {"status": "fine"}

    checks.add("odd", odd)
    assert (await checks.run()).components["odd"]["status"] == "down"


async def test_a_check_whose_cleanup_hangs_still_answers_in_time() -> None:
    """asyncpg may hang while releasing a connection to a dead server: do not wait for it."""
    checks = HealthChecks(timeout=0.1)

    async def stubborn() -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(asyncio.sleep(1.0))
        return {"status": "ok"}

    checks.add("db", stubborn, critical=True)
    started = time.perf_counter()
    assert (await checks.run()).status == "down"
    assert time.perf_counter() - started < 0.5


# ---- the app on a real database -------------------------------------------------------------


async def test_ready_reports_every_component_with_details(tmp_path: Path) -> None:
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 'r.db'}") as (client, _services):
        client.headers.update(await sign_up(client))  # users are not events: head stays 0
        await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "1"})
        status, body, took = await timed_ready(client)
        assert status == 200
        assert body["status"] == "ok"
        assert set(body["components"]) == {"event_store", "projections", "outbox", "cache"}
        store = body["components"]["event_store"]
        assert store == {"status": "ok", "backend": "sqlite", "head_position": 1}
        assert set(body["components"]["projections"]["projections"]) == {
            "account_summaries",
            "transactions",
        }
        assert {"backlog", "oldest_age_seconds"} <= set(body["components"]["outbox"])
        assert took < LIMIT


async def test_lagging_projections_and_an_old_outbox_make_it_degraded_not_down(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    async with running_app(
        tmp_path, url, projection_lag_degraded=0.05, outbox_age_degraded=0.05
    ) as (client, services):
        user = await register(client)
        client.headers.update(bearer((await login(client, user["username"]))["access_token"]))
        await services.projections.stop()
        await services.relay.stop()
        await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "1"})
        # Without Kafka events do not go through the outbox (nothing would read them there);
        # notifications do: a password-reset email.
        assert (await services.store.outbox_stats()).backlog == 0
        queued = await client.post("/auth/reset-password", json={"email": user["email"]})
        assert queued.status_code == 202
        await asyncio.sleep(0.2)
        status, body, _ = await timed_ready(client)
        assert status == 200
        assert body["status"] == "degraded"
        assert body["components"]["event_store"]["status"] == "ok"
        assert body["components"]["projections"]["status"] == "degraded"
        lag = body["components"]["projections"]["projections"]["transactions"]
        assert lag["lag_events"] == 1
        assert lag["lag_seconds"] >= 0.2
        assert body["components"]["outbox"]["status"] == "degraded"
        assert body["components"]["outbox"]["backlog"] == 1

        await services.projections.start()
        services.relay.start()
        for _ in range(100):
            status, body, _ = await timed_ready(client)
            if body["status"] == "ok":
                break
            await asyncio.sleep(0.05)
        assert body["status"] == "ok", body


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


@pytest.mark.postgres
@pytest.mark.slow
async def test_postgres_hanging_then_stopped_then_back(pg_url: str, tmp_path: Path) -> None:
    upstream = urlsplit(pg_url)
    proxy = await TcpProxy(upstream.hostname or "127.0.0.1", upstream.port or 5432).start()
    try:
        async with running_app(tmp_path, _via(pg_url, proxy.port)) as (client, _services):
            client.headers.update(await sign_up(client))
            status, body, _ = await timed_ready(client)
            assert (status, body["status"]) == (200, "ok")

            proxy.hang()  # connections open, nothing answers
            for _ in range(3):  # also while earlier checks are still stuck in the driver
                status, body, took = await timed_ready(client)
                assert took < LIMIT, took
                assert status == 503
                assert body["status"] == "down"
                assert body["components"]["event_store"]["status"] == "down"
                assert "no answer within" in body["components"]["event_store"]["error"]

            await proxy.stop()  # the port is closed: connection refused
            status, body, took = await timed_ready(client)
            assert took < LIMIT, took
            assert status == 503
            assert body["components"]["event_store"]["status"] == "down"

            await proxy.resume()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                status, body, took = await timed_ready(client)
                assert took < LIMIT, took
                if status == 200:
                    break
                await asyncio.sleep(0.2)
            assert (status, body["status"]) == (200, "ok"), body
            deposit = await client.post(
                "/accounts", json={"owner_name": "Back", "initial_balance": "1"}
            )
            assert deposit.status_code == 201
    finally:
        await proxy.close()


@pytest.mark.postgres
async def test_postgres_events_table_locked_makes_it_down_in_time(
    pg_url: str, tmp_path: Path
) -> None:
    async with running_app(tmp_path, pg_url) as (client, _services):
        assert (await client.get("/health/ready")).status_code == 200
        blocker = await asyncpg.connect(pg_url)
        try:
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            status, body, took = await timed_ready(client)
            assert took < LIMIT, took
            assert status == 503
            assert body["components"]["event_store"]["status"] == "down"
            await transaction.rollback()
        finally:
            await blocker.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, body, _ = await timed_ready(client)
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert (status, body["status"]) == (200, "ok"), body


async def test_sqlite_database_gone_makes_it_down(tmp_path: Path) -> None:
    """A store whose database fails every query (closed under it) answers 503 quickly."""
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 'g.db'}") as (client, services):
        await services.projections.stop()
        await services.relay.stop()
        await services.db.close()
        status, body, took = await timed_ready(client)
        assert took < LIMIT
        assert status == 503
        assert body["components"]["event_store"]["status"] == "down"
