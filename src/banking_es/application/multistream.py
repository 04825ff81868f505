"""Commands that write to several accounts at once (transfers, holds): every stream's lock held
(in sorted order, so no deadlock), one decision on their loaded states, one append; a version
conflict reloads them and tries again within the retry budget."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from banking_es.application.context import (
    CommandContext,
    CommandOutcomes,
    Replayed,
    event_metadata,
    idempotency_records,
)
from banking_es.application.errors import NotFound, ServiceUnavailable, as_unavailable
from banking_es.application.locks import StreamLocks
from banking_es.application.ports import Clock, IdGenerator
from banking_es.application.repository import AccountRepository
from banking_es.application.results import HoldResult, TransferResult
from banking_es.application.retry import RetryPolicy, log_conflict
from banking_es.domain.account import Account
from banking_es.domain.errors import DomainError
from banking_es.domain.events import DomainEvent
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    IdempotencyKeyExists,
    StoreUnavailable,
    StreamAppend,
)
from banking_es.eventstore.codec import to_new_event
from banking_es.observability.tracing import span, trace_carrier

R = TypeVar("R", TransferResult, HoldResult)
#: Decides on the loaded states (in the order the streams were named) at `now`: each state's
#: event (None: none) and the command's result.
Decide = Callable[[list[Account], datetime], tuple[Sequence[DomainEvent | None], R]]


class MultiStreamWriter:
    """Runs one multi-stream command: `write(name, stream_ids, decide, context)`."""

    def __init__(
        self,
        repository: AccountRepository,
        locks: StreamLocks,
        retry: RetryPolicy,
        outcomes: CommandOutcomes,
        *,
        clock: Clock,
        ids: IdGenerator,
    ) -> None:
        self._repository = repository
        self._cache = repository.cache
        self._locks = locks
        self._retry = retry
        self._outcomes = outcomes
        self._clock = clock
        self._ids = ids

    async def write(
        self,
        name: str,
        stream_ids: Sequence[str],
        decide: Decide[R],
        context: CommandContext,
        *,
        first_event_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> R | Replayed:
        """`first_event_id` names the first event (a transfer's or a hold's id is its event's)."""
        with span(f"command {name}", attributes or {"account.id": stream_ids[0]}):
            try:
                return await self._locked(name, stream_ids, decide, context, first_event_id)
            except StoreUnavailable as exc:
                self._outcomes.failed(name, stream_ids[0], exc)
                raise as_unavailable(exc) from exc
            except ServiceUnavailable as exc:
                self._outcomes.failed(name, stream_ids[0], exc)
                raise

    async def _locked(
        self,
        name: str,
        stream_ids: Sequence[str],
        decide: Decide[R],
        context: CommandContext,
        first_event_id: str | None,
    ) -> R | Replayed:
        async with self._locks.hold(*stream_ids):
            # The budget is for retries after conflicts, as for a chunk: it starts once the
            # locks are held, not while the command queues behind others for them.
            deadline = self._retry.deadline()
            fresh = False
            attempt = 0
            while True:
                states: list[Account] = []
                known_current = True
                for stream_id in stream_ids:
                    state, is_fresh = await self._repository.load(stream_id, fresh)
                    states.append(state)
                    known_current = known_current and is_fresh
                try:
                    missing = [s.id for s in states if not s.exists]
                    if missing:
                        raise NotFound(f"account {missing[0]} not found")
                    events, result = decide(states, self._clock.now())
                except (DomainError, NotFound):
                    if not known_current:
                        fresh = True  # decided on a cached state: check against the store
                        continue
                    self._outcomes.on_command(name, "rejected")
                    raise
                metadata = event_metadata(context, name, trace_carrier())
                appends: list[StreamAppend] = []
                after: list[Account] = []
                for state, event in zip(states, events, strict=False):
                    if event is None:
                        continue
                    new_state = state.copy()
                    new_state.apply(event)
                    after.append(new_state)
                    event_id = first_event_id if not appends and first_event_id else None
                    appends.append(
                        StreamAppend(
                            state.id,
                            state.version,
                            [to_new_event(event, event_id or self._ids.new_event_id(), metadata)],
                            self._repository.snapshot(state, new_state.version),
                        )
                    )
                request = AppendRequest(
                    appends, idempotency=idempotency_records(context, result, self._clock)
                )
                try:
                    recorded = await self._repository.append(request)
                except IdempotencyKeyExists as exc:
                    return Replayed(exc.existing)
                except ConcurrencyError as exc:
                    self._outcomes.on_command(name, "conflict")
                    log_conflict(name, stream_ids[0], attempt + 1, exc)
                    for stream_id in stream_ids:
                        self._cache.invalidate(stream_id)
                    attempt += 1
                    await self._retry.backoff(deadline, attempt)
                    fresh = True
                    continue
                at = recorded[0].recorded_at
                for new_state in after:
                    new_state.updated_at = at
                    self._cache.put(new_state)
                if result.created_at is None:
                    result.created_at = at
                self._outcomes.on_command(name, "ok")
                return result
