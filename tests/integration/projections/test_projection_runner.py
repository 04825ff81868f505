"""The projection runner: status and lag, the background loop, the leader lease, what each
batch reads, and its arguments."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import pytest
from tests.integration.projection_support import (
    SUMMARIES,
    TRANSACTIONS,
    Bank,
    CountingStore,
    Env,
    Flaky,
    Opener,
    assert_matches_replay,
    populate,
    run_all,
    runner_for,
)

from banking_es.application.ports import SystemClock
from banking_es.db.base import Connection, DatabaseUnavailable
from banking_es.db.lease import LeaseElection
from banking_es.projections import (
    AccountSummariesProjection,
    TransactionsProjection,
    default_projections,
)
from banking_es.projections import runner as runner_module
from banking_es.projections.queries import ReadModels
from banking_es.projections.runner import PROJECTIONS_LEASE, ProjectionRunner


async def test_status_reports_lag(env: Env) -> None:
    await populate(env.store, ops=20)
    head = await env.store.head_position()
    runner = runner_for(env)
    await asyncio.sleep(0.05)

    status = {s.name: s for s in await runner.status()}
    assert set(status) == {SUMMARIES, TRANSACTIONS}
    for s in status.values():
        assert (s.position, s.head, s.lag_events, s.updated_at) == (0, head, head, None)
        assert s.lag_seconds >= 0.05

    await runner.run_once(SUMMARIES)
    status = {s.name: s for s in await runner.status()}
    assert status[SUMMARIES].position == head
    assert status[SUMMARIES].lag_events == 0
    assert status[SUMMARIES].lag_seconds == 0
    assert status[SUMMARIES].updated_at is not None
    assert status[TRANSACTIONS].lag_events == head
    assert status[TRANSACTIONS].lag_seconds >= 0.05


async def test_the_background_loop_follows_writes_and_survives_errors(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(TransactionsProjection(), failures=2)
    counting = CountingStore(env.store)
    runner = ProjectionRunner(
        env.db, counting, [AccountSummariesProjection(), flaky], poll_interval=0.05
    )
    bank = Bank(env.store, random.Random(3), on_append=runner.notify)
    caplog.set_level(logging.ERROR, logger="banking_es.projections.runner")
    await runner.start()
    try:
        await runner.start()  # a second start is a no-op
        await bank.random_ops(30)
        assert await runner.wait_for(await env.store.head_position(), 10)
        assert flaky.calls > 2
        failures = [r for r in caplog.records if "batch failed" in r.getMessage()]
        assert len(failures) == 2
        assert failures[1].created - failures[0].created >= 0.04  # backed off between tries

        # Idle: one cheap read per projection and poll, not a busy loop.
        counting.reads = 0
        await asyncio.sleep(0.5)
        assert counting.reads <= 2 * (0.5 / 0.05 + 3)

        await bank.random_ops(5)
        assert await runner.wait_for(await env.store.head_position(), 5)
    finally:
        await runner.stop()
    await assert_matches_replay(env)


async def test_with_a_lease_only_the_leader_runs_and_a_stand_by_takes_over(
    open_env: Opener,
) -> None:
    """Two server processes: the lease holder applies every batch, the other does not even
    read the store; once the leader stops (and gives the lease up) the other carries on."""
    envs = [await open_env(), await open_env()]
    stores = [CountingStore(env.store) for env in envs]
    leaders = [LeaseElection(env.db, PROJECTIONS_LEASE, SystemClock(), ttl=5.0) for env in envs]
    runners = [
        ProjectionRunner(env.db, store, default_projections(), poll_interval=0.05, leader=leader)
        for env, store, leader in zip(envs, stores, leaders, strict=True)
    ]
    bank = Bank(envs[0].store, random.Random(5), on_append=lambda: [r.notify() for r in runners])
    await runners[0].start()
    deadline = time.monotonic() + 10
    while not leaders[0].is_leader:  # the first takes the lease
        assert time.monotonic() < deadline, "the first runner never took the lease"
        await asyncio.sleep(0.01)
    await runners[1].start()
    try:
        await bank.random_ops(30)
        assert await runners[1].wait_for(await envs[0].store.head_position(), 10)
        assert stores[0].reads > 0
        assert stores[1].reads == 0

        await runners[0].stop()
        await bank.random_ops(10)
        assert await runners[1].wait_for(await envs[0].store.head_position(), 10)
        assert stores[1].reads > 0
    finally:
        for runner in runners:
            await runner.stop()
    await assert_matches_replay(envs[0])


async def test_one_read_serves_every_projection_even_when_more_came_since(env: Env) -> None:
    counting = CountingStore(env.store)
    runner = ProjectionRunner(env.db, counting, default_projections())
    bank = await populate(env.store, ops=30)
    assert await runner.run_once(SUMMARIES) > 0
    assert counting.reads == 1
    assert await runner.run_once(TRANSACTIONS) > 0
    assert counting.reads == 1  # the same batch, read once

    await bank.random_ops(10)
    await runner.run_once(SUMMARIES)  # reads these ...
    reads = counting.reads
    await bank.random_ops(10)  # ... and more come before the other projection runs
    await runner.run_once(TRANSACTIONS)  # the shared batch, then the rest from the store
    assert counting.reads == reads + 1
    await runner.run_once(SUMMARIES)  # the rest, as read for the other projection
    assert counting.reads == reads + 1
    await assert_matches_replay(env)


def spy_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The accounts whose rows the projections read back from their tables from now on."""
    asked: list[str] = []
    load = AccountSummariesProjection._load
    previous = TransactionsProjection._previous

    async def spied_load(conn: Connection, dialect: Any, account_ids: list[str]) -> Any:
        asked.extend(account_ids)
        return await load(conn, dialect, account_ids)

    async def spied_previous(conn: Connection, dialect: Any, first: dict[str, int]) -> Any:
        asked.extend(first)
        return await previous(conn, dialect, first)

    monkeypatch.setattr(AccountSummariesProjection, "_load", staticmethod(spied_load))
    monkeypatch.setattr(TransactionsProjection, "_previous", staticmethod(spied_previous))
    return asked


async def test_batches_take_the_rows_they_wrote_from_memory_until_someone_else_writes(
    open_env: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, other = await open_env(), await open_env()
    bank = await populate(env.store, ops=30)
    runner = runner_for(env)
    await run_all(runner)
    asked = spy_reads(monkeypatch)
    live = [a for a in bank.accounts if a.open]
    for acct in live:
        await bank.deposit(acct)
    await run_all(runner)
    assert asked == []  # every account's row came from memory
    await assert_matches_replay(env)

    for acct in live:  # another process applies these: the rows change behind its back
        await bank.deposit(acct)
    await run_all(runner_for(other))
    for acct in live:
        await bank.deposit(acct)
    asked.clear()
    await run_all(runner)
    assert sorted(asked) == sorted([a.id for a in live] * 2)  # so it read them again
    await assert_matches_replay(env)


async def test_a_batch_that_rolls_back_leaves_nothing_remembered(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = await populate(env.store, ops=30)
    runner = runner_for(env)
    await run_all(runner)
    await bank.random_ops(30)
    write = runner_module.write_checkpoint

    async def failing(conn: Connection, name: str, position: int) -> None:
        raise DatabaseUnavailable("connection lost (simulated)")

    monkeypatch.setattr(runner_module, "write_checkpoint", failing)
    for name in (SUMMARIES, TRANSACTIONS):  # applied (and remembered), then rolled back
        with pytest.raises(DatabaseUnavailable):
            await runner.run_once(name)
    monkeypatch.setattr(runner_module, "write_checkpoint", write)
    await run_all(runner)
    await assert_matches_replay(env)


async def test_bad_arguments_are_refused(env: Env) -> None:
    runner = runner_for(env)
    with pytest.raises(KeyError, match="nope"):
        await runner.run_once("nope")
    with pytest.raises(ValueError, match="types"):
        await runner.rebuild(TRANSACTIONS, types=[])
    with pytest.raises(ValueError, match="two projections"):
        runner_for(env, [TransactionsProjection(), TransactionsProjection()])
    with pytest.raises(ValueError, match="limit"):
        await ReadModels(env.db).list_accounts(None, None, 0)


async def test_wait_for_times_out_without_a_runner(env: Env) -> None:
    await populate(env.store, ops=2)
    runner = runner_for(env)
    started = time.monotonic()
    assert not await runner.wait_for(1, 0.1)
    assert time.monotonic() - started < 1
    await run_all(runner)
    assert await runner.wait_for(await env.store.head_position(), 0.1)
