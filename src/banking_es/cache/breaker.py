"""A small circuit breaker for Redis calls.

closed --(`failures` errors in a row)--> open --(`reset` seconds)--> half_open
half_open lets one probe through: success closes, failure opens again for `reset` seconds.
While open, callers skip Redis at once (no timeout to wait for) and use L1 and the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Counts consecutive failures; `allow()` says whether to try the protected call now."""

    def __init__(
        self,
        failures: int,
        reset: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str], None] = lambda state: None,
    ) -> None:
        self.failures = failures
        self.reset = reset
        self._clock = clock
        self._on_change = on_change
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        if self._state == OPEN and self._clock() - self._opened_at >= self.reset:
            self._set(HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._consecutive = 0
        self._probing = False
        if self._state != CLOSED:
            self._set(CLOSED)

    def abandon(self) -> None:
        """The call was cancelled: let the next one probe."""
        self._probing = False

    def failure(self) -> None:
        self._probing = False
        self._consecutive += 1
        if self._state == HALF_OPEN or self._consecutive >= self.failures:
            self._opened_at = self._clock()
            self._set(OPEN)

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._on_change(state)
