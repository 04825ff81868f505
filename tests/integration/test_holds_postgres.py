"""Holds on PostgreSQL with two service instances (two pools, two caches, as two processes):
concurrent captures, capture racing void racing expiry, debits racing down to the
overdraft limit, and the expiry job in two instances and after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from tests.db_support import run_sync
from tests.integration.verify_support import service_settings

from banking_es.application.accounts import AccountService, CommandContext, HoldResult
from banking_es.application.hold_expiry import HoldExpiry
from banking_es.application.ports import SystemClock
from banking_es.bootstrap import Overrides, Services, build_services
from banking_es.domain import commands as cmd
from banking_es.domain import errors
from banking_es.domain.account import Account, lowest_allowed_balance

D = Decimal
CTX = CommandContext()
CLOCK = SystemClock()


@asynccontextmanager
async def instances(url: str, data_dir: Path, n: int = 2) -> AsyncIterator[list[Services]]:
    started = []
    try:
        for _ in range(n):
            services = await build_services(service_settings(url, data_dir), overrides=Overrides())
            started.append(services)
        yield started
    finally:
        for services in started:
            await services.close()


async def _open(service: AccountService, balance: str) -> str:
    opened = await service.open_account(cmd.OpenAccount("Ada", D(balance), "USD"), CTX)
    assert isinstance(opened, Account)
    return opened.id


async def _hold(service: AccountService, account_id: str, amount: str, **kw: object) -> HoldResult:
    placed = await service.place_hold(cmd.PlaceHold(account_id, D(amount), **kw), CTX)  # type: ignore[arg-type]
    assert isinstance(placed, HoldResult)
    return placed


def test_twenty_concurrent_captures_of_one_hold_one_succeeds(pg_url: str, tmp_path: Path) -> None:
    async def scenario() -> list[object]:
        async with instances(pg_url, tmp_path) as (one, two):
            source = await _open(one.accounts, "100")
            shop = await _open(one.accounts, "0")
            hold = await _hold(one.accounts, source, "60", to_account_id=shop)
            captures = [
                (one if n % 2 else two).accounts.capture_hold(cmd.CaptureHold(hold.id), CTX)
                for n in range(20)
            ]
            outcomes = await asyncio.gather(*captures, return_exceptions=True)
            assert (await two.accounts.get_account(source)).balance == D("40.00")
            assert (await one.accounts.get_account(shop)).balance == D("60.00")
            return outcomes

    outcomes = run_sync(scenario())
    assert sum(isinstance(o, HoldResult) for o in outcomes) == 1, outcomes
    assert all(isinstance(o, HoldResult | errors.HoldNotPending) for o in outcomes), outcomes


def test_capture_void_and_expiry_race_exactly_one_wins(pg_url: str, tmp_path: Path) -> None:
    async def scenario() -> list[list[object]]:
        async with instances(pg_url, tmp_path) as (one, two):
            account = await _open(one.accounts, "1000")
            holds = [await _hold(one.accounts, account, "10", expires_in=1) for _ in range(10)]
            live = [await _hold(one.accounts, account, "10") for _ in range(10)]
            await asyncio.sleep(1.05)  # every hold of `holds` is now due
            rounds = []
            for hold in live:  # capture racing void (and an early expiry) in two instances
                rounds.append(
                    await asyncio.gather(
                        one.accounts.capture_hold(cmd.CaptureHold(hold.id), CTX),
                        two.accounts.void_hold(cmd.VoidHold(hold.id), CTX),
                        two.accounts.capture_hold(cmd.CaptureHold(hold.id, D("5")), CTX),
                        one.accounts.void_hold(cmd.VoidHold(hold.id), CTX),
                        one.accounts.expire_hold(hold.id),
                        return_exceptions=True,
                    )
                )
            for hold in holds:
                rounds.append(
                    await asyncio.gather(
                        one.accounts.capture_hold(cmd.CaptureHold(hold.id), CTX),
                        two.accounts.void_hold(cmd.VoidHold(hold.id), CTX),
                        one.accounts.expire_hold(hold.id),
                        two.accounts.expire_hold(hold.id),
                        return_exceptions=True,
                    )
                )
            events = await one.store.read_stream(account)
            settled = [e for e in events if e.type.startswith("Hold") and e.type != "HoldPlaced"]
            assert len(settled) == len(holds) + len(live)
            return rounds

    refusals = errors.HoldNotPending | errors.HoldNotDue
    winners = set()
    for outcomes in run_sync(scenario()):
        # A live hold: a capture or a void wins; past its expiry, only the expiry can.
        wins = [o for o in outcomes if isinstance(o, HoldResult)]
        assert len(wins) == 1, outcomes
        winners.add(wins[0].status)
        assert all(isinstance(o, HoldResult | refusals) for o in outcomes), outcomes
    assert "expired" in winners


def test_holds_and_withdrawals_race_down_to_the_overdraft_limit(
    pg_url: str, tmp_path: Path
) -> None:
    async def scenario() -> tuple[Account, int]:
        async with instances(pg_url, tmp_path) as (one, two):
            account = await _open(one.accounts, "30")
            await one.accounts.set_overdraft_limit(
                cmd.SetOverdraftLimit(account, D("70"), "admin"), CTX
            )
            await two.accounts.get_account(account)
            debits: list[Callable[[], object]] = []
            for n in range(40):
                service = (one if n % 2 else two).accounts
                if n % 3:
                    debits.append(service.withdraw(cmd.Withdraw(account, D("7")), CTX))
                else:
                    debits.append(service.place_hold(cmd.PlaceHold(account, D("7")), CTX))
            outcomes = await asyncio.gather(*debits, return_exceptions=True)  # type: ignore[arg-type]
            ok = sum(not isinstance(o, Exception) for o in outcomes)
            assert all(
                not isinstance(o, Exception) or isinstance(o, errors.InsufficientFunds)
                for o in outcomes
            ), outcomes
            return await one.accounts.get_account(account), ok

    account, ok = run_sync(scenario())
    assert ok == 14  # 100.00 of room, 7.00 each
    held = sum(h.amount for h in account.holds.values())
    assert account.balance - held >= -account.overdraft_limit
    assert account.balance >= lowest_allowed_balance(account)


def test_the_expiry_job_in_two_instances_and_after_a_restart_expires_each_hold_once(
    pg_url: str, tmp_path: Path
) -> None:
    async def scenario() -> tuple[list[int], list[str], list[str]]:
        async with instances(pg_url, tmp_path) as (one, two):
            account = await _open(one.accounts, "100")
            holds = [await _hold(one.accounts, account, "1", expires_in=1) for _ in range(6)]
            await _hold(one.accounts, account, "1")  # not due for a week
            jobs = [HoldExpiry(s.store, s.accounts.expire_hold, CLOCK, page=4) for s in (one, two)]
            assert await jobs[0].run_once() == 0
            await asyncio.sleep(1.05)
            counts = list(await asyncio.gather(*(job.run_once() for job in jobs)))
        async with instances(pg_url, tmp_path, 1) as (restarted,):
            counts.append(await HoldExpiry(restarted.store, restarted.accounts.expire_hold,
                                           CLOCK).run_once())  # fmt: skip
            events = await restarted.store.read_stream(account)
        expired = [e.data["hold_id"] for e in events if e.type == "HoldExpired"]
        return counts, expired, [h.id for h in holds]

    counts, expired, due = run_sync(scenario())
    assert sum(counts) == 6
    assert sorted(expired) == sorted(due)


def test_a_started_service_expires_due_holds_by_itself(pg_url: str, tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        async with instances(pg_url, tmp_path) as both:
            for services in both:
                await services.start()
            service = both[0].accounts
            account = await _open(service, "10")
            hold = await _hold(service, account, "4", expires_in=1)
            for _ in range(100):  # the job runs every second, under its lease
                events = await both[1].store.read_stream(account)
                if any(e.type == "HoldExpired" for e in events):
                    break
                await asyncio.sleep(0.1)
            assert (await both[1].accounts.get_hold(hold.id)).status == "expired"
            return [e.type for e in events]

    types = run_sync(scenario())
    assert types.count("HoldExpired") == 1, types
