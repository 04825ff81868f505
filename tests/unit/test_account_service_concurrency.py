"""AccountService under concurrency: the per-stream queue, conflicts with other processes,
retries, the retry budget and store outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
from tests.unit.account_service_support import (
    AlwaysConflicting,
    balance_and_version,
    deposit,
    open_account,
    t,
    transfer,
    withdraw,
)
from tests.unit.unit_support import ServiceFactory, SpyStore, collector_garbage

from banking_es.application import retry
from banking_es.application.accounts import AccountService, TransferResult
from banking_es.application.errors import ServiceUnavailable
from banking_es.domain import errors
from banking_es.domain.account import Account
from banking_es.eventstore.base import (
    AppendedElsewhere,
    AppendRequest,
    ConcurrencyError,
    RecordedEvent,
    StoreUnavailable,
)
from banking_es.eventstore.memory import MemoryEventStore


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
    outcomes: list[tuple[str, str]] = []
    a = make_service(spy, on_command=lambda name, outcome: outcomes.append((name, outcome)))
    b = make_service()
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
    outcomes: list[tuple[str, str]] = []
    a = make_service(loser, on_command=lambda name, outcome: outcomes.append((name, outcome)))
    b = make_service(winner)
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


async def test_drain_of_some_accounts_waits_for_their_commands_and_transfers_only(
    service: AccountService, store: MemoryEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    drained, payer, other = [await open_account(service, "100") for _ in range(3)]
    gates = {drained.id: asyncio.Event(), other.id: asyncio.Event()}
    append = store.append

    async def gated(request: AppendRequest) -> list[RecordedEvent]:
        for stream in request.streams:
            if stream.stream_id in gates:
                await gates[stream.stream_id].wait()
        return await append(request)

    monkeypatch.setattr(store, "append", gated)
    theirs = [asyncio.create_task(deposit(service, drained.id, "1")) for _ in range(5)]
    theirs.append(asyncio.create_task(transfer(service, payer.id, drained.id, "1")))
    elsewhere = asyncio.create_task(deposit(service, other.id, "1"))
    await asyncio.sleep(0.01)  # all of them at the store or queued behind it
    asyncio.get_running_loop().call_later(0.05, gates[drained.id].set)
    async with asyncio.timeout(5):
        await service.drain(lambda account_id: account_id == drained.id)
    assert all(task.done() and task.exception() is None for task in theirs)
    assert not elsewhere.done()  # another account's command is not waited for
    gates[other.id].set()
    await elsewhere
    assert (await service.get_account(drained.id)).balance == Decimal("106.00")
