"""The tests' one fake clock, and a `datetime` stand-in for the memory store's commit times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

#: Where a fake clock starts by default: far from "now", so a test never depends on the real time.
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when a test calls `advance`.

    `now()` serves as the application's `Clock` port, `time()` as the `time` module's (seconds
    since the epoch, e.g. for the rate limiter). `FakeClock(start=None)` runs with the real
    time plus what `advance` added: PyJWT checks a token's `exp` against the real time.
    """

    def __init__(self, start: datetime | None = EPOCH) -> None:
        self.start = start
        self.offset = timedelta()

    def now(self) -> datetime:
        base = datetime.now(UTC) if self.start is None else self.start
        return base + self.offset

    def time(self) -> float:
        return self.now().timestamp()

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def ticking_datetime(start: datetime = EPOCH, step: timedelta = timedelta(seconds=1)) -> type:
    """A `datetime` class whose `now()` moves `step` further on every call.

    `MemoryEventStore(clock=...)` calls `now(UTC)` once per committed batch, so each batch
    gets its own, predictable `recorded_at`: start + step, start + 2 * step, ...
    """
    state = {"calls": 0}

    class Ticking(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            state["calls"] += 1
            return start + step * state["calls"]

    return Ticking
