"""Fakes and spies shared by the unit tests."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from banking_es.application.accounts import AccountService
from banking_es.eventstore.base import AppendRequest, RecordedEvent
from banking_es.eventstore.memory import MemoryEventStore

#: Where every fake clock starts: far from "now", so a test never depends on the real time.
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


@contextmanager
def collector_garbage() -> Iterator[list[object]]:
    """The objects that only the garbage collector could free (reference cycles) among those
    the block left behind: the list is filled when the block ends. Reference counting frees
    everything else at once; a cycle waits for a collection, which in a serving worker is a
    pause of milliseconds (docs/performance.md, eleventh round)."""
    found: list[object] = []
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection frees stays in gc.garbage
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if enabled:
            gc.enable()


class FakeClock:
    """A `Clock` that stands still until a test moves it."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


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


@dataclass
class Calls:
    appends: list[AppendRequest] = field(default_factory=list)
    read_stream: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)


class SpyStore:
    """Delegates to a real store and records `append` and `read_stream` calls."""

    def __init__(self, inner: MemoryEventStore) -> None:
        self.inner = inner
        self.calls = Calls()

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        self.calls.appends.append(request)
        return await self.inner.append(request)

    async def read_stream(
        self, stream_id: str, after_version: int = 0, **options: Any
    ) -> list[RecordedEvent]:
        self.calls.read_stream.append((stream_id, after_version, options))
        return await self.inner.read_stream(stream_id, after_version, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


ServiceFactory = Callable[..., AccountService]
