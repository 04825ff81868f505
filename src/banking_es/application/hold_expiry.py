"""The expiry job: records `HoldExpired` for each hold past its `expires_at`, once.

It follows the event log (hold events only) into an index of pending holds by expiry,
rebuilt from the start after a restart, and expires the due ones through the holds
handler. Holds are settled only through the store's expected versions, so a hold is
expired at most once whatever runs it: a second attempt (another process, a restart, a
capture or void that won) finds it no longer pending. One process runs it under a lease;
with shards every instance runs it for the holds on accounts of the shards it owns (`owns`),
each expiry a command fenced by the shard's epoch, and a moved shard's due holds are the
new owner's.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from banking_es.application.errors import NotFound, ServiceUnavailable
from banking_es.application.ports import Clock, Leadership
from banking_es.domain.errors import HoldNotDue, HoldNotPending
from banking_es.domain.events import HoldCaptured, HoldExpired, HoldPlaced, HoldVoided
from banking_es.eventstore.base import EventStore
from banking_es.eventstore.codec import to_domain

log = logging.getLogger(__name__)

#: Seconds between rounds: a hold is recorded expired at most about this long after its
#: expiry (it stops counting at once whatever the job does).
INTERVAL = 1.0
#: The lease that lets one process of many run the job (without shards).
HOLD_EXPIRY_LEASE = "hold-expiry"

_TYPES = [HoldPlaced.type, HoldCaptured.type, HoldVoided.type, HoldExpired.type]


class HoldExpiry:
    """Expire due holds with `expire(hold_id)` (`AccountService.expire_hold`)."""

    def __init__(
        self,
        store: EventStore,
        expire: Callable[[str], Awaitable[object]],
        clock: Clock,
        *,
        leader: Leadership | None = None,
        owns: Callable[[str], bool] | None = None,
        page: int = 1000,
    ) -> None:
        """`owns(account_id)`, with shards: whether this instance runs the account's
        commands now (it expires only those holds)."""
        self._store = store
        self._expire = expire
        self._clock = clock
        self._leader = leader
        self._owns = owns
        self._page = page
        self._position = 0
        #: Pending holds by id -> expiry and account; the heap orders them (entries of
        #: settled holds stay in it until popped, then are skipped).
        self._pending: dict[str, tuple[datetime, str]] = {}
        self._due: list[tuple[datetime, str]] = []

    async def run_once(self) -> int:
        """One round: follow the log, then expire what is due; the holds expired."""
        if self._leader is not None and not await self._leader.ensure():
            return 0
        await self._follow()
        now = self._clock.now()
        expired = 0
        others: list[tuple[datetime, str]] = []  # due, on another instance's shard now
        try:
            while self._due and self._due[0][0] <= now:
                at, hold_id = heapq.heappop(self._due)
                pending = self._pending.get(hold_id)
                if pending is None or pending[0] != at:
                    continue  # settled meanwhile
                if self._owns is not None and not self._owns(pending[1]):
                    others.append((at, hold_id))
                    continue
                try:
                    await self._expire(hold_id)
                except (HoldNotPending, NotFound):
                    pass  # settled by a capture, a void or another process's expiry
                except HoldNotDue:
                    heapq.heappush(self._due, (at, hold_id))
                    break
                except ServiceUnavailable:
                    if self._owns is None or self._owns(pending[1]):
                        heapq.heappush(self._due, (at, hold_id))  # tried again next round
                        raise
                    others.append((at, hold_id))  # its shard moved meanwhile
                    continue
                except Exception:
                    heapq.heappush(self._due, (at, hold_id))  # tried again next round
                    raise
                else:
                    expired += 1
                self._pending.pop(hold_id, None)
        finally:
            for entry in others:  # their owner expires them; kept in case the shard comes back
                heapq.heappush(self._due, entry)
        return expired

    async def run(self, interval: float = INTERVAL) -> None:
        """`run_once` every `interval` seconds until cancelled; failures are logged."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("hold expiry round failed; trying again")
            await asyncio.sleep(interval)

    async def _follow(self) -> None:
        while True:
            events = await self._store.read_all(self._position, self._page, types=_TYPES)
            for recorded in events:
                event = to_domain(recorded)
                if isinstance(event, HoldPlaced):
                    self._pending[event.hold_id] = (event.expires_at, recorded.stream_id)
                    heapq.heappush(self._due, (event.expires_at, event.hold_id))
                elif isinstance(event, HoldCaptured | HoldVoided | HoldExpired):
                    self._pending.pop(event.hold_id, None)
            if events:
                self._position = events[-1].position
            if len(events) < self._page:
                return
