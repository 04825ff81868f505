"""Transfers between two accounts: both streams locked, both events in one append.

A transfer holds the locks of both accounts (in sorted order, so no deadlock), decides
on their states and appends to both streams at once; a version conflict reloads both
and tries again within the retry budget.
"""

from __future__ import annotations

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
from banking_es.application.results import TransferResult
from banking_es.application.retry import RetryPolicy, log_conflict
from banking_es.domain import commands as cmd
from banking_es.domain.errors import DomainError, SameAccount
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    IdempotencyKeyExists,
    StoreUnavailable,
    StreamAppend,
)
from banking_es.eventstore.codec import to_new_event
from banking_es.observability.tracing import span, trace_carrier


class Transfers:
    """The transfer command handler."""

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
                self._outcomes.failed("Transfer", command.from_account_id, exc)
                raise as_unavailable(exc) from exc
            except ServiceUnavailable as exc:
                self._outcomes.failed("Transfer", command.from_account_id, exc)
                raise

    async def _transfer(
        self, command: cmd.Transfer, context: CommandContext
    ) -> TransferResult | Replayed:
        transfer_id = self._ids.new_event_id()
        load = self._repository.load
        async with self._locks.hold(command.from_account_id, command.to_account_id):
            # The budget is for retries after conflicts, as for a chunk: it starts once the
            # locks are held, not while the transfer queues behind others for them.
            deadline = self._retry.deadline()
            fresh = False
            attempt = 0
            while True:
                source, source_fresh = await load(command.from_account_id, fresh)
                target, target_fresh = await load(command.to_account_id, fresh)
                known_current = source_fresh and target_fresh
                try:
                    if not source.exists or not target.exists:
                        missing = (
                            command.from_account_id if not source.exists else command.to_account_id
                        )
                        raise NotFound(f"account {missing} not found")
                    sent, received = source.send_transfer(
                        transfer_id, target, command.amount, command.description, self._clock.now()
                    )
                except (DomainError, NotFound):
                    if not known_current:
                        fresh = True
                        continue
                    self._outcomes.on_command("Transfer", "rejected")
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
                metadata = event_metadata(context, "Transfer", trace_carrier())
                snapshot = self._repository.snapshot
                request = AppendRequest(
                    [
                        StreamAppend(
                            source.id,
                            source.version,
                            [to_new_event(sent, transfer_id, metadata)],
                            snapshot(source, new_source.version),
                        ),
                        StreamAppend(
                            target.id,
                            target.version,
                            [to_new_event(received, self._ids.new_event_id(), metadata)],
                            snapshot(target, new_target.version),
                        ),
                    ],
                    idempotency=idempotency_records(context, result, self._clock),
                )
                try:
                    recorded = await self._repository.append(request)
                except IdempotencyKeyExists as exc:
                    return Replayed(exc.existing)
                except ConcurrencyError as exc:
                    self._outcomes.on_command("Transfer", "conflict")
                    log_conflict("Transfer", source.id, attempt + 1, exc)
                    self._cache.invalidate(source.id)
                    self._cache.invalidate(target.id)
                    attempt += 1
                    await self._retry.backoff(deadline, attempt)
                    fresh = True
                    continue
                at = recorded[0].recorded_at
                new_source.updated_at = new_target.updated_at = at
                self._cache.put(new_source)
                self._cache.put(new_target)
                self._outcomes.on_command("Transfer", "ok")
                result.created_at = at
                return result
