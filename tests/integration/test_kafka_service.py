"""The service with KAFKA_BOOTSTRAP_SERVERS set: bootstrap wiring, readiness, admin API, CLI."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from tests.api_support import app_client
from tests.auth import admin_headers
from tests.e2e.observability_support import samples, value
from tests.integration.kafka_broker import TansuBroker
from tests.unit.account_service_support import open_account
from typer.testing import CliRunner

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import Services, build_services
from banking_es.cli import app as cli_app
from banking_es.config import Settings, load_settings
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.eventstore.base import RecordedEvent
from banking_es.messaging.dead_letters import add_letter
from banking_es.messaging.kafka import decode_event, encode_event
from banking_es.projections.kafka_applier import CONSUMER

pytestmark = pytest.mark.kafka


def kafka_settings(broker: TansuBroker, db_path: Path) -> Settings:
    return load_settings(
        database_url=f"sqlite:///{db_path}",
        kafka_bootstrap_servers=broker.bootstrap,
        kafka_topic_prefix=f"s{uuid.uuid4().hex[:10]}",
        kafka_topic_partitions=2,
        kafka_relay_lease_ttl=2.0,
        dlq_max_attempts=2,
        data_dir=db_path.parent,
        rate_limit_enabled=False,
        argon2_time_cost=1,
        argon2_memory_cost=8,
    )


def cli_settings(broker: TansuBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """`kafka_settings`, also in the environment a CLI command reads them from."""
    settings = kafka_settings(broker, tmp_path / "bank.db")
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", settings.kafka_topic_prefix)
    monkeypatch.setenv("KAFKA_TOPIC_PARTITIONS", str(settings.kafka_topic_partitions))
    return settings


@pytest.fixture
async def services(kafka_broker: TansuBroker, tmp_path: Path) -> AsyncIterator[Services]:
    built = await build_services(kafka_settings(kafka_broker, tmp_path / "bank.db"))
    await built.start()
    try:
        yield built
    finally:
        await built.close()


async def wait_for_summary(services: Services, account_id: str, version: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = await services.db.fetchrow(
            "SELECT version FROM account_summaries WHERE account_id = $1", account_id
        )
        if row is not None and row["version"] >= version:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"account {account_id} never reached version {version} in the view")


async def test_with_kafka_the_consumer_group_drives_projections_and_the_cache(
    services: Services,
) -> None:
    assert services.kafka is not None
    account = await open_account(services.accounts, "10.00")
    await services.accounts.deposit(cmd.Deposit(account.id, Decimal("5.00")), CommandContext())
    await wait_for_summary(services, account.id, 2)
    # The store-following runner does not run: its checkpoint never moved.
    assert await services.db.fetchval("SELECT count(*) FROM projection_checkpoints") == 0
    checkpoints = await services.db.fetch("SELECT projection FROM kafka_checkpoints")
    assert {r["projection"] for r in checkpoints} == {"account_summaries", "transactions"}
    deadline = time.monotonic() + 10
    while services.kafka.invalidator.invalidated < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert services.kafka.invalidator.invalidated >= 2
    # and /metrics counts what went through Kafka
    topic = f"{services.settings.kafka_topic_prefix}.events"
    scrape = samples(services.metrics.render().decode())
    published = value(scrape, "banking_es_kafka_messages_published_total", topic=topic)
    group = services.kafka.projections.group_id
    consumed = value(
        scrape, "banking_es_kafka_messages_consumed_total", topic=topic, group=group, outcome="ok"
    )
    assert published == 2  # AccountCreated and MoneyDeposited, acknowledged by the broker
    assert consumed >= 2


async def test_readiness_reports_kafka_and_degrades_when_the_broker_stops_answering(
    own_kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    services = await build_services(kafka_settings(own_kafka_broker, tmp_path / "bank.db"))
    await services.start()
    try:
        async with app_client(services) as client:
            response = await client.get("/health/ready")
            body = response.json()
            assert response.status_code == 200
            assert body["components"]["kafka"]["status"] == "ok"
            assert set(body["components"]["projections"]["projections"]) == {
                "account_summaries",
                "transactions",
            }
            own_kafka_broker.pause()
            try:
                started = time.monotonic()
                response = await client.get("/health/ready")
                elapsed = time.monotonic() - started
            finally:
                own_kafka_broker.resume()
            body = response.json()
            assert response.status_code == 200
            assert body["status"] == "degraded"
            assert body["components"]["kafka"]["status"] == "down"
            assert elapsed < 1.5
    finally:
        await services.close()


async def _letter(services: Services, account: Account) -> int:
    events = await services.store.read_stream(account.id)
    key, value, headers = encode_event(events[0])
    async with services.db.transaction() as conn:
        return await add_letter(
            conn,
            consumer=CONSUMER,
            topic=f"{services.settings.kafka_topic_prefix}.events",
            partition=0,
            offset=0,
            key=key.decode(),
            value=value.decode(),
            headers={k: v.decode() for k, v in headers},
            error="boom",
            attempts=2,
        )


async def test_the_admin_api_lists_retries_and_discards_dead_letters(services: Services) -> None:
    account = await open_account(services.accounts, "10.00")
    await wait_for_summary(services, account.id, 1)
    first = await _letter(services, account)
    bob = await open_account(services.accounts, "10.00", owner="Bob")
    # Bob's own event must be consumed first: were it still in flight, it would be parked
    # behind the letters made below and become a letter of its own.
    await wait_for_summary(services, bob.id, 1)
    second = await _letter(services, bob)
    third = await _letter(services, bob)  # the same key: parked behind `second`
    async with app_client(services) as client:
        client.headers.update(await admin_headers(client, services))
        listed = (await client.get("/admin/dead-letters")).json()["data"]
        assert [item["id"] for item in listed] == [first, second, third]
        assert listed[0]["error"] == "boom"
        assert listed[0]["headers"]["event_type"] == "AccountCreated"

        retried = await client.post(f"/admin/dead-letters/{first}/retry")
        assert retried.status_code == 200
        assert retried.json() == {"retried": [first]}
        again = await client.post(f"/admin/dead-letters/{first}/retry")
        assert again.status_code == 409
        assert again.headers["content-type"].startswith("application/problem+json")
        assert again.json()["code"] == "dead_letter_closed"

        discarded = await client.delete(f"/admin/dead-letters/{second}")
        assert discarded.status_code == 200
        assert discarded.json() == {"discarded": second, "still_parked": [third]}
        closed = await client.delete(f"/admin/dead-letters/{second}")
        assert closed.status_code == 409
        assert closed.json()["code"] == "dead_letter_closed"
        last = await client.delete(f"/admin/dead-letters/{third}")
        assert last.json() == {"discarded": third, "still_parked": []}
        missing = await client.delete("/admin/dead-letters/999999")
        assert missing.status_code == 404
        assert missing.json()["code"] == "dead_letter_not_found"
        bad = await client.get("/admin/dead-letters", params={"status": "nope"})
        assert bad.status_code in (400, 422)

        everything = (await client.get("/admin/dead-letters", params={"status": "all"})).json()
        statuses = [item["status"] for item in everything["data"]]
        assert statuses == ["retried", "discarded", "discarded"]
        assert (await client.get("/admin/dead-letters")).json()["data"] == []


async def test_the_admin_api_shows_the_consumer_groups_projections_and_rebuilds_them(
    services: Services,
) -> None:
    """With Kafka, /admin/projections reports what the consumer group applied (no lease:
    `leader` is null) and a rebuild over HTTP is the CLI's, as a job that ends `done`."""
    account = await open_account(services.accounts, "10.00")
    await wait_for_summary(services, account.id, 1)
    async with app_client(services) as client:
        client.headers.update(await admin_headers(client, services, roles=("auditor",)))
        rows: list[dict[str, object]] = []
        for _ in range(200):
            rows = (await client.get("/admin/projections")).json()["data"]
            if all(r["lag_events"] == 0 for r in rows):
                break
            await asyncio.sleep(0.05)
        assert [r["name"] for r in rows] == ["account_summaries", "transactions"]
        for row in rows:
            assert (row["lag_events"], row["leader"], row["status"]) == (0, None, "ok")
        outbox = (await client.get("/admin/outbox")).json()
        assert outbox["relay_leader"] == services.relay.leader.holder  # type: ignore[union-attr]

        client.headers.update(await admin_headers(client, services))
        started = await client.post("/admin/projections/account_summaries/rebuild", json={})
        assert started.status_code == 202, started.text
        job: dict[str, object] = {}
        for _ in range(200):
            job = (await client.get(f"/admin/jobs/{started.json()['job_id']}")).json()
            if job["status"] != "running":
                break
            await asyncio.sleep(0.05)
        assert job["status"] == "done", job
        assert job["done"] == job["total"] == await services.store.head_position()
    await wait_for_summary(services, account.id, 1)


def test_the_cli_shows_the_outbox_replays_and_handles_dead_letters(
    kafka_broker: TansuBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = cli_settings(kafka_broker, tmp_path, monkeypatch)

    async def write() -> int:
        services = await build_services(settings)  # not started: rows stay in the outbox
        try:
            account = await open_account(services.accounts, "10.00")
            for _ in range(3):
                await services.accounts.deposit(
                    cmd.Deposit(account.id, Decimal("1.00")), CommandContext()
                )
            return await _letter(services, account)
        finally:
            await services.close()

    letter = asyncio.run(write())
    runner = CliRunner()
    status = runner.invoke(cli_app, ["outbox", "status"])
    assert status.exit_code == 0, status.output
    assert "│ 4 " in status.stdout  # four events wait for the relay

    replay = runner.invoke(
        cli_app, ["outbox", "replay", "--from-position", "1", "--type", "MoneyDeposited"]
    )
    assert replay.exit_code == 0, replay.output
    assert "republished 3 events" in replay.stdout
    bad = runner.invoke(cli_app, ["outbox", "replay", "--from-position", "3", "--to-position", "2"])
    assert bad.exit_code == 2

    listed = runner.invoke(cli_app, ["dlq", "list"])
    assert listed.exit_code == 0, listed.output
    assert "boom" in listed.stdout
    retried = runner.invoke(cli_app, ["dlq", "retry", str(letter)])
    assert retried.exit_code == 0, retried.output
    assert f"retried 1 dead letters: {letter}" in retried.stdout
    closed = runner.invoke(cli_app, ["dlq", "discard", str(letter)])
    assert closed.exit_code == 1
    assert "retried" in closed.output


def test_projections_status_under_kafka_shows_what_the_consumer_group_applied(
    kafka_broker: TansuBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's own checkpoints never move under Kafka: the CLI must not report them."""
    settings = cli_settings(kafka_broker, tmp_path, monkeypatch)

    async def write(start: bool) -> None:
        services = await build_services(settings)
        if start:
            await services.start()
        try:
            account = await open_account(services.accounts, "10.00")
            await services.accounts.deposit(
                cmd.Deposit(account.id, Decimal("1.00")), CommandContext()
            )
            if start:
                await wait_for_summary(services, account.id, 2)
                deadline = time.monotonic() + 20  # and the other projection, checkpoint with rows
                while time.monotonic() < deadline:
                    count = await services.db.fetchval(
                        "SELECT count(*) FROM transactions WHERE account_id = $1", account.id
                    )
                    if count == 2:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await services.close()

    def status() -> list[list[str]]:
        result = CliRunner().invoke(cli_app, ["projections", "status"])
        assert result.exit_code == 0, result.output
        rows = [
            [cell.strip() for cell in line.strip("│ ").split("│")]
            for line in result.stdout.splitlines()
            if line.startswith("│") and "projection" not in line
        ]
        assert sorted(r[0] for r in rows) == ["account_summaries", "transactions"]
        return rows

    asyncio.run(write(start=True))
    for name, position, head, lag, _seconds in status():
        assert (position, head, lag) == ("2", "2", "0"), name

    asyncio.run(write(start=False))  # two more events, still in the outbox
    for name, position, head, lag, _seconds in status():
        assert (position, head, lag) == ("2", "4", "2"), name


def test_kafka_message_values_follow_the_documented_format() -> None:
    event = RecordedEvent(
        7, "acct", 3, "ev", "MoneyDeposited", {"amount": "1.00"}, {"u": 1}, datetime.now(UTC)
    )
    key, value, headers = encode_event(event)
    assert key == b"acct"
    assert set(orjson.loads(value)) == {
        "event_id",
        "position",
        "stream_id",
        "version",
        "type",
        "data",
        "metadata",
        "recorded_at",
    }
    assert dict(headers) == {"event_type": b"MoneyDeposited", "event_id": b"ev", "position": b"7"}
    assert decode_event(value) == event
    with pytest.raises(ValueError, match="not an event message"):
        decode_event(b'{"position": 1}')
