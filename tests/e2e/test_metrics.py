"""GET /metrics after known traffic: exact counts, route templates, gauges (in-process app)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from starlette.requests import Request
from starlette.responses import Response
from tests.api_support import app_client, running_app, running_services
from tests.auth import bearer, login, register, sign_up
from tests.e2e.observability_support import scrape, value

from banking_es import bootstrap
from banking_es.api.app import create_app
from banking_es.application.accounts import CommandContext
from banking_es.domain.commands import Deposit
from banking_es.observability.metrics import UNMATCHED_ROUTE, Metrics

P = "banking_es_"


async def test_counts_after_known_traffic_are_exact(database_url: str, tmp_path: Path) -> None:
    async with running_app(tmp_path, database_url, snapshot_threshold=2) as (client, services):
        client.headers.update(await sign_up(client))  # POST /auth/register, /auth/login
        opened = await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "0"})
        assert opened.status_code == 201
        account = opened.json()["id"]
        for _ in range(3):
            response = await client.post(f"/accounts/{account}/deposit", json={"amount": "10"})
            assert response.status_code == 200
        refused = await client.post(f"/accounts/{account}/withdraw", json={"amount": "500"})
        assert refused.status_code == 422
        invalid = await client.post(f"/accounts/{account}/deposit", json={"amount": "-1"})
        assert invalid.status_code == 400
        assert (await client.get("/no/such/endpoint")).status_code == 404

        metrics = await scrape(client)

        def commands(command: str, outcome: str) -> float:
            return value(metrics, P + "commands_total", command=command, outcome=outcome)

        assert commands("OpenAccount", "ok") == 1
        assert commands("Deposit", "ok") == 3
        assert commands("Withdraw", "rejected") == 1
        assert commands("Deposit", "rejected") == 0
        requests = P + "http_requests_total"
        deposit_route = "/accounts/{account_id}/deposit"
        assert value(metrics, requests, route=deposit_route, method="POST", status="200") == 3
        assert value(metrics, requests, route=deposit_route, method="POST", status="400") == 1
        assert value(metrics, requests, route="/accounts", method="POST", status="201") == 1
        assert value(metrics, requests, route=UNMATCHED_ROUTE, method="GET", status="404") == 1
        # The sign-up is counted under its own routes, apart from the traffic above.
        assert value(metrics, requests, route="/auth/register", method="POST", status="201") == 1
        assert value(metrics, requests, route="/auth/login", method="POST", status="200") == 1
        assert (
            value(
                metrics,
                P + "http_request_duration_seconds_count",
                route=deposit_route,
                method="POST",
            )
            == 4
        )
        # 1 opening + 3 deposits; snapshots at versions 1 and 3 (threshold 2: the states the
        # deposits to versions 2 and 4 were decided on)
        assert value(metrics, P + "eventstore_events_appended_total") == 4
        assert value(metrics, P + "snapshots_written_total") == 2
        assert value(metrics, P + "eventstore_batch_size_count") == 4
        assert value(metrics, P + "eventstore_batch_size_sum") == 4
        assert value(metrics, P + "eventstore_batch_duration_seconds_count") == 4
        assert value(metrics, P + "eventstore_queue_length") == 0

        # A cache miss loads the latest snapshot (version 3) instead of the whole stream.
        misses = value(metrics, P + "cache_requests_total", level="l1", result="miss")
        services.cache.local.invalidate(account)
        assert (await client.get(f"/accounts/{account}")).json()["balance"] == "30.00"
        after = await scrape(client)
        assert value(after, P + "snapshots_loaded_total") == 1
        assert value(after, P + "cache_requests_total", level="l1", result="miss") == misses + 1


async def test_projection_and_outbox_gauges_follow_the_store(
    database_url: str, tmp_path: Path
) -> None:
    async with running_app(tmp_path, database_url) as (client, services):
        user = await register(client)
        client.headers.update(bearer((await login(client, user["username"]))["access_token"]))
        opened = await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "5"})
        account = opened.json()["id"]
        await client.post(f"/accounts/{account}/deposit", json={"amount": "1"})
        await client.post("/auth/reset-password", json={"email": user["email"]})
        head = await services.store.head_position()
        assert await services.projections.wait_for(head, timeout=10)
        for _ in range(50):  # the relay marks the outbox rows shortly after the commit
            if (await services.store.outbox_stats()).backlog == 0:
                break
            await asyncio.sleep(0.05)
        metrics = await scrape(client)
        for name in ("account_summaries", "transactions"):
            assert value(metrics, P + "projection_position", projection=name) == head
            assert value(metrics, P + "projection_lag_events", projection=name) == 0
            assert value(metrics, P + "projection_lag_seconds", projection=name) == 0
        assert value(metrics, P + "eventstore_head_position") == head
        assert value(metrics, P + "outbox_backlog") == 0
        assert value(metrics, P + "outbox_oldest_age_seconds") == 0
        # this process holds both leases (the leader-missing alerts watch the sums)
        assert value(metrics, P + "leader", role="projections") == 1
        assert value(metrics, P + "leader", role="relay") == 1

        # Stop the followers: new events show up as lag and backlog at the next scrape.
        await services.projections.stop()
        await services.relay.stop()
        await client.post(f"/accounts/{account}/deposit", json={"amount": "1"})
        # Without Kafka only notifications go through the outbox: a password-reset email.
        await client.post("/auth/reset-password", json={"email": user["email"]})
        lagging = await scrape(client)
        for name in ("account_summaries", "transactions"):
            assert value(lagging, P + "projection_lag_events", projection=name) == 1
            assert value(lagging, P + "projection_position", projection=name) == head
        assert value(lagging, P + "outbox_backlog") == 1
        assert value(lagging, P + "leader", role="projections") == 0
        assert value(lagging, P + "leader", role="relay") == 0


async def test_metrics_need_no_credentials_and_do_not_count_bodies(tmp_path: Path) -> None:
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 'b.db'}") as (client, _services):
        response = await client.get("/metrics", headers={"authorization": "Bearer nothing"})
        assert response.status_code == 200
        assert "# TYPE banking_es_commands_total counter" in response.text
        assert "# TYPE banking_es_http_request_duration_seconds histogram" in response.text


async def test_conflicts_and_failures_are_counted_by_outcome(tmp_path: Path) -> None:
    """Two services on one database: the second one's stale cache makes it conflict."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    async with running_app(tmp_path, url) as (client, _services):
        client.headers.update(await sign_up(client))
        account = (
            await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "0"})
        ).json()["id"]
        async with running_services(tmp_path / "other", url, start=False) as other:
            await client.get(f"/accounts/{account}")  # cached at version 1 here
            await other.accounts.deposit(Deposit(account, Decimal("1.00")), CommandContext())
            # Version 2 now exists; the first service decides on version 1, conflicts, retries.
            response = await client.post(f"/accounts/{account}/deposit", json={"amount": "2"})
            assert response.status_code == 200
            assert response.json()["version"] == 3
        metrics = await scrape(client)
        assert value(metrics, P + "commands_total", command="Deposit", outcome="conflict") == 1
        assert value(metrics, P + "commands_total", command="Deposit", outcome="ok") == 1


async def test_a_bug_is_counted_as_a_500_of_its_route(tmp_path: Path) -> None:
    async with running_services(tmp_path, f"sqlite:///{tmp_path / 'e.db'}") as services:
        app = create_app(services.settings, services)

        async def boom(request: Request) -> Response:
            raise RuntimeError("a bug")

        app.add_route("/boom", boom, methods=["GET"])
        async with (
            app_client(services, app=app) as client,
            app_client(services, app=app, raise_app_exceptions=False) as raw,
        ):
            response = await raw.get("/boom")
            assert response.status_code == 500
            assert response.json()["code"] == "internal_error"
            metrics = await scrape(client)
            assert (
                value(metrics, P + "http_requests_total", route="/boom", method="GET", status="500")
                == 1
            )


async def test_each_worker_exports_its_cache_counts_without_being_scraped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker may never be the one scraped: its counts still reach the shared files."""

    monkeypatch.setattr(bootstrap, "METRICS_EXPORT_INTERVAL", 0.05)
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 'e.db'}") as (client, services):
        client.headers.update(await sign_up(client))
        opened = await client.post("/accounts", json={"owner_name": "Ada", "initial_balance": "1"})
        assert (await client.get(f"/accounts/{opened.json()['id']}")).status_code == 200
        metrics: Metrics = services.metrics
        hits = metrics.cache_requests.labels("l1", "hit")
        for _ in range(100):  # no scrape: only the periodic export can move these
            if metrics.count(hits) >= 1:
                break
            await asyncio.sleep(0.02)
        assert metrics.count(hits) >= 1
        assert metrics.count(metrics.cache_entries, "l1") == 1
