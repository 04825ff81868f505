"""`Guess` (the one-statement PostgreSQL batch) must write exactly what `plan_batch` plans.

The statement (migrations/postgres/0009_append_batch_notice_bodies.sql) refuses every append one
of whose streams is not at the version it expects, and writes the others with positions
head + 1, head + 2, ... in batch order; the store then answers the callers with
`plan_batch`'s plan for the versions the statement read. Were the two to disagree, a caller
could hear "conflict" for an append that was written (and retry it: a double deposit), or
get the wrong positions. `statement` below does what the SQL does, from `Guess.arguments`;
tests/integration/test_postgres_append_batch.py runs the SQL itself the same way.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from tests.contract.eventstore_helpers import event, events, idem, new_stream, one

from banking_es.eventstore.base import (
    EVENTS_TOPIC,
    AppendRequest,
    ConcurrencyError,
    NewEvent,
    OutboxMessage,
    Snapshot,
)
from banking_es.eventstore.batching import plan_batch
from banking_es.eventstore.postgres import NOTICE_BYTES, Guess

NOW = datetime(2026, 11, 23, tzinfo=UTC)


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
        batch.append(AppendRequest(parts, messages=messages))
    return batch, actual


def some_events(rng: random.Random, count: int) -> list[NewEvent]:
    """`count` events, sometimes with text beyond ASCII (a notice entry's length in bytes is
    then not its length in characters)."""
    if rng.random() < 0.3:
        return [
            event("MoneyDeposited", amount="1.00", memo="Zoë paid € for 🚀") for _ in range(count)
        ]
    return events(count)


def statement(arguments: tuple[Any, ...], head: int, actual: dict[str, int]) -> dict[str, Any]:
    """What the SQL function does with `Guess.arguments`, given the streams' versions."""
    streams, expected, appends = (orjson.loads(a) for a in arguments[:3])
    rows, outbox, snapshots, _, bodies, entries, _ = arguments[3:]
    refused = {a for s, e, a in zip(streams, expected, appends, strict=True) if actual[s] != e}
    skipped = {s for s, a in zip(streams, appends, strict=True) if a in refused}
    kept: dict[int, int] = {}  # 1-based event index -> position
    written = []
    for index, (stream, version, event_id, *_) in enumerate(orjson.loads(rows), start=1):
        if stream not in skipped:
            kept[index] = head + len(kept) + 1
            written.append((kept[index], stream, version, event_id))
    return {
        "refused": refused,
        "events": written,
        "outbox": [
            (topic, key, payload, None if event is None else kept[event])
            for topic, key, payload, event, append in orjson.loads(outbox)
            if append not in refused
        ],
        "snapshots": [
            (stream, version, state)
            for stream, version, state, append in orjson.loads(snapshots)
            if append not in refused
        ],
        # Nothing refused: the bodies as they are; else the written streams' entries, cut out
        # of the bodies by their byte offsets (1-based).
        "notices": (
            {i: [body] for i, body in enumerate(bodies, start=1)}
            if not refused
            else _grouped(
                (at[0], bodies[at[0] - 1].encode()[at[1] - 1 : at[1] - 1 + at[2]].decode())
                for at, a in zip(orjson.loads(entries), appends, strict=True)
                if at is not None and a not in refused
            )
        ),
    }


def _outcome(outcome: object) -> object:
    """An outcome, comparable: the recorded events, or the conflict's details."""
    if isinstance(outcome, ConcurrencyError):
        return (outcome.stream_id, outcome.expected, outcome.actual)
    return outcome


def _grouped(pairs: Iterable[tuple[int, str]]) -> dict[int, list[str]]:
    """GROUP BY the first of each pair (a payload is sent only for a group with rows)."""
    groups: dict[int, list[str]] = {}
    for key, value in pairs:
        groups.setdefault(key, []).append(value)
    return groups


def test_the_statement_writes_what_plan_batch_plans_on_the_versions_it_read() -> None:
    rng = random.Random(7)
    refusals = whole = 0
    for _ in range(500):
        batch, actual = random_batch(rng)
        outbox_events = rng.random() < 0.5
        guess = Guess.of(batch, outbox_events=outbox_events)
        assert guess is not None
        head = rng.randrange(0, 1000)
        arguments = guess.arguments("origin")
        streams, expected = orjson.loads(arguments[0]), orjson.loads(arguments[1])
        assert list(zip(streams, expected, strict=True)) == list(guess.expected.items())
        done = statement(arguments, head, actual)
        plan = plan_batch(
            batch,
            head=head,
            now=NOW,
            versions={s: actual[s] for s in guess.expected},
            existing_keys={},
            outbox_events=outbox_events,
        )
        planned_refusals = {
            i for i, o in enumerate(plan.outcomes, start=1) if isinstance(o, ConcurrencyError)
        }
        assert planned_refusals == done["refused"]
        refusals += len(planned_refusals)
        whole += not planned_refusals
        assert done["events"] == [
            (e.position, e.stream_id, e.version, e.event_id) for e in plan.events
        ]
        assert done["outbox"] == [
            (o.topic, o.key, o.payload, o.event_position) for o in plan.outbox
        ]
        assert done["snapshots"] == [(s.stream_id, s.version, s.state) for s in plan.snapshots]
        # What the store answers once the statement has run: plan_batch's outcomes.
        answered = guess.plan(batch, head, NOW, [actual[s] for s in guess.expected])
        assert [_outcome(o) for o in answered.outcomes] == [_outcome(o) for o in plan.outcomes]
        assert answered.events == plan.events
        assert answered.wrote_outbox == bool(done["outbox"]) == plan.wrote_outbox
        assert outbox_events == any(o.topic == EVENTS_TOPIC for o in plan.outbox) or not plan.events
        # Each payload holds the entries of the written streams and their new events only.
        written = {(e.stream_id, e.version, e.event_id) for e in plan.events}
        noticed = set()
        for entries in done["notices"].values():
            body = f'origin {{"at":"2026-11-23T00:00:00+00:00","s":[{",".join(entries)}]}}'
            assert len(body.encode()) <= NOTICE_BYTES
            for stream, version, new in orjson.loads(body.partition(" ")[2])["s"]:
                assert new[-1][0] == version
                noticed.update((stream, v, event_id) for v, event_id, *_ in new)
        assert noticed == written
    # Both ways of the statement were exercised: batches with refusals and whole ones.
    assert refusals > 100
    assert whole > 50


def test_batches_that_need_a_plan_are_not_guessed() -> None:
    stream = new_stream()
    assert Guess.of([one(stream, 0, events(1), idempotency=[idem()])], outbox_events=False) is None
    rendered = Snapshot(stream, 1, lambda recorded: {"balance": "1.00"})
    assert Guess.of([one(stream, 0, events(1), snapshot=rendered)], outbox_events=False) is None
    ready = Snapshot(stream, 1, {"balance": "1.00"})
    assert Guess.of([one(stream, 0, events(1), snapshot=ready)], outbox_events=False) is not None
    # One stream in two appends: the second depends on the first.
    twice = [one(stream, 0, events(1)), one(stream, 1, events(1))]
    assert Guess.of(twice, outbox_events=False) is None
    # Twice in one append, not continuing itself: certainly a conflict.
    gap = AppendRequest(
        [one(stream, 0, events(1)).streams[0], one(stream, 3, events(1)).streams[0]]
    )
    assert Guess.of([gap], outbox_events=False) is None


def test_notice_entries_of_many_streams_are_spread_over_payloads_that_fit() -> None:
    batch = [one(new_stream(), 0, events(3)) for _ in range(300)]
    guess = Guess.of(batch, outbox_events=False)
    assert guess is not None
    done = statement(guess.arguments("o"), 0, dict.fromkeys(guess.expected, 0))
    assert len(done["notices"]) > 1
    for entries in done["notices"].values():
        assert len(",".join(entries).encode()) <= NOTICE_BYTES - 100
    streams = [
        stream
        for entries in done["notices"].values()
        for stream, *_ in orjson.loads(f"[{','.join(entries)}]")
    ]
    assert sorted(streams) == sorted(guess.expected)
