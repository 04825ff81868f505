"""Domain events to and from stored events, with upcasting of old `data` shapes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from banking_es.domain.events import SCHEMA_VERSION, DomainEvent, event_from_stored
from banking_es.eventstore.base import NewEvent, NoticedEvent, RecordedEvent

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

#: (event type, schema version) -> function that lifts that shape to the next version.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def to_new_event(event: DomainEvent, event_id: str, metadata: dict[str, Any]) -> NewEvent:
    return NewEvent(
        event_id=event_id,
        type=event.type,
        data=event.to_data(),
        metadata={**metadata, "schema": SCHEMA_VERSION},
    )


def upcast(type_name: str, schema: int, data: dict[str, Any]) -> dict[str, Any]:
    while schema < SCHEMA_VERSION:
        step = UPCASTERS.get((type_name, schema))
        if step is not None:
            data = step(data)
        schema += 1
    return data


def to_domain(recorded: RecordedEvent | NoticedEvent) -> DomainEvent:
    schema = int(recorded.metadata.get("schema", 1))
    return event_from_stored(recorded.type, upcast(recorded.type, schema, recorded.data))


def history(
    events: Iterable[RecordedEvent] | Iterable[NoticedEvent],
) -> Iterator[tuple[DomainEvent, datetime]]:
    """Stored events as `Account.fold` takes them: each decoded, with its recorded time."""
    for recorded in events:
        yield to_domain(recorded), recorded.recorded_at
