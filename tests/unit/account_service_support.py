"""Helpers of the AccountService tests: short command calls, a fresh reader, keyed contexts, and a
store on which every append loses a race."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from tests.clock_support import EPOCH

from banking_es.application.accounts import (
    AccountService,
    CommandContext,
    IdempotencyIntent,
    Replayed,
    TransferResult,
)
from banking_es.application.ports import SystemClock, UuidGenerator
from banking_es.cache.local import LocalAccountCache
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    IdempotencyRecord,
    RecordedEvent,
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
