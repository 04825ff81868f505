"""Group commit: GroupCommitter (batching callers) and plan_batch (deciding a batch)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from tests.clock_support import EPOCH
from tests.unit.unit_support import collector_garbage

from banking_es.eventstore.base import (
    EVENTS_TOPIC,
    AppendRequest,
    ConcurrencyError,
    EventStoreError,
    IdempotencyKeyExists,
    IdempotencyRecord,
    NewEvent,
    OutboxMessage,
    RecordedEvent,
    Snapshot,
    StreamAppend,
)
from banking_es.eventstore.batching import (
    BatchOutcome,
    GroupCommitter,
    OutboxRow,
    plan_batch,
    touched_keys,
    touched_streams,
)

NOW = EPOCH


def ev(event_id: str, amount: str = "1.00") -> NewEvent:
    return NewEvent(event_id, "MoneyDeposited", {"amount": amount}, {"m": event_id})


def request(
    stream_id: str,
    expected: int,
    *event_ids: str,
    keys: Sequence[IdempotencyRecord] = (),
    snapshot: Snapshot | None = None,
    messages: Sequence[OutboxMessage] = (),
) -> AppendRequest:
    return AppendRequest(
        [StreamAppend(stream_id, expected, [ev(i) for i in event_ids], snapshot)],
        idempotency=list(keys),
        messages=list(messages),
    )


def key(
    name: str, body: Any = b"body", expires_in: timedelta = timedelta(hours=1), scope: str = "u"
) -> IdempotencyRecord:
    return IdempotencyRecord(scope, name, "fp", 200, body, NOW, NOW + expires_in)


def plan(
    requests: Sequence[AppendRequest],
    *,
    head: int = 0,
    versions: dict[str, int] | None = None,
    existing: dict[tuple[str, str], IdempotencyRecord] | None = None,
    outbox_events: bool = True,
) -> Any:
    return plan_batch(
        requests,
        head=head,
        now=NOW,
        versions=versions or {},
        existing_keys=existing or {},
        outbox_events=outbox_events,
    )


def summary(outcome: BatchOutcome) -> list[tuple[int, str, int, str]] | str:
    if isinstance(outcome, EventStoreError):
        return type(outcome).__name__
    return [(e.position, e.stream_id, e.version, e.event_id) for e in outcome]


# ---- plan_batch ----------------------------------------------------------------------------------


def test_plan_assigns_positions_and_versions_in_request_order() -> None:
    result = plan(
        [request("a", 2, "a3", "a4"), request("b", 0, "b1")],
        head=10,
        versions={"a": 2},
    )
    assert [summary(o) for o in result.outcomes] == [
        [(11, "a", 3, "a3"), (12, "a", 4, "a4")],
        [(13, "b", 1, "b1")],
    ]
    assert [e.event_id for e in result.events] == ["a3", "a4", "b1"]
    first = result.events[0]
    assert first == RecordedEvent(
        11, "a", 3, "a3", "MoneyDeposited", {"amount": "1.00"}, {"m": "a3"}, NOW
    )
    assert result.outbox == [
        OutboxRow(EVENTS_TOPIC, "a", None, 11),
        OutboxRow(EVENTS_TOPIC, "a", None, 12),
        OutboxRow(EVENTS_TOPIC, "b", None, 13),
    ]
    assert result.snapshots == []
    assert result.idempotency == []
    assert result.replaced_keys == []


def test_plan_without_event_outbox_writes_no_event_rows() -> None:
    result = plan([request("a", 0, "a1")], outbox_events=False)
    assert result.outbox == []
    assert len(result.events) == 1


def test_a_conflict_in_the_middle_fails_only_that_request() -> None:
    versions = {"a": 0, "b": 5, "c": 1}
    snapshot = Snapshot("b", 6, {"balance": "1.00"})
    result = plan(
        [
            request("a", 0, "a1"),
            request(
                "b",
                4,
                "b5",
                keys=[key("kb")],
                snapshot=snapshot,
                messages=[OutboxMessage("t", "k", {"x": 1})],
            ),
            request("c", 1, "c2"),
        ],
        versions=versions,
    )
    failure = result.outcomes[1]
    assert isinstance(failure, ConcurrencyError)
    assert (failure.stream_id, failure.expected, failure.actual) == ("b", 4, 5)
    assert summary(result.outcomes[0]) == [(1, "a", 1, "a1")]
    assert summary(result.outcomes[2]) == [(2, "c", 2, "c2")]  # no gap in positions
    assert [e.event_id for e in result.events] == ["a1", "c2"]
    assert result.snapshots == []
    assert result.idempotency == []
    assert [row.event_position for row in result.outbox] == [1, 2]
    assert versions == {"a": 0, "b": 5, "c": 1}  # the caller's dict is left alone


def test_two_requests_on_the_same_stream_in_one_batch_follow_each_other() -> None:
    result = plan(
        [request("a", 0, "a1", "a2"), request("a", 2, "a3"), request("a", 2, "late")],
    )
    assert summary(result.outcomes[0]) == [(1, "a", 1, "a1"), (2, "a", 2, "a2")]
    assert summary(result.outcomes[1]) == [(3, "a", 3, "a3")]
    late = result.outcomes[2]
    assert isinstance(late, ConcurrencyError)
    assert (late.expected, late.actual) == (2, 3)


def test_one_request_may_append_to_a_stream_in_two_parts() -> None:
    both = AppendRequest([StreamAppend("a", 0, [ev("a1")]), StreamAppend("a", 1, [ev("a2")])])
    wrong = AppendRequest([StreamAppend("b", 0, [ev("b1")]), StreamAppend("b", 0, [ev("b2")])])
    result = plan([both, wrong])
    assert summary(result.outcomes[0]) == [(1, "a", 1, "a1"), (2, "a", 2, "a2")]
    assert isinstance(result.outcomes[1], ConcurrencyError)


def test_a_request_on_two_streams_fails_as_a_whole() -> None:
    transfer = AppendRequest([StreamAppend("a", 1, [ev("sent")]), StreamAppend("b", 0, [ev("r")])])
    result = plan([transfer], versions={"a": 1, "b": 3})
    assert isinstance(result.outcomes[0], ConcurrencyError)
    assert result.events == []


def test_an_idempotency_key_taken_twice_in_one_batch_replays_the_first_record() -> None:
    first = key("k", b"first")
    result = plan(
        [request("a", 0, "a1", keys=[first]), request("b", 0, "b1", keys=[key("k", b"second")])],
        head=41,
    )
    assert summary(result.outcomes[0]) == [(42, "a", 1, "a1")]
    taken = result.outcomes[1]
    assert isinstance(taken, IdempotencyKeyExists)
    assert taken.existing.body == b"first"
    assert [r.body for r in result.idempotency] == [b"first"]
    assert [e.event_id for e in result.events] == ["a1"]


def test_a_stored_unexpired_key_fails_its_request_with_the_stored_record() -> None:
    stored = key("k", b"stored")
    result = plan(
        [request("a", 0, "a1", keys=[key("k", b"new")]), request("b", 0, "b1")],
        existing={("u", "k"): stored},
    )
    taken = result.outcomes[0]
    assert isinstance(taken, IdempotencyKeyExists)
    assert taken.existing is stored
    assert summary(result.outcomes[1]) == [(1, "b", 1, "b1")]
    assert result.idempotency == []


def test_an_expired_key_is_replaced() -> None:
    expired = key("k", b"old", expires_in=timedelta(0))  # expires exactly now
    result = plan([request("a", 0, "a1", keys=[key("k", b"new")])], existing={("u", "k"): expired})
    assert summary(result.outcomes[0]) == [(1, "a", 1, "a1")]
    assert result.replaced_keys == [("u", "k")]
    assert [r.body for r in result.idempotency] == [b"new"]


def test_the_same_key_in_another_scope_is_free() -> None:
    result = plan(
        [
            request("a", 0, "a1", keys=[key("k", scope="u1")]),
            request("b", 0, "b1", keys=[key("k", scope="u2")]),
        ],
    )
    assert [summary(o) for o in result.outcomes] == [[(1, "a", 1, "a1")], [(2, "b", 1, "b1")]]
    assert [(r.scope, r.key) for r in result.idempotency] == [("u1", "k"), ("u2", "k")]


def test_a_request_carrying_the_same_key_twice_is_refused() -> None:
    result = plan([request("a", 0, "a1", "a2", keys=[key("k", b"one"), key("k", b"two")])])
    assert isinstance(result.outcomes[0], IdempotencyKeyExists)
    assert result.idempotency == []


def test_a_snapshot_given_as_data_is_kept_as_is() -> None:
    snapshot = Snapshot("a", 1, {"balance": "3.00"})
    assert plan([request("a", 0, "a1", snapshot=snapshot)]).snapshots == [snapshot]


def test_messages_become_outbox_rows_after_the_event_rows() -> None:
    message = OutboxMessage("notifications", "user-1", {"kind": "reset"})
    result = plan([request("a", 0, "a1", messages=[message])])
    assert result.outbox == [
        OutboxRow(EVENTS_TOPIC, "a", None, 1),
        OutboxRow("notifications", "user-1", {"kind": "reset"}, None),
    ]


def test_touched_streams_and_keys_are_sorted_and_distinct() -> None:
    requests = [
        request("b", 0, "b1", keys=[key("k2")]),
        AppendRequest(
            [StreamAppend("a", 0, [ev("a1")]), StreamAppend("b", 1, [ev("b2")])],
            idempotency=[key("k1"), key("k2")],
        ),
    ]
    assert touched_streams(requests) == ["a", "b"]
    assert touched_keys(requests) == [("u", "k1"), ("u", "k2")]


# ---- GroupCommitter ------------------------------------------------------------------------------


class Backend:
    """A fake `commit`: records its batches; may hold a batch or fail it."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail: BaseException | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        self.started = asyncio.Event()

    async def commit(self, requests: list[AppendRequest]) -> list[BatchOutcome]:
        self.batches.append([r.streams[0].stream_id for r in requests])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.started.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.fail is not None:
                exc, self.fail = self.fail, None
                raise exc
        finally:
            self.in_flight -= 1
        outcomes: list[BatchOutcome] = []
        for r in requests:
            stream = r.streams[0]
            if stream.stream_id.startswith("bad"):
                outcomes.append(ConcurrencyError(stream.stream_id, stream.expected_version, 99))
            else:
                outcomes.append([RecordedEvent(0, stream.stream_id, 1, "e", "T", {}, {}, NOW)])
        return outcomes


def req(stream_id: str) -> AppendRequest:
    return AppendRequest([StreamAppend(stream_id, 0, [ev(f"{stream_id}-1")])])


async def test_a_single_append_is_committed_alone() -> None:
    backend = Backend()
    committer = GroupCommitter(backend.commit, max_wait_ms=0)
    [recorded] = await committer.submit(req("a"))
    assert recorded.stream_id == "a"
    assert backend.batches == [["a"]]


async def test_batches_grow_while_a_commit_is_in_flight_up_to_max_size() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    committer = GroupCommitter(backend.commit, max_size=4, max_wait_ms=0)
    first = asyncio.create_task(committer.submit(req("s0")))
    await backend.started.wait()
    rest = [asyncio.create_task(committer.submit(req(f"s{i}"))) for i in range(1, 11)]
    await asyncio.sleep(0)
    assert committer.queue_length == 10
    backend.gate.set()
    results = await asyncio.gather(first, *rest)
    assert [r[0].stream_id for r in results] == [f"s{i}" for i in range(11)]
    assert [len(b) for b in backend.batches] == [1, 4, 4, 2]
    assert backend.batches[1] == ["s1", "s2", "s3", "s4"]  # first come, first committed
    assert committer.queue_length == 0


async def test_under_load_the_flusher_waits_max_wait_for_more_appends() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    # 2 s: a busy machine may stall the test for a good part of a second. The wait ends when
    # "d" arrives (the queue is then as large as the last batch), so the test stays quick.
    committer = GroupCommitter(backend.commit, max_size=100, max_wait_ms=2_000)
    firsts = [asyncio.create_task(committer.submit(req(s))) for s in ("a", "b")]
    await backend.started.wait()
    late = [asyncio.create_task(committer.submit(req("c")))]
    backend.gate.set()
    await asyncio.sleep(0.02)  # well inside the 2 s wait
    late.append(asyncio.create_task(committer.submit(req("d"))))
    await asyncio.gather(*firsts, *late)
    assert backend.batches == [["a", "b"], ["c", "d"]]


async def test_under_load_the_flusher_waits_no_longer_once_as_many_as_last_time_queue() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    committer = GroupCommitter(backend.commit, max_size=100, max_wait_ms=5_000)
    firsts = [asyncio.create_task(committer.submit(req(s))) for s in ("a", "b", "c")]
    await backend.started.wait()
    backend.gate.set()
    await asyncio.gather(*firsts)  # a batch of 3: the flusher now waits for 3
    loop = asyncio.get_running_loop()
    started = loop.time()
    second = [asyncio.create_task(committer.submit(req(s))) for s in ("d", "e")]
    await asyncio.sleep(0.05)
    assert backend.batches == [["a", "b", "c"]]  # two are fewer than last time: it waits
    second.append(asyncio.create_task(committer.submit(req("f"))))
    await asyncio.gather(*second)
    assert loop.time() - started < 1  # not the 5 s of max_wait
    assert backend.batches == [["a", "b", "c"], ["d", "e", "f"]]


async def test_concurrency_allows_several_batches_in_flight() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    committer = GroupCommitter(backend.commit, max_wait_ms=0, concurrency=2)
    first = asyncio.create_task(committer.submit(req("a")))
    await backend.started.wait()
    second = asyncio.create_task(committer.submit(req("b")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert backend.in_flight == 2
    backend.gate.set()
    await asyncio.gather(first, second)
    assert backend.batches == [["a"], ["b"]]
    assert backend.most_in_flight == 2


async def test_an_exception_in_a_commit_reaches_every_caller_of_that_batch() -> None:
    backend = Backend()
    boom = RuntimeError("transaction failed")
    backend.fail = boom
    committer = GroupCommitter(backend.commit, max_wait_ms=0)
    outcomes = await asyncio.gather(
        *(committer.submit(req(s)) for s in ("a", "b", "c")), return_exceptions=True
    )
    assert outcomes == [boom, boom, boom]
    assert backend.batches == [["a", "b", "c"]]
    [recorded] = await committer.submit(req("d"))  # the next batch is unaffected
    assert recorded.stream_id == "d"


async def test_a_failed_batch_does_not_fail_the_batch_queued_behind_it() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    backend.fail = RuntimeError("first batch only")
    committer = GroupCommitter(backend.commit, max_wait_ms=0)
    first = asyncio.create_task(committer.submit(req("a")))
    await backend.started.wait()
    queued = [asyncio.create_task(committer.submit(req(s))) for s in ("b", "c")]
    backend.gate.set()
    with pytest.raises(RuntimeError, match="first batch only"):
        await first
    assert [r[0].stream_id for r in await asyncio.gather(*queued)] == ["b", "c"]
    assert backend.batches == [["a"], ["b", "c"]]


async def test_each_caller_gets_the_outcome_of_its_own_request() -> None:
    backend = Backend()
    committer = GroupCommitter(backend.commit, max_wait_ms=0)
    streams = ["a", "bad-1", "b", "bad-2", "c"]
    outcomes = await asyncio.gather(
        *(committer.submit(req(s)) for s in streams), return_exceptions=True
    )
    assert backend.batches == [streams]
    for stream, outcome in zip(streams, outcomes, strict=True):
        if stream.startswith("bad"):
            assert isinstance(outcome, ConcurrencyError)
            assert outcome.stream_id == stream
        else:
            assert isinstance(outcome, list)
            assert outcome[0].stream_id == stream


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    committer = GroupCommitter(backend.commit, max_wait_ms=0)
    tasks = [asyncio.create_task(committer.submit(req(s))) for s in ("a", "b", "c")]
    await backend.started.wait()
    tasks[1].cancel()
    backend.gate.set()
    a, c = await tasks[0], await tasks[2]
    assert (a[0].stream_id, c[0].stream_id) == ("a", "c")
    assert tasks[1].cancelled()
    assert backend.batches == [["a", "b", "c"]]


async def test_on_batch_reports_size_and_duration() -> None:
    backend = Backend()
    reports: list[tuple[int, float]] = []
    committer = GroupCommitter(
        backend.commit, max_wait_ms=0, on_batch=lambda size, took: reports.append((size, took))
    )
    await asyncio.gather(*(committer.submit(req(s)) for s in ("a", "b", "c")))
    assert len(reports) == 1
    size, took = reports[0]
    assert size == 3
    assert 0 <= took < 1


async def test_drain_returns_once_everything_queued_is_committed() -> None:
    backend = Backend()
    backend.gate = asyncio.Event()
    committer = GroupCommitter(backend.commit, max_wait_ms=0)
    tasks = [asyncio.create_task(committer.submit(req(s))) for s in ("a", "b")]
    await backend.started.wait()
    drained = asyncio.create_task(committer.drain())
    await asyncio.sleep(0.02)
    assert not drained.done()
    backend.gate.set()
    await asyncio.wait_for(drained, timeout=1)
    assert all(t.done() for t in tasks)


async def test_a_refused_append_leaves_no_reference_cycle_for_the_collector() -> None:
    """A refused append raises its error in `submit`; the error's traceback holds that frame,
    which must not hold the future that holds the error. Each such cycle (42 objects for a
    deposit's conflict) waited for a garbage collection; in the workers under `make bench`'s
    deposit load these were young collections of 12-22 ms each."""
    backend = Backend()
    committer = GroupCommitter(backend.commit, max_wait_ms=0)
    with collector_garbage() as garbage:
        for stream in ("bad-1", "bad-2", "bad-3"):
            try:
                await committer.submit(req(stream))
            except ConcurrencyError:
                pass
            else:
                pytest.fail("the append was not refused")
        await committer.drain()
    errors = [o for o in garbage if isinstance(o, ConcurrencyError)]
    assert errors == [], f"{len(errors)} refused appends' errors waited for the collector"
