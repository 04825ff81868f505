"""Fakes and spies shared by the unit tests."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from banking_es.application.accounts import AccountService
from banking_es.eventstore.base import AppendRequest, RecordedEvent
from banking_es.eventstore.memory import MemoryEventStore


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


@dataclass
class Calls:
    appends: list[AppendRequest] = field(default_factory=list)
    read_stream: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    get_event: list[str] = field(default_factory=list)


class SpyStore:
    """Delegates to a real store and records `append`, `read_stream` and `get_event` calls."""

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

    async def get_event(self, event_id: str) -> RecordedEvent | None:
        self.calls.get_event.append(event_id)
        return await self.inner.get_event(event_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


ServiceFactory = Callable[..., AccountService]
