"""AccountService on the real in-memory store: commands, queries, queueing, retries, snapshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from tests.contract.eventstore_helpers import record_batches
from unit_support import EPOCH, FakeClock, ServiceFactory, SpyStore, collector_garbage

from banking_es.application import codec, retry
from banking_es.application.accounts import (
    AccountService,
    CommandContext,
    IdempotencyIntent,
    Replayed,
    TransferResult,
)
from banking_es.application.errors import NotFound, ServiceUnavailable, VersionConflict
from banking_es.application.ports import SystemClock, UuidGenerator
from banking_es.application.results import STORED_ANSWER, load_answer, store_result
from banking_es.cache.local import LocalAccountCache
from banking_es.domain import commands as cmd
from banking_es.domain import errors
from banking_es.domain.account import CLOSED, OPEN, Account
from banking_es.domain.events import MoneyDeposited
from banking_es.eventstore.base import (
    AppendedElsewhere,
    AppendRequest,
    ConcurrencyError,
    IdempotencyRecord,
    NewEvent,
    RecordedEvent,
    StoreUnavailable,
    StreamAppend,
)
from banking_es.eventstore.memory import MemoryEventStore

CTX = CommandContext()
USD = "USD"


def t(seconds: int) -> Any:
    """The `recorded_at` of the store's n-th committed batch (see `ticking_datetime`)."""
    return EPOCH + timedelta(seconds=seconds)


async def open_account(
    service: AccountService,
    balance: str = "0",
    currency: str = USD,
    owner: str = "Ada",
    context: CommandContext = CTX,
) -> Account:
    result = await service.open_account(
        cmd.OpenAccount(owner, Decimal(balance), currency, "owner-1"), context
    )
    assert isinstance(result, Account)
    return result


async def deposit(service: AccountService, account_id: str, amount: str, **kw: Any) -> Account:
    result = await service.deposit(cmd.Deposit(account_id, Decimal(amount), **kw), CTX)
    assert isinstance(result, Account)
    return result


async def withdraw(service: AccountService, account_id: str, amount: str, **kw: Any) -> Account:
    result = await service.withdraw(cmd.Withdraw(account_id, Decimal(amount), **kw), CTX)
    assert isinstance(result, Account)
    return result


async def transfer(
    service: AccountService, source: str, target: str, amount: str, context: CommandContext = CTX
) -> TransferResult | Replayed:
    return await service.transfer(cmd.Transfer(source, target, Decimal(amount), "rent"), context)


async def balance_and_version(store: MemoryEventStore, account_id: str) -> tuple[str, int]:
    """What a brand-new process would see: no cache, straight from the store."""
    fresh = AccountService(store, LocalAccountCache(), clock=SystemClock(), ids=UuidGenerator())
    account = await fresh.get_account(account_id)
    return str(account.balance), account.version


def keyed(key: str, fingerprint: str = "fp-1") -> CommandContext:
    intent = IdempotencyIntent("user-1", key, fingerprint, ttl_seconds=3600)
    return CommandContext(user_id="user-1", request_id="req-1", idempotency=intent)


async def stored_record(store: MemoryEventStore, key: str) -> IdempotencyRecord | None:
    return await store.get_idempotency("user-1", key, EPOCH)


class AlwaysConflicting:
    """A store on which every append loses a race with another process (the first
    `conflicts` appends only, when given)."""

    def __init__(self, inner: MemoryEventStore, conflicts: int | None = None) -> None:
        self.inner = inner
        self.attempts = 0
        self.conflicts = conflicts

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        self.attempts += 1
        if self.conflicts is not None and self.attempts > self.conflicts:
            return await self.inner.append(request)
        raise ConcurrencyError(request.streams[0].stream_id, 1, 2)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


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


# ---- the per-stream queue, conflicts and retries -------------------------------------------------


async def test_two_hundred_concurrent_deposits_all_succeed_in_few_appends(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    spy = SpyStore(store)
    service = make_service(spy)
    account = await open_account(service, "0")
    opens = len(spy.calls.appends)
    results = await asyncio.gather(*(deposit(service, account.id, "0.01") for _ in range(200)))
    assert sorted(r.version for r in results) == list(range(2, 202))
    assert sorted(r.balance for r in results) == [Decimal(n) / 100 for n in range(1, 201)]
    assert await balance_and_version(store, account.id) == ("2.00", 201)
    appends = len(spy.calls.appends) - opens
    assert 1 <= appends <= 5, f"{appends} appends for 200 deposits"
    events_written = sum(len(s.events) for r in spy.calls.appends[opens:] for s in r.streams)
    assert events_written == 200


async def test_concurrent_withdrawals_never_overdraw(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "100")
    outcomes = await asyncio.gather(
        *(withdraw(service, account.id, "10") for _ in range(30)), return_exceptions=True
    )
    accepted = [o for o in outcomes if isinstance(o, Account)]
    refused = [o for o in outcomes if isinstance(o, errors.InsufficientFunds)]
    assert (len(accepted), len(refused)) == (10, 20)
    assert await balance_and_version(store, account.id) == ("0.00", 11)


async def test_a_conflicting_write_from_another_process_is_retried_not_failed(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    spy = SpyStore(store)
    a, b = make_service(spy), make_service()
    outcomes: list[tuple[str, str]] = []
    a.on_command = lambda name, outcome: outcomes.append((name, outcome))
    account = await open_account(a, "10")
    await deposit(b, account.id, "5")  # `a` caches version 1; the store is at 2
    after = await deposit(a, account.id, "1")
    assert (after.balance, after.version) == (Decimal("16.00"), 3)
    assert await balance_and_version(store, account.id) == ("16.00", 3)
    assert [r.streams[0].expected_version for r in spy.calls.appends[1:]] == [1, 2]
    assert outcomes == [("OpenAccount", "ok"), ("Deposit", "conflict"), ("Deposit", "ok")]


class NoticeWinner(SpyStore):
    """Another process's store: each append is announced as PostgreSQL's stream notices would
    announce it, to be delivered (`take`) when the test says."""

    def __init__(self, inner: MemoryEventStore) -> None:
        super().__init__(inner)
        self.notices: list[AppendedElsewhere] = []

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        recorded = await super().append(request)
        last = recorded[-1]
        self.notices.append(AppendedElsewhere(last.stream_id, last.version, tuple(recorded)))
        return recorded

    def take(self) -> list[AppendedElsewhere]:
        taken, self.notices = self.notices, []
        return taken


class NoticeLoser(SpyStore):
    """A store whose failed appends (version conflicts) call `on_conflict` first."""

    def __init__(self, inner: MemoryEventStore, on_conflict: Callable[[], object]) -> None:
        super().__init__(inner)
        self.on_conflict = on_conflict

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        try:
            return await super().append(request)
        except ConcurrencyError:
            self.on_conflict()
            raise


async def test_a_conflict_is_retried_at_once_from_the_copy_the_winners_notice_brought(
    make_service: ServiceFactory, store: MemoryEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL delivers the winner's notice (its new events) a moment after its commit:
    # here it arrives just as the loser's append fails.
    winner = NoticeWinner(store)
    loser = NoticeLoser(store, lambda: a.note_appended_elsewhere(winner.take()))
    a, b = make_service(loser), make_service(winner)
    outcomes: list[tuple[str, str]] = []
    a.on_command = lambda name, outcome: outcomes.append((name, outcome))
    waits: list[int] = []
    original = a._retry.await_notice

    async def counted(stream_id: str, version: int, attempt: int) -> None:
        waits.append(attempt)
        await original(stream_id, version, attempt)

    monkeypatch.setattr(a._retry, "await_notice", counted)
    account = await open_account(a, "10")
    winner.take()
    await deposit(b, account.id, "5")  # `a` caches version 1; the notice is on its way
    reads = len(loser.calls.read_stream)

    after = await deposit(a, account.id, "1")

    assert (after.balance, after.version) == (Decimal("16.00"), 3)
    assert await balance_and_version(store, account.id) == ("16.00", 3)
    assert outcomes == [("OpenAccount", "ok"), ("Deposit", "conflict"), ("Deposit", "ok")]
    assert loser.calls.read_stream[reads:] == []  # the notice's events, not a read
    assert waits == []  # and no wait: the winner would have its next chunk ready


async def test_a_conflict_waits_for_the_winners_notice_then_retries_from_it(
    make_service: ServiceFactory, store: MemoryEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The usual order on PostgreSQL: the loser's append fails first, the winner's notice
    # arrives a moment later. The loser waits for it (not a blind back-off) and goes on from
    # the events it carries.
    winner = NoticeWinner(store)
    loser = NoticeLoser(
        store,
        lambda: asyncio.get_running_loop().call_soon(a.note_appended_elsewhere, winner.take()),
    )
    # A wait without the notice would last 30 s (and then read the store).
    monkeypatch.setattr(retry.random, "uniform", lambda low, high: 30.0)
    a, b = make_service(loser), make_service(winner)
    account = await open_account(a, "10")
    winner.take()
    await deposit(b, account.id, "5")
    reads = len(loser.calls.read_stream)

    started = time.monotonic()
    after = await deposit(a, account.id, "1")

    assert time.monotonic() - started < 10
    assert (after.balance, after.version) == (Decimal("16.00"), 3)
    assert await balance_and_version(store, account.id) == ("16.00", 3)
    assert loser.calls.read_stream[reads:] == []  # the notice's events, not a read
    assert a._retry._awaiting == {}


async def test_two_processes_depositing_at_once_lose_nothing(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    a, b = make_service(), make_service()
    account = await open_account(a, "0")
    await b.get_account(account.id)  # both processes have it cached
    writes = [deposit(a, account.id, "1") for _ in range(50)]
    writes += [deposit(b, account.id, "2") for _ in range(50)]
    results = await asyncio.gather(*writes)
    assert len({r.version for r in results}) == 100
    assert await balance_and_version(store, account.id) == ("150.00", 101)


async def test_a_withdrawal_refused_on_a_stale_cache_is_rechecked_against_the_store(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    a, b = make_service(), make_service()
    account = await open_account(a, "0")  # `a` caches balance 0
    await deposit(b, account.id, "100")
    after = await withdraw(a, account.id, "50")
    assert (after.balance, after.version) == (Decimal("50.00"), 3)
    assert await balance_and_version(store, account.id) == ("50.00", 3)


async def test_a_transfer_refused_on_a_stale_cache_is_rechecked_against_the_store(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    a, b = make_service(), make_service()
    source = await open_account(a, "0")
    target = await open_account(a, "0")
    await deposit(b, source.id, "100")
    assert isinstance(await transfer(a, source.id, target.id, "50"), TransferResult)
    assert await balance_and_version(store, source.id) == ("50.00", 3)


async def test_an_account_opened_by_another_process_is_found(
    make_service: ServiceFactory,
) -> None:
    a, b = make_service(), make_service()
    account = await open_account(b, "10")
    assert (await deposit(a, account.id, "1")).balance == Decimal("11.00")


async def test_get_account_reads_writes_acknowledged_by_another_process(
    make_service: ServiceFactory,
) -> None:
    a, b = make_service(), make_service()
    account = await open_account(a, "10")
    await deposit(b, account.id, "5")
    seen = await a.get_account(account.id)
    assert (seen.balance, seen.version, seen.updated_at) == (Decimal("15.00"), 2, t(2))


async def test_a_rejection_on_a_current_state_is_final(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    with pytest.raises(errors.InsufficientFunds):
        await withdraw(service, account.id, "11")
    assert await store.head_position() == 1


async def racing_accounts(
    make_service: ServiceFactory, store: MemoryEventStore, conflicts: int | None = None
) -> tuple[Account, Account, AlwaysConflicting, AccountService]:
    """Two accounts of 10.00, and a service with a retry budget of 0.3 s whose appends
    conflict (the first `conflicts` only, when given)."""
    seed = make_service()
    source = await open_account(seed, "10")
    target = await open_account(seed, "10")
    racing = AlwaysConflicting(store, conflicts)
    # 0.3 s: at 0.05 s a stalled moment of a shared machine once left room for one attempt only.
    return source, target, racing, make_service(racing, retry_budget=0.3)


async def test_a_command_given_up_after_conflicts_leaves_no_reference_cycle(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    source, _, _, service = await racing_accounts(make_service, store)
    with collector_garbage() as garbage:
        for _ in range(2):
            with pytest.raises(ServiceUnavailable):
                await deposit(service, source.id, "1")
    failures = [o for o in garbage if isinstance(o, ServiceUnavailable)]
    assert failures == [], f"{len(failures)} failures waited for the collector"


async def test_conflicts_beyond_the_retry_budget_are_service_unavailable(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    source, target, racing, service = await racing_accounts(make_service, store)
    with pytest.raises(ServiceUnavailable) as info:
        await deposit(service, source.id, "1")
    assert info.value.code == "service_unavailable"
    assert racing.attempts > 1
    racing.attempts = 0
    with pytest.raises(ServiceUnavailable):
        await transfer(service, source.id, target.id, "1")
    assert racing.attempts > 1
    assert await store.head_position() == 2


async def test_the_retry_budget_of_a_transfer_starts_once_it_holds_the_locks(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    # A transfer queued behind others for its accounts' locks has not used any of its
    # budget: one conflict after a long wait is retried, as for a deposit.
    source, target, racing, service = await racing_accounts(make_service, store, conflicts=1)
    async with service._locks.hold(source.id):
        moving = asyncio.create_task(transfer(service, source.id, target.id, "1"))
        await asyncio.sleep(0.5)  # longer than the whole budget
    result = await moving
    assert result.amount == Decimal("1.00")
    assert racing.attempts == 2
    assert await balance_and_version(store, source.id) == ("9.00", 2)


async def test_a_store_outage_fails_every_command_of_the_batch_as_unavailable(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    store.fail_next_commit = StoreUnavailable("database went away")
    async with service._locks.hold(account.id):  # as a transfer would: the five queue up
        deposits = [asyncio.create_task(deposit(service, account.id, "1")) for _ in range(5)]
        await asyncio.sleep(0.01)
    outcomes = await asyncio.gather(*deposits, return_exceptions=True)
    assert all(isinstance(o, ServiceUnavailable) for o in outcomes), outcomes
    assert await balance_and_version(store, account.id) == ("10.00", 1)
    assert (await deposit(service, account.id, "1")).version == 2


async def test_an_unexpected_commit_error_reaches_the_callers_unchanged(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    boom = RuntimeError("disk on fire")
    store.fail_next_commit = boom
    with pytest.raises(RuntimeError) as info:
        await deposit(service, account.id, "1")
    assert info.value is boom
    assert (await service.get_account(account.id)).version == 1


async def test_a_cancelled_caller_does_not_fail_the_other_commands_of_its_batch(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "0")
    tasks = [asyncio.create_task(deposit(service, account.id, "1")) for _ in range(3)]
    await asyncio.sleep(0)  # the first runs its own command, the others queue behind it
    tasks[0].cancel()
    outcomes = await asyncio.gather(*tasks[1:], return_exceptions=True)
    assert [type(o) for o in outcomes] == [Account, Account], outcomes
    # Whether or not the cancelled one was written, the account goes on from what is stored.
    after = await deposit(service, account.id, "1")
    stored = await store.read_stream(account.id)
    assert after.version == len(stored)
    assert after.balance == Decimal(len(stored) - 1)


async def test_drain_waits_for_queued_commands(service: AccountService) -> None:
    account = await open_account(service, "0")
    tasks = [asyncio.create_task(deposit(service, account.id, "1")) for _ in range(10)]
    await asyncio.sleep(0)
    await service.drain()
    assert all(task.done() for task in tasks)
    assert (await service.get_account(account.id)).balance == Decimal("10.00")


# ---- snapshots -----------------------------------------------------------------------------------


async def assert_first_snapshot_at_version_2(
    store: MemoryEventStore, account_id: str, max_version: int | None = None
) -> None:
    """The latest snapshot up to `max_version` is of version 2 (balance 1.00, after a
    deposit of 1 on an account opened with 0), and there is none before it."""
    snapshot = await store.latest_snapshot(account_id, max_version=max_version)
    assert snapshot is not None
    assert snapshot.version == 2
    assert isinstance(snapshot.state, dict)
    assert snapshot.state["balance"] == "1.00"
    assert await store.latest_snapshot(account_id, max_version=1) is None


async def test_a_snapshot_is_written_every_threshold_events(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    """Of the state each append crossing a multiple of the threshold was decided on."""
    service = make_service(snapshot_threshold=3)
    account = await open_account(service, "0")
    for _ in range(6):
        await deposit(service, account.id, "1")  # versions 2..7, one batch each
    latest = await store.latest_snapshot(account.id)
    assert latest is not None
    assert latest.version == 5  # the append 5 -> 6 crossed 6
    assert latest.state == {
        "id": account.id,
        "owner_name": "Ada",
        "owner_id": "owner-1",
        "balance": "4.00",
        "currency": USD,
        "status": OPEN,
        "version": 5,
        "created_at": t(1).isoformat(),
        "updated_at": t(5).isoformat(),
        "closed_reason": None,
    }
    assert Account.from_snapshot(latest.state) == await service.account_at_version(account.id, 5)
    # The append 2 -> 3 crossed 3; nothing before it.
    await assert_first_snapshot_at_version_2(store, account.id, max_version=4)


async def test_one_batch_crossing_the_threshold_writes_one_snapshot_of_its_starting_state(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    service = make_service(snapshot_threshold=3)
    account = await open_account(service, "0")
    batches = record_batches(store)
    await asyncio.gather(*(deposit(service, account.id, "1") for _ in range(6)))
    # The first runs alone (version 2), the five queued behind it in one append (3..7),
    # across 3 and 6.
    assert batches == [1, 1]
    assert [e.version for e in await store.read_stream(account.id)] == list(range(1, 8))
    await assert_first_snapshot_at_version_2(store, account.id)


async def test_an_account_just_opened_has_no_snapshot(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    service = make_service(snapshot_threshold=1)
    account = await open_account(service, "0")
    assert await store.latest_snapshot(account.id) is None  # nothing recorded before it
    await deposit(service, account.id, "1")
    first = await store.latest_snapshot(account.id)
    assert first is not None
    assert first.version == 1


async def test_loading_reads_the_latest_snapshot_and_only_later_events(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    writer = make_service(snapshot_threshold=3)
    account = await open_account(writer, "0")
    for _ in range(7):
        await deposit(writer, account.id, "1")  # snapshots at 2 and 5; the store is at 8
    expected = await writer.get_account(account.id)
    spy = SpyStore(store)
    reader = make_service(spy)
    loaded = await reader.get_account(account.id)
    assert loaded == expected
    assert (loaded.version, loaded.balance, loaded.updated_at) == (8, Decimal("7.00"), t(8))
    assert spy.calls.read_stream == [(account.id, 5, {})]


async def test_a_transfer_crossing_the_threshold_snapshots_both_accounts(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    service = make_service(snapshot_threshold=2)
    source = await open_account(service, "10")
    target = await open_account(service, "0")
    await transfer(service, source.id, target.id, "4")  # both 1 -> 2: across 2
    for account_id, balance in ((source.id, "10.00"), (target.id, "0.00")):
        snapshot = await store.latest_snapshot(account_id)
        assert snapshot is not None
        assert snapshot.version == 1  # the state the transfer was decided on
        assert isinstance(snapshot.state, dict)
        assert snapshot.state["balance"] == balance


async def test_a_snapshot_written_by_a_transfer_keeps_updated_at(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    service = make_service(snapshot_threshold=2)
    source = await open_account(service, "10")
    target = await open_account(service, "0")
    await transfer(service, source.id, target.id, "4")
    loaded = await make_service().get_account(source.id)
    assert loaded.updated_at == t(3)


# ---- temporal queries ----------------------------------------------------------------------------


async def history(service: AccountService) -> Account:
    account = await open_account(service, "10")  # v1 at t1
    await deposit(service, account.id, "5")  # v2 at t2
    await withdraw(service, account.id, "3")  # v3 at t3
    await deposit(service, account.id, "0.5")  # v4 at t4
    return account


@pytest.mark.parametrize(
    ("version", "balance"), [(1, "10.00"), (2, "15.00"), (3, "12.00"), (4, "12.50")]
)
async def test_account_at_version_replays_up_to_that_version(
    service: AccountService, version: int, balance: str
) -> None:
    account = await history(service)
    past = await service.account_at_version(account.id, version)
    assert (past.version, str(past.balance), past.updated_at) == (version, balance, t(version))
    assert past.created_at == t(1)


@pytest.mark.parametrize("version", [0, 5, 100])
async def test_account_at_a_version_it_never_had_is_not_found(
    service: AccountService, version: int
) -> None:
    account = await history(service)
    with pytest.raises(NotFound):
        await service.account_at_version(account.id, version)


async def test_account_at_version_of_an_unknown_account_is_not_found(
    service: AccountService,
) -> None:
    with pytest.raises(NotFound):
        await service.account_at_version("ghost", 1)


async def test_account_at_version_starts_from_the_nearest_earlier_snapshot(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    await history(make_service(snapshot_threshold=2))  # snapshots at versions 1 and 3
    [account_id] = {e.stream_id for e in await store.read_all(0, 100)}
    spy = SpyStore(store)
    past = await make_service(spy).account_at_version(account_id, 2)
    assert (past.version, past.balance) == (2, Decimal("15.00"))
    assert spy.calls.read_stream == [(account_id, 1, {"to_version": 2})]


async def test_account_as_of_a_moment_folds_the_events_recorded_until_then(
    service: AccountService,
) -> None:
    account = await history(service)
    at_t2 = await service.account_as_of(account.id, t(2))
    assert (at_t2.version, at_t2.balance) == (2, Decimal("15.00"))
    between = await service.account_as_of(account.id, t(3) + timedelta(milliseconds=500))
    assert (between.version, between.balance) == (3, Decimal("12.00"))
    later = await service.account_as_of(account.id, t(100))
    assert (later.version, later.balance) == (4, Decimal("12.50"))


async def test_account_as_of_a_moment_before_it_existed_is_not_found(
    service: AccountService,
) -> None:
    account = await history(service)
    with pytest.raises(NotFound):
        await service.account_as_of(account.id, t(1) - timedelta(microseconds=1))
    with pytest.raises(NotFound):
        await service.account_as_of("ghost", t(100))


# ---- the audit log and transfers -----------------------------------------------------------------


async def test_account_events_are_paged_oldest_first(service: AccountService) -> None:
    account = await history(service)
    pages = []
    after = 0
    while page := await service.account_events(account.id, after, limit=3):
        pages.append([(e.version, e.type) for e in page])
        after = page[-1].version
    assert pages == [
        [(1, "AccountCreated"), (2, "MoneyDeposited"), (3, "MoneyWithdrawn")],
        [(4, "MoneyDeposited")],
    ]


async def test_account_events_of_an_unknown_account_are_not_found(
    service: AccountService,
) -> None:
    with pytest.raises(NotFound):
        await service.account_events("ghost", 0, limit=10)


async def test_get_transfer_returns_the_completed_transfer(service: AccountService) -> None:
    source = await open_account(service, "100")
    target = await open_account(service, "0")
    made = await transfer(service, source.id, target.id, "7.25")
    assert isinstance(made, TransferResult)
    found = await service.get_transfer(made.id)
    assert found == made
    assert (found.amount, found.currency, found.created_at) == (Decimal("7.25"), USD, t(3))


async def test_get_transfer_of_an_unknown_or_non_transfer_id_is_not_found(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "1")
    [created] = await store.read_stream(account.id)
    with pytest.raises(NotFound):
        await service.get_transfer("ghost")
    with pytest.raises(NotFound):
        await service.get_transfer(created.event_id)


# ---- idempotency in the append -------------------------------------------------------------------


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


# ---- stored events -------------------------------------------------------------------------------


def test_codec_round_trips_a_domain_event_with_the_schema_version() -> None:
    event = MoneyDeposited(Decimal("1.50"), "pay")
    new = codec.to_new_event(event, "e-1", {"command": "Deposit"})
    assert new == NewEvent(
        "e-1",
        "MoneyDeposited",
        {"amount": "1.50", "description": "pay"},
        {"command": "Deposit", "schema": 1},
    )
    recorded = RecordedEvent(1, "s", 1, "e-1", new.type, new.data, new.metadata, EPOCH)
    assert codec.to_domain(recorded) == event


def test_codec_upcasts_an_old_shape_before_rebuilding_the_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def rename(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount": data["value"], "description": data.get("note")}

    monkeypatch.setitem(codec.UPCASTERS, ("MoneyDeposited", 0), rename)
    old = RecordedEvent(
        1, "s", 1, "e-1", "MoneyDeposited", {"value": "2.00", "note": "n"}, {"schema": 0}, EPOCH
    )
    assert codec.to_domain(old) == MoneyDeposited(Decimal("2.00"), "n")


async def test_the_store_rejects_an_append_that_another_writer_beat(
    store: MemoryEventStore,
) -> None:
    # the guarantee the service's retry loop relies on
    event = NewEvent("e-1", "MoneyDeposited", {"amount": "1.00", "description": None})
    await store.append(AppendRequest([StreamAppend("s", 0, [event])]))
    with pytest.raises(ConcurrencyError):
        await store.append(AppendRequest([StreamAppend("s", 0, [event])]))
