"""Projection rebuilds: full, from a position, of selected types, and by copy on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pytest
from tests.integration.projection_support import (
    SUMMARIES,
    TRANSACTIONS,
    Env,
    Exploding,
    all_events,
    assert_matches_replay,
    checkpoint,
    expected_transactions,
    populate,
    run_all,
    runner_for,
    tables,
    transactions_table,
)

from banking_es.db.postgres import _PgConnection
from banking_es.projections import TransactionsProjection
from banking_es.projections import transactions as transactions_module


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_full_rebuild_restores_the_tables(env: Env) -> None:
    await populate(env.store, ops=80)
    runner = runner_for(env, batch_size=16)
    await run_all(runner)
    before = await tables(env.db)
    head = await env.store.head_position()

    await env.db.execute("UPDATE account_summaries SET balance = balance + 1, status = 'bogus'")
    await env.db.execute("UPDATE transactions SET balance_after = 0")
    await env.db.execute("DELETE FROM transactions WHERE version % 3 = 0")
    calls: list[tuple[int, int]] = []
    for name in (SUMMARIES, TRANSACTIONS):
        calls.clear()
        assert await runner.rebuild(name, progress=lambda d, t: calls.append((d, t))) == head
        assert calls[0] == (0, head)
        assert calls[-1] == (head, head)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
        assert await checkpoint(env.db, name) == head
    assert await tables(env.db) == before
    await assert_matches_replay(env)


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the rows each PostgreSQL `COPY` wrote (one entry per statement)."""
    counted: list[int] = []
    original = _PgConnection.copy_records

    async def copy_records(
        self: _PgConnection, table: str, columns: Sequence[str], records: Iterable[Sequence[Any]]
    ) -> None:
        sent = 0

        def counting() -> Iterator[Sequence[Any]]:
            nonlocal sent
            for record in records:
                sent += 1
                yield record

        await original(self, table, columns, counting())
        counted.append(sent)

    monkeypatch.setattr(_PgConnection, "copy_records", copy_records)
    return counted


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.usefixtures("small_rebuild_batches")
async def test_a_rebuild_by_copy_writes_the_rows_of_small_batches(
    env: Env, copies: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    await populate(env.store, ops=150)
    head = await env.store.head_position()
    await runner_for(env, batch_size=5).run_once(TRANSACTIONS)
    assert copies == []  # small batches INSERT
    before = await transactions_table(env.db)

    # Batches of 40 by COPY, each carrying the balances on from the rows of the one before.
    monkeypatch.setattr(transactions_module, "COPY_MIN_ROWS", 10)
    runner = runner_for(env, batch_size=40)
    assert await runner.rebuild(TRANSACTIONS) == head
    assert len(copies) >= 3
    assert sum(copies) == len(before)
    assert await transactions_table(env.db) == before
    assert await checkpoint(env.db, TRANSACTIONS) == head

    # A crash in a batch written by COPY rolls back its rows and its checkpoint.
    copies.clear()
    exploding = Exploding(TransactionsProjection())
    with pytest.raises(RuntimeError, match="crash"):
        await runner_for(env, [exploding], batch_size=40).rebuild(TRANSACTIONS)
    assert len(copies) == 1
    assert await transactions_table(env.db) == {}
    assert await checkpoint(env.db, TRANSACTIONS) == 0

    # So does a failure while COPY is sending the rows (they are made as it goes).
    make_rows = transactions_module.transaction_rows

    def failing_rows(*args: Any) -> Iterator[tuple[Any, ...]]:
        for count, row in enumerate(make_rows(*args)):
            if count == 5:
                raise RuntimeError("bad event in the middle of a batch")
            yield row

    monkeypatch.setattr(transactions_module, "transaction_rows", failing_rows)
    with pytest.raises(RuntimeError, match="bad event"):
        await runner.run_once(TRANSACTIONS)
    assert await transactions_table(env.db) == {}
    assert await checkpoint(env.db, TRANSACTIONS) == 0
    monkeypatch.setattr(transactions_module, "transaction_rows", make_rows)
    assert await runner.run_once(TRANSACTIONS) == head
    assert await transactions_table(env.db) == before
    assert before == expected_transactions(await all_events(env.store))


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_rebuild_from_a_position_redoes_only_what_follows_it(env: Env) -> None:
    await populate(env.store, ops=80)
    runner = runner_for(env, batch_size=10)
    await run_all(runner)
    before = await tables(env.db)
    head = await env.store.head_position()
    middle = head // 2
    events = await all_events(env.store)
    touched_after = sorted({e.stream_id for e in events if e.position > middle})
    untouched = sorted({e.stream_id for e in events} - set(touched_after))
    assert touched_after

    # Corrupt rows derived from events after the position, and mark rows before it.
    await env.db.execute("UPDATE transactions SET balance_after = -1 WHERE position > $1", middle)
    await env.db.execute("DELETE FROM transactions WHERE position > $1 AND version % 2 = 0", middle)
    await env.db.execute(
        "UPDATE transactions SET description = 'kept' WHERE position <= $1", middle
    )
    for account_id in touched_after:
        await env.db.execute(
            "UPDATE account_summaries SET balance = -1, version = 1 WHERE account_id = $1",
            account_id,
        )
    if untouched:
        await env.db.execute(
            "UPDATE account_summaries SET owner_name = 'kept' WHERE account_id = $1", untouched[0]
        )

    assert await runner.rebuild(SUMMARIES, from_position=middle) == head - middle
    assert await runner.rebuild(TRANSACTIONS, from_position=middle) == head - middle

    summaries, transactions = await tables(env.db)
    for row_id, row in transactions.items():
        if row["position"] <= middle:
            assert row["description"] == "kept"
        else:
            assert row == before[1][row_id]
    assert set(transactions) == set(before[1])
    for account_id, row in summaries.items():
        if untouched and account_id == untouched[0]:
            assert row["owner_name"] == "kept"
        else:
            assert row == before[0][account_id]
    assert set(summaries) == set(before[0])
    assert await checkpoint(env.db, SUMMARIES) == head


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_rebuild_of_selected_types_keeps_the_checkpoint(env: Env) -> None:
    bank = await populate(env.store, ops=80)
    runner = runner_for(env, batch_size=8)
    await run_all(runner)
    before = await tables(env.db)
    head = await env.store.head_position()
    middle = head // 3
    events = await all_events(env.store)
    deposits_after = [e for e in events if e.type == "MoneyDeposited" and e.position > middle]
    withdrawal_after = next(e for e in events if e.type == "MoneyWithdrawn" and e.position > middle)
    assert deposits_after

    await env.db.execute(
        "UPDATE transactions SET balance_after = 0, amount = 0"
        " WHERE type = 'deposit' AND position > $1",
        middle,
    )
    await env.db.execute(
        "UPDATE transactions SET description = 'before' WHERE type = 'deposit' AND position <= $1",
        middle,
    )
    await env.db.execute("DELETE FROM transactions WHERE id = $1", deposits_after[0].event_id)
    await env.db.execute(
        "UPDATE transactions SET description = 'untouched' WHERE id = $1",
        withdrawal_after.event_id,
    )
    await env.db.execute(
        "UPDATE account_summaries SET balance = 0 WHERE account_id = $1",
        deposits_after[-1].stream_id,
    )
    # Events after the checkpoint stay unapplied by a type-selected rebuild.
    await bank.random_ops(20)

    calls: list[tuple[int, int]] = []
    for name in (SUMMARIES, TRANSACTIONS):
        calls.clear()
        await runner.rebuild(
            name,
            from_position=middle,
            types=["MoneyDeposited"],
            progress=lambda d, t: calls.append((d, t)),
        )
        assert calls[-1] == (head - middle, head - middle)
        assert await checkpoint(env.db, name) == head

    summaries, transactions = await tables(env.db)
    assert summaries == before[0]
    for row_id, row in before[1].items():
        if row["type"] == "deposit" and row["position"] <= middle:
            assert transactions[row_id] == {**row, "description": "before"}  # not replayed
        elif row_id == withdrawal_after.event_id:
            assert transactions[row_id] == {**row, "description": "untouched"}
        else:
            assert transactions[row_id] == row
    assert set(transactions) == set(before[1])

    # Catching up afterwards applies the newer events on top.
    await run_all(runner)
    await env.db.execute(
        "UPDATE transactions SET description = $2 WHERE id = $1",
        withdrawal_after.event_id,
        before[1][withdrawal_after.event_id]["description"],
    )
    await runner.rebuild(TRANSACTIONS, types=["MoneyDeposited"])
    await assert_matches_replay(env)
