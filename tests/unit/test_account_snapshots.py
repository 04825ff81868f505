"""AccountService's snapshots: written every threshold events, read back when loading."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.contract.eventstore_helpers import record_batches
from tests.unit.account_service_support import USD, deposit, open_account, t, transfer
from tests.unit.unit_support import ServiceFactory, SpyStore

from banking_es.domain.account import OPEN, Account
from banking_es.eventstore.memory import MemoryEventStore


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
