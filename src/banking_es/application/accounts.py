"""`AccountService`: the accounts use cases behind one facade.

Each job lives in its own module: `handlers` (open; deposit, withdraw, close in chunks),
`transfers`, `holds`, `stream_queue` (the per-stream queue), `repository` (loading, folding,
snapshots), `retry` (conflicts) and `queries`. The facade builds them and hands each call
to its part: a method returns the part's coroutine, adding no frame per command.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from typing import Any

from banking_es.application.context import (
    CommandContext,
    CommandOutcomes,
    IdempotencyIntent,
    Replayed,
)
from banking_es.application.handlers import AccountHandlers
from banking_es.application.holds import Authorize, Holds
from banking_es.application.locks import StreamLocks
from banking_es.application.multistream import MultiStreamWriter
from banking_es.application.ports import (
    AggregateCache,
    Clock,
    EventPageCache,
    IdGenerator,
    ShardFences,
)
from banking_es.application.queries import AccountQueries
from banking_es.application.repository import AccountRepository
from banking_es.application.results import HoldResult, TransferResult
from banking_es.application.retry import RetryPolicy
from banking_es.application.statements import Period, Statement
from banking_es.application.stream_queue import StreamQueue
from banking_es.application.transfers import Transfers
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.eventstore.base import AppendedElsewhere, EventStore, RecordedEvent

__all__ = [
    "AccountService",
    "CommandContext",
    "HoldResult",
    "IdempotencyIntent",
    "Replayed",
    "TransferResult",
]


class AccountService:
    """Create, deposit, withdraw, close, transfer; and read accounts from the store.
    `on_command` is told (command name, outcome): ok, rejected, conflict or failed (metrics)."""

    def __init__(
        self,
        store: EventStore,
        cache: AggregateCache,
        *,
        clock: Clock,
        ids: IdGenerator,
        snapshot_threshold: int = 100,
        retry_budget: float = 5.0,
        pages: EventPageCache | None = None,
        on_command: Callable[[str, str], None] | None = None,
        fences: ShardFences | None = None,
    ) -> None:
        self._outcomes = CommandOutcomes(on_command)
        self._locks = StreamLocks()
        self._retry = RetryPolicy(retry_budget)
        self._repository = AccountRepository(
            store, cache, snapshot_threshold=snapshot_threshold, fences=fences
        )
        repository, retry, outcomes = self._repository, self._retry, self._outcomes
        self._handlers = AccountHandlers(repository, retry, outcomes, clock=clock, ids=ids)
        writer = MultiStreamWriter(repository, self._locks, retry, outcomes, clock=clock, ids=ids)
        self._transfers = Transfers(writer, ids)
        self._holds = Holds(repository, writer, clock=clock, ids=ids)
        self._queue = StreamQueue(self._locks, self._handlers.execute, self._outcomes)
        self._queries = AccountQueries(self._repository, pages)

    # ---- commands ----------------------------------------------------------------------

    def open_account(
        self, command: cmd.OpenAccount, context: CommandContext
    ) -> Coroutine[Any, Any, Account | Replayed]:
        return self._handlers.open_account(command, context)

    def deposit(
        self, command: cmd.Deposit, context: CommandContext
    ) -> Coroutine[Any, Any, Account | Replayed]:
        return self._queue.submit(command.account_id, command, context)

    def withdraw(
        self, command: cmd.Withdraw, context: CommandContext
    ) -> Coroutine[Any, Any, Account | Replayed]:
        return self._queue.submit(command.account_id, command, context)

    def close_account(
        self, command: cmd.CloseAccount, context: CommandContext
    ) -> Coroutine[Any, Any, Account | Replayed]:
        return self._queue.submit(command.account_id, command, context)

    def transfer(
        self, command: cmd.Transfer, context: CommandContext
    ) -> Coroutine[Any, Any, TransferResult | Replayed]:
        return self._transfers.transfer(command, context)

    def set_overdraft_limit(
        self, command: cmd.SetOverdraftLimit, context: CommandContext
    ) -> Coroutine[Any, Any, Account | Replayed]:
        return self._queue.submit(command.account_id, command, context)

    def freeze_account(
        self, command: cmd.FreezeAccount, context: CommandContext
    ) -> Coroutine[Any, Any, Account | Replayed]:
        """The account frozen (as it was, with no event, if it was frozen already)."""
        return self._queue.submit(command.account_id, command, context)

    def unfreeze_account(
        self, command: cmd.UnfreezeAccount, context: CommandContext
    ) -> Coroutine[Any, Any, Account | Replayed]:
        return self._queue.submit(command.account_id, command, context)

    def place_hold(
        self, command: cmd.PlaceHold, context: CommandContext
    ) -> Coroutine[Any, Any, HoldResult | Replayed]:
        return self._holds.place(command, context)

    def capture_hold(
        self, command: cmd.CaptureHold, context: CommandContext, authorize: Authorize | None = None
    ) -> Coroutine[Any, Any, HoldResult | Replayed]:
        """`authorize` (the caller's access check) gets the hold's parties before anything
        is decided: the placement is read once, for both."""
        return self._holds.capture(command, context, authorize)

    def void_hold(
        self, command: cmd.VoidHold, context: CommandContext, authorize: Authorize | None = None
    ) -> Coroutine[Any, Any, HoldResult | Replayed]:
        return self._holds.void(command, context, authorize)

    def expire_hold(self, hold_id: str) -> Coroutine[Any, Any, HoldResult | Replayed]:
        """For the expiry job (`hold_expiry.HoldExpiry`), not a route."""
        return self._holds.expire(hold_id)

    def get_hold(self, hold_id: str) -> Coroutine[Any, Any, HoldResult]:
        return self._holds.get_hold(hold_id)

    def hold_account(self, hold_id: str) -> Coroutine[Any, Any, str]:
        """The account a hold is on (NotFound if none); forwarding routes by it."""
        return self._holds.account_of(hold_id)

    def account_holds(
        self, account_id: str, status: str | None = None
    ) -> Coroutine[Any, Any, list[HoldResult]]:
        """The account's holds, newest first (`GET /accounts/{id}/holds`; the route pages)."""
        return self._holds.account_holds(account_id, status)

    def note_appended_elsewhere(self, appended: Sequence[AppendedElsewhere]) -> None:
        """Other processes appended to these streams (their notices): see
        `AccountRepository.note_appended_elsewhere`; chunks waiting for these versions go on."""
        self._repository.note_appended_elsewhere(appended)
        self._holds.note_appended_elsewhere(appended)
        self._retry.wake(appended)

    def drain(self, which: Callable[[str], bool] | None = None) -> Coroutine[Any, Any, None]:
        """Wait for the queued and running commands of the accounts `which` selects (default:
        all) to finish: a graceful shutdown, or a shard handed over."""
        return self._queue.drain(which)

    # ---- queries -------------------------------------------------------------------------

    def get_account(self, account_id: str) -> Coroutine[Any, Any, Account]:
        """The current state, including every write acknowledged before the call (any process)."""
        return self._queries.get_account(account_id)

    def cached_account(self, account_id: str) -> Coroutine[Any, Any, Account | None]:
        """The account as cached (possibly a little behind); None if it does not exist."""
        return self._queries.cached_account(account_id)

    def listed_accounts(self, account_ids: Sequence[str]) -> Coroutine[Any, Any, list[Account]]:
        """The accounts of a page of `GET /accounts`, as cached or loaded (in order)."""
        return self._queries.listed_accounts(account_ids)

    def owner_of(self, account_id: str) -> Coroutine[Any, Any, str | None]:
        return self._queries.owner_of(account_id)

    def account_at_version(self, account_id: str, version: int) -> Coroutine[Any, Any, Account]:
        return self._queries.account_at_version(account_id, version)

    def account_as_of(self, account_id: str, moment: datetime) -> Coroutine[Any, Any, Account]:
        return self._queries.account_as_of(account_id, moment)

    def account_events(
        self, account_id: str, after_version: int, limit: int
    ) -> Coroutine[Any, Any, list[RecordedEvent]]:
        return self._queries.account_events(account_id, after_version, limit)

    def get_transfer(self, transfer_id: str) -> Coroutine[Any, Any, TransferResult]:
        return self._queries.get_transfer(transfer_id)

    def statement(self, account_id: str, period: Period) -> Coroutine[Any, Any, Statement]:
        return self._queries.statement(account_id, period)
