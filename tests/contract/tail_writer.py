"""A writer process for the tailing-reader test (run as a script, not collected by pytest).

    python tail_writer.py BACKEND LOCATION WRITER_ID EVENTS TASKS

Opens its own store on the SQLite file / PostgreSQL database (already migrated), prints
``ready``, waits for a line on stdin, then appends EVENTS events from TASKS concurrent tasks
in small appends (1-3 events) to random streams: some of the task's own, some shared with
every writer (one append in five; those conflict across processes and are retried at
the version the conflict reports). Prints
``done <appended> <conflicts>`` at the end.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid

from banking_es.db.base import Database
from banking_es.db.postgres import PostgresDatabase
from banking_es.db.sqlite import SqliteDatabase
from banking_es.eventstore.base import (
    AppendRequest,
    ConcurrencyError,
    NewEvent,
    StreamAppend,
)
from banking_es.eventstore.postgres import PostgresEventStore
from banking_es.eventstore.sqlite import SqliteEventStore

SHARED_STREAMS = [f"shared-{i}" for i in range(4)]


async def main(backend: str, location: str, writer: int, total: int, tasks: int) -> None:
    db: Database
    if backend == "sqlite":
        db = await SqliteDatabase.connect(location)
        store: SqliteEventStore | PostgresEventStore = SqliteEventStore(db)
    else:
        db = await PostgresDatabase.connect(location, min_size=1, max_size=4)
        store = PostgresEventStore(db)
    rng = random.Random(writer)
    counts = {"appended": 0, "conflicts": 0}
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def task(number: int, quota: int) -> None:
            own = [f"w{writer}-t{number}-s{i}" for i in range(3)]
            versions: dict[str, int] = {}
            left = quota
            while left > 0:
                stream = rng.choice(SHARED_STREAMS if rng.random() < 0.2 else own)
                size = min(left, rng.randint(1, 3))
                new = [
                    NewEvent(
                        str(uuid.uuid4()),
                        "TailTested",
                        {"writer": writer, "task": number, "n": quota - left + i},
                    )
                    for i in range(size)
                ]
                expected = versions.get(stream, 0)
                try:
                    await store.append(AppendRequest([StreamAppend(stream, expected, new)]))
                except ConcurrencyError as conflict:
                    versions[stream] = conflict.actual
                    counts["conflicts"] += 1
                    continue
                versions[stream] = expected + size
                left -= size
                counts["appended"] += size
                if rng.random() < 0.3:
                    await asyncio.sleep(rng.random() / 500)

        share, extra = divmod(total, tasks)
        await asyncio.gather(*(task(i, share + (i < extra)) for i in range(tasks)))
    finally:
        await store.close()
        await db.close()
    print(f"done {counts['appended']} {counts['conflicts']}", flush=True)


if __name__ == "__main__":
    name, where, writer_id, events, concurrency = sys.argv[1:6]
    asyncio.run(main(name, where, int(writer_id), int(events), int(concurrency)))
