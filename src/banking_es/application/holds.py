"""Holds: place, capture, void and expire, each decided under the locks of its streams.

A hold's events live in its source account's stream; its id is its `HoldPlaced` event's
id, so the store finds its account (`EventStore.get_event`), unless this process remembers
the placement (it wrote it, or a stream notice carried it). A hold for another account
locks both streams (sorted, as transfers do) and its capture appends `HoldCaptured` and
the destination's `TransferReceived` in one append. The locks are the per-stream queue's,
so hold commands and a stream's queued commands never interleave in this process; the
store's expected versions decide races between processes (one settlement wins).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
#: Placements a process remembers (then it forgets them all and reads them again).
MAX_PLACEMENTS = 50_000


@dataclass(frozen=True, slots=True)
class Placement:
    """A hold's `HoldPlaced` and where it is: its account's stream, at `version`."""

    stream_id: str
    version: int
    recorded_at: datetime
    event: HoldPlaced
    #: As stored, to bring a cached copy forward; None when this process placed the hold.
    stored: NoticedEvent | None


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
        #: Hold id -> its placement (a `HoldPlaced` never changes), from this process's own
        #: placements, other processes' stream notices (decoded when used) and the store.
        self._placements: dict[str, Placement | tuple[str, NoticedEvent]] = {}

    def note_appended_elsewhere(self, appended: Sequence[AppendedElsewhere]) -> None:
        """Remember the placements that other processes' notices carry."""
        for stream in appended:
            for event in stream.events:
                if event.type == HoldPlaced.type:
                    self._remember(event.event_id, (stream.stream_id, event))

    async def place(self, command: cmd.PlaceHold, context: CommandContext) -> HoldResult | Replayed:
        if command.to_account_id == command.account_id:
            raise SameAccount("a hold cannot be for its own account")
        hold_id = self._ids.new_event_id()
        decided: list[tuple[int, HoldPlaced]] = []  # the last one is the one appended

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
            decided.append((source.version + 1, placed))
            return [placed], _result(source, placed, None)

        ids = [command.account_id]
        if command.to_account_id is not None:
            ids.append(command.to_account_id)
        result = await self._writer.write("PlaceHold", ids, decide, context, first_event_id=hold_id)
        if isinstance(result, HoldResult) and result.created_at is not None:
            version, placed = decided[-1]
            placement = Placement(command.account_id, version, result.created_at, placed, None)
            self._remember(hold_id, placement)
        return result

    async def capture(
        self, command: cmd.CaptureHold, context: CommandContext, authorize: Authorize | None = None
    ) -> HoldResult | Replayed:
        placed_at = await self._placed(command.hold_id, authorize)
        placed = placed_at.event

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
        placed_at = await self._placed(hold_id)
        placed = placed_at.event
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
        placed_at = await self._placed(hold_id, authorize)
        placed = placed_at.event

        def decide(states: list[Account], now: datetime) -> Decision:
            event = release(states[0], hold_id, now)
            result = _result(states[0], placed, placed_at.recorded_at)
            result.status = status
            return [event], result

        return await self._writer.write(name, [placed_at.stream_id], decide, context)

    async def account_of(self, hold_id: str) -> str:
        """The account the hold is on (404 if no such hold): where its commands run."""
        return (await self._placement(hold_id)).stream_id

    async def _placement(self, hold_id: str) -> Placement:
        """The hold's placement, remembered or read once (404 if none)."""
        known = self._placements.get(hold_id)
        if isinstance(known, Placement):
            return known
        if known is None:
            recorded = await self._store.get_event(hold_id)
            if recorded is None or recorded.type != HoldPlaced.type:
                raise NotFound(f"hold {hold_id} not found")
            known = (recorded.stream_id, _stored(recorded))
        stream_id, stored = known
        placed = to_domain(stored)
        assert isinstance(placed, HoldPlaced)
        placement = Placement(stream_id, stored.version, stored.recorded_at, placed, stored)
        self._remember(hold_id, placement)
        return placement

    async def _placed(self, hold_id: str, authorize: Authorize | None = None) -> Placement:
        """The hold's placement (404 if none), after `authorize` accepted its parties."""
        placement = await self._placement(hold_id)
        if authorize is not None:
            parties = HoldParties(hold_id, placement.stream_id, placement.event.to_account_id)
            await authorize(parties)
        if placement.stored is not None:
            # The placement is its stream's event at its version: a cached copy just before it
            # (placed through another process, its notice not arrived) is brought forward with
            # it, as the notice would, instead of deciding on the copy and rereading.
            self._repository.note_appended_elsewhere(
                [AppendedElsewhere(placement.stream_id, placement.version, (placement.stored,))]
            )
        return placement

    def _remember(self, hold_id: str, placement: Placement | tuple[str, NoticedEvent]) -> None:
        if len(self._placements) >= MAX_PLACEMENTS:
            self._placements.clear()  # only saves reads: forgetting costs one each
        self._placements[hold_id] = placement


#: The status a hold's settling event gives it, by event type.
_STATUS: dict[str, str] = {
    HoldCaptured.type: "captured",
    HoldVoided.type: "voided",
    HoldExpired.type: "expired",
}
_PAGE = 200


def _stored(recorded: RecordedEvent) -> NoticedEvent:
    return NoticedEvent(
        recorded.version,
        recorded.event_id,
        recorded.type,
        recorded.data,
        recorded.metadata,
        recorded.recorded_at,
    )


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
