"""Holds: place, capture, void and expire, each decided under the locks of its streams.

A hold's events live in its source account's stream; its id is its `HoldPlaced` event's
id, so the store finds its account (`EventStore.get_event`). A hold for another account
locks both streams (sorted, as transfers do) and its capture appends `HoldCaptured` and
the destination's `TransferReceived` in one append. The locks are the per-stream queue's,
so hold commands and a stream's queued commands never interleave in this process; the
store's expected versions decide races between processes (one settlement wins).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from banking_es.application.context import (
    CommandContext,
    Replayed,
)
from banking_es.application.errors import NotFound
from banking_es.application.multistream import MultiStreamWriter
from banking_es.application.ports import Clock, IdGenerator
from banking_es.application.repository import AccountRepository
from banking_es.application.results import HoldParties, HoldResult
from banking_es.domain import commands as cmd
from banking_es.domain import holds
from banking_es.domain.account import Account
from banking_es.domain.errors import SameAccount
from banking_es.domain.events import (
    DomainEvent,
    HoldCaptured,
    HoldExpired,
    HoldPlaced,
    HoldVoided,
)
from banking_es.eventstore.base import (
    AppendedElsewhere,
    NoticedEvent,
    RecordedEvent,
)
from banking_es.eventstore.codec import to_domain

#: A decision on the loaded states (source first): each state's event (None: none)
#: and the result to answer with.
Decision = tuple[list[DomainEvent | None], HoldResult]
#: The caller's access check of a capture or void, on the hold's parties (from its placement,
#: read once per command): raises to refuse.
Authorize = Callable[[HoldParties], Awaitable[None]]


class Holds:
    """The hold command handler, and the hold query."""

    def __init__(
        self,
        repository: AccountRepository,
        writer: MultiStreamWriter,
        *,
        clock: Clock,
        ids: IdGenerator,
    ) -> None:
        self._repository = repository
        self._store = repository.store
        self._writer = writer
        self._clock = clock
        self._ids = ids

    async def place(self, command: cmd.PlaceHold, context: CommandContext) -> HoldResult | Replayed:
        if command.to_account_id == command.account_id:
            raise SameAccount("a hold cannot be for its own account")
        hold_id = self._ids.new_event_id()

        def decide(states: list[Account], now: datetime) -> Decision:
            source = states[0]
            target = states[1] if len(states) > 1 else None
            placed = holds.place(
                source,
                hold_id,
                command.amount,
                now,
                target=target,
                expires_in=command.expires_in,
                description=command.description,
            )
            return [placed], _result(source, placed, None)

        ids = [command.account_id]
        if command.to_account_id is not None:
            ids.append(command.to_account_id)
        return await self._writer.write("PlaceHold", ids, decide, context, first_event_id=hold_id)

    async def capture(
        self, command: cmd.CaptureHold, context: CommandContext, authorize: Authorize | None = None
    ) -> HoldResult | Replayed:
        placed_at, placed = await self._placed(command.hold_id, authorize)

        def decide(states: list[Account], now: datetime) -> Decision:
            source = states[0]
            target = states[1] if len(states) > 1 else None
            captured, received = holds.capture(source, placed.hold_id, now, command.amount, target)
            result = _result(source, placed, placed_at.recorded_at)
            result.status, result.captured_amount = "captured", captured.amount
            return [captured, received] if target is not None else [captured], result

        ids = [placed_at.stream_id]
        if placed.to_account_id is not None:
            ids.append(placed.to_account_id)
        return await self._writer.write("CaptureHold", ids, decide, context)

    async def void(
        self, command: cmd.VoidHold, context: CommandContext, authorize: Authorize | None = None
    ) -> HoldResult | Replayed:
        return await self._release(
            "VoidHold", command.hold_id, context, holds.void, "voided", authorize
        )

    async def expire(self, hold_id: str) -> HoldResult | Replayed:
        """Expire a hold past its expiry (the expiry job): `HoldNotPending` if it was
        settled already (by this job elsewhere, or a capture or void), `HoldNotDue` early."""
        return await self._release("ExpireHold", hold_id, CommandContext(), holds.expire, "expired")

    async def get_hold(self, hold_id: str) -> HoldResult:
        """The hold as it is now (its status read from its account's stream)."""
        placed_at, placed = await self._placed(hold_id)
        account, _ = await self._repository.load(placed_at.stream_id, fresh=True)
        result = _result(account, placed, placed_at.recorded_at)
        if placed.hold_id in account.holds:
            if not account.holds[placed.hold_id].live(self._clock.now()):
                result.status = "expired"
            return result
        after = placed_at.version
        while True:  # a page at a time: the settlement is usually soon after the placement
            page = await self._store.read_stream(placed_at.stream_id, after, limit=_PAGE)
            for recorded in page:
                if recorded.type not in _STATUS or recorded.data.get("hold_id") != hold_id:
                    continue
                event = to_domain(recorded)
                result.status = _STATUS[recorded.type]
                if isinstance(event, HoldCaptured):
                    result.captured_amount = event.amount
                return result
            if len(page) < _PAGE:
                return result  # not reached: the state said it was settled
            after = page[-1].version

    async def account_holds(self, account_id: str, status: str | None = None) -> list[HoldResult]:
        """The holds placed on `account_id`, newest first (only those of `status`, if given),
        folded from its stream: no read model keeps holds yet, so this reads every event."""
        account, _ = await self._repository.load(account_id, fresh=True)
        if not account.exists:
            raise NotFound(f"account {account_id} not found")
        found: dict[str, HoldResult] = {}
        after = 0
        while True:
            page = await self._store.read_stream(account_id, after, limit=_PAGE * 5)
            for recorded in page:
                if recorded.type == HoldPlaced.type:
                    placed = to_domain(recorded)
                    assert isinstance(placed, HoldPlaced)
                    found[placed.hold_id] = _result(account, placed, recorded.recorded_at)
                elif recorded.type in _STATUS:
                    hold = found.get(recorded.data.get("hold_id", ""))
                    if hold is not None:
                        event = to_domain(recorded)
                        hold.status = _STATUS[recorded.type]
                        if isinstance(event, HoldCaptured):
                            hold.captured_amount = event.amount
            if len(page) < _PAGE * 5:
                break
            after = page[-1].version
        now = self._clock.now()
        for hold in found.values():
            if hold.status == "pending" and hold.expires_at <= now:
                hold.status = "expired"
        return [h for h in reversed(found.values()) if status is None or h.status == status]

    # ---- the write ---------------------------------------------------------------------

    async def _release(
        self,
        name: str,
        hold_id: str,
        context: CommandContext,
        release: Callable[[Account, str, datetime], DomainEvent],
        status: str,
        authorize: Authorize | None = None,
    ) -> HoldResult | Replayed:
        placed_at, placed = await self._placed(hold_id, authorize)

        def decide(states: list[Account], now: datetime) -> Decision:
            event = release(states[0], hold_id, now)
            result = _result(states[0], placed, placed_at.recorded_at)
            result.status = status
            return [event], result

        return await self._writer.write(name, [placed_at.stream_id], decide, context)

    async def _placed(
        self, hold_id: str, authorize: Authorize | None = None
    ) -> tuple[RecordedEvent, HoldPlaced]:
        """The hold's `HoldPlaced` (404 if none), after `authorize` accepted its parties."""
        recorded = await self._store.get_event(hold_id)
        if recorded is None or recorded.type != HoldPlaced.type:
            raise NotFound(f"hold {hold_id} not found")
        placed = to_domain(recorded)
        assert isinstance(placed, HoldPlaced)
        if authorize is not None:
            await authorize(HoldParties(hold_id, recorded.stream_id, placed.to_account_id))
        # The placement is its stream's event at its version: a cached copy just before it
        # (placed through another process, whose notice is still on its way) is brought
        # forward with it, as a notice would, instead of deciding on the copy and rereading.
        noticed = NoticedEvent(
            recorded.version,
            recorded.event_id,
            recorded.type,
            recorded.data,
            recorded.metadata,
            recorded.recorded_at,
        )
        self._repository.note_appended_elsewhere(
            [AppendedElsewhere(recorded.stream_id, recorded.version, (noticed,))]
        )
        return recorded, placed


#: The status a hold's settling event gives it, by event type.
_STATUS: dict[str, str] = {
    HoldCaptured.type: "captured",
    HoldVoided.type: "voided",
    HoldExpired.type: "expired",
}
_PAGE = 200


def _result(source: Account, placed: HoldPlaced, created_at: datetime | None) -> HoldResult:
    return HoldResult(
        placed.hold_id,
        source.id,
        placed.to_account_id,
        placed.amount,
        captured_amount=placed.amount - placed.amount,
        currency=source.currency,
        status="pending",
        expires_at=placed.expires_at,
        description=placed.description,
        created_at=created_at,
    )
