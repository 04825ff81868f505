"""Forwarding between two instances (in one process, each with its own services and app):
a command for an account whose shard the other instance owns runs there and its answer comes
back unchanged, with `x-shard` and `x-served-by`; a transfer runs on its source's owner; a
forged hop header is 401; a forwarded request that reaches a non-owner is 503, never
forwarded again; the owner rate-limits it under the client's address; an owner that refuses
the connection or does not answer in time is a 503 with `Retry-After`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api_support import make_settings
from tests.auth import admin_headers, sign_up
from tests.server import free_port

from banking_es.api.app import create_app
from banking_es.bootstrap import Services, build_services
from banking_es.identity.hops import HOP_HEADER, Hop, sign_hop
from banking_es.shards.forwarder import Answer, HttpForwarder

pytestmark = pytest.mark.postgres

SECRET = "s" * 32
Pair = tuple[Services, Services, httpx.AsyncClient, httpx.AsyncClient]


def _client(services: Services) -> httpx.AsyncClient:
    app = create_app(services.settings, services)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


class AppForwarder:
    """The other instance's app in place of the network (a `Forwarder`)."""

    def __init__(self, app: Any) -> None:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1))
        self.client = httpx.AsyncClient(transport=transport)

    async def forward(
        self, method: str, url: str, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> Answer:
        answer = await self.client.request(method, url, content=body, headers=list(headers))
        return answer.status_code, answer.headers.raw, answer.content

    async def aclose(self) -> None:
        await self.client.aclose()


@asynccontextmanager
async def _pair(tmp_path: Path, pg_url: str, **b_options: Any) -> AsyncIterator[Pair]:
    """Instances "a" and "b" (`b_options`: settings of "b" alone), started together."""
    built = []
    for name, port, options in (("a", free_port(), {}), ("b", free_port(), b_options)):
        settings = make_settings(
            tmp_path / name, pg_url, instance_id=name, instance_url=f"http://127.0.0.1:{port}",
            cluster_secret=SECRET, shard_lease_ttl=1.0, shard_count=4, jwt_secret="j" * 32,
            refresh_token_secret="r" * 32, **options,
        )  # fmt: skip
        built.append(await build_services(settings))
    a, b = built
    await asyncio.gather(a.start(), b.start())
    for services in (a, b):  # both see the whole map
        assert services.sharding is not None
        await services.sharding.manager.step()
    http_a, http_b = _client(a), _client(b)
    # Instead of the network: each instance's forwarding client reaches the other's app.
    for services, other in ((a, b), (b, a)):
        assert services.sharding is not None
        await services.sharding.http.aclose()
        services.sharding.http = AppForwarder(create_app(other.settings, other))
    try:
        yield a, b, http_a, http_b
    finally:
        for client in (http_a, http_b):
            await client.aclose()
        for services in (a, b):
            await services.close()


@pytest.fixture
async def pair(tmp_path: Path, pg_url: str) -> AsyncIterator[Pair]:
    async with _pair(tmp_path, pg_url) as running:
        yield running


async def _account_on(
    http: httpx.AsyncClient, headers: dict[str, str], services: Services, owner: str
) -> str:
    """A new account of a shard `owner` owns (opened where it arrives)."""
    assert services.sharding is not None
    manager = services.sharding.manager
    for _ in range(50):
        opened = await http.post(
            "/accounts", json={"owner_name": "Ann", "initial_balance": "100.00"}, headers=headers
        )
        assert opened.status_code == 201, opened.text
        account_id: str = opened.json()["id"]
        shard = manager.shard_of(account_id)
        mine = shard in manager.owned
        if (owner == manager.instance_id) == mine:
            return account_id
    raise AssertionError(f"no account landed on a shard of {owner}")


async def test_commands_run_on_their_shards_owner(pair: Pair) -> None:
    a, b, http_a, http_b = pair
    assert a.sharding is not None
    assert b.sharding is not None
    assert len(a.sharding.manager.owned) == len(b.sharding.manager.owned) == 2
    headers = await sign_up(http_a)
    on_b = await _account_on(http_a, headers, a, "b")
    on_a = await _account_on(http_a, headers, a, "a")
    shard_b = str(a.sharding.manager.shard_of(on_b))

    deposited = await http_a.post(
        f"/accounts/{on_b}/deposit", json={"amount": "5.00"}, headers=headers
    )
    assert deposited.status_code == 200, deposited.text
    assert deposited.headers["x-served-by"] == "b"
    assert deposited.headers["x-shard"] == shard_b
    assert deposited.json()["balance"] == "105.00"
    assert len(deposited.headers.get_list("x-request-id")) == 1

    local = await http_b.post(
        f"/accounts/{on_b}/withdraw", json={"amount": "1.00"}, headers=headers
    )
    assert (local.status_code, local.headers["x-served-by"]) == (200, "b")
    assert local.json()["version"] == 3

    moved = await http_a.post(
        "/transfers",
        json={"from_account_id": on_b, "to_account_id": on_a, "amount": "4.00"},
        headers=headers,
    )
    assert moved.status_code == 201, moved.text
    assert (moved.headers["x-served-by"], moved.headers["x-shard"]) == ("b", shard_b)
    back = await http_b.post(
        "/transfers",
        json={"from_account_id": on_a, "to_account_id": on_b, "amount": "1.00"},
        headers=headers,
    )
    assert (back.status_code, back.headers["x-served-by"]) == (201, "a")
    # Refusals of the owner come back unchanged too.
    refused = await http_a.post(
        f"/accounts/{on_b}/withdraw", json={"amount": "1000.00"}, headers=headers
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["x-served-by"] == "b"
    read = await http_a.get(f"/accounts/{on_b}", headers=headers)
    assert read.json()["balance"] == "101.00"


async def test_holds_are_placed_captured_and_voided_on_their_accounts_owner(pair: Pair) -> None:
    a, _, http_a, http_b = pair
    assert a.sharding is not None
    headers = await sign_up(http_a)
    on_b = await _account_on(http_a, headers, a, "b")
    on_a = await _account_on(http_a, headers, a, "a")
    shard_b = str(a.sharding.manager.shard_of(on_b))

    placed = await http_a.post(
        f"/accounts/{on_b}/holds", json={"amount": "10.00", "to_account_id": on_a}, headers=headers
    )
    assert placed.status_code == 201, placed.text
    assert (placed.headers["x-served-by"], placed.headers["x-shard"]) == ("b", shard_b)
    hold = placed.json()["id"]
    # the hold's id names no account: the forwarder finds it by the hold's event
    captured = await http_a.post(f"/holds/{hold}/capture", json={"amount": "4"}, headers=headers)
    assert captured.status_code == 200, captured.text
    assert (captured.headers["x-served-by"], captured.headers["x-shard"]) == ("b", shard_b)
    second = await http_b.post(f"/accounts/{on_b}/holds", json={"amount": 1}, headers=headers)
    voided = await http_a.post(f"/holds/{second.json()['id']}/void", headers=headers)
    assert (voided.status_code, voided.headers["x-served-by"]) == (200, "b")
    # an unknown or malformed hold runs where it arrives, which answers it
    unknown = await http_a.post("/holds/00000000-0000-4000-8000-000000000000/void", headers=headers)
    assert unknown.status_code == 404, unknown.text
    malformed = await http_b.post("/holds/nope/capture", headers=headers)
    assert malformed.status_code == 400, malformed.text
    read = await http_a.get(f"/accounts/{on_a}", headers=headers)
    assert read.json()["balance"] == "104.00"


async def test_the_admins_account_changes_run_on_the_shards_owner(pair: Pair) -> None:
    a, _, http_a, _ = pair
    assert a.sharding is not None
    headers = await sign_up(http_a)
    on_b = await _account_on(http_a, headers, a, "b")
    admin = await admin_headers(http_a, a)
    path = f"/admin/accounts/{on_b}"
    limit = await http_a.patch(path, json={"overdraft_limit": "25"}, headers=admin)
    frozen = await http_a.post(f"{path}/freeze", json={"reason": "kyc"}, headers=admin)
    thawed = await http_a.post(f"{path}/unfreeze", headers=admin)
    for answer in (limit, frozen, thawed):
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-served-by"] == "b"
    assert (limit.json()["available"], frozen.json()["status"]) == ("125.00", "frozen")
    assert (thawed.json()["status"], thawed.json()["version"]) == ("open", 4)


async def test_a_forged_or_misrouted_hop_is_refused(pair: Pair) -> None:
    a, _, http_a, _ = pair
    assert a.sharding is not None
    headers = await sign_up(http_a)
    on_b = await _account_on(http_a, headers, a, "b")
    on_a = await _account_on(http_a, headers, a, "a")
    now = datetime.now(UTC)

    def hop(account_id: str, secret: str, body: bytes) -> dict[str, Any]:
        target = f"/accounts/{account_id}/deposit"
        value = sign_hop(
            secret, Hop("b", "10.0.0.9", None), method="POST", target=target, body=body, now=now
        )
        return {**headers, HOP_HEADER: value, "content-type": "application/json"}

    body = b'{"amount": "1.00"}'
    forged = await http_a.post(
        f"/accounts/{on_a}/deposit", content=body, headers=hop(on_a, "x" * 32, body)
    )
    assert forged.status_code == 401, forged.text
    # Signed, but "a" does not own the shard: one hop only, so 503 and no second forward.
    misrouted = await http_a.post(
        f"/accounts/{on_b}/deposit", content=body, headers=hop(on_b, SECRET, body)
    )
    assert misrouted.status_code == 503, misrouted.text
    assert misrouted.headers["retry-after"] == "1"
    # Signed and owned: executed here.
    good = await http_a.post(
        f"/accounts/{on_a}/deposit", content=body, headers=hop(on_a, SECRET, body)
    )
    assert (good.status_code, good.headers["x-served-by"]) == (200, "a")
    read = await http_a.get(f"/accounts/{on_b}", headers=headers)
    assert read.json()["balance"] == "100.00"


async def test_admin_shards_shows_the_map_and_a_rebalance_runs_on_request(pair: Pair) -> None:
    a, _, http_a, _ = pair
    customer = await sign_up(http_a)
    assert (await http_a.get("/admin/shards", headers=customer)).status_code == 403
    auditor = await admin_headers(http_a, a, ("auditor",))
    report = (await http_a.get("/admin/shards", headers=auditor)).json()
    assert report["shard_count"] == 4
    owners = {s["shard"]: s["owner"] for s in report["shards"] if s["status"] == "assigned"}
    assert sorted(owners) == [0, 1, 2, 3]
    assert {i["id"]: sorted(i["shards"]) for i in report["instances"]} == {
        name: sorted(s for s, o in owners.items() if o == name) for name in ("a", "b")
    }
    assert (await http_a.post("/admin/shards/rebalance", headers=auditor)).status_code == 403
    admin = await admin_headers(http_a, a)
    rebalanced = await http_a.post("/admin/shards/rebalance", headers=admin)
    assert rebalanced.status_code == 202
    assert rebalanced.json() == {"moves": []}  # two shards each: nothing to move


async def test_the_owner_limits_a_forwarded_command_under_the_clients_address(
    tmp_path: Path, pg_url: str
) -> None:
    # Only "b" limits (3 a minute per address); "a" forwards without charging anything.
    async with _pair(tmp_path, pg_url, rate_limit_enabled=True, rate_limit_per_ip_per_minute=3) as (
        a,
        _,
        http_a,
        http_b,
    ):
        headers = await sign_up(http_a)
        on_b = await _account_on(http_a, headers, a, "b")
        path = f"/accounts/{on_b}/deposit"
        answers = [await http_a.post(path, json={"amount": "1.00"}, headers=headers)]
        answers.append(await http_b.post(path, json={"amount": "1.00"}, headers=headers))
        answers.append(await http_a.post(path, json={"amount": "1.00"}, headers=headers))
        assert [r.status_code for r in answers] == [200, 200, 200]
        # The fourth from the client's address (10.0.0.9) at "b": the forwarded ones counted
        # under it, not under the forwarding instance's (10.0.0.1).
        limited = await http_a.post(path, json={"amount": "1.00"}, headers=headers)
        assert limited.status_code == 429, limited.text


async def test_an_owner_that_refuses_or_does_not_answer_is_a_503(pair: Pair) -> None:
    a, b, http_a, _ = pair
    assert a.sharding is not None
    headers = await sign_up(http_a)
    on_b = await _account_on(http_a, headers, a, "b")
    path = f"/accounts/{on_b}/deposit"
    # Over the network now: nothing listens at b's INSTANCE_URL, then a server that never answers.
    await a.sharding.http.aclose()
    a.sharding.http = HttpForwarder(timeout=0.5)
    refused = await http_a.post(path, json={"amount": "1.00"}, headers=headers)
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    port = int(b.settings.effective_instance_url.rsplit(":", 1)[1])
    server = await asyncio.start_server(silent, "127.0.0.1", port)
    try:
        started = asyncio.get_running_loop().time()
        silence = await http_a.post(path, json={"amount": "1.00"}, headers=headers)
        waited = asyncio.get_running_loop().time() - started
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    for answer in (refused, silence):
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["code"] == "service_unavailable"
    assert accepted
    assert 0.4 < waited < 5
    read = await http_a.get(f"/accounts/{on_b}", headers=headers)
    assert read.json()["balance"] == "100.00"
