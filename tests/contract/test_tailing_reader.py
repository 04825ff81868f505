"""Guarantee 3: a reader following `position > checkpoint` never misses an event.

Several writer processes (tests/contract/tail_writer.py, each with its own store and
connections) append concurrently while a reader in this process tails `read_all`. On
PostgreSQL a naive tail skips events whose transaction commits after a later position is
visible; the store must prevent that. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.contract.eventstore_helpers import SQL_BACKENDS, everything

from banking_es.eventstore.base import EventStore, RecordedEvent

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("backend", SQL_BACKENDS)]

WRITER = Path(__file__).with_name("tail_writer.py")
WRITERS = 4
EVENTS_PER_WRITER = 300
TASKS_PER_WRITER = 12


async def _start_writer(backend: str, location: str, number: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WRITER),
        backend,
        location,
        str(number),
        str(EVENTS_PER_WRITER),
        str(TASKS_PER_WRITER),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    if line.strip() != b"ready":
        _, err = await process.communicate()
        raise AssertionError(f"writer {number} did not start: {line!r} {err.decode()}")
    return process


async def _run_writer(process: asyncio.subprocess.Process) -> tuple[int, int]:
    out, err = await process.communicate(b"go\n")
    assert process.returncode == 0, err.decode()
    word, appended, conflicts = out.decode().split()
    assert word == "done"
    return int(appended), int(conflicts)


async def test_tailing_reader_misses_nothing_with_concurrent_writer_processes(
    backend: str, store_location: str, open_event_store: Any
) -> None:
    store: EventStore = await open_event_store()  # migrates the database for the writers
    processes = await asyncio.gather(
        *(_start_writer(backend, store_location, n) for n in range(WRITERS))
    )
    writers = asyncio.gather(*(_run_writer(p) for p in processes))

    seen: list[RecordedEvent] = []
    checkpoint = 0
    reads_while_writing = 0
    try:
        async with asyncio.timeout(60):
            while True:
                finished = writers.done()  # decided before the read: a read after it is final
                page = await store.read_all(checkpoint, 500)
                if page:
                    positions = [e.position for e in page]
                    assert positions[0] > checkpoint
                    assert positions == sorted(set(positions)), "not strictly increasing"
                    seen.extend(page)
                    checkpoint = positions[-1]
                    reads_while_writing += not finished
                elif finished:
                    break
                else:
                    await asyncio.sleep(0.001)
    finally:
        results = await writers

    total = WRITERS * EVENTS_PER_WRITER
    assert sum(appended for appended, _ in results) == total
    stored = await everything(store)
    missed = sorted({e.position for e in stored} - {e.position for e in seen})
    assert missed == [], f"the reader missed {len(missed)} of {len(stored)} events"
    assert [e.position for e in seen] == [e.position for e in stored]  # and saw none twice
    assert [e.event_id for e in seen] == [e.event_id for e in stored]
    assert len({e.event_id for e in seen}) == len(seen) == total
    assert await store.head_position() == checkpoint == total
    assert [e.position for e in stored] == list(range(1, total + 1))
    # the test really tailed concurrent writers: many reads during the run, writers interleaved
    assert reads_while_writing >= 10, reads_while_writing
    writer_order = [e.data["writer"] for e in stored]
    switches = sum(a != b for a, b in itertools.pairwise(writer_order))
    assert switches >= 10, switches
