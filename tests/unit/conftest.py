"""Fixtures for the unit tests: the in-memory store, fake clocks and services."""

from __future__ import annotations

from typing import Any

import pytest
from tests.clock_support import FakeClock, ticking_datetime
from tests.unit.unit_support import ServiceFactory

from banking_es.application.accounts import AccountService
from banking_es.application.ports import UuidGenerator
from banking_es.cache.local import LocalAccountCache
from banking_es.eventstore.memory import MemoryEventStore


@pytest.fixture
def store() -> MemoryEventStore:
    """A memory store whose batches are recorded at EPOCH + 1 s, + 2 s, ..."""
    return MemoryEventStore(clock=ticking_datetime())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_service(store: MemoryEventStore, clock: FakeClock) -> ServiceFactory:
    """A new `AccountService` with its own cache (like another process) on `store`."""

    def make(target: Any = None, **options: Any) -> AccountService:
        options.setdefault("retry_budget", 2.0)
        return AccountService(
            store if target is None else target,
            LocalAccountCache(),
            clock=clock,
            ids=UuidGenerator(),
            **options,
        )

    return make


@pytest.fixture
def service(make_service: ServiceFactory) -> AccountService:
    return make_service()
