"""Event-store contract, part 3: rows written in the events' transaction.

Idempotency records and outbox rows (DESIGN.md guarantee 6) and snapshots (guarantee 5) are
committed together with the events of their append, or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from tests.contract.eventstore_helpers import SQL_BACKENDS, event, events, idem, new_stream, one

from banking_es.eventstore.base import (
    EVENTS_TOPIC,
    AppendRequest,
    ConcurrencyError,
    EventStore,
    IdempotencyKeyExists,
    OutboxMessage,
    OutboxStats,
    Snapshot,
    StoreUnavailable,
    StreamAppend,
)

# ---- idempotency records ---------------------------------------------------------------------


async def test_append_stores_its_idempotency_record(event_store: EventStore) -> None:
    record = idem("key-1", body=b'{"id":"acc-1","balance":"10.00"}')
    stream = new_stream()

    await event_store.append(one(stream, 0, events(1), idempotency=[record]))

    now = datetime.now(UTC)
    assert await event_store.get_idempotency("user-1", "key-1", now) == record
    assert await event_store.get_idempotency("user-2", "key-1", now) is None  # scoped
    assert await event_store.get_idempotency("user-1", "key-2", now) is None


async def test_second_append_with_the_same_key_is_refused_with_the_stored_record(
    event_store: EventStore,
) -> None:
    record = idem("key-1", body=b'{"first":true}')
    stream = new_stream()
    first = await event_store.append(one(stream, 0, events(1), idempotency=[record]))
    backlog = (await event_store.outbox_stats()).backlog

    other = new_stream()
    with pytest.raises(IdempotencyKeyExists) as caught:
        await event_store.append(
            one(other, 0, events(2), idempotency=[idem("key-1", body=b'{"first":false}')])
        )

    assert caught.value.existing == record
    assert await event_store.read_stream(other) == []
    assert await event_store.read_stream(stream) == first
    assert await event_store.head_position() == 1
    assert (await event_store.outbox_stats()).backlog == backlog
    assert await event_store.get_idempotency("user-1", "key-1", datetime.now(UTC)) == record


async def test_same_key_in_another_scope_is_a_different_key(event_store: EventStore) -> None:
    mine, theirs = idem("k", scope="user-1"), idem("k", scope="user-2")
    await event_store.append(one(new_stream(), 0, events(1), idempotency=[mine]))
    await event_store.append(one(new_stream(), 0, events(1), idempotency=[theirs]))

    now = datetime.now(UTC)
    assert await event_store.get_idempotency("user-1", "k", now) == mine
    assert await event_store.get_idempotency("user-2", "k", now) == theirs


async def test_a_conflicting_append_stores_no_idempotency_record(event_store: EventStore) -> None:
    stream = new_stream()
    await event_store.append(one(stream, 0, events(1)))
    record = idem("key-retry")

    with pytest.raises(ConcurrencyError):
        await event_store.append(one(stream, 0, events(1), idempotency=[record]))

    assert await event_store.get_idempotency("user-1", "key-retry", datetime.now(UTC)) is None
    # so the retry at the right version may use the key
    await event_store.append(one(stream, 1, events(1), idempotency=[record]))
    assert await event_store.get_idempotency("user-1", "key-retry", datetime.now(UTC)) == record


async def test_an_expired_record_is_not_returned_and_is_replaced_by_an_append(
    event_store: EventStore,
) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=2)
    expired = idem("key-old", created_at=long_ago, ttl=timedelta(hours=1))
    assert await event_store.save_idempotency(expired) is None
    assert await event_store.get_idempotency("user-1", "key-old", datetime.now(UTC)) is None
    assert await event_store.get_idempotency("user-1", "key-old", long_ago) == expired

    fresh = idem("key-old", body=b'{"fresh":true}')
    recorded = await event_store.append(one(new_stream(), 0, events(1), idempotency=[fresh]))

    assert len(recorded) == 1
    assert await event_store.get_idempotency("user-1", "key-old", datetime.now(UTC)) == fresh


async def test_get_idempotency_respects_expiry_time_exactly(event_store: EventStore) -> None:
    record = idem("key-ttl", ttl=timedelta(minutes=5))
    await event_store.append(one(new_stream(), 0, events(1), idempotency=[record]))

    just_before = record.expires_at - timedelta(microseconds=1)
    assert await event_store.get_idempotency("user-1", "key-ttl", just_before) == record
    assert await event_store.get_idempotency("user-1", "key-ttl", record.expires_at) is None


async def test_idempotency_expiry_compares_instants_not_time_zones(
    event_store: EventStore,
) -> None:
    """A record written with UTC+09:00 times expires at the same instant as in UTC."""
    tokyo, new_york = timezone(timedelta(hours=9)), timezone(timedelta(hours=-5))
    record = idem("key-tz", created_at=datetime.now(tokyo), ttl=timedelta(minutes=5))
    await event_store.save_idempotency(record)
    expires = record.expires_at

    for zone in (UTC, tokyo, new_york):
        before = (expires - timedelta(seconds=1)).astimezone(zone)
        after = (expires + timedelta(seconds=1)).astimezone(zone)
        assert await event_store.get_idempotency("user-1", "key-tz", before) == record
        assert await event_store.get_idempotency("user-1", "key-tz", after) is None
    assert (
        await event_store.purge_idempotency((expires - timedelta(seconds=1)).astimezone(new_york))
        == 0
    )
    assert (
        await event_store.purge_idempotency((expires + timedelta(seconds=1)).astimezone(tokyo)) == 1
    )


async def test_save_idempotency_stores_and_returns_the_existing_record_on_conflict(
    event_store: EventStore,
) -> None:
    first = idem("key-save", status=422, body=b'{"code":"insufficient_funds"}')
    second = idem("key-save", status=201, body=b'{"other":1}')

    assert await event_store.save_idempotency(first) is None
    assert await event_store.save_idempotency(second) == first
    assert await event_store.get_idempotency("user-1", "key-save", datetime.now(UTC)) == first
    assert await event_store.head_position() == 0  # no events


async def test_save_idempotency_replaces_an_expired_record(event_store: EventStore) -> None:
    expired = idem("key-x", created_at=datetime.now(UTC) - timedelta(days=1), ttl=timedelta(1))
    fresh = idem("key-x", body=b'{"fresh":1}')

    assert await event_store.save_idempotency(expired) is None
    assert await event_store.save_idempotency(fresh) is None
    assert await event_store.get_idempotency("user-1", "key-x", datetime.now(UTC)) == fresh


async def test_a_key_saved_without_events_blocks_an_append_with_that_key(
    event_store: EventStore,
) -> None:
    saved = idem("key-shared", status=400)
    await event_store.save_idempotency(saved)

    stream = new_stream()
    with pytest.raises(IdempotencyKeyExists) as caught:
        await event_store.append(one(stream, 0, events(1), idempotency=[idem("key-shared")]))

    assert caught.value.existing == saved
    assert await event_store.read_stream(stream) == []


async def test_purge_idempotency_deletes_only_expired_records(event_store: EventStore) -> None:
    now = datetime.now(UTC)
    old = [
        idem(f"old-{i}", created_at=now - timedelta(hours=3), ttl=timedelta(hours=1))
        for i in range(3)
    ]
    live = [idem(f"live-{i}", created_at=now, ttl=timedelta(hours=1)) for i in range(2)]
    for record in old[:2] + live[:1]:
        await event_store.save_idempotency(record)
    await event_store.append(one(new_stream(), 0, events(1), idempotency=[old[2], live[1]]))

    assert await event_store.purge_idempotency(now) == 3
    assert await event_store.purge_idempotency(now) == 0
    for record in old:
        assert (
            await event_store.get_idempotency("user-1", record.key, now - timedelta(hours=3))
            is None
        )
    for record in live:
        assert await event_store.get_idempotency("user-1", record.key, now) == record
    # a purged key is free again
    assert await event_store.save_idempotency(idem("old-0")) is None


async def test_idempotency_body_bytes_round_trip(event_store: EventStore) -> None:
    body = '{"owner":"Zoë","amount":"1.00","note":"línea\\n"}'.encode()
    record = idem("key-utf8", body=body)
    await event_store.append(one(new_stream(), 0, events(1), idempotency=[record]))

    stored = await event_store.get_idempotency("user-1", "key-utf8", datetime.now(UTC))
    assert stored is not None
    assert stored.body == body
    assert isinstance(stored.body, bytes)


# ---- outbox ----------------------------------------------------------------------------------


async def test_every_event_gets_an_outbox_row_in_position_order(event_store: EventStore) -> None:
    a, b = new_stream(), new_stream()
    first = await event_store.append(one(a, 0, events(2)))
    second = await event_store.append(
        AppendRequest(streams=[StreamAppend(b, 0, events(1)), StreamAppend(a, 2, events(1))])
    )
    written = first + second

    pending = await event_store.outbox_pending(100)

    assert [entry.event for entry in pending] == written
    assert [(entry.topic, entry.key, entry.payload) for entry in pending] == [
        (EVENTS_TOPIC, e.stream_id, None) for e in written
    ]
    assert [entry.id for entry in pending] == sorted(entry.id for entry in pending)
    assert len({entry.id for entry in pending}) == 4
    assert await event_store.outbox_pending(2) == pending[:2]


async def test_outbox_messages_are_stored_with_the_events(event_store: EventStore) -> None:
    stream = new_stream()
    message = OutboxMessage(
        topic="notifications", key="user-7", payload={"kind": "large-deposit", "amount": "9000"}
    )

    written = await event_store.append(one(stream, 0, events(1), messages=[message]))

    pending = await event_store.outbox_pending(10)
    assert len(pending) == 2
    assert pending[0].event == written[0]
    plain = pending[1]
    assert (plain.topic, plain.key, plain.payload, plain.event) == (
        "notifications",
        "user-7",
        {"kind": "large-deposit", "amount": "9000"},
        None,
    )
    assert plain.created_at.tzinfo is not None


async def test_a_conflicting_append_leaves_no_outbox_rows(event_store: EventStore) -> None:
    stream = new_stream()
    await event_store.append(one(stream, 0, events(1)))
    before = await event_store.outbox_pending(100)

    with pytest.raises(ConcurrencyError):
        await event_store.append(
            one(stream, 0, events(3), messages=[OutboxMessage("notifications", "k", {"x": 1})])
        )
    await event_store.save_idempotency(idem("dup"))
    with pytest.raises(IdempotencyKeyExists):
        await event_store.append(
            one(
                stream,
                1,
                events(1),
                idempotency=[idem("dup")],
                messages=[OutboxMessage("notifications", "k", {"x": 2})],
            )
        )

    assert await event_store.outbox_pending(100) == before
    assert (await event_store.outbox_stats()).backlog == 1


async def test_mark_published_removes_rows_from_pending(event_store: EventStore) -> None:
    stream = new_stream()
    await event_store.append(
        one(stream, 0, events(3), messages=[OutboxMessage("notifications", "k", {"n": 1})])
    )
    pending = await event_store.outbox_pending(100)
    assert len(pending) == 4

    await event_store.mark_published([pending[0].id, pending[2].id], datetime.now(UTC))

    left = await event_store.outbox_pending(100)
    assert left == [pending[1], pending[3]]
    assert (await event_store.outbox_stats()).backlog == 2
    await event_store.mark_published([p.id for p in left], datetime.now(UTC))
    assert await event_store.outbox_pending(100) == []
    assert await event_store.outbox_stats() == OutboxStats(0, None)


async def test_outbox_stats_backlog_and_oldest(event_store: EventStore) -> None:
    empty = await event_store.outbox_stats()
    assert (empty.backlog, empty.oldest_created_at) == (0, None)

    await event_store.append(one(new_stream(), 0, events(2)))
    first_rows = await event_store.outbox_pending(10)
    await event_store.append(one(new_stream(), 0, events(1)))

    stats = await event_store.outbox_stats()
    assert stats.backlog == 3
    assert stats.oldest_created_at == first_rows[0].created_at
    assert stats.oldest_created_at is not None
    assert stats.oldest_created_at.tzinfo is not None

    await event_store.mark_published([r.id for r in first_rows], datetime.now(UTC))
    later = await event_store.outbox_stats()
    assert later.backlog == 1
    assert later.oldest_created_at is not None
    assert later.oldest_created_at >= first_rows[0].created_at


# ---- snapshots -------------------------------------------------------------------------------


async def test_snapshot_is_stored_with_the_events(event_store: EventStore) -> None:
    stream = new_stream()
    state = {"balance": "30.00", "owner": "Zoë", "limits": {"daily": "500.00"}, "closed": False}

    await event_store.append(one(stream, 0, events(3), snapshot=Snapshot(stream, 3, state)))

    assert await event_store.latest_snapshot(stream) == Snapshot(stream, 3, state)
    assert await event_store.latest_snapshot(new_stream()) is None


async def test_latest_snapshot_is_the_newest_at_or_below_max_version(
    event_store: EventStore,
) -> None:
    stream = new_stream()
    for version in (0, 3, 6):
        await event_store.append(
            one(
                stream,
                version,
                events(3),
                snapshot=Snapshot(stream, version + 3, {"balance": f"{version + 3}.00"}),
            )
        )

    assert (await event_store.latest_snapshot(stream)) == Snapshot(stream, 9, {"balance": "9.00"})
    assert (await event_store.latest_snapshot(stream, 8)) == Snapshot(
        stream, 6, {"balance": "6.00"}
    )
    assert (await event_store.latest_snapshot(stream, 6)) == Snapshot(
        stream, 6, {"balance": "6.00"}
    )
    assert (await event_store.latest_snapshot(stream, 3)) == Snapshot(
        stream, 3, {"balance": "3.00"}
    )
    assert await event_store.latest_snapshot(stream, 2) is None


async def test_a_conflicting_append_stores_no_snapshot(event_store: EventStore) -> None:
    stream = new_stream()
    await event_store.append(one(stream, 0, events(2)))

    with pytest.raises(ConcurrencyError):
        await event_store.append(
            one(stream, 1, events(2), snapshot=Snapshot(stream, 3, {"balance": "wrong"}))
        )
    assert await event_store.latest_snapshot(stream) is None


async def test_snapshot_of_a_multi_stream_append_fails_with_its_request(
    event_store: EventStore,
) -> None:
    source, target = new_stream(), new_stream()
    await event_store.append(one(target, 0, events(1)))

    with pytest.raises(ConcurrencyError):
        await event_store.append(
            AppendRequest(
                streams=[
                    StreamAppend(source, 0, events(1), Snapshot(source, 1, {"b": "1"})),
                    StreamAppend(target, 0, [event("TransferCredited")]),
                ]
            )
        )
    assert await event_store.latest_snapshot(source) is None
    assert await event_store.read_stream(source) == []


# ---- database failures -------------------------------------------------------------------


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_every_side_row_method_answers_a_database_failure_with_a_store_error(
    event_store: EventStore,
) -> None:
    """A database error never leaves the store as the driver's (or the database port's)
    error: callers handle the store's errors only (eventstore/base.py)."""
    record = idem("gone")
    now = datetime.now(UTC)
    await event_store.db.execute("DROP TABLE idempotency_keys")  # type: ignore[attr-defined]
    await event_store.db.execute("DROP TABLE outbox")  # type: ignore[attr-defined]

    calls = [
        event_store.purge_idempotency(now),
        event_store.mark_published([1, 2], now),
        event_store.save_idempotency(record),
        event_store.get_idempotency(record.scope, record.key, now),
        event_store.outbox_pending(10),
        event_store.outbox_stats(),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            await call
