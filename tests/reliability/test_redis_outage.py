"""Redis stopped and started again in the middle of a load: no request fails, no money is
lost or doubled, readiness says `degraded` meanwhile, and the service recovers by itself."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from tests.api_support import running_app
from tests.auth import sign_up
from tests.e2e.observability_support import scrape, value
from tests.redis_support import RedisServer, private_redis  # noqa: F401

#: `alone`: the breaker half-opens 0.5 s after it opened, and the test reads it open between
#: two requests; another test's load could stretch that gap past the 0.5 s.
pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.alone, pytest.mark.timeout(120)]


async def ready(http: httpx.AsyncClient) -> dict[str, object]:
    response = await http.get("/health/ready")
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


async def wait_for(http: httpx.AsyncClient, redis_status: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await ready(http)
        components = body["components"]
        assert isinstance(components, dict)
        if components["redis"]["status"] == redis_status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"redis never became {redis_status}: {body}")


async def test_stopping_and_restarting_redis_under_load_fails_no_request(
    tmp_path: Path,
    private_redis: RedisServer,  # noqa: F811
) -> None:
    settings = {
        "redis_url": private_redis.url,
        "redis_timeout_ms": 50,
        "redis_breaker_failures": 3,
        "redis_breaker_reset": 0.5,
        "rate_limit_enabled": True,
        "argon2_time_cost": 1,
        "argon2_memory_cost": 8,
        "rate_limit_burst": 0,
        "rate_limit_per_minute": 1_000_000,
        "rate_limit_per_ip_per_minute": 1_000_000,
    }
    async with running_app(tmp_path, **settings) as (http, services):
        http.headers.update(await sign_up(http))
        accounts = []
        for _ in range(4):
            created = await http.post("/accounts", json={"owner_name": "L", "initial_balance": "0"})
            assert created.status_code == 201
            accounts.append(created.json()["id"])
        statuses: Counter[int] = Counter()
        deposited: Counter[str] = Counter()
        keys = itertools.count()
        running = True

        async def worker(index: int) -> None:
            while running:
                account_id = accounts[index % len(accounts)]
                key = f"k-{next(keys)}"
                response = await http.post(
                    f"/accounts/{account_id}/deposit",
                    json={"amount": "1.00"},
                    headers={"Idempotency-Key": key, "x-client-id": f"c{index}"},
                )
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    deposited[account_id] += 1
                read = await http.get(f"/accounts/{account_id}")
                statuses[read.status_code] += 1

        workers = [asyncio.create_task(worker(i)) for i in range(8)]
        try:
            await asyncio.sleep(1.0)
            await wait_for(http, "ok")
            private_redis.stop()
            await wait_for(http, "degraded")
            overall = await ready(http)
            assert overall["status"] == "degraded"
            assert value(await scrape(http), "banking_es_redis_breaker_open") == 1
            await asyncio.sleep(1.5)  # load keeps running on L1, memory limits and the database
            during = sum(statuses.values())
            private_redis.start()
            await wait_for(http, "ok")
            await asyncio.sleep(1.0)
        finally:
            running = False
            await asyncio.gather(*workers)
        assert set(statuses) == {200}, statuses
        assert sum(statuses.values()) > during > 100
        for account_id in accounts:
            body = (await http.get(f"/accounts/{account_id}")).json()
            assert Decimal(body["balance"]) == deposited[account_id]
            assert body["version"] == deposited[account_id] + 1
        metrics = services.cache_and_redis
        assert metrics.get("redis_breaker_transitions", "open") >= 1
        assert metrics.get("redis_breaker_transitions", "closed") >= 1
        assert metrics.breaker_state == "closed"
        exposed = await scrape(http)  # and in Prometheus
        assert value(exposed, "banking_es_redis_breaker_open") == 0
        opened = value(exposed, "banking_es_redis_breaker_transitions_total", state="open")
        assert opened == metrics.get("redis_breaker_transitions", "open")
        assert metrics.total("redis_rejected") > 0  # the open breaker spared those calls
        assert (await ready(http))["status"] == "ok"
