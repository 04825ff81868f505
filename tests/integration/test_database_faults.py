"""PostgreSQL goes away in the middle of writes: 503s while it is gone, no corruption, and the
service recovers by itself when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from tests.api_support import app_client, running_services
from tests.auth import sign_up
from tests.tcp_proxy import TcpProxy

from banking_es.bootstrap import Services

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy("127.0.0.1", 5432).start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def services(pg_url: str, proxy: TcpProxy, tmp_path: Path) -> AsyncIterator[Services]:
    parts = urlsplit(pg_url)
    through_proxy = urlunsplit(parts._replace(netloc=f"postgres@127.0.0.1:{proxy.port}"))
    async with running_services(tmp_path, through_proxy, projection_poll_interval_ms=20) as built:
        yield built


async def test_writes_answer_503_while_the_database_is_gone_and_recover_after(
    services: Services, proxy: TcpProxy
) -> None:
    async with app_client(services) as api:
        api.headers.update(await sign_up(api))
        created = await api.post("/accounts", json={"owner_name": "Ada", "initial_balance": 0})
        assert created.status_code == 201
        account = created.json()["id"]
        acknowledged = Decimal(0)

        async def deposit(amount: str) -> httpx.Response:
            return await api.post(f"/accounts/{account}/deposit", json={"amount": amount})

        for _ in range(5):
            assert (await deposit("1.00")).status_code == 200
            acknowledged += 1

        await proxy.stop()
        outage = [await deposit("100.00") for _ in range(3)]
        assert {r.status_code for r in outage} == {503}
        for response in outage:
            body = response.json()
            assert body["code"] == "service_unavailable"
            assert response.headers["retry-after"] == "1"
            assert response.headers["content-type"].startswith("application/problem+json")
        ready = await api.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["components"]["event_store"]["status"] == "down"

        await proxy.resume()
        recovered = None
        for _ in range(50):
            response = await deposit("2.00")
            if response.status_code == 200:
                recovered = response
                acknowledged += 2
                break
            assert response.status_code == 503
            await asyncio.sleep(0.1)
        assert recovered is not None, "the service did not recover after the database came back"
        assert (await api.get("/health/ready")).status_code == 200

        # Nothing acknowledged was lost and nothing refused was applied.
        state = (await api.get(f"/accounts/{account}")).json()
        events = (await api.get(f"/accounts/{account}/events", params={"limit": 100})).json()
        deposits = [
            Decimal(e["data"]["amount"]) for e in events["data"] if e["type"] == "MoneyDeposited"
        ]
        assert Decimal(state["balance"]) == acknowledged == sum(deposits)
        assert state["version"] == len(events["data"]) == 7
