"""Builders and probes shared by the event-store contract tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from banking_es.eventstore.base import (
    AppendRequest,
    EventStore,
    IdempotencyRecord,
    NewEvent,
    OutboxMessage,
    RecordedEvent,
    Snapshot,
    StreamAppend,
)
from banking_es.eventstore.batching import GroupCommitter

#: Override the `backend` fixture for tests that only make sense on a database.
SQL_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def new_stream(prefix: str = "acc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def event(type_: str = "MoneyDeposited", **data: Any) -> NewEvent:
    return NewEvent(
        event_id=str(uuid.uuid4()),
        type=type_,
        data=data or {"amount": "10.00"},
        metadata={"correlation_id": str(uuid.uuid4())},
    )


def events(count: int, type_: str = "MoneyDeposited") -> list[NewEvent]:
    return [event(type_, amount=f"{i + 1}.00", n=i) for i in range(count)]


def one(
    stream_id: str,
    expected_version: int,
    new_events: Sequence[NewEvent],
    *,
    snapshot: Snapshot | None = None,
    idempotency: Sequence[IdempotencyRecord] = (),
    messages: Sequence[OutboxMessage] = (),
) -> AppendRequest:
    """A request appending to a single stream."""
    return AppendRequest(
        streams=[StreamAppend(stream_id, expected_version, list(new_events), snapshot)],
        idempotency=list(idempotency),
        messages=list(messages),
    )


def idem(
    key: str | None = None,
    *,
    scope: str = "user-1",
    body: bytes = b'{"ok":true}',
    created_at: datetime | None = None,
    ttl: timedelta = timedelta(hours=24),
    status: int = 201,
) -> IdempotencyRecord:
    created = created_at or datetime.now(UTC)
    return IdempotencyRecord(
        scope=scope,
        key=key or uuid.uuid4().hex,
        fingerprint=f"fp-{uuid.uuid4().hex[:8]}",
        status=status,
        body=body,
        created_at=created,
        expires_at=created + ttl,
    )


async def everything(store: EventStore, page: int = 1000) -> list[RecordedEvent]:
    """Every event in the store, paged through `read_all`."""
    found: list[RecordedEvent] = []
    checkpoint = 0
    while batch := await store.read_all(checkpoint, page):
        found.extend(batch)
        checkpoint = batch[-1].position
    return found


def record_batches(store: EventStore) -> list[int]:
    """Sizes of the batches the store's group committer commits from now on.

    Every backend commits through a `GroupCommitter` (`_committer`); its `on_batch` hook is
    how SQL stores report batch sizes to metrics, and it is set here for all three.
    """
    committer = store._committer  # type: ignore[attr-defined]
    assert isinstance(committer, GroupCommitter)
    sizes: list[int] = []
    committer._on_batch = lambda size, _seconds: sizes.append(size)
    return sizes
