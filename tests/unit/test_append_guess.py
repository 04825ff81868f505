"""`Guess` (the one-statement PostgreSQL batch) must write exactly what `plan_batch` plans.

When the statement finds every stream at the version its append expects, it writes the
guessed rows with positions head + 1, head + 2, ... and the store answers the callers with
`plan_batch`'s plan for those versions. Were the two to disagree, a caller could hear
"conflict" for an append that was written (and retry it: a double deposit).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import orjson
from tests.contract.eventstore_helpers import events, idem, new_stream, one

from banking_es.eventstore.base import EVENTS_TOPIC, AppendRequest, OutboxMessage, Snapshot
from banking_es.eventstore.batching import plan_batch
from banking_es.eventstore.postgres import Guess

NOW = datetime(2026, 11, 23, tzinfo=UTC)


def random_batch(rng: random.Random) -> list[AppendRequest]:
    """Appends to a few streams, each continuing the stream's previous append in the batch
    (sometimes with a stream twice in one request, or with no events, or messages)."""
    streams = {new_stream(): rng.randrange(0, 5) for _ in range(rng.randrange(1, 5))}
    batch: list[AppendRequest] = []
    for _ in range(rng.randrange(1, 12)):
        stream = rng.choice(list(streams))
        count = rng.randrange(0, 4)
        parts = [one(stream, streams[stream], events(count)).streams[0]]
        streams[stream] += count
        if rng.random() < 0.2:
            parts.append(one(stream, streams[stream], events(1)).streams[0])
            streams[stream] += 1
        messages = [OutboxMessage("notifications", "k", {"n": 1})] if rng.random() < 0.2 else []
        batch.append(AppendRequest(parts, messages=messages))
    return batch


def test_the_guess_writes_what_plan_batch_plans_in_the_same_order() -> None:
    rng = random.Random(7)
    for _ in range(300):
        batch = random_batch(rng)
        outbox_events = rng.random() < 0.5
        guess = Guess.of(batch, outbox_events=outbox_events)
        assert guess is not None
        head = rng.randrange(0, 1000)
        plan = plan_batch(
            batch,
            head=head,
            now=NOW,
            versions=guess.expected,
            existing_keys={},
            outbox_events=outbox_events,
        )
        assert all(isinstance(outcome, list) for outcome in plan.outcomes), plan.outcomes
        streams, expected, rows, outbox, _, _, _ = guess.arguments("origin")
        assert list(zip(streams, expected, strict=True)) == list(guess.expected.items())
        guessed = [
            (head + i, stream, version, event_id)
            for i, (stream, version, event_id, *_) in enumerate(orjson.loads(rows), start=1)
        ]
        planned = [(e.position, e.stream_id, e.version, e.event_id) for e in plan.events]
        assert guessed == planned
        relative = [
            (topic, key, payload, None if at is None else head + at)
            for topic, key, payload, at in orjson.loads(outbox)
        ]
        assert relative == [(o.topic, o.key, o.payload, o.event_position) for o in plan.outbox]
        assert outbox_events == any(o.topic == EVENTS_TOPIC for o in plan.outbox) or not plan.events


def test_batches_that_need_a_plan_are_not_guessed() -> None:
    stream = new_stream()
    assert Guess.of([one(stream, 0, events(1), idempotency=[idem()])], outbox_events=False) is None
    snapshot = Snapshot(stream, 1, {"balance": "1.00"})
    assert Guess.of([one(stream, 0, events(1), snapshot=snapshot)], outbox_events=False) is None
    # Two appends of one stream that do not follow each other: one of them certainly fails.
    twice = [one(stream, 0, events(1)), one(stream, 0, events(1))]
    assert Guess.of(twice, outbox_events=False) is None
