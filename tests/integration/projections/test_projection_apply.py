"""Projections applying events: the tables match a replay, failures move nothing, each event is
applied exactly once by concurrent runners."""

from __future__ import annotations

import asyncio
import random

import pytest
from tests.integration.projection_support import (
    SUMMARIES,
    TRANSACTIONS,
    AuditProjection,
    Bank,
    Env,
    Exploding,
    Opener,
    all_events,
    assert_matches_replay,
    checkpoint,
    populate,
    run_all,
    runner_for,
    tables,
)

from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.projections import (
    AccountSummariesProjection,
    TransactionsProjection,
    default_projections,
)
from banking_es.projections.base import RowProjection
from banking_es.projections.checkpoints import lock_key


async def test_projections_match_a_replay(env: Env) -> None:
    await populate(env.store, ops=120)
    head = await env.store.head_position()
    runner = runner_for(env)

    applied = await run_all(runner)

    assert applied == {SUMMARIES: head, TRANSACTIONS: head}
    assert await checkpoint(env.db, SUMMARIES) == head
    assert await checkpoint(env.db, TRANSACTIONS) == head
    await assert_matches_replay(env)
    summaries, transactions = await tables(env.db)
    assert {s["status"] for s in summaries.values()} == {"open", "closed"}
    assert {t["type"] for t in transactions.values()} == {
        "opening",
        "deposit",
        "withdrawal",
        "transfer_in",
        "transfer_out",
    }


async def test_small_batches_interleaved_with_writes_match_a_replay(env: Env) -> None:
    bank = await populate(env.store, ops=10, seed=1)
    runner = runner_for(env, batch_size=3)
    for _ in range(6):
        await run_all(runner)
        await bank.random_ops(15)
    await run_all(runner)
    await assert_matches_replay(env)


async def test_a_failure_in_apply_moves_neither_rows_nor_checkpoint(env: Env) -> None:
    bank = await populate(env.store, ops=30)
    await run_all(runner_for(env))
    before = await tables(env.db)
    position = await env.store.head_position()
    await bank.random_ops(30)

    exploding = [Exploding(AccountSummariesProjection()), Exploding(TransactionsProjection())]
    crashing = runner_for(env, exploding, batch_size=1000)
    for name in (SUMMARIES, TRANSACTIONS):
        with pytest.raises(RuntimeError, match="crash"):
            await crashing.run_once(name)
    assert [p.calls for p in exploding] == [1, 1]  # the rows were written, then rolled back
    assert await tables(env.db) == before
    assert await checkpoint(env.db, SUMMARIES) == position
    assert await checkpoint(env.db, TRANSACTIONS) == position

    await run_all(runner_for(env))
    await assert_matches_replay(env)


async def test_running_again_and_reapplying_events_changes_nothing(env: Env) -> None:
    await populate(env.store, ops=60)
    runner = runner_for(env)
    await run_all(runner)
    before = await tables(env.db)

    assert await run_all(runner) == {SUMMARIES: 0, TRANSACTIONS: 0}
    # Apply every event a second time, bypassing the checkpoint: rows are de-duplicated.
    events = await all_events(env.store)
    rows = await env.store.read_rows(0, len(events))
    async with env.db.transaction() as conn:
        for projection in default_projections():
            await projection.apply(conn, events)
            await projection.apply(conn, events[len(events) // 2 :])
            assert isinstance(projection, RowProjection)
            await projection.apply_rows(conn, rows)
            await projection.apply_rows(conn, rows[len(rows) // 3 :])
    assert await tables(env.db) == before
    await assert_matches_replay(env)


async def test_concurrent_runners_apply_each_event_exactly_once(open_env: Opener) -> None:
    env_a, env_b = await open_env(), await open_env()
    await env_a.db.execute("CREATE TABLE test_audit (position bigint NOT NULL)")
    runners = [
        runner_for(
            env, [*default_projections(), AuditProjection()], poll_interval=0.01, batch_size=4
        )
        for env in (env_a, env_b)
    ]

    def notify() -> None:
        for runner in runners:
            runner.notify()

    bank_a = Bank(env_a.store, random.Random(1), on_append=notify)
    bank_b = Bank(env_b.store, random.Random(2), on_append=notify)
    for runner in runners:
        await runner.start()
    try:
        await asyncio.gather(bank_a.random_ops(60), bank_b.random_ops(60))
        head = await env_a.store.head_position()
        assert await runners[0].wait_for(head, 30)
        assert await runners[1].wait_for(head, 1)
    finally:
        for runner in runners:
            await runner.stop()

    duplicates = await env_a.db.fetch(
        "SELECT position, count(*) AS n FROM test_audit GROUP BY position HAVING count(*) > 1"
    )
    assert duplicates == []
    assert await env_a.db.fetchval("SELECT count(*) FROM test_audit") == head
    assert await env_a.db.fetchval("SELECT count(DISTINCT position) FROM test_audit") == head
    await assert_matches_replay(env_a)


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_rebuild_by_a_second_process_while_the_server_runs(open_env: Opener) -> None:
    server_env, cli_env = await open_env(), await open_env()
    bank = await populate(server_env.store, ops=40)
    server = runner_for(server_env, poll_interval=0.01, batch_size=10)
    bank.on_append = server.notify
    cli = runner_for(cli_env, batch_size=10)
    await server.start()
    try:
        writes = asyncio.create_task(bank.random_ops(40))
        for name in (SUMMARIES, TRANSACTIONS):
            await cli.rebuild(name)
        await cli.rebuild(TRANSACTIONS, from_position=20)
        await writes
        assert await server.wait_for(await server_env.store.head_position(), 30)
    finally:
        await server.stop()
    await assert_matches_replay(server_env)


@pytest.mark.postgres
async def test_postgres_batches_wait_for_the_advisory_lock(pg_url: str) -> None:
    envs: list[Env] = []
    try:
        for _ in range(2):
            db = await PostgresDatabase.connect(pg_url)
            envs.append(Env(db, PostgresEventStore(db)))
            await migrate(db)
        await populate(envs[0].store, ops=10)
        runner = runner_for(envs[0])
        async with envs[1].db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(TRANSACTIONS))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(runner.run_once(TRANSACTIONS), 0.3)
            assert await checkpoint(envs[0].db, TRANSACTIONS) == 0
            assert await runner.run_once(SUMMARIES) > 0  # other projections are not held up
        assert await runner.run_once(TRANSACTIONS) == await envs[0].store.head_position()
        await assert_matches_replay(envs[0])
    finally:
        for env in envs:
            await env.store.close()
            await env.db.close()


@pytest.mark.postgres
async def test_postgres_summary_updates_are_hot_updates(pg_url: str) -> None:
    """A projection batch rewrites the row of every account it touches: no index may cover a
    column that changes (balance, version, updated_at), and the pages keep room, so
    PostgreSQL updates the row in place (HOT) instead of adding an entry to every index."""
    db = await PostgresDatabase.connect(pg_url)
    env = Env(db, PostgresEventStore(db))
    try:
        await migrate(db)
        bank = await populate(env.store, ops=0)
        runner = runner_for(env, [AccountSummariesProjection()])
        await runner.run_once(SUMMARIES)
        for acct in bank.accounts:
            await bank.deposit(acct)
        after = await checkpoint(db, SUMMARIES)
        events = await env.store.read_all(after, 100)
        async with db.transaction() as conn:
            await AccountSummariesProjection().apply(conn, events)
            counts = await conn.fetchrow(
                "SELECT pg_stat_get_xact_tuples_updated(c.oid) AS updated,"
                " pg_stat_get_xact_tuples_hot_updated(c.oid) AS hot"
                " FROM pg_class c WHERE c.relname = 'account_summaries'"
            )
        assert counts is not None
        assert counts["updated"] == len(bank.accounts) == 4
        assert counts["hot"] == counts["updated"]
    finally:
        await env.store.close()
        await db.close()
