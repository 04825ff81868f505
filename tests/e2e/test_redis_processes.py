"""Two real server processes sharing Redis: cache invalidations cross processes, and reads
stay correct whatever Redis says."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.auth import PASSWORD
from tests.redis_support import SHARED_REDIS_URL, delete_prefix, unique_prefix
from tests.server import ServerProcess

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    prefix = unique_prefix()
    url = f"sqlite:///{tmp_path / 'banking.db'}"
    env = {"REDIS_URL": SHARED_REDIS_URL, "REDIS_KEY_PREFIX": prefix}
    one = ServerProcess(url, workers=1, workdir=tmp_path, **env).start()
    try:
        two = ServerProcess(url, workers=1, workdir=tmp_path, **env).start()
        try:
            yield one, two
        finally:
            two.stop()
    finally:
        one.stop()
        delete_prefix(SHARED_REDIS_URL, prefix)


def cache_component(base_url: str) -> dict[str, object]:
    body = httpx.get(f"{base_url}/health/ready", timeout=5).json()
    component: dict[str, object] = body["components"]["cache"]
    assert body["components"]["redis"]["status"] == "ok"
    return component


def sign_up_over_http(http: httpx.Client) -> dict[str, str]:
    """Register and log in a customer through the API; its Authorization header."""
    name = f"redis_{uuid.uuid4().hex[:10]}"
    registered = http.post(
        "/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
    )
    assert registered.status_code == 201, registered.text
    pair = http.post("/auth/login", json={"username": name, "password": PASSWORD}).json()
    return {"Authorization": f"Bearer {pair['access_token']}"}


def wait_until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_write_on_one_process_invalidates_the_cache_of_the_other(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    one, two = servers
    wait_until(lambda: all(cache_component(s.url)["invalidation_listener"] for s in servers))
    with (
        httpx.Client(base_url=one.url, timeout=10) as a,
        httpx.Client(base_url=two.url, timeout=10) as b,
    ):
        headers = sign_up_over_http(a)
        a.headers.update(headers)
        b.headers.update(headers)  # the same user on both servers (one database)
        account_id = a.post("/accounts", json={"owner_name": "X", "initial_balance": "1"}).json()[
            "id"
        ]
        assert b.get(f"/accounts/{account_id}").json()["version"] == 1  # `two` caches it
        before = int(str(cache_component(two.url)["invalidations_received"]))
        assert a.post(f"/accounts/{account_id}/deposit", json={"amount": "2"}).status_code == 200
        wait_until(lambda: int(str(cache_component(two.url)["invalidations_received"])) > before)
        seen = b.get(f"/accounts/{account_id}").json()
        assert (seen["balance"], seen["version"]) == ("3.00", 2)
        # and the other way round, with writes on both
        assert b.post(f"/accounts/{account_id}/withdraw", json={"amount": "1"}).status_code == 200
        assert a.post(f"/accounts/{account_id}/deposit", json={"amount": "5"}).status_code == 200
        for client in (a, b):
            final = client.get(f"/accounts/{account_id}").json()
            assert (final["balance"], final["version"]) == ("7.00", 4)
