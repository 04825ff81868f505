"""AccountService's commands on the real in-memory store: open, deposit, withdraw, close,
expected versions and transfers."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from tests.unit.account_service_support import (
    CTX,
    USD,
    balance_and_version,
    deposit,
    open_account,
    t,
    transfer,
    withdraw,
)
from tests.unit.unit_support import ServiceFactory, SpyStore, collector_garbage

from banking_es.application.accounts import AccountService, CommandContext, TransferResult
from banking_es.application.errors import NotFound, ServiceUnavailable, VersionConflict
from banking_es.domain import commands as cmd
from banking_es.domain import errors
from banking_es.domain.account import CLOSED, OPEN, Account
from banking_es.eventstore.base import StoreUnavailable
from banking_es.eventstore.memory import MemoryEventStore

# ---- open ----------------------------------------------------------------------------------------


async def test_open_account_returns_the_new_account_at_version_one(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "12.5", owner="  Ada  ")
    assert account.version == 1
    assert account.balance == Decimal("12.50")
    assert (account.owner_name, account.owner_id, account.currency) == ("Ada", "owner-1", USD)
    assert account.status == OPEN
    assert account.created_at == account.updated_at == t(1)
    [event] = await store.read_stream(account.id)
    assert (event.type, event.version, event.recorded_at) == ("AccountCreated", 1, t(1))
    assert event.data == {
        "account_id": account.id,
        "owner_name": "Ada",
        "initial_balance": "12.50",
        "currency": USD,
        "owner_id": "owner-1",
    }


async def test_open_account_records_who_asked_in_the_metadata(
    service: AccountService, store: MemoryEventStore
) -> None:
    context = CommandContext(user_id="user-9", request_id="req-9")
    account = await open_account(service, context=context)
    [event] = await store.read_stream(account.id)
    assert event.metadata == {
        "command": "OpenAccount",
        "user_id": "user-9",
        "request_id": "req-9",
        "correlation_id": "req-9",
        "schema": 1,
    }


@pytest.mark.parametrize(
    ("owner", "balance", "currency", "error"),
    [
        (" ", "0", USD, errors.InvalidAccountData),
        ("x" * 201, "0", USD, errors.InvalidAccountData),
        ("Ada", "0", "usd", errors.InvalidAccountData),
        ("Ada", "-1", USD, errors.InvalidAmount),
        ("Ada", "0.001", USD, errors.InvalidAmount),
        ("Ada", "1000000000000000", USD, errors.InvalidAmount),
    ],
)
async def test_open_account_rejects_invalid_data_and_writes_nothing(
    service: AccountService,
    store: MemoryEventStore,
    owner: str,
    balance: str,
    currency: str,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        await service.open_account(cmd.OpenAccount(owner, Decimal(balance), currency), CTX)
    assert await store.head_position() == 0


async def test_open_accounts_get_distinct_uuid_ids(service: AccountService) -> None:
    ids = {(await open_account(service)).id for _ in range(5)}
    assert len(ids) == 5
    assert all(len(i) == 36 and i.count("-") == 4 for i in ids)


# ---- deposit, withdraw, close --------------------------------------------------------------------


async def test_deposit_adds_the_amount_and_moves_the_version(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    after = await deposit(service, account.id, "5.25", description="gift")
    assert (after.balance, after.version) == (Decimal("15.25"), 2)
    assert after.created_at == t(1)
    assert after.updated_at == t(2)
    events = await store.read_stream(account.id)
    assert events[1].type == "MoneyDeposited"
    assert events[1].data == {"amount": "5.25", "description": "gift"}
    assert events[1].metadata["command"] == "Deposit"
    assert await balance_and_version(store, account.id) == ("15.25", 2)


async def test_withdraw_subtracts_the_amount(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    after = await withdraw(service, account.id, "9.99")
    assert (after.balance, after.version, after.updated_at) == (Decimal("0.01"), 2, t(2))
    assert await balance_and_version(store, account.id) == ("0.01", 2)


async def test_withdraw_rejects_more_than_the_balance_and_writes_nothing(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    with pytest.raises(errors.InsufficientFunds) as info:
        await withdraw(service, account.id, "10.01")
    assert (info.value.balance, info.value.amount) == (Decimal("10.00"), Decimal("10.01"))
    assert await store.head_position() == 1


async def test_a_refused_command_leaves_no_reference_cycle_for_the_collector(
    service: AccountService,
) -> None:
    """The refusal is decided in one frame and raised to the caller from another: neither
    may be held by the error's traceback while it holds the error (in a server, such a cycle
    kept the frames of the whole HTTP stack of each refused request until a collection)."""
    account = await open_account(service, "10")
    with collector_garbage() as garbage:
        for _ in range(3):
            with pytest.raises(errors.InsufficientFunds):
                await withdraw(service, account.id, "10.01")
    refusals = [o for o in garbage if isinstance(o, errors.DomainError)]
    assert refusals == [], f"{len(refusals)} refusals waited for the collector"


async def test_deposit_beyond_the_balance_limit_is_rejected(service: AccountService) -> None:
    account = await open_account(service, "999999999999999.00")
    with pytest.raises(errors.BalanceLimitExceeded):
        await deposit(service, account.id, "1")
    assert (await deposit(service, account.id, "0.99")).balance == Decimal("999999999999999.99")


@pytest.mark.parametrize("amount", ["0", "-1", "0.001"])
async def test_deposit_and_withdraw_reject_invalid_amounts(
    service: AccountService, store: MemoryEventStore, amount: str
) -> None:
    account = await open_account(service, "10")
    with pytest.raises(errors.InvalidAmount):
        await deposit(service, account.id, amount)
    with pytest.raises(errors.InvalidAmount):
        await withdraw(service, account.id, amount)
    assert await store.head_position() == 1


async def test_close_at_zero_closes_the_account(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "0")
    result = await service.close_account(cmd.CloseAccount(account.id, "moving"), CTX)
    assert isinstance(result, Account)
    assert (result.status, result.version, result.closed_reason) == (CLOSED, 2, "moving")
    assert (await store.read_stream(account.id))[1].data == {"reason": "moving"}


async def test_close_rejects_an_account_that_holds_money(service: AccountService) -> None:
    account = await open_account(service, "0.01")
    with pytest.raises(errors.BalanceNotZero):
        await service.close_account(cmd.CloseAccount(account.id, "bye"), CTX)
    assert (await service.get_account(account.id)).status == OPEN


async def test_a_closed_account_rejects_every_write(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "0")
    other = await open_account(service, "10")
    await service.close_account(cmd.CloseAccount(account.id, "bye"), CTX)
    with pytest.raises(errors.AccountClosed):
        await deposit(service, account.id, "1")
    with pytest.raises(errors.AccountClosed):
        await withdraw(service, account.id, "1")
    with pytest.raises(errors.AccountClosed):
        await service.close_account(cmd.CloseAccount(account.id, "again"), CTX)
    with pytest.raises(errors.AccountClosed):
        await transfer(service, other.id, account.id, "1")
    assert await store.head_position() == 3


@pytest.mark.parametrize(
    "command",
    [
        cmd.Deposit("missing", Decimal("1")),
        cmd.Withdraw("missing", Decimal("1")),
        cmd.CloseAccount("missing", "bye"),
    ],
    ids=["deposit", "withdraw", "close"],
)
async def test_writes_to_an_unknown_account_are_not_found(
    service: AccountService, store: MemoryEventStore, command: cmd.StreamCommand
) -> None:
    handler = {
        cmd.Deposit: service.deposit,
        cmd.Withdraw: service.withdraw,
        cmd.CloseAccount: service.close_account,
    }[type(command)]
    with pytest.raises(NotFound, match="account missing not found"):
        await handler(command, CTX)  # type: ignore[operator]
    assert await store.head_position() == 0


async def test_get_account_of_an_unknown_id_is_not_found(service: AccountService) -> None:
    with pytest.raises(NotFound):
        await service.get_account("nope")


# ---- expected_version ----------------------------------------------------------------------------


async def test_expected_version_that_matches_allows_the_write(service: AccountService) -> None:
    account = await open_account(service, "10")
    after = await deposit(service, account.id, "1", expected_version=1)
    assert after.version == 2
    closed = await withdraw(service, account.id, "11", expected_version=2)
    assert closed.balance == Decimal("0.00")
    result = await service.close_account(cmd.CloseAccount(account.id, "x", expected_version=3), CTX)
    assert isinstance(result, Account)
    assert result.version == 4


@pytest.mark.parametrize("expected", [0, 1, 3, 99])
async def test_expected_version_mismatch_is_a_conflict_with_the_current_version(
    service: AccountService, store: MemoryEventStore, expected: int
) -> None:
    account = await open_account(service, "10")
    await deposit(service, account.id, "1")
    with pytest.raises(VersionConflict) as info:
        await deposit(service, account.id, "1", expected_version=expected)
    assert info.value.current_version == 2
    assert info.value.expected == expected
    assert info.value.code == "version_conflict"
    assert await store.head_position() == 2


async def test_expected_version_is_checked_against_the_store_not_a_stale_cache(
    make_service: ServiceFactory,
) -> None:
    a, b = make_service(), make_service()
    account = await open_account(a, "10")  # `a` caches version 1
    await deposit(b, account.id, "5")  # another process moves it to version 2
    after = await deposit(a, account.id, "1", expected_version=2)
    assert (after.version, after.balance) == (3, Decimal("16.00"))
    with pytest.raises(VersionConflict) as info:
        await deposit(a, account.id, "1", expected_version=2)
    assert info.value.current_version == 3


# ---- transfers -----------------------------------------------------------------------------------


async def test_transfer_moves_money_between_two_accounts(
    service: AccountService, store: MemoryEventStore
) -> None:
    source = await open_account(service, "100", owner="A")
    target = await open_account(service, "5", owner="B")
    result = await transfer(service, source.id, target.id, "40.5")
    assert isinstance(result, TransferResult)
    assert result == TransferResult(
        result.id, source.id, target.id, Decimal("40.50"), USD, "rent", t(3), "completed"
    )
    assert await balance_and_version(store, source.id) == ("59.50", 2)
    assert await balance_and_version(store, target.id) == ("45.50", 2)
    sent = (await store.read_stream(source.id))[1]
    received = (await store.read_stream(target.id))[1]
    assert sent.event_id == result.id
    assert sent.data == {
        "transfer_id": result.id,
        "to_account_id": target.id,
        "amount": "40.50",
        "description": "rent",
    }
    assert received.data == {
        "transfer_id": result.id,
        "from_account_id": source.id,
        "amount": "40.50",
        "description": "rent",
    }
    assert sent.recorded_at == received.recorded_at == t(3)
    assert received.position == sent.position + 1


async def test_transfer_updates_the_cached_states(service: AccountService) -> None:
    source = await open_account(service, "100")
    target = await open_account(service, "0")
    await transfer(service, source.id, target.id, "30")
    assert (await service.get_account(source.id)).balance == Decimal("70.00")
    assert (await service.get_account(target.id)).updated_at == t(3)
    assert (await withdraw(service, target.id, "30")).balance == Decimal("0.00")


async def test_transfer_to_the_same_account_is_rejected(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "100")
    with pytest.raises(errors.SameAccount):
        await transfer(service, account.id, account.id, "1")
    assert await store.head_position() == 1


@pytest.mark.parametrize("side", ["source", "target"])
async def test_transfer_with_an_unknown_account_is_not_found(
    service: AccountService, store: MemoryEventStore, side: str
) -> None:
    known = await open_account(service, "100")
    source, target = (known.id, "ghost") if side == "target" else ("ghost", known.id)
    with pytest.raises(NotFound, match="account ghost not found"):
        await transfer(service, source, target, "1")
    assert await store.head_position() == 1


async def test_transfer_rejects_a_currency_mismatch(
    service: AccountService, store: MemoryEventStore
) -> None:
    source = await open_account(service, "100", currency="USD")
    target = await open_account(service, "0", currency="EUR")
    with pytest.raises(errors.CurrencyMismatch):
        await transfer(service, source.id, target.id, "1")
    assert await store.head_position() == 2


async def test_transfer_rejects_more_than_the_source_balance(
    service: AccountService, store: MemoryEventStore
) -> None:
    source = await open_account(service, "10")
    target = await open_account(service, "0")
    with pytest.raises(errors.InsufficientFunds):
        await transfer(service, source.id, target.id, "10.01")
    assert await balance_and_version(store, source.id) == ("10.00", 1)
    assert await balance_and_version(store, target.id) == ("0.00", 1)


@pytest.mark.parametrize("closed_side", ["source", "target"])
async def test_transfer_rejects_a_closed_account_on_either_side(
    service: AccountService, store: MemoryEventStore, closed_side: str
) -> None:
    source = await open_account(service, "0" if closed_side == "source" else "10")
    target = await open_account(service, "0")
    gone = source if closed_side == "source" else target
    await service.close_account(cmd.CloseAccount(gone.id, "bye"), CTX)
    with pytest.raises(errors.AccountClosed) as info:
        await transfer(service, source.id, target.id, "1")
    assert info.value.account_id == gone.id
    assert await store.head_position() == 3


async def test_transfer_rejects_a_target_balance_beyond_the_limit(
    service: AccountService, store: MemoryEventStore
) -> None:
    source = await open_account(service, "10")
    target = await open_account(service, "999999999999999.99")
    with pytest.raises(errors.BalanceLimitExceeded):
        await transfer(service, source.id, target.id, "0.01")
    assert await store.head_position() == 2


async def test_transfer_is_atomic_when_the_commit_fails(
    service: AccountService, store: MemoryEventStore
) -> None:
    source = await open_account(service, "100")
    target = await open_account(service, "0")
    store.fail_next_commit = StoreUnavailable("database went away")
    with pytest.raises(ServiceUnavailable):
        await transfer(service, source.id, target.id, "60")
    assert await store.head_position() == 2
    assert await balance_and_version(store, source.id) == ("100.00", 1)
    assert await balance_and_version(store, target.id) == ("0.00", 1)
    assert (await service.get_account(source.id)).balance == Decimal("100.00")
    assert (await service.get_account(target.id)).balance == Decimal("0.00")
    # and the service still works afterwards
    assert isinstance(await transfer(service, source.id, target.id, "60"), TransferResult)
    assert await balance_and_version(store, source.id) == ("40.00", 2)
    assert await balance_and_version(store, target.id) == ("60.00", 2)


async def test_transfer_retries_after_another_process_wrote_the_source(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    spy = SpyStore(store)
    a, b = make_service(spy), make_service()
    source = await open_account(a, "100")
    target = await open_account(a, "0")
    await deposit(b, source.id, "1")  # `a` still caches the source at version 1
    result = await transfer(a, source.id, target.id, "60")
    assert isinstance(result, TransferResult)
    assert await balance_and_version(store, source.id) == ("41.00", 3)
    assert await balance_and_version(store, target.id) == ("60.00", 2)
    tries = [r.streams[0].expected_version for r in spy.calls.appends[2:]]
    assert tries == [1, 2]  # the try against the stale cache, then the retry


async def test_opposite_transfers_at_once_neither_deadlock_nor_lose_money(
    service: AccountService, store: MemoryEventStore
) -> None:
    a = await open_account(service, "100")
    b = await open_account(service, "100")
    moves = [transfer(service, a.id, b.id, "1") for _ in range(20)]
    moves += [transfer(service, b.id, a.id, "2") for _ in range(20)]
    results = await asyncio.wait_for(asyncio.gather(*moves), timeout=5)
    assert all(isinstance(r, TransferResult) for r in results)
    assert await balance_and_version(store, a.id) == ("120.00", 41)
    assert await balance_and_version(store, b.id) == ("80.00", 41)
