"""`hold` rows of `transactions`: the held amount with no money moved and the hold's status,
set by its later capture, void or expiry in any batch; the same after replays (as the Kafka
consumer applies events), full, from-position and type-selected rebuilds."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.integration.projection_support import (
    TRANSACTIONS,
    Env,
    all_events,
    assert_matches_replay,
    checkpoint,
    expected_transactions,
    populate,
    run_all,
    runner_for,
    transactions_table,
)

from banking_es.projections import TransactionsProjection


async def test_a_hold_row_moves_no_money_and_takes_its_status_later(env: Env) -> None:
    bank = await populate(env.store, ops=0)
    payer = bank.accounts[0]
    opening = payer.balance
    await bank.deposit(payer)
    runner = runner_for(env, batch_size=2)
    for how, status in (("capture", "captured"), ("void", "voided"), ("expire", "expired")):
        await bank.place_hold(payer)
        await run_all(runner)  # the hold's row is written in one batch ...
        [hold_id] = payer.holds
        row = (await transactions_table(env.db))[hold_id]
        before = row["balance_after"]
        assert (row["type"], row["status"], row["settled_position"]) == ("hold", "pending", None)
        assert row["transfer_id"] == hold_id
        await bank.settle_hold(payer, hold_id, how)
        await run_all(runner)  # ... and settled by a later one
        rows = await transactions_table(env.db)
        assert rows[hold_id]["status"] == status
        assert rows[hold_id]["settled_position"] == await env.store.head_position()
        assert rows[hold_id]["balance_after"] == before  # held, not moved
    captures = [r for r in rows.values() if r["type"] == "hold_capture"]
    assert len(captures) == 1
    assert captures[0]["status"] is None
    assert opening < before
    await assert_matches_replay(env)


async def test_hold_rows_match_a_replay_whatever_the_batches(env: Env) -> None:
    bank = await populate(env.store, ops=40, seed=3, holds=True)
    runner = runner_for(env, batch_size=3)
    for _ in range(4):
        await run_all(runner)
        await bank.random_ops(20, holds=True)
    await run_all(runner)
    await assert_matches_replay(env)
    statuses = {r["status"] for r in (await transactions_table(env.db)).values()}
    assert statuses == {None, "pending", "captured", "voided", "expired"}


async def test_events_applied_again_change_nothing(env: Env) -> None:
    """The Kafka consumer applies events with `apply`, a hold and its settlement maybe in
    different batches; applying them again (any split) is a no-op."""
    await populate(env.store, ops=80, seed=5, holds=True)
    events = await all_events(env.store)
    projection = TransactionsProjection()
    for size in (7, 1000, 3):
        for start in range(0, len(events), size):
            async with env.db.transaction() as conn:
                await projection.apply(conn, events[start : start + size])
        assert await transactions_table(env.db) == expected_transactions(events)


@pytest.mark.usefixtures("small_rebuild_batches")
async def test_rebuilds_restore_the_statuses(env: Env) -> None:
    await populate(env.store, ops=120, seed=11, holds=True)
    runner = runner_for(env, batch_size=8)
    await run_all(runner)
    before = await transactions_table(env.db)
    head = await env.store.head_position()
    events = await all_events(env.store)
    settlements = [e for e in events if e.type in ("HoldCaptured", "HoldVoided", "HoldExpired")]
    # A hold placed before the position and settled after it.
    placed = {e.event_id: e.position for e in events if e.type == "HoldPlaced"}
    middle = next(s.position - 1 for s in settlements if placed[s.data["hold_id"]] < s.position - 1)

    await env.db.execute("UPDATE transactions SET status = 'bogus' WHERE type = 'hold'")
    assert await runner.rebuild(TRANSACTIONS) == head
    assert await transactions_table(env.db) == before

    await env.db.execute(
        "UPDATE transactions SET status = 'bogus', settled_position = 0 WHERE type = 'hold'"
        " AND settled_position > $1",
        middle,
    )
    assert await runner.rebuild(TRANSACTIONS, from_position=middle) == head - middle
    assert await transactions_table(env.db) == before

    for types, damage in (
        (["HoldPlaced"], "DELETE FROM transactions WHERE type = 'hold' AND position > $1"),
        (
            ["HoldVoided", "HoldExpired", "HoldCaptured"],
            "UPDATE transactions SET status = 'pending', settled_position = NULL"
            " WHERE type = 'hold' AND settled_position > $1",
        ),
    ):
        await env.db.execute(damage, middle)
        assert await transactions_table(env.db) != before
        await runner.rebuild(TRANSACTIONS, from_position=middle, types=types)
        after = await transactions_table(env.db)
        assert after == before, str(
            [(k, v, before[k]) for k, v in after.items() if before.get(k) != v][:2]
        )
        assert await checkpoint(env.db, TRANSACTIONS) == head

    # A replay of other types leaves the statuses as they are.
    await env.db.execute("UPDATE transactions SET status = 'kept' WHERE type = 'hold'")
    await runner.rebuild(TRANSACTIONS, types=["MoneyDeposited"])
    assert {r["status"] for r in (await transactions_table(env.db)).values()} == {None, "kept"}
    assert any(r["amount"] > Decimal(0) for r in before.values() if r["type"] == "hold")
