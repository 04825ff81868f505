"""Two processes on one PostgreSQL database: each one's appends reach the other's cache
as "these streams moved" notices, so the other reads forward instead of conflicting."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from tests.auth import make_settings

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import Services, build_services
from banking_es.domain import commands as cmd
from banking_es.eventstore import stream_notices as stream_notices_module
from banking_es.eventstore.batching import BatchPlan
from banking_es.eventstore.postgres import NOTICE_BYTES, parse_notice, stream_notices

CTX = CommandContext(None, None)


async def process(tmp_path: Path, pg_url: str, name: str) -> tuple[Services, Counter[str]]:
    services = await build_services(make_settings(tmp_path / name, pg_url), run_migrations=True)
    outcomes: Counter[str] = Counter()
    services.accounts.on_command = lambda command, outcome: outcomes.update([outcome])
    await services.start()
    return services, outcomes


async def eventually_behind(services: Services, stream_id: str, version: int) -> None:
    for _ in range(200):
        if services.accounts._behind.get(stream_id, 0) >= version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no notice of {stream_id} at version {version}")


async def test_a_write_elsewhere_is_read_forward_not_conflicted(
    tmp_path: Path, pg_url: str
) -> None:
    first, _ = await process(tmp_path, pg_url, "one")
    second, outcomes = await process(tmp_path, pg_url, "two")
    try:
        assert first.stream_notices is not None
        assert second.stream_notices is not None
        assert second.stream_notices.listening
        account = await first.accounts.open_account(
            cmd.OpenAccount("Ada", Decimal("100"), "USD", None), CTX
        )
        assert not isinstance(account, type(None))
        await second.accounts.get_account(account.id)  # cached in the second process
        await first.accounts.deposit(cmd.Deposit(account.id, Decimal("5"), None, None), CTX)
        await eventually_behind(second, account.id, 2)
        await asyncio.sleep(0.05)
        assert account.id not in first.accounts._behind  # its own notice: skipped

        after = await second.accounts.deposit(
            cmd.Deposit(account.id, Decimal("1"), None, None), CTX
        )
        assert outcomes == Counter({"ok": 1})  # no conflict: it read version 2 first
        assert after.version == 3
        assert after.balance == Decimal("106.00")
        assert account.id not in second.accounts._behind
        await eventually_behind(first, account.id, 3)  # and the other way round
        assert second.stream_notices.received >= 1
    finally:
        await second.close()
        await first.close()


def test_notices_stay_under_the_payload_limit_and_parse_back() -> None:
    class Event:
        def __init__(self, stream_id: str, version: int) -> None:
            self.stream_id, self.version = stream_id, version

    events = [Event(f"{i:08d}-0000-4000-8000-000000000000", v) for i in range(600) for v in (1, 2)]
    plan = BatchPlan.__new__(BatchPlan)
    object.__setattr__(plan, "events", events)
    notices = stream_notices("origin1", plan)
    assert len(notices) > 1
    assert all(len(n.encode()) <= NOTICE_BYTES for n in notices)
    seen: dict[str, int] = {}
    for notice in notices:
        origin, versions = parse_notice(notice)
        assert origin == "origin1"
        seen.update(versions)
    assert len(seen) == 600
    assert set(seen.values()) == {2}
    assert parse_notice("o garbage a:1 :2 b:x") == ("o", {"a": 1})


async def test_the_listener_comes_back_after_its_connection_is_killed(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_notices_module, "RECONNECT_S", 0.05)
    first, _ = await process(tmp_path, pg_url, "one")
    second, _ = await process(tmp_path, pg_url, "two")
    try:
        notices = second.stream_notices
        assert notices is not None
        assert notices.listening
        backend = notices._conn.get_server_pid()
        await first.db.execute("SELECT pg_terminate_backend($1)", backend)
        for _ in range(200):
            if notices.listening and notices._conn.get_server_pid() != backend:
                break
            await asyncio.sleep(0.01)
        assert notices.listening, "the listener did not reconnect"
        assert notices._conn.get_server_pid() != backend
        account = await first.accounts.open_account(
            cmd.OpenAccount("Ada", Decimal("1"), "USD", None), CTX
        )
        await eventually_behind(second, account.id, 1)  # notices flow again
    finally:
        await second.close()
        await first.close()
