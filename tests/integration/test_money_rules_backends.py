"""Issue 25 items 2-4 (holds, overdraft limits, freezes), each rule on memory, SQLite and
PostgreSQL: `AccountService` over the `backend` fixture's store, two services on one database
where a race is the point (two processes). Who may do what, and the HTTP answers, are
tests/e2e's (test_api_holds.py, test_api_admin_accounts.py, on SQLite and PostgreSQL): the
app has no memory backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from tests.clock_support import FakeClock
from tests.db_support import StoreOpener
from tests.unit.account_service_support import open_account

from banking_es.application.accounts import AccountService, CommandContext, HoldResult
from banking_es.application.errors import NotFound
from banking_es.application.idempotency import IdempotencyKey, IdempotencyService
from banking_es.application.ports import UuidGenerator
from banking_es.cache.local import LocalAccountCache
from banking_es.domain import commands as cmd
from banking_es.domain import errors
from banking_es.domain.account import CLOSED, FROZEN, OPEN, Account
from banking_es.domain.holds import MAX_PENDING_HOLDS
from banking_es.eventstore.base import EventStore

D = Decimal
CTX = CommandContext()
Services = Callable[..., Coroutine[Any, Any, AccountService]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=datetime.now(UTC))  # about PostgreSQL's time, which it records


@pytest.fixture
async def store(open_event_store: StoreOpener) -> EventStore:
    return await open_event_store()


@pytest.fixture
def new_service(open_event_store: StoreOpener, clock: FakeClock) -> Services:
    """Another process: its own store connection (one store on memory) and its own cache;
    `ahead` seconds ahead of the others' clock, if given."""

    async def make(ahead: float = 0) -> AccountService:
        store = await open_event_store()
        own = clock
        if ahead:
            own = FakeClock(start=clock.start)
            own.offset = clock.offset + timedelta(seconds=ahead)
        return AccountService(
            store, LocalAccountCache(), clock=own, ids=UuidGenerator(), retry_budget=10.0
        )

    return make


@pytest.fixture
def service(store: EventStore, clock: FakeClock) -> AccountService:
    return AccountService(store, LocalAccountCache(), clock=clock, ids=UuidGenerator())


async def place(service: AccountService, account_id: str, amount: str, **kw: Any) -> HoldResult:
    result = await service.place_hold(cmd.PlaceHold(account_id, D(amount), **kw), CTX)
    assert isinstance(result, HoldResult)
    return result


async def capture(service: AccountService, hold_id: str, amount: str | None = None) -> HoldResult:
    taken = None if amount is None else D(amount)
    result = await service.capture_hold(cmd.CaptureHold(hold_id, taken), CTX)
    assert isinstance(result, HoldResult)
    return result


async def void(service: AccountService, hold_id: str) -> HoldResult:
    result = await service.void_hold(cmd.VoidHold(hold_id), CTX)
    assert isinstance(result, HoldResult)
    return result


async def withdraw(service: AccountService, account_id: str, amount: str) -> Account:
    result = await service.withdraw(cmd.Withdraw(account_id, D(amount)), CTX)
    assert isinstance(result, Account)
    return result


async def deposit(service: AccountService, account_id: str, amount: str) -> Account:
    result = await service.deposit(cmd.Deposit(account_id, D(amount)), CTX)
    assert isinstance(result, Account)
    return result


async def transfer(service: AccountService, source: str, target: str, amount: str) -> Any:
    return await service.transfer(cmd.Transfer(source, target, D(amount)), CTX)


async def figures(service: AccountService, clock: FakeClock, account_id: str) -> tuple[str, str]:
    account = await service.get_account(account_id)
    return str(account.balance), str(account.available(clock.now()))


async def types(store: EventStore, account_id: str) -> list[str]:
    return [e.type for e in await store.read_stream(account_id)]


async def test_a_hold_reserves_available_and_its_capture_moves_part_of_it_once(
    service: AccountService, store: EventStore, clock: FakeClock
) -> None:
    source = await open_account(service, "100")
    shop = await open_account(service, "0")
    hold = await place(service, source.id, "40", to_account_id=shop.id, expires_in=60)
    assert hold.expires_at == clock.now() + timedelta(seconds=60)
    assert await figures(service, clock, source.id) == ("100.00", "60.00")
    with pytest.raises(errors.InsufficientFunds):
        await place(service, source.id, "60.01")
    with pytest.raises(errors.InsufficientFunds):
        await withdraw(service, source.id, "60.01")
    head = await store.head_position()
    with pytest.raises(errors.AmountExceedsHold):
        await capture(service, hold.id, "40.01")
    assert await store.head_position() == head  # a refusal writes nothing

    captured = await capture(service, hold.id, "25")

    assert (captured.status, captured.captured_amount) == ("captured", D("25.00"))
    batch = await store.read_all(head, 10)
    assert [(e.stream_id, e.type) for e in batch] == [
        (source.id, "HoldCaptured"),
        (shop.id, "TransferReceived"),
    ]
    assert batch[0].data == {"hold_id": hold.id, "amount": "25.00", "released": "15.00"}
    assert await figures(service, clock, source.id) == ("75.00", "75.00")  # the rest released
    assert await figures(service, clock, shop.id) == ("25.00", "25.00")
    for settle in (capture(service, hold.id), void(service, hold.id)):
        with pytest.raises(errors.HoldNotPending):
            await settle
    with pytest.raises(errors.HoldNotPending):
        await service.expire_hold(hold.id)
    assert (await service.get_hold(hold.id)).status == "captured"


async def test_void_releases_and_a_hold_past_its_expiry_is_expired_at_once(
    service: AccountService, store: EventStore, clock: FakeClock
) -> None:
    account = await open_account(service, "10")
    voided = await place(service, account.id, "10")
    assert (await void(service, voided.id)).status == "voided"
    with pytest.raises(errors.HoldNotPending):
        await capture(service, voided.id)
    assert await figures(service, clock, account.id) == ("10.00", "10.00")

    due = await place(service, account.id, "4", expires_in=30)
    with pytest.raises(errors.HoldNotDue):
        await service.expire_hold(due.id)
    clock.advance(30)
    # Past its expiry: no longer counted, not capturable, before any HoldExpired is written.
    assert await figures(service, clock, account.id) == ("10.00", "10.00")
    assert (await service.get_hold(due.id)).status == "expired"
    with pytest.raises(errors.HoldNotPending):
        await capture(service, due.id)
    assert (await withdraw(service, account.id, "10")).balance == D("0.00")
    expired = await service.expire_hold(due.id)
    assert isinstance(expired, HoldResult)
    with pytest.raises(errors.HoldNotPending):
        await service.expire_hold(due.id)
    assert (await types(store, account.id)).count("HoldExpired") == 1


async def test_the_destination_is_checked_at_placement_and_at_capture(
    service: AccountService, clock: FakeClock
) -> None:
    source = await open_account(service, "100")
    euros = await open_account(service, "0", currency="EUR")
    with pytest.raises(NotFound):
        await place(service, source.id, "1", to_account_id="00000000-0000-4000-8000-000000000000")
    with pytest.raises(errors.CurrencyMismatch):
        await place(service, source.id, "1", to_account_id=euros.id)
    closed = await open_account(service, "0")
    await service.close_account(cmd.CloseAccount(closed.id, "done"), CTX)
    with pytest.raises(errors.AccountClosed):
        await place(service, source.id, "1", to_account_id=closed.id)

    later_closed = await open_account(service, "0")
    frozen = await open_account(service, "0")
    to_closed = await place(service, source.id, "5", to_account_id=later_closed.id)
    to_frozen = await place(service, source.id, "6", to_account_id=frozen.id)
    await service.close_account(cmd.CloseAccount(later_closed.id, "done"), CTX)
    await service.freeze_account(cmd.FreezeAccount(frozen.id, "kyc", "admin"), CTX)
    with pytest.raises(errors.AccountClosed):
        await capture(service, to_closed.id)
    assert (await capture(service, to_frozen.id)).status == "captured"  # frozen still receives
    assert await figures(service, clock, frozen.id) == ("6.00", "6.00")
    assert await figures(service, clock, source.id) == ("94.00", "89.00")


async def test_close_refuses_pending_holds_and_an_account_keeps_at_most_a_thousand(
    service: AccountService,
) -> None:
    account = await open_account(service, "0")
    await service.set_overdraft_limit(cmd.SetOverdraftLimit(account.id, D("5")), CTX)
    hold = await place(service, account.id, "1")  # the limit lets a zero balance carry it
    with pytest.raises(errors.HoldsPending):
        await service.close_account(cmd.CloseAccount(account.id, "bye"), CTX)
    await void(service, hold.id)
    closed = await service.close_account(cmd.CloseAccount(account.id, "bye"), CTX)
    assert isinstance(closed, Account)
    assert closed.status == CLOSED

    full = await open_account(service, "100000")
    for _ in range(MAX_PENDING_HOLDS):
        await place(service, full.id, "1")
    with pytest.raises(errors.TooManyHolds):
        await place(service, full.id, "1")


async def test_an_idempotency_key_runs_each_hold_command_once(
    service: AccountService, store: EventStore, clock: FakeClock
) -> None:
    account = await open_account(service, "100")
    keys = IdempotencyService(store, clock, ttl_hours=1)

    async def twice(key: str, action: Callable[[CommandContext], Any]) -> Any:
        first = await keys.run(action, CTX, IdempotencyKey("u1", key, "fp"))
        again = await keys.run(action, CTX, IdempotencyKey("u1", key, "fp"))
        assert again.replayed
        assert (again.result, again.refusal is None) == (first.result, first.refusal is None)
        return first.result

    placed = await twice("p", lambda c: service.place_hold(cmd.PlaceHold(account.id, D("10")), c))
    other = await twice("q", lambda c: service.place_hold(cmd.PlaceHold(account.id, D("5")), c))
    assert await twice("c", lambda c: service.capture_hold(cmd.CaptureHold(placed.id), c))
    assert await twice("v", lambda c: service.void_hold(cmd.VoidHold(other.id), c))
    assert await types(store, account.id) == [
        "AccountCreated",
        "HoldPlaced",
        "HoldPlaced",
        "HoldCaptured",
        "HoldVoided",
    ]


async def test_capture_void_and_expiry_in_two_processes_exactly_one_wins(
    new_service: Services, store: EventStore, clock: FakeClock
) -> None:
    first, second = await new_service(), await new_service()
    late = await new_service(ahead=60)  # the expiry job's process: the hold is due there
    account = await open_account(first, "100")
    for round_ in range(3):
        hold = await place(first, account.id, "10", expires_in=60)
        for each in (second, late):
            await each.get_account(account.id)  # every process has it cached
        outcomes = await asyncio.gather(
            first.capture_hold(cmd.CaptureHold(hold.id), CTX),
            second.void_hold(cmd.VoidHold(hold.id), CTX),
            late.expire_hold(hold.id),
            second.capture_hold(cmd.CaptureHold(hold.id), CTX),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if isinstance(o, HoldResult)]
        assert len(wins) == 1, (round_, outcomes)
        assert all(isinstance(o, errors.HoldNotPending) for o in outcomes if o not in wins)
    settled = [t for t in await types(store, account.id) if t.startswith("Hold")]
    assert settled.count("HoldPlaced") == 3
    assert len(settled) == 6  # one settlement each


async def test_the_overdraft_limit_bounds_every_debit_and_may_be_lowered_under_the_debt(
    service: AccountService, clock: FakeClock
) -> None:
    account = await open_account(service, "10")
    other = await open_account(service, "0")
    limited = await service.set_overdraft_limit(cmd.SetOverdraftLimit(account.id, D("30")), CTX)
    assert isinstance(limited, Account)
    assert await figures(service, clock, account.id) == ("10.00", "40.00")
    same = await service.set_overdraft_limit(cmd.SetOverdraftLimit(account.id, D("30")), CTX)
    assert isinstance(same, Account)
    assert same.version == limited.version  # the same limit: no event
    await withdraw(service, account.id, "15")
    await place(service, account.id, "10")
    await transfer(service, account.id, other.id, "15")
    assert await figures(service, clock, account.id) == ("-20.00", "0.00")
    with pytest.raises(errors.InsufficientFunds):
        await withdraw(service, account.id, "0.01")
    with pytest.raises(errors.InsufficientFunds):
        await place(service, account.id, "0.01")
    with pytest.raises(errors.InsufficientFunds):
        await transfer(service, account.id, other.id, "0.01")

    lowered = await service.set_overdraft_limit(cmd.SetOverdraftLimit(account.id, D("5")), CTX)
    assert isinstance(lowered, Account)
    assert await figures(service, clock, account.id) == ("-20.00", "-25.00")
    with pytest.raises(errors.InsufficientFunds):
        await withdraw(service, account.id, "0.01")
    assert (await deposit(service, account.id, "1")).balance == D("-19.00")  # credits arrive


async def test_holds_and_withdrawals_in_two_processes_never_pass_the_limit(
    new_service: Services, clock: FakeClock
) -> None:
    first, second = await new_service(), await new_service()
    account = await open_account(first, "10")
    await first.set_overdraft_limit(cmd.SetOverdraftLimit(account.id, D("20")), CTX)
    await second.get_account(account.id)
    debits = [
        (first if n % 2 else second).withdraw(cmd.Withdraw(account.id, D("3")), CTX)
        if n % 3
        else (second if n % 2 else first).place_hold(cmd.PlaceHold(account.id, D("3")), CTX)
        for n in range(16)
    ]
    outcomes = await asyncio.gather(*debits, return_exceptions=True)
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert all(isinstance(o, errors.InsufficientFunds) for o in outcomes if o not in done)
    assert len(done) == 10  # 30 of available in debits of 3
    final = await first.get_account(account.id)
    assert final.available(clock.now()) == D("0.00")
    assert final.balance >= -final.overdraft_limit


async def test_a_frozen_account_refuses_debits_takes_credits_and_records_who_and_why(
    service: AccountService, store: EventStore, clock: FakeClock
) -> None:
    account = await open_account(service, "100")
    other = await open_account(service, "100")
    hold = await place(service, account.id, "10")
    incoming = await place(service, other.id, "7", to_account_id=account.id)
    frozen = await service.freeze_account(cmd.FreezeAccount(account.id, "kyc", "admin-1"), CTX)
    assert isinstance(frozen, Account)
    assert frozen.status == FROZEN
    again = await service.freeze_account(cmd.FreezeAccount(account.id, "aml", "admin-2"), CTX)
    assert isinstance(again, Account)
    assert again.version == frozen.version  # frozen already: no event

    for debit in (
        withdraw(service, account.id, "1"),
        place(service, account.id, "1"),
        capture(service, hold.id),
        transfer(service, account.id, other.id, "1"),
    ):
        with pytest.raises(errors.AccountFrozen):
            await debit
    await deposit(service, account.id, "5")
    await transfer(service, other.id, account.id, "3")
    await capture(service, incoming.id)
    shown = await service.get_account(account.id)  # reads work
    assert (shown.status, str(shown.balance)) == (FROZEN, "115.00")
    [event] = [e for e in await store.read_stream(account.id) if e.type == "AccountFrozen"]
    assert event.data == {"reason": "kyc", "by": "admin-1"}

    thawed = await service.unfreeze_account(cmd.UnfreezeAccount(account.id, "admin-1"), CTX)
    assert isinstance(thawed, Account)
    assert thawed.status == OPEN
    assert (await capture(service, hold.id)).status == "captured"
    closed = await open_account(service, "0")
    await service.close_account(cmd.CloseAccount(closed.id, "done"), CTX)
    with pytest.raises(errors.AccountClosed):
        await service.freeze_account(cmd.FreezeAccount(closed.id, "kyc", "admin-1"), CTX)
