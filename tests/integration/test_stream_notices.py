"""Two processes on one PostgreSQL database: each one's appends reach the other's cache
as "these streams moved" notices carrying the new events, so the other brings its cached
copy forward without a query (or, when it cannot, reads forward) instead of conflicting."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import astuple
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.api_support import make_settings
from tests.contract.eventstore_helpers import events, idem, new_stream, one
from tests.integration.pg_notices import store_and_notices

from banking_es.application.accounts import CommandContext
from banking_es.bootstrap import Overrides, Services, build_services
from banking_es.domain import commands as cmd
from banking_es.eventstore import stream_notices as stream_notices_module
from banking_es.eventstore.base import (
    AppendedElsewhere,
    ConcurrencyError,
    NoticedEvent,
    RecordedEvent,
    Snapshot,
)
from banking_es.eventstore.notices import (
    NOTICE_BYTES,
    NoticeBodies,
    notice_entries,
    parse_notice,
)

CTX = CommandContext(None, None)


async def process(tmp_path: Path, pg_url: str, name: str) -> tuple[Services, Counter[str]]:
    outcomes: Counter[str] = Counter()
    services = await build_services(
        make_settings(tmp_path / name, pg_url),
        overrides=Overrides(on_command=lambda command, outcome: outcomes.update([outcome])),
    )
    await services.start()
    return services, outcomes


#: How long a notice may take to arrive (usually milliseconds; generous for a busy machine).
NOTICE_WAIT_S = 10.0


def waiting() -> Iterator[None]:
    """Yields until NOTICE_WAIT_S have passed (the caller sleeps between turns)."""
    deadline = time.monotonic() + NOTICE_WAIT_S
    while time.monotonic() < deadline:
        yield


async def eventually_behind(services: Services, stream_id: str, version: int) -> None:
    for _ in waiting():
        if services.accounts._repository._behind.get(stream_id, 0) >= version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no notice of {stream_id} at version {version}")


def count_reads(services: Services) -> list[str]:
    """Every stream read of `services`' store from now on (a spy that reads through)."""
    reads: list[str] = []
    read_stream = services.store.read_stream

    async def counted(stream_id: str, *args: Any, **kwargs: Any) -> list[RecordedEvent]:
        reads.append(stream_id)
        return await read_stream(stream_id, *args, **kwargs)

    services.store.read_stream = counted  # type: ignore[method-assign]
    return reads


async def eventually_cached_at(services: Services, stream_id: str, version: int) -> None:
    for _ in waiting():
        cached = services.cache.peek(stream_id)
        if cached is not None and cached.version >= version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the cached copy of {stream_id} never reached version {version}")


async def opened_and_cached(first: Services, second: Services) -> str:
    """An account opened by `first` (version 1), and cached by `second` too."""
    account = await first.accounts.open_account(
        cmd.OpenAccount("Ada", Decimal("100"), "USD", None), CTX
    )
    assert not isinstance(account, type(None))
    await second.accounts.get_account(account.id)
    return account.id


async def test_a_write_elsewhere_reaches_the_cache_without_a_query_or_a_conflict(
    tmp_path: Path, pg_url: str
) -> None:
    first, _ = await process(tmp_path, pg_url, "one")
    second, outcomes = await process(tmp_path, pg_url, "two")
    try:
        assert first.stream_notices is not None
        assert second.stream_notices is not None
        assert second.stream_notices.listening
        account_id = await opened_and_cached(first, second)
        reads = count_reads(second)
        await first.accounts.deposit(cmd.Deposit(account_id, Decimal("5"), None, None), CTX)
        await eventually_cached_at(second, account_id, 2)  # the notice's events, folded
        cached = second.cache.peek(account_id)
        assert cached is not None
        assert cached.balance == Decimal("105.00")
        assert account_id not in second.accounts._repository._behind
        await asyncio.sleep(0.05)
        assert account_id not in first.accounts._repository._behind  # its own notice: skipped

        after = await second.accounts.deposit(
            cmd.Deposit(account_id, Decimal("1"), None, None), CTX
        )
        assert outcomes == Counter({"ok": 1})  # no conflict: its copy was at version 2
        assert reads == []  # and no query brought it there
        assert after.version == 3
        assert after.balance == Decimal("106.00")
        await eventually_cached_at(first, account_id, 3)  # and the other way round
        assert second.stream_notices.received >= 1
        # What the notices built is what the store holds.
        assert (await first.accounts.get_account(account_id)).balance == Decimal("106.00")
    finally:
        await second.close()
        await first.close()


async def test_a_copy_the_notice_cannot_bring_forward_is_read_forward(
    tmp_path: Path, pg_url: str
) -> None:
    first, _ = await process(tmp_path, pg_url, "one")
    second, outcomes = await process(tmp_path, pg_url, "two")
    try:
        account_id = await opened_and_cached(first, second)  # cached at version 1
        assert second.stream_notices is not None
        await second.stream_notices.stop()  # the notice of version 2 is missed
        await first.accounts.deposit(cmd.Deposit(account_id, Decimal("5"), None, None), CTX)
        await second.stream_notices.start()
        await first.accounts.deposit(cmd.Deposit(account_id, Decimal("7"), None, None), CTX)
        await eventually_behind(second, account_id, 3)  # a gap: not folded, marked behind
        cached = second.cache.peek(account_id)
        assert cached is not None
        assert cached.version == 1

        reads = count_reads(second)
        after = await second.accounts.deposit(
            cmd.Deposit(account_id, Decimal("1"), None, None), CTX
        )
        assert outcomes == Counter({"ok": 1})  # read forward first, then appended
        assert reads == [account_id]
        assert after.version == 4
        assert after.balance == Decimal("113.00")
    finally:
        await second.close()
        await first.close()


def _event(stream_id: str, version: int, description: str = "pay") -> RecordedEvent:
    return RecordedEvent(
        position=version,
        stream_id=stream_id,
        version=version,
        event_id=f"{stream_id}-{version}",
        type="MoneyDeposited",
        data={"amount": "1.00", "description": description},
        metadata={"command": "Deposit", "schema": 1},
        recorded_at=datetime(2026, 11, 23, 1, 2, 3, 456789, tzinfo=UTC),
    )


async def test_notices_carry_exactly_what_the_store_wrote_on_every_path(pg_url: str) -> None:
    """Versions, ids, times and data of a notice's events are the stored ones, whether the
    one statement wrote the batch (refusing a conflicting append in it, or not), or it
    needed more (idempotency keys, a stream in two appends of the batch)."""
    async with store_and_notices(pg_url) as (_, store, payloads):
        await store.append(one(new_stream(), 0, events(1)))  # the head is not 0 below
        await asyncio.wait_for(payloads.get(), 5)
        a, b, c = new_stream(), new_stream(), new_stream()
        twice = [one(a, 0, events(2)), one(a, 2, events(1)), one(b, 0, events(1))]
        conflicting = [one(c, 0, events(1)), one(a, 0, events(1)), one(b, 1, events(2))]
        planned = [
            one(c, 1, events(1), idempotency=[idem()]),
            one(a, 3, events(1), snapshot=Snapshot(a, 4, {"balance": "1.00"})),
        ]
        ready = [one(c, 2, events(1), snapshot=Snapshot(c, 3, {"balance": "3.00"}))]
        for batch, failures in ((twice, 0), (conflicting, 1), (planned, 0), (ready, 0)):
            results = await asyncio.gather(
                *(store.append(r) for r in batch), return_exceptions=True
            )
            assert sum(isinstance(r, ConcurrencyError) for r in results) == failures, results
            written = [e for r in results if isinstance(r, list) for e in r]
            assert written, results
            received: list[tuple[Any, ...]] = []
            while len(received) < len(written):
                payload = await asyncio.wait_for(payloads.get(), 5)
                for moved in parse_notice(payload):
                    assert moved.version == moved.events[-1].version
                    received.extend((moved.stream_id, *astuple(e)) for e in moved.events)
            stored = [
                e
                for stream in sorted({e.stream_id for e in written})
                for e in await store.read_stream(stream)
                if e.position >= min(w.position for w in written)
            ]
            assert sorted(stored, key=lambda e: e.position) == sorted(
                written, key=lambda e: e.position
            )
            assert sorted(received) == sorted(
                (e.stream_id, e.version, e.event_id, e.type, e.data, e.metadata, e.recorded_at)
                for e in stored
            )
        assert await store.head_position() == 11


def payloads(origin: str, written: list[RecordedEvent]) -> list[str]:
    """The payloads the batch function sends for `written` (its heads around the bodies)."""
    moved: dict[str, list[list[Any]]] = {}
    for e in written:
        moved.setdefault(e.stream_id, []).append(
            [e.version, e.event_id, e.type, e.data, e.metadata]
        )
    at = orjson.dumps(written[0].recorded_at).decode()
    bodies = NoticeBodies.of(notice_entries(moved)).bodies
    return [f'{origin} {{"at":{at},"s":[{body}]}}' for body in bodies]


def test_notice_entries_of_many_streams_are_spread_over_bodies_that_fit() -> None:
    moved = {new_stream(): [[v, f"e-{v}", "MoneyDeposited", {}, {}] for v in (1, 2, 3)]}
    moved.update({new_stream(): list(next(iter(moved.values()))) for _ in range(299)})
    joined = NoticeBodies.of(notice_entries(moved))
    assert len(joined.bodies) > 1
    assert all(len(body.encode()) <= NOTICE_BYTES - 100 for body in joined.bodies)
    streams = [stream for body in joined.bodies for stream, *_ in orjson.loads(f"[{body}]")]
    assert streams == list(moved)
    for stream, (body, start, length) in zip(moved, joined.entries, strict=True):  # type: ignore[misc]
        entry = joined.bodies[body - 1].encode()[start - 1 : start - 1 + length]
        assert orjson.loads(entry)[0] == stream


def test_notices_stay_under_the_payload_limit_and_parse_back() -> None:
    streams = [f"{i:08d}-0000-4000-8000-000000000000" for i in range(300)]
    events = [_event(s, v) for s in streams for v in (1, 2)]
    events.append(_event("big", 1, "x" * NOTICE_BYTES))  # cannot travel: its version does
    notices = payloads("origin1", events)
    assert len(notices) > 1
    assert all(len(n.encode()) <= NOTICE_BYTES for n in notices)
    moved: dict[str, AppendedElsewhere] = {}
    for notice in notices:
        assert parse_notice(notice, unless_from="origin1") == []  # its own: not decoded
        for stream in parse_notice(notice, unless_from="another"):
            moved[stream.stream_id] = stream
    assert len(moved) == 301
    assert moved["big"] == AppendedElsewhere("big", 1, ())
    for stream_id in streams:
        expected = tuple(
            NoticedEvent(e.version, e.event_id, e.type, e.data, e.metadata, e.recorded_at)
            for e in (_event(stream_id, 1), _event(stream_id, 2))
        )
        assert moved[stream_id] == AppendedElsewhere(stream_id, 2, expected)
    assert parse_notice("o garbage a:1 :2 b:x") == []  # not JSON
    good = '["a",2,[[2,"e","MoneyDeposited",{},{}]]]'
    mixed = f'o {{"at":"2026-11-23T00:00:00+00:00","s":[["b"],{good},["c","x"],5]}}'
    assert [(m.stream_id, m.version, len(m.events)) for m in parse_notice(mixed)] == [("a", 2, 1)]
    assert parse_notice(f'o {{"at":"yesterday","s":[{good}]}}') == []
    assert parse_notice('o ["not", "an", "object"]') == []


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
        for _ in waiting():
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
