"""Against a real server with two worker processes: contention, invariants, crash recovery."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from tests.auth import PASSWORD, bearer
from tests.e2e.http_support import open_account
from tests.server import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url, workers=2, workdir=tmp_path).start()
    try:
        yield process
    finally:
        process.stop()


def client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=30,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )


async def authenticate(http: httpx.AsyncClient, username: str = "loadtester") -> None:
    """Sign `username` up (once: it survives restarts) and send its token from now on."""
    registered = await http.post(
        "/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": PASSWORD},
    )
    assert registered.status_code in (201, 409), registered.text
    login = await http.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert login.status_code == 200, login.text
    http.headers.update(bearer(login.json()["access_token"]))


async def all_events(http: httpx.AsyncClient, account_id: str) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    cursor = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = (await http.get(f"/accounts/{account_id}/events", params=params)).json()
        events.extend(page["data"])
        if not page["has_more"]:
            return events
        cursor = page["next_cursor"]


async def wait_for_projections(http: httpx.AsyncClient, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        ready = (await http.get("/health/ready")).json()
        lags = ready["components"]["projections"]["projections"]
        if all(p["lag_events"] == 0 for p in lags.values()):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"projections did not catch up: {ready}")


async def test_hot_account_deposits_from_two_workers_lose_none_and_fail_none(
    server: ServerProcess,
) -> None:
    async with client(server.url) as http:
        await authenticate(http)
        account_id = (await open_account(http, "Load", "0"))["id"]
        results = await asyncio.gather(
            *(
                http.post(f"/accounts/{account_id}/deposit", json={"amount": "1.25"})
                for _ in range(300)
            )
        )
        statuses = [r.status_code for r in results]
        assert statuses.count(200) == 300, {s: statuses.count(s) for s in set(statuses)}
        final = (await http.get(f"/accounts/{account_id}")).json()
        assert final["balance"] == "375.00"
        assert final["version"] == 301
        versions = sorted(r.json()["version"] for r in results)
        assert versions == list(range(2, 302))  # every acknowledged write has its own version
        # Both workers served (connections spread over them), as one instance.
        assert len({r.headers["x-served-by"] for r in results}) == 1


async def test_concurrent_withdrawals_and_transfers_keep_every_invariant(
    server: ServerProcess,
) -> None:
    rng = random.Random(7)
    async with client(server.url) as http:
        await authenticate(http)
        accounts = [(await open_account(http, "Load", "100.00"))["id"] for _ in range(4)]
        withdrawn = Decimal("0")
        touched = dict.fromkeys(accounts, 1)  # AccountCreated

        async def withdraw(account: str, amount: Decimal) -> httpx.Response:
            return await http.post(f"/accounts/{account}/withdraw", json={"amount": str(amount)})

        async def transfer(source: str, target: str, amount: Decimal) -> httpx.Response:
            return await http.post(
                "/transfers",
                json={"from_account_id": source, "to_account_id": target, "amount": str(amount)},
            )

        plan = []
        for _ in range(400):
            amount = Decimal(rng.randint(1, 3000)) / 100
            if rng.random() < 0.4:
                plan.append(("withdraw", rng.choice(accounts), None, amount))
            else:
                source, target = rng.sample(accounts, 2)
                plan.append(("transfer", source, target, amount))
        responses = await asyncio.gather(
            *(
                withdraw(src, amount) if kind == "withdraw" else transfer(src, dst, amount)  # type: ignore[arg-type]
                for kind, src, dst, amount in plan
            )
        )
        for (kind, src, dst, amount), response in zip(plan, responses, strict=True):
            assert response.status_code in (200, 201, 422), response.text
            if response.status_code == 422:
                assert response.json()["code"] == "insufficient_funds"
                continue
            touched[src] += 1
            if kind == "withdraw":
                withdrawn += amount
            else:
                assert dst is not None
                touched[dst] += 1
        assert sum(1 for r in responses if r.status_code != 422) > 50  # the test really moved money

        balances = {}
        for account in accounts:
            state = (await http.get(f"/accounts/{account}")).json()
            balances[account] = Decimal(state["balance"])
            assert balances[account] >= 0
            events = await all_events(http, account)
            assert len(events) == touched[account] == state["version"]
        assert sum(balances.values()) == Decimal("400.00") - withdrawn

        await wait_for_projections(http)
        for account in accounts:
            rows = (await http.get(f"/accounts/{account}/transactions", params={"limit": 1})).json()
            assert Decimal(rows["data"][0]["balance_after"]) == balances[account]
        listed = (await http.get("/accounts", params={"limit": 100})).json()["data"]
        assert {a["id"]: Decimal(a["balance"]) for a in listed} == balances


async def test_sigkill_during_writes_loses_no_acknowledged_deposit(
    database_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(database_url, workers=2, workdir=tmp_path).start()
    acknowledged: list[tuple[str, str]] = []
    try:
        async with client(server.url) as http:
            await authenticate(http)
            accounts = [(await open_account(http, "Load", "0"))["id"] for _ in range(5)]

            async def writer(worker: int) -> None:
                for i in range(10_000):
                    account = accounts[(worker + i) % len(accounts)]
                    description = f"w{worker}-{i}"
                    try:
                        response = await http.post(
                            f"/accounts/{account}/deposit",
                            json={"amount": "1.00", "description": description},
                        )
                    except httpx.HTTPError:
                        return  # the server is gone
                    if response.status_code == 200:
                        acknowledged.append((account, description))

            writers = [asyncio.create_task(writer(n)) for n in range(16)]
            while len(acknowledged) < 300:
                await asyncio.sleep(0.02)
            server.kill()
            await asyncio.gather(*writers)
    finally:
        server.kill()

    restarted = ServerProcess(database_url, workers=2, workdir=tmp_path).start()
    try:
        async with client(restarted.url) as http:
            await authenticate(http)
            stored: dict[str, set[str]] = {}
            for account in {a for a, _ in acknowledged}:
                events = await all_events(http, account)
                stored[account] = {
                    str(e["data"]["description"])  # type: ignore[index]
                    for e in events
                    if e["type"] == "MoneyDeposited"
                }
                state = (await http.get(f"/accounts/{account}")).json()
                assert Decimal(state["balance"]) == len(stored[account])
            missing = [(a, d) for a, d in acknowledged if d not in stored[a]]
            assert missing == []
            await wait_for_projections(http)
            listed = (await http.get("/accounts", params={"limit": 100})).json()["data"]
            for row in listed:
                assert Decimal(row["balance"]) == len(stored.get(row["id"], set()))
    finally:
        restarted.stop()
