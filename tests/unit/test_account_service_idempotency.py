"""AccountService's idempotency: the record is written in the command's own append, and a key
replays its first outcome."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import orjson
import pytest
from tests.clock_support import FakeClock
from tests.unit.account_service_support import (
    CTX,
    USD,
    balance_and_version,
    keyed,
    open_account,
    stored_record,
    transfer,
)
from tests.unit.unit_support import ServiceFactory, SpyStore

from banking_es.application.accounts import AccountService, Replayed, TransferResult
from banking_es.application.errors import ServiceUnavailable, VersionConflict
from banking_es.application.results import STORED_ANSWER, load_answer, store_result
from banking_es.domain import commands as cmd
from banking_es.domain import errors
from banking_es.domain.account import Account
from banking_es.eventstore.base import IdempotencyRecord, StoreUnavailable
from banking_es.eventstore.memory import MemoryEventStore


async def test_the_idempotency_record_is_written_in_the_same_append(
    make_service: ServiceFactory, store: MemoryEventStore, clock: FakeClock
) -> None:
    spy = SpyStore(store)
    service = make_service(spy)
    account = await open_account(service, "10")
    context = keyed("k-1", fingerprint="fp-deposit")
    result = await service.deposit(cmd.Deposit(account.id, Decimal("5")), context)
    assert isinstance(result, Account)
    [append] = spy.calls.appends[1:]
    assert [(r.scope, r.key) for r in append.idempotency] == [("user-1", "k-1")]
    record = await stored_record(store, "k-1")
    assert record == IdempotencyRecord(
        scope="user-1",
        key="k-1",
        fingerprint="fp-deposit",
        status=STORED_ANSWER,
        body=store_result(result, (), before_append=True),
        created_at=clock.now(),
        expires_at=clock.now() + timedelta(hours=1),
    )
    stored, _ = load_answer(record.body)
    assert isinstance(stored, Account)
    assert (stored.id, str(stored.balance), stored.version) == (account.id, "15.00", 2)
    assert stored.updated_at is None  # the append's time: a replay reads it from the event
    [_, event] = await store.read_stream(account.id)
    assert event.metadata["idempotency_key"] == "k-1"


async def test_a_second_command_with_the_same_key_replays_the_first_outcome(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    first = await service.deposit(cmd.Deposit(account.id, Decimal("5")), keyed("k-1"))
    record = await stored_record(store, "k-1")
    again = await service.deposit(cmd.Deposit(account.id, Decimal("5")), keyed("k-1"))
    other = await service.withdraw(cmd.Withdraw(account.id, Decimal("1")), keyed("k-1"))
    assert isinstance(first, Account)
    assert again == Replayed(record) == other  # type: ignore[arg-type]
    assert await balance_and_version(store, account.id) == ("15.00", 2)


async def test_a_replayed_key_in_a_batch_does_not_block_its_neighbours(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "0")
    await service.deposit(cmd.Deposit(account.id, Decimal("1")), keyed("k-1"))
    record = await stored_record(store, "k-1")
    outcomes = await asyncio.gather(
        service.deposit(cmd.Deposit(account.id, Decimal("10")), CTX),
        service.deposit(cmd.Deposit(account.id, Decimal("100")), keyed("k-1")),
        service.deposit(cmd.Deposit(account.id, Decimal("1000")), keyed("k-2")),
    )
    assert isinstance(outcomes[0], Account)
    assert outcomes[1] == Replayed(record)  # type: ignore[arg-type]
    assert isinstance(outcomes[2], Account)
    assert await balance_and_version(store, account.id) == ("1011.00", 4)
    k2 = await stored_record(store, "k-2")
    assert k2 is not None
    assert k2.body == store_result(outcomes[2], (), before_append=True)  # type: ignore[arg-type]


async def test_two_concurrent_commands_with_the_same_key_execute_once(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "0")
    outcomes = await asyncio.gather(
        service.deposit(cmd.Deposit(account.id, Decimal("1")), keyed("k-1")),
        service.deposit(cmd.Deposit(account.id, Decimal("1")), keyed("k-1")),
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["Account", "Replayed"]
    assert await balance_and_version(store, account.id) == ("1.00", 2)


async def test_a_rejected_command_stores_no_record_in_the_append(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    with pytest.raises(errors.InsufficientFunds):
        await service.withdraw(cmd.Withdraw(account.id, Decimal("11")), keyed("k-1"))
    with pytest.raises(VersionConflict):
        await service.deposit(cmd.Deposit(account.id, Decimal("1"), None, 7), keyed("k-2"))
    assert await stored_record(store, "k-1") is None
    assert await stored_record(store, "k-2") is None


async def test_a_failed_append_stores_no_record(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    store.fail_next_commit = StoreUnavailable("down")
    with pytest.raises(ServiceUnavailable):
        await service.deposit(cmd.Deposit(account.id, Decimal("1")), keyed("k-1"))
    assert await stored_record(store, "k-1") is None
    # the key is free: the retry executes the command
    result = await service.deposit(cmd.Deposit(account.id, Decimal("1")), keyed("k-1"))
    assert isinstance(result, Account)
    assert result.version == 2


async def test_open_account_with_a_key_is_created_once(
    service: AccountService, store: MemoryEventStore
) -> None:
    first = await open_account(service, "10", context=keyed("open-1"))
    record = await stored_record(store, "open-1")
    assert record is not None
    assert record.status == STORED_ANSWER
    assert orjson.loads(record.body)["account"]["id"] == first.id
    again = await service.open_account(cmd.OpenAccount("Ada", Decimal("10"), USD), keyed("open-1"))
    assert again == Replayed(record)
    assert await store.head_position() == 1


async def test_transfer_with_a_key_moves_money_once(
    service: AccountService, store: MemoryEventStore
) -> None:
    source = await open_account(service, "100")
    target = await open_account(service, "0")
    first = await transfer(service, source.id, target.id, "30", keyed("t-1"))
    assert isinstance(first, TransferResult)
    record = await stored_record(store, "t-1")
    assert record is not None
    stored, _ = load_answer(record.body)
    assert isinstance(stored, TransferResult)
    assert (stored.id, stored.amount, stored.created_at) == (first.id, first.amount, None)
    again = await transfer(service, source.id, target.id, "30", keyed("t-1"))
    assert again == Replayed(record)
    assert await balance_and_version(store, source.id) == ("70.00", 2)
    assert await balance_and_version(store, target.id) == ("30.00", 2)
