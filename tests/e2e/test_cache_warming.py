"""Cache warming at start-up: recently active accounts are loaded in the background."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest
from tests.api_support import running_app
from tests.auth import sign_up

#: Cheap Argon2 for the customer each test signs up (identity is always on).


async def wait_for_ready(http: httpx.AsyncClient, check: object, timeout: float = 10) -> dict:  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await http.get("/health/ready")).json()
        if callable(check) and check(body):
            return body  # type: ignore[no-any-return]
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


async def test_a_new_process_warms_its_cache_with_the_most_recently_active_accounts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(tmp_path) as (http, _):
        http.headers.update(await sign_up(http))
        ids = []
        for name in ("A", "B", "C"):
            created = await http.post(
                "/accounts", json={"owner_name": name, "initial_balance": "1"}
            )
            ids.append(created.json()["id"])
        await http.post(f"/accounts/{ids[0]}/deposit", json={"amount": "1"})
        await wait_for_ready(
            http,
            lambda b: all(
                p["lag_events"] == 0 for p in b["components"]["projections"]["projections"].values()
            ),
        )
    with caplog.at_level(logging.INFO, logger="banking_es.cache"):
        async with running_app(tmp_path, cache_warm_accounts=2) as (http, services):
            body = await wait_for_ready(
                http, lambda b: b["components"]["cache"]["warming"]["state"] == "done"
            )
            warming = body["components"]["cache"]["warming"]
            assert (warming["loaded"], warming["total"], warming["failed"]) == (2, 2, 0)
            assert body["components"]["cache"]["l1_entries"] == 2
            assert services.cache.local.version_of(ids[0]) == 2  # the most recent first
            assert services.cache_and_redis.get("cache_warmed") == 2
    assert any("cache warming done: 2 accounts" in r.getMessage() for r in caplog.records)


async def test_warming_can_be_turned_off(tmp_path: Path) -> None:
    async with running_app(tmp_path, cache_warm_accounts=0) as (http, _):
        body = (await http.get("/health/ready")).json()
        assert body["components"]["cache"]["warming"]["state"] == "off"
        assert body["status"] == "ok"
