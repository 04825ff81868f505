"""AccountService's queries: temporal reads, the audit log and transfers."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from tests.unit.account_service_support import USD, deposit, open_account, t, transfer, withdraw
from tests.unit.unit_support import ServiceFactory, SpyStore

from banking_es.application.accounts import AccountService, TransferResult
from banking_es.application.errors import NotFound
from banking_es.domain.account import Account
from banking_es.eventstore.memory import MemoryEventStore

# ---- a page of the account list --------------------------------------------------------------


async def test_a_list_page_takes_cached_accounts_as_they_are_and_loads_only_the_rest(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    writer = make_service()
    ids = [(await open_account(writer, str(n))).id for n in range(3)]
    spy = SpyStore(store)
    reader = make_service(spy)
    await reader.get_account(ids[1])
    await deposit(writer, ids[1], "5")  # the reader's copy is now a version behind
    spy.calls.read_stream.clear()

    listed = await reader.listed_accounts([ids[2], "ghost", ids[1], ids[0]])

    assert [(a.id, str(a.balance)) for a in listed] == [
        (ids[2], "2.00"),
        (ids[1], "1.00"),  # as cached: a list may lag a moment
        (ids[0], "0.00"),
    ]
    assert sorted(stream for stream, _, _ in spy.calls.read_stream) == sorted(
        [ids[2], "ghost", ids[0]]
    )


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
