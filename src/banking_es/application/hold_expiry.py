"""The expiry job: records `HoldExpired` for each hold past its `expires_at`, once.

It follows the event log (hold events only) into an index of pending holds by expiry,
rebuilt from the start after a restart, and expires the due ones through the holds
handler. Once holds are settled only through the store's expected versions, a hold is
expired at most once whatever runs it: a second attempt (another process, a restart, a
capture or void that won) finds it no longer pending. The lease only saves that work.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from banking_es.application.errors import NotFound
from banking_es.application.ports import Clock, Leadership
from banking_es.domain.errors import HoldNotDue, HoldNotPending
from banking_es.domain.events import HoldCaptured, HoldExpired, HoldPlaced, HoldVoided
from banking_es.eventstore.base import EventStore
from banking_es.eventstore.codec import to_domain

log = logging.getLogger(__name__)

#: Seconds between rounds: a hold is recorded expired at most about this long after its
#: expiry (it stops counting at once whatever the job does).
INTERVAL = 1.0
#: The lease that lets one process of many run the job.
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
        page: int = 1000,
    ) -> None:
        self._store = store
        self._expire = expire
        self._clock = clock
        self._leader = leader
        self._page = page
        self._position = 0
        #: Pending holds by id -> expiry; the heap orders them (entries of settled holds
        #: stay in it until popped, then are skipped).
        self._pending: dict[str, datetime] = {}
        self._due: list[tuple[datetime, str]] = []

    async def run_once(self) -> int:
        """One round: follow the log, then expire what is due; the holds expired."""
        if self._leader is not None and not await self._leader.ensure():
            return 0
        await self._follow()
        now = self._clock.now()
        expired = 0
        while self._due and self._due[0][0] <= now:
            at, hold_id = heapq.heappop(self._due)
            if self._pending.get(hold_id) != at:
                continue  # settled meanwhile
            try:
                await self._expire(hold_id)
            except (HoldNotPending, NotFound):
                pass  # settled by a capture, a void or another process's expiry
            except HoldNotDue:
                heapq.heappush(self._due, (at, hold_id))
                break
            except Exception:
                heapq.heappush(self._due, (at, hold_id))  # tried again next round
                raise
            else:
                expired += 1
            self._pending.pop(hold_id, None)
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
                    self._pending[event.hold_id] = event.expires_at
                    heapq.heappush(self._due, (event.expires_at, event.hold_id))
                elif isinstance(event, HoldCaptured | HoldVoided | HoldExpired):
                    self._pending.pop(event.hold_id, None)
            if events:
                self._position = events[-1].position
            if len(events) < self._page:
                return
