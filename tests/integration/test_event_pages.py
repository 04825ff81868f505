"""Cached pages of the audit log: full pages come from the cache, the last page from the store."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.api_support import running_app
from tests.auth import sign_up
from tests.redis_support import SHARED_REDIS_URL, redis_prefix  # noqa: F401

#: Cheap Argon2 for the customer each test signs up (identity is always on).


async def history(http: httpx.AsyncClient, account_id: str, limit: int = 2) -> list[dict]:  # type: ignore[type-arg]
    events: list[dict] = []  # type: ignore[type-arg]
    cursor = None
    while True:
        params: dict[str, object] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"/accounts/{account_id}/events", params=params)).json()
        events.extend(page["data"])
        if not page["has_more"]:
            return events
        cursor = page["next_cursor"]


async def test_full_pages_are_cached_and_new_events_always_show(tmp_path: Path) -> None:
    async with running_app(tmp_path) as (http, services):
        http.headers.update(await sign_up(http))
        account_id = (
            await http.post("/accounts", json={"owner_name": "A", "initial_balance": "0"})
        ).json()["id"]
        for _ in range(4):
            await http.post(f"/accounts/{account_id}/deposit", json={"amount": "1"})
        first = await history(http, account_id)
        assert [e["version"] for e in first] == [1, 2, 3, 4, 5]
        hits = services.cache_and_redis.get("page_cache_hits", "l1")
        second = await history(http, account_id)
        assert second == first
        assert services.cache_and_redis.get("page_cache_hits", "l1") == hits + 2  # 2 full pages
        await http.post(f"/accounts/{account_id}/deposit", json={"amount": "1"})
        third = await history(http, account_id)
        assert [e["version"] for e in third] == [1, 2, 3, 4, 5, 6]


@pytest.mark.redis
async def test_another_process_reads_full_pages_from_redis(
    tmp_path: Path,
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = {"redis_url": SHARED_REDIS_URL, "redis_key_prefix": redis_prefix}
    async with running_app(tmp_path, **settings) as (one, _):
        owner = await sign_up(one)
        one.headers.update(owner)
        account_id = (
            await one.post("/accounts", json={"owner_name": "A", "initial_balance": "0"})
        ).json()["id"]
        for _ in range(3):
            await one.post(f"/accounts/{account_id}/deposit", json={"amount": "1"})
        expected = await history(one, account_id)
    async with running_app(tmp_path, **settings) as (two, services):
        # the same database and data_dir (so the same signing secret): the owner's token holds
        two.headers.update(owner)
        assert await history(two, account_id) == expected
        assert services.cache_and_redis.get("page_cache_hits", "l2") == 1
