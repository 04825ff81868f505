"""The command handlers of one account: open, and deposit, withdraw and close in chunks.

A chunk's commands (from `stream_queue`) are decided one after another on the cached
state and all their events go in one append. Rejections are only final when made on a
state known to be current; a conflict is retried as `retry.RetryPolicy` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from banking_es.application.context import (
    CommandContext,
    CommandOutcomes,
    Replayed,
    event_metadata,
    idempotency_records,
)
from banking_es.application.errors import NotFound, VersionConflict, detached
from banking_es.application.ports import Clock, IdGenerator
from banking_es.application.repository import AccountRepository
from banking_es.application.retry import RetryPolicy, log_conflict
from banking_es.application.stream_queue import Pending, fail, succeed
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.domain.errors import DomainError
from banking_es.domain.events import DomainEvent
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    IdempotencyKeyExists,
    IdempotencyRecord,
    NewEvent,
    RecordedEvent,
    StoreUnavailable,
    StreamAppend,
)
from banking_es.eventstore.codec import to_new_event
from banking_es.observability.tracing import span, trace_carrier


class AccountHandlers:
    """Opens accounts, and executes chunks of one stream's commands (the queue's executor)."""

    def __init__(
        self,
        repository: AccountRepository,
        retry: RetryPolicy,
        outcomes: CommandOutcomes,
        *,
        clock: Clock,
        ids: IdGenerator,
    ) -> None:
        self._repository = repository
        self._cache = repository.cache
        self._retry = retry
        self._outcomes = outcomes
        self._clock = clock
        self._ids = ids

    async def open_account(
        self, command: cmd.OpenAccount, context: CommandContext
    ) -> Account | Replayed:
        with span("command OpenAccount"):
            try:
                return await self._open_account(command, context)
            except StoreUnavailable as exc:
                self._outcomes.failed("OpenAccount", None, exc)
                raise

    async def _open_account(
        self, command: cmd.OpenAccount, context: CommandContext
    ) -> Account | Replayed:
        account_id = self._ids.new_id()
        event = Account.open(
            account_id,
            command.owner_name,
            command.initial_balance,
            command.currency,
            command.owner_id,
        )
        state = Account(account_id)
        state.apply(event)
        new_event = to_new_event(
            event, self._ids.new_event_id(), event_metadata(context, "OpenAccount", trace_carrier())
        )
        request = AppendRequest(
            [StreamAppend(account_id, 0, [new_event])],
            idempotency=idempotency_records(context, state, self._clock),
        )
        try:
            recorded = await self._repository.append(request)
        except IdempotencyKeyExists as exc:
            return Replayed(exc.existing)
        result = state
        result.created_at = result.updated_at = recorded[0].recorded_at
        self._cache.put(result)
        self._outcomes.on_command("OpenAccount", "ok")
        return result

    async def execute(self, stream_id: str, chunk: list[Pending]) -> Sequence[Pending]:
        """Decide and append `chunk`, settling each command's future; returns the commands
        deferred to the next chunk (a second use of an idempotency key in the chunk)."""
        retry = self._retry
        deadline = retry.deadline()
        todo = list(chunk)
        fresh = False
        attempt = 0
        while todo:
            account, is_fresh = await self._repository.load(stream_id, fresh)
            if not account.exists:
                if not is_fresh:
                    fresh = True
                    continue
                for pending in todo:
                    fail(pending, NotFound(f"account {stream_id} not found"))
                return ()
            state = account.copy()
            now = self._clock.now()
            accepted: list[tuple[Pending, Account]] = []
            new_events: list[NewEvent] = []
            keys: set[tuple[str, str]] = set()
            deferred: list[Pending] = []
            for pending in todo:
                pending.outcome = None
                intent = pending.context.idempotency
                if intent is not None:
                    if (intent.scope, intent.key) in keys:
                        # The same key twice in one chunk: the second waits for the first's
                        # outcome and then replays it (next chunk).
                        deferred.append(pending)
                        continue
                    keys.add((intent.scope, intent.key))
                expected = pending.command.expected_version
                if expected is not None and expected != state.version:
                    pending.outcome = VersionConflict(stream_id, expected, state.version)
                    continue
                try:
                    event = decide(state, pending.command, now)
                except DomainError as exc:
                    pending.outcome = detached(exc)  # the caller raises it anew
                    continue
                if event is None:  # nothing changes (freezing a frozen account)
                    pending.outcome = state.copy()
                    continue
                state.apply(event)
                new_events.append(
                    to_new_event(
                        event,
                        self._ids.new_event_id(),
                        event_metadata(
                            pending.context, type(pending.command).__name__, pending.trace
                        ),
                    )
                )
                accepted.append((pending, state.copy()))
            if not accepted and not is_fresh and len(deferred) < len(todo):
                fresh = True  # rejections made on a cached state: check against the store
                continue
            if accepted:
                try:
                    recorded = await self._append_chunk(account, state, accepted, new_events)
                except ConcurrencyError as exc:
                    if exc.actual <= account.version:
                        # Not simply behind (another process appended meanwhile): reload.
                        self._cache.invalidate(stream_id)
                    for pending, _ in accepted:
                        self._outcomes.on_command(type(pending.command).__name__, "conflict")
                    log_conflict(f"{len(accepted)} command(s)", stream_id, attempt + 1, exc)
                    attempt += 1
                    retry.check_budget(deadline, attempt)
                    known = self._cache.version_of(stream_id)
                    if known is None or known < exc.actual:
                        # Until the winner's notice arrives (usually a moment), at most as
                        # long as a backoff: the notice usually makes the wait short.
                        await retry.await_notice(stream_id, exc.actual, attempt)
                        known = self._cache.version_of(stream_id)
                    # Brought forward by the notice: try again from the cached copy at once.
                    # Reading and backing off would let the other process win again and
                    # again (it has its next chunk ready).
                    fresh = known is None or known < exc.actual
                    continue
                except IdempotencyKeyExists as exc:
                    hit = _owner_of(exc.existing, accepted)
                    succeed(hit, Replayed(exc.existing))
                    todo = [p for p in todo if p is not hit]
                    fresh = True
                    continue
                for index, (pending, after) in enumerate(accepted):
                    after.updated_at = recorded[index].recorded_at
                    pending.outcome = after
                state.updated_at = recorded[-1].recorded_at
                self._cache.put(state)
            on_command = self._outcomes.on_command
            for pending in todo:
                if pending in deferred:
                    continue
                name = type(pending.command).__name__
                if isinstance(pending.outcome, Account):
                    on_command(name, "ok")
                    succeed(pending, pending.outcome)
                elif pending.outcome is not None:
                    on_command(name, "rejected")
                    fail(pending, pending.outcome)
            return deferred
        return ()

    async def _append_chunk(
        self,
        base: Account,
        final: Account,
        accepted: list[tuple[Pending, Account]],
        new_events: list[NewEvent],
    ) -> list[RecordedEvent]:
        records: list[IdempotencyRecord] = []
        for pending, after in accepted:
            if pending.context.idempotency is not None:
                records += idempotency_records(pending.context, after, self._clock)

        snapshot = self._repository.snapshot(base, final.version)
        request = AppendRequest(
            [StreamAppend(base.id, base.version, new_events, snapshot)],
            idempotency=records,
        )
        return await self._repository.append(request)


def decide(state: Account, command: cmd.StreamCommand, now: datetime) -> DomainEvent | None:
    """The event of `command` on `state` at `now` (None: it changes nothing)."""
    match command:
        case cmd.Deposit():
            return state.deposit(command.amount, command.description)
        case cmd.Withdraw():
            return state.withdraw(command.amount, command.description, now)
        case cmd.CloseAccount():
            return state.close(command.reason, now)
        case cmd.SetOverdraftLimit():
            return state.set_overdraft_limit(command.limit, command.set_by)
        case cmd.FreezeAccount():
            return state.freeze(command.reason, command.by)
        case cmd.UnfreezeAccount():
            return state.unfreeze(command.by)
    raise TypeError(f"unknown command {command!r}")


def _owner_of(record: IdempotencyRecord, accepted: list[tuple[Pending, Account]]) -> Pending:
    for pending, _ in accepted:
        intent = pending.context.idempotency
        if intent and (intent.scope, intent.key) == (record.scope, record.key):
            return pending
    return accepted[0][0]
