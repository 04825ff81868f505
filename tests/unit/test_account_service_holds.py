"""AccountService's holds, overdraft limits and freezes on the in-memory store, and the
expiry job."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from tests.clock_support import FakeClock
from tests.unit.account_service_support import (
    CTX,
    deposit,
    open_account,
    stored_record,
    withdraw,
)
from tests.unit.unit_support import ServiceFactory, SpyStore

from banking_es.application.accounts import AccountService, HoldResult
from banking_es.application.errors import NotFound
from banking_es.application.hold_expiry import HoldExpiry
from banking_es.application.idempotency import IdempotencyKey, IdempotencyService
from banking_es.application.results import HoldParties
from banking_es.domain import commands as cmd
from banking_es.domain import errors
from banking_es.domain.account import FROZEN, OPEN, Account
from banking_es.eventstore.base import AppendedElsewhere, NoticedEvent
from banking_es.eventstore.memory import MemoryEventStore

D = Decimal


async def place(service: AccountService, account_id: str, amount: str, **kw: object) -> HoldResult:
    result = await service.place_hold(cmd.PlaceHold(account_id, D(amount), **kw), CTX)  # type: ignore[arg-type]
    assert isinstance(result, HoldResult)
    return result


async def capture(service: AccountService, hold_id: str, amount: str | None = None) -> HoldResult:
    result = await service.capture_hold(
        cmd.CaptureHold(hold_id, None if amount is None else D(amount)), CTX
    )
    assert isinstance(result, HoldResult)
    return result


async def test_a_hold_is_its_hold_placed_event_and_counts_against_available(
    service: AccountService, store: MemoryEventStore, clock: FakeClock
) -> None:
    account = await open_account(service, "100")
    hold = await place(service, account.id, "30", description="card", expires_in=60)
    assert (hold.status, hold.amount, hold.captured_amount) == ("pending", D("30.00"), D("0.00"))
    assert hold.expires_at == clock.now() + timedelta(seconds=60)
    placed = await store.get_event(hold.id)
    assert placed is not None
    assert placed.type == "HoldPlaced"
    assert placed.stream_id == account.id
    assert hold.created_at == placed.recorded_at
    current = await service.get_account(account.id)
    assert (current.balance, current.available(clock.now())) == (D("100.00"), D("70.00"))
    with pytest.raises(errors.InsufficientFunds):
        await withdraw(service, account.id, "70.01")
    assert (await service.get_hold(hold.id)).status == "pending"
    clock.advance(60)
    assert (await service.get_hold(hold.id)).status == "expired"
    assert (await withdraw(service, account.id, "100")).balance == D("0.00")


async def test_capture_with_a_destination_moves_the_money_in_one_append(
    service: AccountService, store: MemoryEventStore
) -> None:
    source = await open_account(service, "100")
    merchant = await open_account(service, "0", owner="Shop")
    hold = await place(service, source.id, "40", to_account_id=merchant.id)
    head = await store.head_position()
    captured = await capture(service, hold.id, "25")
    assert (captured.status, captured.captured_amount) == ("captured", D("25.00"))
    both = await store.read_all(head, 10)
    assert [(e.stream_id, e.type) for e in both] == [
        (source.id, "HoldCaptured"),
        (merchant.id, "TransferReceived"),
    ]
    assert both[0].recorded_at == both[1].recorded_at  # one batch
    assert both[0].data == {"hold_id": hold.id, "amount": "25.00", "released": "15.00"}
    assert both[1].data["transfer_id"] == hold.id
    assert (await service.get_account(source.id)).balance == D("75.00")
    assert (await service.get_account(merchant.id)).balance == D("25.00")
    got = await service.get_hold(hold.id)
    assert (got.status, got.captured_amount) == ("captured", D("25.00"))
    with pytest.raises(errors.HoldNotPending):
        await capture(service, hold.id)


async def test_void_releases_and_settles_once(service: AccountService) -> None:
    account = await open_account(service, "10")
    hold = await place(service, account.id, "10")
    voided = await service.void_hold(cmd.VoidHold(hold.id), CTX)
    assert isinstance(voided, HoldResult)
    assert voided.status == "voided"
    with pytest.raises(errors.HoldNotPending):
        await service.void_hold(cmd.VoidHold(hold.id), CTX)
    with pytest.raises(errors.HoldNotPending):
        await capture(service, hold.id)
    assert (await service.get_hold(hold.id)).status == "voided"


async def test_unknown_holds_and_accounts_are_not_found(service: AccountService) -> None:
    account = await open_account(service, "10")
    with pytest.raises(NotFound):
        await capture(service, account.id)  # an event id, but not a hold's
    with pytest.raises(NotFound):
        await service.get_hold("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFound):
        await place(service, account.id, "1", to_account_id="nobody")


async def test_capture_vs_void_vs_expiry_in_two_processes_exactly_one_wins(
    make_service: ServiceFactory, clock: FakeClock
) -> None:
    first, second = make_service(), make_service()
    account = await open_account(first, "100")
    hold = await place(first, account.id, "50", expires_in=60)
    await second.get_account(account.id)  # both processes have it cached
    clock.advance(59)
    attempts = [
        capture(first, hold.id),
        second.void_hold(cmd.VoidHold(hold.id), CTX),
        first.expire_hold(hold.id),
        second.capture_hold(cmd.CaptureHold(hold.id), CTX),
    ]
    outcomes = await asyncio.gather(*attempts, return_exceptions=True)
    wins = [o for o in outcomes if isinstance(o, HoldResult)]
    assert len(wins) == 1, outcomes
    assert all(
        isinstance(o, errors.HoldNotPending | errors.HoldNotDue) for o in outcomes if o not in wins
    )


async def test_a_settlement_reads_the_placement_once_and_brings_a_stale_copy_forward(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    placing = make_service()
    spy = SpyStore(store)
    settling = make_service(spy)  # another process, which cached the account before the hold
    account = await open_account(placing, "100")
    await settling.get_account(account.id)
    first = await place(placing, account.id, "10")
    spy.calls.read_stream.clear()
    seen: list[HoldParties] = []

    async def authorize(parties: HoldParties) -> None:
        seen.append(parties)

    captured = await settling.capture_hold(cmd.CaptureHold(first.id), CTX, authorize)
    assert isinstance(captured, HoldResult)
    assert captured.status == "captured"
    assert spy.calls.get_event == [first.id]  # for the check and the command alike
    assert spy.calls.read_stream == []  # the copy was one event behind: the placement
    await deposit(placing, account.id, "1")
    second = await place(placing, account.id, "5")
    voided = await settling.void_hold(cmd.VoidHold(second.id), CTX, authorize)
    assert isinstance(voided, HoldResult)
    # two events behind: read forward before deciding (not decided on, refused and reread)
    assert spy.calls.read_stream == [(account.id, 3, {})]
    assert seen == [
        HoldParties(first.id, account.id, None),
        HoldParties(second.id, account.id, None),
    ]
    assert (await placing.get_account(account.id)).balance == D("91.00")


async def test_a_process_remembers_the_placements_it_wrote_or_was_told_of(
    make_service: ServiceFactory, store: MemoryEventStore
) -> None:
    spy = SpyStore(store)
    placing = make_service(spy)
    other = make_service(spy)
    account = await open_account(placing, "100")
    own = await place(placing, account.id, "10")
    assert (await capture(placing, own.id)).status == "captured"
    assert spy.calls.get_event == []  # placed here: nothing to read
    told = await place(placing, account.id, "5")
    [placed] = [e for e in await store.read_stream(account.id) if e.event_id == told.id]
    noticed = NoticedEvent(
        placed.version, placed.event_id, placed.type, placed.data, placed.metadata,
        placed.recorded_at,
    )  # fmt: skip
    other.note_appended_elsewhere([AppendedElsewhere(account.id, placed.version, (noticed,))])
    await other.get_account(account.id)
    assert (await other.get_hold(told.id)).status == "pending"
    assert (await other.void_hold(cmd.VoidHold(told.id), CTX)).status == "voided"  # type: ignore[union-attr]
    assert spy.calls.get_event == []  # the notice carried the placement
    with pytest.raises(NotFound):
        await capture(other, account.id)  # not a hold's id: still read, still 404
    assert spy.calls.get_event == [account.id]


async def test_an_access_refusal_settles_nothing(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "100")
    hold = await place(service, account.id, "10")
    head = await store.head_position()

    async def refuse(parties: HoldParties) -> None:
        raise NotFound(f"hold {parties.id} not found")

    for settle in (
        service.capture_hold(cmd.CaptureHold(hold.id), CTX, refuse),
        service.void_hold(cmd.VoidHold(hold.id), CTX, refuse),
    ):
        with pytest.raises(NotFound):
            await settle
    assert await store.head_position() == head
    assert (await service.get_hold(hold.id)).status == "pending"


async def test_overdraft_and_freeze_go_through_the_queue(
    service: AccountService, store: MemoryEventStore
) -> None:
    account = await open_account(service, "10")
    limited = await service.set_overdraft_limit(
        cmd.SetOverdraftLimit(account.id, D("50"), "admin"), CTX
    )
    assert isinstance(limited, Account)
    assert limited.overdraft_limit == D("50.00")
    assert (await withdraw(service, account.id, "60")).balance == D("-50.00")
    frozen = await service.freeze_account(cmd.FreezeAccount(account.id, "kyc", "admin-1"), CTX)
    assert isinstance(frozen, Account)
    assert frozen.status == FROZEN
    again = await service.freeze_account(cmd.FreezeAccount(account.id, "again", "admin-2"), CTX)
    assert isinstance(again, Account)
    assert again.version == frozen.version
    with pytest.raises(errors.AccountFrozen):
        await withdraw(service, account.id, "1")
    with pytest.raises(errors.AccountFrozen):
        await place(service, account.id, "1")
    assert (await deposit(service, account.id, "5")).balance == D("-45.00")
    unfrozen = await service.unfreeze_account(cmd.UnfreezeAccount(account.id, "admin-1"), CTX)
    assert isinstance(unfrozen, Account)
    assert unfrozen.status == OPEN
    types = [e.type for e in await store.read_stream(account.id)]
    assert types == [
        "AccountCreated",
        "OverdraftLimitSet",
        "MoneyWithdrawn",
        "AccountFrozen",
        "MoneyDeposited",
        "AccountUnfrozen",
    ]


async def test_closing_with_a_pending_hold_is_holds_pending(service: AccountService) -> None:
    account = await open_account(service, "0")
    await service.set_overdraft_limit(cmd.SetOverdraftLimit(account.id, D("5"), "a"), CTX)
    await place(service, account.id, "5")
    with pytest.raises(errors.HoldsPending):
        await service.close_account(cmd.CloseAccount(account.id, "bye"), CTX)


async def test_an_idempotency_key_replays_a_hold(
    service: AccountService, store: MemoryEventStore, clock: FakeClock
) -> None:
    account = await open_account(service, "100")
    idem = IdempotencyService(store, clock, ttl_hours=1)
    key = IdempotencyKey("user-1", "k-1", "fp-1")

    def action(context: object) -> object:
        return service.place_hold(cmd.PlaceHold(account.id, D("10")), context)  # type: ignore[arg-type]

    first = await idem.run(action, CTX, key)  # type: ignore[arg-type]
    again = await idem.run(action, CTX, key)  # type: ignore[arg-type]
    assert isinstance(first.result, HoldResult)
    assert again.replayed
    assert again.result == first.result
    assert len((await service.get_account(account.id)).holds) == 1
    assert await stored_record(store, "k-1") is not None


async def test_the_expiry_job_expires_each_due_hold_once_across_processes_and_restarts(
    make_service: ServiceFactory, store: MemoryEventStore, clock: FakeClock
) -> None:
    first, second = make_service(), make_service()
    account = await open_account(first, "100")
    holds = [await place(first, account.id, "1", expires_in=60 + n) for n in range(5)]
    kept = await place(first, account.id, "1", expires_in=3600)
    await capture(first, holds[0].id)
    jobs = [HoldExpiry(store, s.expire_hold, clock, page=2) for s in (first, second)]
    assert [await job.run_once() for job in jobs] == [0, 0]
    clock.advance(62)
    counts = await asyncio.gather(*(job.run_once() for job in jobs))
    restarted = HoldExpiry(store, make_service().expire_hold, clock)
    clock.advance(10)
    counts.append(await restarted.run_once())
    counts += [await job.run_once() for job in jobs]
    assert sum(counts) == 4
    expired = [e for e in await store.read_stream(account.id) if e.type == "HoldExpired"]
    assert sorted(e.data["hold_id"] for e in expired) == sorted(h.id for h in holds[1:])
    assert (await first.get_hold(kept.id)).status == "pending"


async def test_with_shards_the_expiry_job_expires_only_the_holds_on_accounts_it_owns(
    service: AccountService, store: MemoryEventStore, clock: FakeClock
) -> None:
    mine, theirs = await open_account(service, "100"), await open_account(service, "100")
    held = {a.id: (await place(service, a.id, "1", expires_in=60)).id for a in (mine, theirs)}
    owned = {mine.id}
    job = HoldExpiry(store, service.expire_hold, clock, owns=owned.__contains__)
    clock.advance(61)

    async def expired() -> list[str]:
        events = [*await store.read_stream(mine.id), *await store.read_stream(theirs.id)]
        return [e.data["hold_id"] for e in events if e.type == "HoldExpired"]

    assert await job.run_once() == 1
    assert await expired() == [held[mine.id]]
    assert await job.run_once() == 0  # the other account's hold waits for its owner
    owned.add(theirs.id)  # its shard moved here
    assert await job.run_once() == 1
    assert sorted(await expired()) == sorted(held.values())


async def test_a_hold_settled_pages_after_its_placement_reads_as_settled(
    service: AccountService,
) -> None:
    account = await open_account(service, "100")
    hold = await place(service, account.id, "10")
    for _ in range(450):  # more than two pages of other events in between
        await deposit(service, account.id, "0.01")
    await service.void_hold(cmd.VoidHold(hold.id), CTX)
    assert (await service.get_hold(hold.id)).status == "voided"


async def test_an_accounts_holds_newest_first_with_their_status(
    service: AccountService, clock: FakeClock
) -> None:
    account = await open_account(service, "100")
    short = await place(service, account.id, "1", expires_in=10)
    captured = await place(service, account.id, "2")
    voided = await place(service, account.id, "3")
    pending = await place(service, account.id, "4")
    await capture(service, captured.id, "1.5")
    await service.void_hold(cmd.VoidHold(voided.id), CTX)
    clock.advance(10)
    every = await service.account_holds(account.id)
    assert [(h.id, h.status) for h in every] == [
        (pending.id, "pending"),
        (voided.id, "voided"),
        (captured.id, "captured"),
        (short.id, "expired"),
    ]
    assert every[2].captured_amount == D("1.50")
    assert [h.id for h in await service.account_holds(account.id, "pending")] == [pending.id]
    with pytest.raises(NotFound):
        await service.account_holds("nobody")
