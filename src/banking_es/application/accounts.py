"""Command handlers and store-backed queries for accounts and transfers.

Writes for one account are queued per stream inside the process: the first command of a
quiet stream runs in its caller's task, and a drain task takes every command queued
behind it, decides them one after another on the cached state and appends all their
events in one append (so a hot account costs one round trip per batch, not per command).
A version conflict caused by another process decides again from the state the winner's
notice brings (waiting a moment for it), or else reloads it from the store (fast-forward),
until `retry_budget` seconds have passed.
Rejections are only final when made on a state known to be current.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from banking_es.application.codec import to_domain, to_new_event
from banking_es.application.errors import (
    ApplicationError,
    NotFound,
    ServiceUnavailable,
    VersionConflict,
)
from banking_es.application.locks import StreamLocks
from banking_es.application.ports import AggregateCache, Clock, EventPageCache, IdGenerator
from banking_es.domain import commands as cmd
from banking_es.domain.account import Account
from banking_es.domain.errors import DomainError, SameAccount
from banking_es.domain.events import DomainEvent, TransferSent
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    EventStore,
    IdempotencyKeyExists,
    IdempotencyRecord,
    MovedEvent,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StoreUnavailable,
    StreamAppend,
    StreamMoved,
)
from banking_es.observability.tracing import span

MAX_CHUNK = 256
#: Streams remembered as moved by other processes (see `note_moved`).
MAX_BEHIND = 100_000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IdempotencyIntent:
    """Store this command's outcome under (scope, key), rendered by `render`."""

    scope: str
    key: str
    fingerprint: str
    status: int
    render: Callable[[Any], bytes]
    ttl_seconds: float


@dataclass(frozen=True, slots=True)
class CommandContext:
    """Who asks, and how to remember the answer."""

    user_id: str | None = None
    request_id: str | None = None
    idempotency: IdempotencyIntent | None = None


@dataclass(frozen=True, slots=True)
class Replayed:
    """The command was already executed (perhaps by another process): its stored outcome."""

    record: IdempotencyRecord


@dataclass(slots=True)
class TransferResult:
    id: str
    from_account_id: str
    to_account_id: str
    amount: Decimal
    currency: str
    description: str | None
    created_at: datetime | None
    status: str = "completed"


@dataclass(slots=True)
class _Pending:
    command: cmd.StreamCommand
    context: CommandContext
    future: asyncio.Future[Account | Replayed]
    outcome: Exception | Account | None = field(default=None)


class AccountService:
    """Create, deposit, withdraw, close, transfer; and read accounts from the store."""

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
    ) -> None:
        self._store = store
        self._pages = pages
        self._cache = cache
        self._clock = clock
        self._ids = ids
        self._snapshot_threshold = snapshot_threshold
        self._retry_budget = retry_budget
        self._locks = StreamLocks()
        self._pending: dict[str, deque[_Pending]] = {}
        self._draining: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Versions other processes reached (stream notices): a cached copy below is behind.
        self._behind: dict[str, int] = {}
        #: Chunks that lost a conflict to another process, waiting for its notice:
        #: stream -> [(the version it reached, woken when a notice says so)].
        self._awaiting: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        #: Called with (command name, outcome) for metrics; outcome in ok|rejected|conflict|failed.
        self.on_command: Callable[[str, str], None] = lambda name, outcome: None

    # ---- commands ----------------------------------------------------------------------

    async def open_account(
        self, command: cmd.OpenAccount, context: CommandContext
    ) -> Account | Replayed:
        with span("command OpenAccount"):
            try:
                return await self._open_account(command, context)
            except StoreUnavailable as exc:
                self._failed("OpenAccount", None, exc)
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
            event, self._ids.new_event_id(), self._metadata(context, "OpenAccount")
        )

        def finish(recorded: Sequence[RecordedEvent]) -> Account:
            done = state.copy()
            done.created_at = done.updated_at = recorded[0].recorded_at
            return done

        request = AppendRequest(
            [StreamAppend(account_id, 0, [new_event])],
            idempotency=self._records(context, finish),
        )
        try:
            recorded = await self._store.append(request)
        except IdempotencyKeyExists as exc:
            return Replayed(exc.existing)
        result = finish(recorded)
        self._cache.put(result)
        self.on_command("OpenAccount", "ok")
        return result

    async def deposit(self, command: cmd.Deposit, context: CommandContext) -> Account | Replayed:
        return await self._submit(command.account_id, command, context)

    async def withdraw(self, command: cmd.Withdraw, context: CommandContext) -> Account | Replayed:
        return await self._submit(command.account_id, command, context)

    async def close_account(
        self, command: cmd.CloseAccount, context: CommandContext
    ) -> Account | Replayed:
        return await self._submit(command.account_id, command, context)

    async def transfer(
        self, command: cmd.Transfer, context: CommandContext
    ) -> TransferResult | Replayed:
        if command.from_account_id == command.to_account_id:
            raise SameAccount("cannot transfer to the same account")
        attributes = {
            "account.id": command.from_account_id,
            "transfer.to_account_id": command.to_account_id,
        }
        with span("command Transfer", attributes):
            try:
                return await self._transfer(command, context)
            except StoreUnavailable as exc:
                self._failed("Transfer", command.from_account_id, exc)
                raise _as_unavailable(exc) from exc
            except ServiceUnavailable as exc:
                self._failed("Transfer", command.from_account_id, exc)
                raise

    async def _transfer(
        self, command: cmd.Transfer, context: CommandContext
    ) -> TransferResult | Replayed:
        transfer_id = self._ids.new_event_id()
        async with self._locks.hold(command.from_account_id, command.to_account_id):
            # The budget is for retries after conflicts, as for a chunk (`_execute`): it starts
            # once the locks are held, not while the transfer queues behind others for them.
            deadline = asyncio.get_running_loop().time() + self._retry_budget
            fresh = False
            attempt = 0
            while True:
                source, source_fresh = await self._load(command.from_account_id, fresh)
                target, target_fresh = await self._load(command.to_account_id, fresh)
                known_current = source_fresh and target_fresh
                try:
                    if not source.exists or not target.exists:
                        missing = (
                            command.from_account_id if not source.exists else command.to_account_id
                        )
                        raise NotFound(f"account {missing} not found")
                    sent, received = source.send_transfer(
                        transfer_id, target, command.amount, command.description
                    )
                except (DomainError, NotFound):
                    if not known_current:
                        fresh = True
                        continue
                    self.on_command("Transfer", "rejected")
                    raise
                new_source, new_target = source.copy(), target.copy()
                new_source.apply(sent)
                new_target.apply(received)
                result = TransferResult(
                    transfer_id,
                    source.id,
                    target.id,
                    sent.amount,
                    source.currency,
                    command.description,
                    None,
                )

                def finish(
                    recorded: Sequence[RecordedEvent], result: TransferResult = result
                ) -> TransferResult:
                    return replace(result, created_at=recorded[0].recorded_at)

                metadata = self._metadata(context, "Transfer")
                request = AppendRequest(
                    [
                        StreamAppend(
                            source.id,
                            source.version,
                            [to_new_event(sent, transfer_id, metadata)],
                            self._snapshot(source, new_source.version),
                        ),
                        StreamAppend(
                            target.id,
                            target.version,
                            [to_new_event(received, self._ids.new_event_id(), metadata)],
                            self._snapshot(target, new_target.version),
                        ),
                    ],
                    idempotency=self._records(context, finish),
                )
                try:
                    recorded = await self._store.append(request)
                except IdempotencyKeyExists as exc:
                    return Replayed(exc.existing)
                except ConcurrencyError as exc:
                    self.on_command("Transfer", "conflict")
                    _log_conflict("Transfer", source.id, attempt + 1, exc)
                    self._cache.invalidate(source.id)
                    self._cache.invalidate(target.id)
                    attempt += 1
                    await self._backoff(deadline, attempt)
                    fresh = True
                    continue
                at = recorded[0].recorded_at
                new_source.updated_at = new_target.updated_at = at
                self._cache.put(new_source)
                self._cache.put(new_target)
                self.on_command("Transfer", "ok")
                return finish(recorded)

    # ---- the per-stream queue ----------------------------------------------------------------

    async def _submit(
        self, stream_id: str, command: cmd.StreamCommand, context: CommandContext
    ) -> Account | Replayed:
        future: asyncio.Future[Account | Replayed] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(stream_id, deque()).append(_Pending(command, context, future))
        with span(f"command {type(command).__name__}", {"account.id": stream_id}):
            if stream_id not in self._draining:
                # Nobody drains the stream, so its queue holds just this command: the caller
                # runs it as the first chunk itself, and hands what queues meanwhile to a
                # drain task. A task of its own for every command of a quiet stream (most
                # of them) cost a task and two switches per deposit (docs/performance.md).
                self._draining.add(stream_id)
                try:
                    await self._run_chunk(stream_id)
                finally:
                    self._hand_off(stream_id)
            try:
                return await future
            finally:
                del future  # a refused command's error must not hold it (`Grouper.submit`)

    def _hand_off(self, stream_id: str) -> None:
        """After a caller's own chunk: a drain task for the commands queued meanwhile."""
        if stream_id not in self._pending:
            self._draining.discard(stream_id)
            return
        task = asyncio.create_task(self._drain(stream_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, stream_id: str) -> None:
        try:
            while stream_id in self._pending:
                await self._run_chunk(stream_id)
        finally:
            self._draining.discard(stream_id)

    async def _run_chunk(self, stream_id: str) -> None:
        """Take the next chunk of the stream's queue, once the stream's lock is held (what
        queues while a transfer holds it joins the chunk), and execute it; a failure that is
        not a command's outcome (the store unavailable, a bug) fails each of its commands."""
        async with self._locks.hold(stream_id):
            queue = self._pending[stream_id]
            chunk = [queue.popleft() for _ in range(min(len(queue), MAX_CHUNK))]
            if not queue:
                del self._pending[stream_id]
            try:
                await self._execute(stream_id, chunk)
            except Exception as exc:
                failure = _as_unavailable(exc)
                for pending in chunk:
                    if not pending.future.done():
                        self._failed(type(pending.command).__name__, stream_id, exc)
                        pending.future.set_exception(failure)

    async def _execute(self, stream_id: str, chunk: list[_Pending]) -> None:
        deadline = asyncio.get_running_loop().time() + self._retry_budget
        todo = list(chunk)
        fresh = False
        attempt = 0
        while todo:
            account, is_fresh = await self._load(stream_id, fresh)
            if not account.exists:
                if not is_fresh:
                    fresh = True
                    continue
                for pending in todo:
                    _fail(pending, NotFound(f"account {stream_id} not found"))
                return
            state = account.copy()
            accepted: list[tuple[_Pending, Account]] = []
            new_events: list[NewEvent] = []
            keys: set[tuple[str, str]] = set()
            deferred: list[_Pending] = []
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
                    event = _decide(state, pending.command)
                except DomainError as exc:
                    pending.outcome = _detached(exc)  # the caller raises it anew
                    continue
                state.apply(event)
                new_events.append(
                    to_new_event(
                        event,
                        self._ids.new_event_id(),
                        self._metadata(pending.context, type(pending.command).__name__),
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
                        self.on_command(type(pending.command).__name__, "conflict")
                    _log_conflict(f"{len(accepted)} command(s)", stream_id, attempt + 1, exc)
                    attempt += 1
                    self._check_budget(deadline, attempt)
                    known = self._cache.version_of(stream_id)
                    if known is None or known < exc.actual:
                        # Until the winner's notice arrives (usually a moment), at most as
                        # long as a backoff: the notice usually makes the wait short.
                        await self._await_notice(stream_id, exc.actual, attempt)
                        known = self._cache.version_of(stream_id)
                    # Brought forward by the notice: try again from the cached copy at once.
                    # Reading and backing off would let the other process win again and
                    # again (it has its next chunk ready).
                    fresh = known is None or known < exc.actual
                    continue
                except IdempotencyKeyExists as exc:
                    hit = _owner_of(exc.existing, accepted)
                    _succeed(hit, Replayed(exc.existing))
                    todo = [p for p in todo if p is not hit]
                    fresh = True
                    continue
                for index, (pending, after) in enumerate(accepted):
                    after.updated_at = recorded[index].recorded_at
                    pending.outcome = after
                state.updated_at = recorded[-1].recorded_at
                self._cache.put(state)
            if deferred:
                self._pending.setdefault(stream_id, deque()).extendleft(reversed(deferred))
            for pending in todo:
                if pending in deferred:
                    continue
                name = type(pending.command).__name__
                if isinstance(pending.outcome, Account):
                    self.on_command(name, "ok")
                    _succeed(pending, pending.outcome)
                elif pending.outcome is not None:
                    self.on_command(name, "rejected")
                    _fail(pending, pending.outcome)
            return

    async def _append_chunk(
        self,
        base: Account,
        final: Account,
        accepted: list[tuple[_Pending, Account]],
        new_events: list[NewEvent],
    ) -> list[RecordedEvent]:
        records: list[IdempotencyRecord] = []
        for index, (pending, after) in enumerate(accepted):

            def finish(
                recorded: Sequence[RecordedEvent], after: Account = after, index: int = index
            ) -> Account:
                done = after.copy()
                done.updated_at = recorded[index].recorded_at
                return done

            records.extend(self._records(pending.context, finish))

        request = AppendRequest(
            [StreamAppend(base.id, base.version, new_events, self._snapshot(base, final.version))],
            idempotency=records,
        )
        return await self._store.append(request)

    # ---- queries -------------------------------------------------------------------------------

    async def get_account(self, account_id: str) -> Account:
        """The current state, including every write acknowledged before the call (any process)."""
        account, _ = await self._load(account_id, fresh=True)
        if not account.exists:
            raise NotFound(f"account {account_id} not found")
        return account

    async def cached_account(self, account_id: str) -> Account | None:
        """The account as cached (possibly a little behind), or loaded if not cached; None if
        it does not exist. For advisory checks such as validation warnings."""
        account, _ = await self._load(account_id, fresh=False)
        return account if account.exists else None

    async def owner_of(self, account_id: str) -> str | None:
        """The owner's user id. It never changes, so a cached state answers without a query
        (looked at, not counted as a cache hit: the command that follows counts its own)."""
        cached = self._cache.peek(account_id)
        if cached is not None and cached.exists:
            return cached.owner_id
        account, _ = await self._load(account_id, fresh=False)
        if not account.exists:
            raise NotFound(f"account {account_id} not found")
        return account.owner_id

    async def account_at_version(self, account_id: str, version: int) -> Account:
        snapshot = await self._store.latest_snapshot(account_id, max_version=version)
        account = (
            Account.from_snapshot(snapshot.state)
            if snapshot and isinstance(snapshot.state, dict)
            else Account(account_id)
        )
        events = await self._store.read_stream(
            account_id, after_version=account.version, to_version=version
        )
        _fold(account, events)
        if not account.exists or account.version != version:
            raise NotFound(f"account {account_id} has no version {version}")
        return account

    async def account_as_of(self, account_id: str, moment: datetime) -> Account:
        account = Account(account_id)
        _fold(account, await self._store.read_stream(account_id, recorded_until=moment))
        if not account.exists:
            raise NotFound(f"account {account_id} did not exist at {moment.isoformat()}")
        return account

    async def account_events(
        self, account_id: str, after_version: int, limit: int
    ) -> list[RecordedEvent]:
        if self._pages is not None:
            cached = await self._pages.get(account_id, after_version, limit)
            if cached is not None:
                return cached
        events = await self._store.read_stream(account_id, after_version, limit=limit)
        if self._pages is not None and len(events) == limit:
            await self._pages.put(account_id, after_version, limit, events)
        if not events and not await self._store.read_stream(account_id, 0, limit=1):
            raise NotFound(f"account {account_id} not found")
        return events

    async def get_transfer(self, transfer_id: str) -> TransferResult:
        event = await self._store.get_event(transfer_id)
        if event is None or event.type != TransferSent.type:
            raise NotFound(f"transfer {transfer_id} not found")
        sent = to_domain(event)
        assert isinstance(sent, TransferSent)
        source = await self.get_account(event.stream_id)
        return TransferResult(
            transfer_id,
            event.stream_id,
            sent.to_account_id,
            sent.amount,
            source.currency,
            sent.description,
            event.recorded_at,
        )

    # ---- helpers -------------------------------------------------------------------------------

    async def _load(self, account_id: str, fresh: bool) -> tuple[Account, bool]:
        """The account from the cache (as is, unless `fresh`) or the store, fast-forwarded."""
        cached = await self._cache.get(account_id)
        if cached is not None and not fresh:
            behind = self._behind.get(account_id)
            if behind is None or behind <= cached.version:
                return cached, False
        if cached is None:
            snapshot = await self._store.latest_snapshot(account_id)
            if snapshot is not None and isinstance(snapshot.state, dict):
                cached = Account.from_snapshot(snapshot.state)
            else:
                cached = Account(account_id)
        _fold(cached, await self._store.read_stream(account_id, after_version=cached.version))
        if self._behind.get(account_id, 0) <= cached.version:
            self._behind.pop(account_id, None)
        if cached.exists:
            self._cache.put(cached)
        return cached, True

    def note_moved(self, moved: Sequence[StreamMoved]) -> None:
        """Other processes appended to these streams. A cached copy just before the new
        events is brought forward with them (no query); any other copy below the new version
        is marked behind, and read forward before its next command instead of conflicting at
        append. Both only save work: the append's version check is what keeps writes safe."""
        if len(self._behind) > MAX_BEHIND:
            self._behind.clear()  # only an optimization: forgetting costs a read or a conflict
        for stream in moved:
            brought = bool(stream.events) and self._bring_forward(stream)
            if not brought and stream.version > self._behind.get(stream.stream_id, 0):
                self._behind[stream.stream_id] = stream.version
            if self._awaiting:
                self._wake_awaiting(stream.stream_id, stream.version)

    def _bring_forward(self, stream: StreamMoved) -> bool:
        cached = self._cache.peek(stream.stream_id)
        if cached is None:
            return False
        if cached.version >= stream.version:
            return True  # already there (read forward meanwhile)
        if cached.version + 1 != stream.events[0].version:
            return False  # a gap: notices missed or still on the way
        _fold(cached, stream.events)
        self._cache.put(cached, share=False)  # the writer shared it already
        if self._behind.get(stream.stream_id, 0) <= cached.version:
            self._behind.pop(stream.stream_id, None)
        return True

    def _snapshot(self, base: Account, final_version: int) -> Snapshot | None:
        """Every `snapshot_threshold` events, a snapshot: when an append takes a stream past a
        multiple of the threshold, of the state it was decided on. That state is already
        recorded (its times are the store's), so the snapshot is known before the append and
        travels with it in the store's one-statement batch (one rendered from the recorded
        events would need the batch planned in more round trips). Loading still reads fewer
        than a threshold plus one chunk of events."""
        threshold = self._snapshot_threshold
        if not base.exists or final_version // threshold == base.version // threshold:
            return None
        return Snapshot(base.id, base.version, base.to_snapshot())

    def _records(
        self, context: CommandContext, finish: Callable[[Sequence[RecordedEvent]], Any]
    ) -> list[IdempotencyRecord]:
        intent = context.idempotency
        if intent is None:
            return []
        now = self._clock.now()
        return [
            IdempotencyRecord(
                scope=intent.scope,
                key=intent.key,
                fingerprint=intent.fingerprint,
                status=intent.status,
                body=lambda recorded: intent.render(finish(recorded)),
                created_at=now,
                expires_at=now + timedelta(seconds=intent.ttl_seconds),
            )
        ]

    def _metadata(self, context: CommandContext, command: str) -> dict[str, Any]:
        metadata: dict[str, Any] = {"command": command}
        if context.user_id:
            metadata["user_id"] = context.user_id
        if context.request_id:
            metadata["request_id"] = metadata["correlation_id"] = context.request_id
        if context.idempotency:
            metadata["idempotency_key"] = context.idempotency.key
        return metadata

    async def _await_notice(self, stream_id: str, version: int, attempt: int) -> None:
        """Until another process's notice has moved `stream_id` to `version` here (see
        `note_moved`), or a backoff's time has passed (no notice: read the store)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (version, future)
        self._awaiting.setdefault(stream_id, []).append(entry)
        limit = _backoff_limit(attempt)
        try:
            async with asyncio.timeout(random.uniform(limit / 2, limit)):
                await future
        except TimeoutError:
            pass
        finally:
            waiting = self._awaiting.get(stream_id)
            if waiting is not None and entry in waiting:
                waiting.remove(entry)
                if not waiting:
                    del self._awaiting[stream_id]

    def _wake_awaiting(self, stream_id: str, version: int) -> None:
        waiting = self._awaiting.get(stream_id)
        if waiting is None:
            return
        for target, future in waiting:
            if target <= version and not future.done():
                future.set_result(None)

    async def _backoff(self, deadline: float, attempt: int) -> None:
        self._check_budget(deadline, attempt)
        await asyncio.sleep(random.uniform(0, _backoff_limit(attempt)))

    def _check_budget(self, deadline: float, attempt: int) -> None:
        if asyncio.get_running_loop().time() >= deadline:
            log.warning(
                "giving up after %d conflicting attempts: retry budget of %.1fs exhausted",
                attempt,
                self._retry_budget,
                extra={"reason": "retry_budget_exhausted", "attempts": attempt},
            )
            raise ServiceUnavailable("the account is too busy right now; retry shortly")

    def _failed(self, command: str, account_id: str | None, exc: Exception) -> None:
        self.on_command(command, "failed")
        log.warning(
            "command %s failed: %s",
            command,
            str(exc) or type(exc).__name__,
            extra={"command": command, "account_id": account_id, "reason": type(exc).__name__},
        )

    async def drain(self) -> None:
        """Wait for queued commands to finish (graceful shutdown)."""
        while self._draining:
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            else:
                await asyncio.sleep(0.001)  # a caller is running its own command


def _backoff_limit(attempt: int) -> float:
    """The longest wait after the `attempt`th conflict: 2 ms per attempt, at most 50 ms."""
    return min(0.05, 0.002 * attempt)


def _log_conflict(what: str, stream_id: str, attempt: int, exc: ConcurrencyError) -> None:
    log.info(
        "version conflict on account %s (another process wrote first): %s; retrying %s, attempt %d",
        stream_id,
        exc,
        what,
        attempt,
        extra={"reason": "concurrency_conflict", "account_id": stream_id, "attempt": attempt},
    )


def _decide(state: Account, command: cmd.StreamCommand) -> DomainEvent:
    match command:
        case cmd.Deposit():
            return state.deposit(command.amount, command.description)
        case cmd.Withdraw():
            return state.withdraw(command.amount, command.description)
        case cmd.CloseAccount():
            return state.close(command.reason)
    raise TypeError(f"unknown command {command!r}")


def _fold(account: Account, events: Sequence[RecordedEvent] | Sequence[MovedEvent]) -> None:
    for event in events:
        account.apply(to_domain(event), event.recorded_at)


def _succeed(pending: _Pending, result: Account | Replayed) -> None:
    # A caller may have gone away (client disconnected): its command still happened.
    if not pending.future.done():
        pending.future.set_result(result)


def _fail(pending: _Pending, exc: Exception) -> None:
    if not pending.future.done():
        pending.future.set_exception(exc)


def _owner_of(record: IdempotencyRecord, accepted: list[tuple[_Pending, Account]]) -> _Pending:
    for pending, _ in accepted:
        intent = pending.context.idempotency
        if intent and (intent.scope, intent.key) == (record.scope, record.key):
            return pending
    return accepted[0][0]


E = TypeVar("E", bound=BaseException)


def _detached(exc: E) -> E:
    """`exc` without its traceback and the error it was raised while handling (the last
    conflict, when the retry budget runs out). Both hold the frames that hold the pending
    commands and their futures, which hold `exc`: a reference cycle per refused command,
    left to the garbage collector."""
    exc.__context__ = None
    return exc.with_traceback(None)


def _as_unavailable(exc: Exception) -> Exception:
    """What the callers of a chunk hear of a failure that is not a command's outcome: the
    service's own errors `_detached`; a bug as it is (its traceback is for its log)."""
    if isinstance(exc, StoreUnavailable):
        return ServiceUnavailable("the event store is unavailable; retry shortly")
    if isinstance(exc, ApplicationError | DomainError):
        return _detached(exc)
    return exc
