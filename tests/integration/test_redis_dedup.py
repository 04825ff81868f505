"""Command de-duplication: the Redis fast path in front of the durable Idempotency-Key rows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.api_support import running_app
from tests.auth import sign_up
from tests.e2e.http_support import open_account
from tests.redis_support import SHARED_REDIS_URL, redis_prefix  # noqa: F401

from banking_es.application.errors import ServiceUnavailable
from banking_es.bootstrap import Services

#: Each Redis call has 100 ms (`REDIS_TIMEOUT_MS`); a slower one falls back to the database,
#: which the tests count: another test's load must not slow Redis's answers.
pytestmark = pytest.mark.alone


def count_durable_lookups(services: Services, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = services.store.get_idempotency

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(*args, **kwargs)

    monkeypatch.setattr(services.store, "get_idempotency", counting)
    return calls


@pytest.mark.redis
async def test_a_burst_of_retries_is_answered_from_redis_without_the_database(
    tmp_path: Path,
    redis_prefix: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {"redis_url": SHARED_REDIS_URL, "redis_key_prefix": redis_prefix}
    async with running_app(tmp_path, **settings) as (http, services):
        http.headers.update(await sign_up(http))  # the client sends its token from then on
        account_id = (await open_account(http, "Ada", "0"))["id"]
        lookups = count_durable_lookups(services, monkeypatch)
        key = {"Idempotency-Key": "dep-1"}
        first = await http.post(
            f"/accounts/{account_id}/deposit", json={"amount": "5"}, headers=key
        )
        assert first.status_code == 200
        assert lookups[0] == 1
        retries = await asyncio.gather(
            *(
                http.post(f"/accounts/{account_id}/deposit", json={"amount": "5"}, headers=key)
                for _ in range(20)
            )
        )
        assert {r.status_code for r in retries} == {200}
        assert all(r.headers["idempotent-replayed"] == "true" for r in retries)
        assert all(r.content == first.content for r in retries)
        assert lookups[0] == 1  # none of the retries reached the database
        assert services.cache_and_redis.get("dedup", "replayed") == 20
        other = await http.post(
            f"/accounts/{account_id}/deposit", json={"amount": "6"}, headers=key
        )
        assert other.status_code == 422
        assert other.json()["code"] == "idempotency_key_reused"
        assert lookups[0] == 1
        account = (await http.get(f"/accounts/{account_id}")).json()
        assert (account["balance"], account["version"]) == ("5.00", 2)


@pytest.mark.redis
async def test_duplicates_sent_at_once_execute_once(
    tmp_path: Path,
    redis_prefix: str,  # noqa: F811
) -> None:
    settings = {"redis_url": SHARED_REDIS_URL, "redis_key_prefix": redis_prefix}
    async with running_app(tmp_path, **settings) as (http, _):
        http.headers.update(await sign_up(http))  # the client sends its token from then on
        account_id = (await open_account(http, "Ada", "0"))["id"]
        key = {"Idempotency-Key": "dep-2"}
        answers = await asyncio.gather(
            *(
                http.post(f"/accounts/{account_id}/deposit", json={"amount": "1"}, headers=key)
                for _ in range(10)
            )
        )
        codes = sorted(r.status_code for r in answers)
        assert set(codes) <= {200, 409}
        assert codes.count(200) >= 1
        for answer in answers:
            if answer.status_code == 409:
                assert answer.json()["code"] == "idempotency_in_flight"
        account = (await http.get(f"/accounts/{account_id}")).json()
        assert (account["balance"], account["version"]) == ("1.00", 2)


@pytest.mark.redis
async def test_outcomes_without_events_are_remembered_and_failures_are_released(
    tmp_path: Path,
    redis_prefix: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = {"redis_url": SHARED_REDIS_URL, "redis_key_prefix": redis_prefix}
    async with running_app(tmp_path, **settings) as (http, services):
        http.headers.update(await sign_up(http))  # the client sends its token from then on
        account_id = (await open_account(http, "Ada", "0"))["id"]
        key = {"Idempotency-Key": "wd-1"}
        refused = await http.post(
            f"/accounts/{account_id}/withdraw", json={"amount": "1"}, headers=key
        )
        assert refused.status_code == 422
        again = await http.post(
            f"/accounts/{account_id}/withdraw", json={"amount": "1"}, headers=key
        )
        assert again.status_code == 422
        assert again.headers["idempotent-replayed"] == "true"

        original = services.accounts.deposit
        failures = [1]

        async def flaky(*args: Any) -> Any:
            if failures[0]:
                failures[0] -= 1
                raise ServiceUnavailable("the database is away")
            return await original(*args)

        monkeypatch.setattr(services.accounts, "deposit", flaky)
        key = {"Idempotency-Key": "dep-3"}
        failed = await http.post(
            f"/accounts/{account_id}/deposit", json={"amount": "2"}, headers=key
        )
        assert failed.status_code == 503
        retried = await http.post(
            f"/accounts/{account_id}/deposit", json={"amount": "2"}, headers=key
        )
        assert retried.status_code == 200  # the claim of the failed try was released
        assert "idempotent-replayed" not in retried.headers
        assert retried.json()["balance"] == "2.00"


async def test_without_redis_the_durable_records_decide(tmp_path: Path) -> None:
    settings = {"redis_url": "redis://127.0.0.1:1/0", "redis_timeout_ms": 50}
    async with running_app(tmp_path, **settings) as (http, services):
        http.headers.update(await sign_up(http))  # the client sends its token from then on
        account_id = (await open_account(http, "Ada", "0"))["id"]
        key = {"Idempotency-Key": "dep-4"}
        answers = [
            await http.post(f"/accounts/{account_id}/deposit", json={"amount": "3"}, headers=key)
            for _ in range(3)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [a.headers.get("idempotent-replayed") for a in answers] == [None, "true", "true"]
        assert (await http.get(f"/accounts/{account_id}")).json()["balance"] == "3.00"
        assert services.cache_and_redis.get("dedup", "unavailable") >= 1
