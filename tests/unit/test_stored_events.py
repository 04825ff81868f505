"""Stored events: the codec between domain events and rows, and the store's version check."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from tests.clock_support import EPOCH

from banking_es.domain.events import MoneyDeposited
from banking_es.eventstore import codec
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    NewEvent,
    RecordedEvent,
    StreamAppend,
)
from banking_es.eventstore.memory import MemoryEventStore


def test_codec_round_trips_a_domain_event_with_the_schema_version() -> None:
    event = MoneyDeposited(Decimal("1.50"), "pay")
    new = codec.to_new_event(event, "e-1", {"command": "Deposit"})
    assert new == NewEvent(
        "e-1",
        "MoneyDeposited",
        {"amount": "1.50", "description": "pay"},
        {"command": "Deposit", "schema": 1},
    )
    recorded = RecordedEvent(1, "s", 1, "e-1", new.type, new.data, new.metadata, EPOCH)
    assert codec.to_domain(recorded) == event


def test_codec_upcasts_an_old_shape_before_rebuilding_the_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def rename(data: dict[str, Any]) -> dict[str, Any]:
        return {"amount": data["value"], "description": data.get("note")}

    monkeypatch.setitem(codec.UPCASTERS, ("MoneyDeposited", 0), rename)
    old = RecordedEvent(
        1, "s", 1, "e-1", "MoneyDeposited", {"value": "2.00", "note": "n"}, {"schema": 0}, EPOCH
    )
    assert codec.to_domain(old) == MoneyDeposited(Decimal("2.00"), "n")


async def test_the_store_rejects_an_append_that_another_writer_beat(
    store: MemoryEventStore,
) -> None:
    # the guarantee the service's retry loop relies on
    event = NewEvent("e-1", "MoneyDeposited", {"amount": "1.00", "description": None})
    await store.append(AppendRequest([StreamAppend("s", 0, [event])]))
    with pytest.raises(ConcurrencyError):
        await store.append(AppendRequest([StreamAppend("s", 0, [event])]))
