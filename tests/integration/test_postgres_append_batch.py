"""The PostgreSQL batch (`banking_es_append_batch_v3`, migration 0015 over 0009's v2) against
`plan_batch`: random batches of appends, some expecting versions their streams are not at,
some fenced by a shard epoch that is no longer current, run through the real function. It
must refuse exactly the appends `plan_batch` refuses and write
exactly the rows it plans (positions, events, outbox rows, snapshots); the store must
answer each caller as `plan_batch` does; the notices must carry exactly the written
streams' new events."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from tests.contract.eventstore_helpers import event, events, new_stream, one
from tests.integration.pg_notices import store_and_notices

from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    Fence,
    FencedOut,
    NewEvent,
    OutboxMessage,
    Snapshot,
)
from banking_es.eventstore.batching import plan_batch
from banking_es.eventstore.notices import STREAMS_CHANNEL, parse_notice
from banking_es.eventstore.postgres import APPEND_LOCK_KEY, PostgresEventStore
from banking_es.shards.leases import ShardLeases

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 11, 23, tzinfo=UTC)
#: The shards of the random batches, each claimed once: at epoch 1.
SHARDS = 4


def random_batch(rng: random.Random) -> tuple[list[AppendRequest], dict[str, int]]:
    """Appends to distinct streams (sometimes a stream twice in one request, continuing
    itself, or several streams, or no events, or messages, or a snapshot), and the version
    each stream is really at: mostly the expected one, sometimes not."""
    batch: list[AppendRequest] = []
    actual: dict[str, int] = {}
    for _ in range(rng.randrange(1, 12)):
        parts = []
        snapshot_of = None
        for _ in range(rng.choice((1, 1, 1, 2))):
            stream = new_stream()
            version = rng.randrange(0, 5)
            actual[stream] = version if rng.random() < 0.7 else rng.randrange(0, 7)
            count = rng.randrange(0, 4)
            parts.append(one(stream, version, some_events(rng, count)).streams[0])
            if rng.random() < 0.2:
                parts.append(one(stream, version + count, some_events(rng, 1)).streams[0])
                count += 1
            if count and rng.random() < 0.2:
                snapshot_of = (stream, version + count)
        if snapshot_of is not None:
            first = parts.index(next(p for p in parts if p.stream_id == snapshot_of[0]))
            state = {"balance": f"{snapshot_of[1]}.00"}
            parts[first] = one(
                parts[first].stream_id,
                parts[first].expected_version,
                parts[first].events,
                snapshot=Snapshot(snapshot_of[0], snapshot_of[1], state),
            ).streams[0]
        messages = [OutboxMessage("notifications", "k", {"n": 1})] if rng.random() < 0.2 else []
        fence = None
        if rng.random() < 0.3:  # the current epoch mostly, sometimes one that ended
            fence = Fence(rng.randrange(SHARDS), 1 if rng.random() < 0.8 else 0)
        batch.append(AppendRequest(parts, messages=messages, fence=fence))
    return batch, actual


def some_events(rng: random.Random, count: int) -> list[NewEvent]:
    """`count` events, sometimes with text beyond ASCII (a notice entry's length in bytes is
    then not its length in characters)."""
    if rng.random() < 0.3:
        return [
            event("MoneyDeposited", amount="1.00", memo="Zoë paid € for 🚀") for _ in range(count)
        ]
    return events(count)


def _outcome(outcome: object) -> object:
    """An outcome, comparable: the recorded events, or the conflict's details."""
    if isinstance(outcome, ConcurrencyError):
        return (outcome.stream_id, outcome.expected, outcome.actual)
    if isinstance(outcome, FencedOut):
        return ("fenced", outcome.shard, outcome.epoch)
    return outcome


@pytest.mark.parametrize("outbox_events", [False, True])
async def test_the_function_writes_what_plan_batch_plans(pg_url: str, outbox_events: bool) -> None:
    rng = random.Random(11)
    refused = fenced = written = whole = 0
    async with store_and_notices(pg_url, outbox_events=outbox_events) as (db, store, payloads):
        leases = ShardLeases(db, ttl=60)
        await leases.ensure_shard_count(SHARDS)
        assert len(await leases.claim_free("this-instance", SHARDS)) == SHARDS
        for _ in range(40):
            batch, actual = random_batch(rng)
            seeded = 0
            for stream, version in actual.items():  # the streams really are at `actual`
                if version:
                    await store.append(one(stream, 0, events(version)))
                    seeded += 1
            for _ in range(seeded):  # one notice each (one append per batch): not this batch's
                await asyncio.wait_for(payloads.get(), 5)
            head = await store.head_position()
            outbox_before = await db.fetchval("SELECT coalesce(max(id), 0) FROM outbox")

            plan = await store._apply_batch(batch)
            # The store's answer and the rows written are those plan_batch plans on the
            # versions the streams were at.
            planned = plan_batch(
                batch,
                head=head,
                now=plan.events[0].recorded_at if plan.events else NOW,
                versions=actual,
                existing_keys={},
                outbox_events=outbox_events,
                epochs=dict.fromkeys(range(SHARDS), 1),
            )
            assert plan.events == planned.events
            assert [_outcome(o) for o in plan.outcomes] == [_outcome(o) for o in planned.outcomes]
            assert plan.wrote_outbox == planned.wrote_outbox

            for request, outcome in zip(batch, plan.outcomes, strict=True):
                first: dict[str, int] = {}  # a stream's later part continues its first
                for part in request.streams:
                    first.setdefault(part.stream_id, part.expected_version)
                moved = [s for s, version in first.items() if actual[s] != version]
                stale = request.fence is not None and request.fence.epoch != 1
                assert isinstance(outcome, FencedOut) == stale, (request, outcome)
                if not stale:
                    assert isinstance(outcome, ConcurrencyError) == bool(moved), (request, outcome)
            refused += sum(isinstance(o, ConcurrencyError) for o in plan.outcomes)
            fenced += sum(isinstance(o, FencedOut) for o in plan.outcomes)
            whole += not any(isinstance(o, ConcurrencyError | FencedOut) for o in plan.outcomes)
            written += len(plan.events)
            stored = [
                e
                for e in await store.read_all(head, 10_000)
                if e.stream_id in {s for r in batch for s in (p.stream_id for p in r.streams)}
            ]
            assert stored == plan.events
            assert [e.position for e in stored] == list(range(head + 1, head + 1 + len(stored)))
            assert await store.head_position() == head + len(stored)
            rows = await db.fetch(
                "SELECT topic, key, payload, event_position FROM outbox WHERE id > $1 ORDER BY id",
                outbox_before,
            )
            assert [tuple(r.values()) for r in rows] == [
                (o.topic, o.key, o.payload, o.event_position) for o in planned.outbox
            ]
            for snapshot in planned.snapshots:
                assert await store.latest_snapshot(snapshot.stream_id) == snapshot
            for request, outcome in zip(batch, plan.outcomes, strict=True):
                if isinstance(outcome, ConcurrencyError | FencedOut):
                    for part in request.streams:
                        got = await store.latest_snapshot(part.stream_id)
                        assert got is None or got.version <= actual[part.stream_id]
            # The notices carry the written streams' events, and nothing of the refused ones.
            noticed = []
            while len(noticed) < len(plan.events):
                for moved in parse_notice(await asyncio.wait_for(payloads.get(), 5)):
                    assert moved.events
                    assert moved.version == moved.events[-1].version
                    noticed.extend((moved.stream_id, e) for e in moved.events)
            await asyncio.sleep(0.02)
            assert payloads.empty()
            assert sorted(
                (s, e.version, e.event_id, e.type, e.data, e.metadata, e.recorded_at)
                for s, e in noticed
            ) == sorted(
                (e.stream_id, e.version, e.event_id, e.type, e.data, e.metadata, e.recorded_at)
                for e in plan.events
            )
        # Both ways of the statement ran: batches with refusals and whole ones.
        assert refused > 10
        assert fenced > 5
        assert whole > 5
        assert written > 100


async def test_stream_ids_with_quotes_braces_and_backslashes_reach_the_function_intact(
    pg_url: str,
) -> None:
    """The stream ids and versions travel as JSON (`_array_of_json`): ids that would need
    quoting in an array literal arrive as they were, in their order."""
    db = await PostgresDatabase.connect(pg_url, max_size=2)
    await migrate(db)
    store = PostgresEventStore(db)
    odd = ['a"b', "c\\d", "{e,f}", "g h", "zoë 🚀", "NULL", ""]
    try:
        await store.append(one(odd[1], 0, events(2)))  # one of them is ahead of its append
        batch = [one(stream, 0, events(1)) for stream in odd]

        plan = await store._apply_batch(batch)

        refused = [isinstance(o, ConcurrencyError) for o in plan.outcomes]
        assert refused == [stream == "c\\d" for stream in odd]
        for stream in odd:
            stored = await store.read_stream(stream)
            assert [e.stream_id for e in stored] == [stream] * (2 if stream == "c\\d" else 1)
    finally:
        await store.close()
        await db.close()


#: The previous release's call (migration 0009's function, as that release sends it).
PREVIOUS_RELEASE_APPEND = (
    "SELECT o_head AS head, o_now AS now, o_actual AS actual, o_refused AS refused"
    " FROM banking_es_append_batch_v2($1,"
    " ARRAY(SELECT x FROM json_array_elements_text($2::json) WITH ORDINALITY AS t(x, i)"
    " ORDER BY i),"
    " ARRAY(SELECT x::int FROM json_array_elements_text($3::json) WITH ORDINALITY AS t(x, i)"
    " ORDER BY i),"
    " ARRAY(SELECT x::int FROM json_array_elements_text($4::json) WITH ORDINALITY AS t(x, i)"
    " ORDER BY i),"
    " $5::jsonb, $6::jsonb, $7::jsonb, $8, $9::text[], $10::jsonb, $11)"
)


async def test_a_process_of_the_previous_release_keeps_appending_after_the_upgrade(
    pg_url: str,
) -> None:
    """During a rolling upgrade the previous release calls 0009's function as before; after
    the migrations that call must still resolve (and take the same lock), and a notice it
    sends must read as one of this release. The function of the release before it (0008's)
    is gone."""
    stream = new_stream()
    entry = f'["{stream}",1,[[1,"e-1","MoneyDeposited",{{"amount":"1.00"}},{{}}]]]'
    async with store_and_notices(pg_url) as (db, store, payloads):
        row = await db.fetchrow(
            PREVIOUS_RELEASE_APPEND,
            APPEND_LOCK_KEY,
            f'["{stream}"]',
            "[0]",
            "[1]",
            f'[["{stream}",1,"e-1","MoneyDeposited",{{"amount":"1.00"}},{{}}]]',
            "[]",
            "[]",
            "old-process",
            [entry],
            f"[[1,1,{len(entry.encode())}]]",
            STREAMS_CHANNEL,
        )
        assert row is not None
        assert (row["refused"], row["actual"]) == ([], [0])
        [stored] = await store.read_stream(stream)
        assert (stored.version, stored.event_id, stored.data) == (1, "e-1", {"amount": "1.00"})
        [moved] = parse_notice(await asyncio.wait_for(payloads.get(), 5))
        assert (moved.stream_id, moved.version, len(moved.events)) == (stream, 1, 1)
        # And this release appends after it, at the next position.
        [recorded] = await store.append(one(stream, 1, events(1)))
        assert (recorded.version, recorded.position) == (2, stored.position + 1)
        functions = await db.fetch(
            "SELECT proname FROM pg_proc WHERE proname LIKE 'banking_es_append%'"
        )
        assert sorted(r["proname"] for r in functions) == [
            "banking_es_append_batch_v2",
            "banking_es_append_batch_v3",
        ]


async def test_a_batch_of_several_calls_is_written_whole_or_retried_append_by_append(
    pg_url: str,
) -> None:
    """A stream in two appends splits the batch into calls; they share one transaction, so
    when a later call fails (here: text jsonb cannot store) the earlier call's appends
    are not already committed when each append is retried alone: no caller hears a conflict
    for an append that was written."""
    a, b = new_stream(), new_stream()
    poison = one(b, 0, [event("Odd", bad="nul \u0000")])
    async with store_and_notices(pg_url) as (_, store, _payloads):
        outcomes = await store._commit_batch([one(a, 0, events(1)), one(a, 1, events(1)), poison])
        assert [type(o).__name__ for o in outcomes] == ["list", "list", "AppendRejected"]
        assert [e.version for e in await store.read_stream(a)] == [1, 2]
        assert await store.read_stream(b) == []
