"""The read models' queries: pages of accounts and of transactions."""

from __future__ import annotations

import random
import uuid
from decimal import Decimal

from tests.integration.projection_support import Bank, Env, run_all, runner_for

from banking_es.projections.queries import ReadModels


async def test_list_accounts_pages_oldest_first(env: Env) -> None:
    bank = Bank(env.store, random.Random(4))
    mine = [await bank.open("me") for _ in range(3)]
    other = await bank.open("you")
    mine += [await bank.open("me") for _ in range(2)]
    await bank.deposit(mine[0])
    await run_all(runner_for(env))
    reads = ReadModels(env.db)

    seen: list[str] = []
    after: int | None = None
    pages = 0
    while True:
        page, has_more = await reads.list_accounts("me", after, 2)
        pages += 1
        seen += [a.account_id for a in page]
        if not has_more:
            break
        after = page[-1].created_position
    assert seen == [a.id for a in mine]
    assert pages == 3

    everything, has_more = await reads.list_accounts(None, None, 100)
    assert not has_more
    assert [a.account_id for a in everything] == [
        *(a.id for a in mine[:3]),
        other.id,
        *(a.id for a in mine[3:]),
    ]
    first = everything[0]
    assert first.balance == mine[0].balance
    assert first.version == 2
    assert first.status == "open"
    assert first.owner_id == "me"
    assert first.created_at.tzinfo is not None
    assert first.updated_at > first.created_at
    exact, has_more = await reads.list_accounts("me", None, 5)
    assert (len(exact), has_more) == (5, False)
    assert await reads.list_accounts("nobody", None, 5) == ([], False)


async def test_list_transactions_pages_newest_first(env: Env) -> None:
    bank = Bank(env.store, random.Random(5))
    acct, other = await bank.open("me", Decimal("100.00")), await bank.open("me")
    for _ in range(4):
        await bank.deposit(acct)
        await bank.withdraw(acct)
    await bank.transfer(acct, other)
    await bank.close(acct)  # a withdrawal to zero, then the close (no row)
    await run_all(runner_for(env))
    reads = ReadModels(env.db)

    versions: list[int] = []
    before: int | None = None
    while True:
        page, has_more = await reads.list_transactions(acct.id, before, 3)
        versions += [t.version for t in page]
        if not has_more:
            break
        before = page[-1].version
    assert versions == list(range(acct.version - 1, 0, -1))

    rows, _ = await reads.list_transactions(acct.id, None, 100)
    assert rows[0].type == "withdrawal"
    assert rows[0].balance_after == Decimal("0.00")
    assert rows[1].type == "transfer_out"
    assert rows[1].transfer_id is not None
    assert rows[-1].type == "opening"
    assert rows[-1].amount == rows[-1].balance_after == Decimal("100.00")
    assert rows[-1].occurred_at.tzinfo is not None
    incoming, _ = await reads.list_transactions(other.id, None, 100)
    assert incoming[0].type == "transfer_in"
    assert incoming[0].transfer_id == rows[1].transfer_id
    assert await reads.list_transactions(str(uuid.uuid4()), None, 10) == ([], False)


async def test_transaction_rows_carry_a_holds_status(env: Env) -> None:
    bank = Bank(env.store, random.Random(6))
    acct = await bank.open("me", Decimal("500.00"))  # more than two holds take
    await bank.place_hold(acct)
    await bank.place_hold(acct)
    first, second = acct.holds
    await bank.settle_hold(acct, first, "void")
    await run_all(runner_for(env))

    rows, has_more = await ReadModels(env.db).list_transactions(acct.id, None, 10)
    assert not has_more
    assert [(r.type, r.status, r.transfer_id) for r in rows] == [
        ("hold", "pending", second),
        ("hold", "voided", first),
        ("opening", None, None),
    ]
    assert {r.balance_after for r in rows} == {Decimal("500.00")}
