"""Runs projections from the event store: exactly once, and one active runner each.

Every batch is one transaction that takes the projection's lock (PostgreSQL
`pg_try_advisory_xact_lock`, SQLite the write lock), reads the checkpoint, applies the
events after it and moves the checkpoint: a crash never applies an event twice or skips
one. The loops run in the process holding the `projections` lease; the lock also keeps a
CLI rebuild, or a lease that changed hands mid-batch, from applying an event twice.
Read-ahead, shared reads, `RowProjection.forget` and the two kinds of rebuild are
described in docs/architecture.md ("Projections").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from banking_es.application.ports import ProjectionStatus
from banking_es.db.base import Connection, Database
from banking_es.db.lease import LeaseElection
from banking_es.eventstore.base import ROW_POSITION, EventRow, EventStore
from banking_es.projections.base import Projection, RowProjection
from banking_es.projections.batches import Progress, apply_stored, replay_types
from banking_es.projections.checkpoints import (
    checkpoint_status,
    lock_key,
    read_checkpoint,
    wait_for_checkpoints,
    write_checkpoint,
)
from banking_es.tasks import cancel

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest wait between retries after an error.
MAX_BACKOFF = 5.0
#: The shortest wait after an error, whatever the poll interval.
MIN_BACKOFF = 0.05
#: How long `stop()` lets a loop finish its batch before cancelling it.
STOP_GRACE = 5.0
#: The smallest batch of a rebuild's catch-up: larger batches amortise each statement and
#: commit, and `account_summaries` loads and writes each account once per batch; about
#: 60 MB of stored rows with the read-ahead (docs/performance.md, rebuild row).
REBUILD_BATCH_SIZE = 50_000

#: Under load, how long a woken loop waits for more commits before its next batch (at most
#: `PROJECTION_POLL_INTERVAL_MS`): a batch costs some eight round trips whatever its size, so
#: one per 100 ms instead of one per commit (docs/performance.md).
SETTLE = 0.1

#: The lease that picks the one process of a server running the projection loops.
PROJECTIONS_LEASE = "projections"


@dataclass(frozen=True, slots=True)
class _Batch:
    applied: int
    #: The checkpoint after the batch.
    position: int
    #: The events after `position`, read while the batch was applied (a full batch only).
    ahead: list[EventRow] | None = None


@dataclass(slots=True)
class _SharedRead:
    """The latest batch read outside a lock, and the projections that have used it."""

    after: int
    rows: list[EventRow]
    taken: set[str]


class ProjectionRunner:
    """Keeps `projections` up to date with `store`; their rows and checkpoints live in `db`."""

    def __init__(
        self,
        db: Database,
        store: EventStore,
        projections: Sequence[Projection],
        *,
        poll_interval: float = 0.1,
        batch_size: int = 1000,
        leader: LeaseElection | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self._db = db
        self._store = store
        self._projections: dict[str, Projection] = {}
        for projection in projections:
            if projection.name in self._projections:
                raise ValueError(f"two projections are named {projection.name!r}")
            self._projections[projection.name] = projection
        self._poll = poll_interval
        self._batch_size = batch_size
        self._leader = leader
        self._shared: _SharedRead | None = None
        #: The checkpoint each projection's last batch in this runner committed. A row
        #: projection may remember what it wrote (`RowProjection.forget`): only while the
        #: checkpoint is still there has nobody else changed its rows since.
        self._committed: dict[str, int] = {}
        self._forget = {
            name: p.forget for name, p in self._projections.items() if isinstance(p, RowProjection)
        }
        # One batch at a time per projection within this process (loop, run_once, rebuild).
        self._local = {name: asyncio.Lock() for name in self._projections}
        self._wake = {name: asyncio.Event() for name in self._projections}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def leader(self) -> LeaseElection | None:
        return self._leader

    @property
    def names(self) -> list[str]:
        return list(self._projections)

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start one background loop per projection (no-op when already running)."""
        if self._tasks:
            return
        self._stopping.clear()
        self._tasks = [
            asyncio.create_task(self._loop(name), name=f"projection:{name}")
            for name in self._projections
        ]

    async def stop(self) -> None:
        """Let every loop finish its current batch, then end it."""
        if not self._tasks:
            return
        self._stopping.set()
        for wake in self._wake.values():
            wake.set()
        tasks, self._tasks = self._tasks, []
        _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
        await asyncio.gather(*(cancel(task) for task in pending), return_exceptions=True)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._leader is not None and self._leader.is_leader:
            await self._leader.release()  # a stand-by takes over at its next try

    def notify(self) -> None:
        """Wake the loops now (new events were appended)."""
        for wake in self._wake.values():
            wake.set()

    # ---- one projection ---------------------------------------------------------------

    async def run_once(self, name: str) -> int:
        """Apply every event available now to projection `name`; return how many."""
        self._get(name)
        target = await self._store.head_position()
        return await self._catch_up(name, target, 0, None, self._batch_size)

    async def rebuild(
        self,
        name: str,
        *,
        from_position: int = 0,
        types: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Rebuild projection `name`; return the number of events applied.

        Full (from 0) or from a position: the rows after it are reset and the checkpoint
        moved back to it, then the projection catches up. With `types`: the rows of those
        types after the position are deleted and those events replayed up to the current
        checkpoint, which does not move. `progress(done, total)` is called after each batch
        (done and total count positions, i.e. events). Rebuilds read batches of at least
        `REBUILD_BATCH_SIZE` events.
        """
        projection = self._get(name)
        start = max(0, from_position)
        rebuild_size = max(self._batch_size, REBUILD_BATCH_SIZE)
        if types is not None:
            selected = frozenset(types)
            if not selected:
                raise ValueError("types must name at least one event type")
            return await self._locked(
                name,
                lambda conn: replay_types(
                    conn, self._store, projection, start, selected, progress, rebuild_size
                ),
            )

        async def reset(conn: Connection) -> int:
            # Never move the checkpoint forward: that would skip events.
            position = min(start, await read_checkpoint(conn, name))
            await projection.reset(conn, position, None)
            await write_checkpoint(conn, name, position)
            return position

        position = await self._locked(name, reset)
        target = await self._store.head_position()
        if progress is not None:
            progress(0, max(0, target - position))
        return await self._catch_up(name, target, position, progress, rebuild_size)

    # ---- several projections ----------------------------------------------------------

    async def status(self) -> list[ProjectionStatus]:
        return await checkpoint_status(self._db, self._store, list(self._projections))

    async def wait_for(self, position: int, timeout: float) -> bool:
        """Wait until every projection's checkpoint is at `position` or beyond."""
        names = list(self._projections)
        return await wait_for_checkpoints(self._db, names, position, timeout, self.notify)

    # ---- internals --------------------------------------------------------------------

    def _get(self, name: str) -> Projection:
        try:
            return self._projections[name]
        except KeyError:
            raise KeyError(f"unknown projection {name!r}") from None

    async def _try_lock(self, conn: Connection, name: str) -> bool:
        if self._db.dialect != "postgres":
            return True  # the SQLite transaction holds the database's write lock
        return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock_key(name)))

    async def _step(self, name: str, size: int, previous: _Batch | None = None) -> _Batch | None:
        """One batch; None when another process holds the projection's lock.

        While a full batch is applied, the next one is read from the store (on another
        connection), so reading and writing overlap during a catch-up; it is used by the
        next step only if the checkpoint is still where this batch left it.
        """
        projection = self._projections[name]
        async with self._local[name]:
            if previous is not None and previous.ahead is not None:
                seen, rows = previous.position, previous.ahead
            else:
                seen = await read_checkpoint(self._db, name)
                rows = await self._read_shared(name, seen, size)
            if not rows:
                return _Batch(0, seen)
            prefetch: asyncio.Task[list[EventRow]] | None = None
            try:
                async with self._db.transaction() as conn:
                    if not await self._try_lock(conn, name):
                        return None
                    checkpoint = await read_checkpoint(conn, name)
                    if self._committed.get(name) != checkpoint and name in self._forget:
                        self._forget[name]()  # moved by someone else: its rows may have too
                    self._committed[name] = checkpoint
                    if checkpoint != seen:
                        rows = await self._store.read_rows(checkpoint, size)
                        if not rows:
                            return _Batch(0, checkpoint)
                    position = rows[-1][ROW_POSITION]
                    if len(rows) >= size:
                        prefetch = asyncio.create_task(self._store.read_rows(position, size))
                    del self._committed[name]  # until the commit: what it remembers is ahead
                    await apply_stored(projection, conn, rows)
                    await write_checkpoint(conn, name, position)
                self._committed[name] = position
            except BaseException:
                if prefetch is not None:
                    prefetch.cancel()
                    with contextlib.suppress(BaseException):
                        await prefetch
                raise
            ahead = None
            if prefetch is not None:
                try:
                    ahead = await prefetch
                except Exception:  # the next step reads again
                    log.debug("projection %s: read-ahead failed", name, exc_info=True)
            return _Batch(len(rows), position, ahead)

    async def _read_shared(self, name: str, after: int, size: int) -> list[EventRow]:
        """The events after `after`, or those another projection read from the same position
        and this one has not used yet: the loops run side by side (one wake-up, one settle), so
        their checkpoints are usually equal, and one read serves all. However long ago it was
        made, such a read is still a valid batch: every event up to the head it saw, no gap."""
        shared = self._shared
        if (
            shared is not None
            and shared.after == after
            and name not in shared.taken
            and len(shared.rows) <= size
        ):
            shared.taken.add(name)
            if len(shared.taken) == len(self._projections):
                self._shared = None
            return shared.rows
        rows = await self._store.read_rows(after, size)
        if rows and len(self._projections) > 1:
            self._shared = _SharedRead(after, rows, {name})
        return rows

    async def _catch_up(
        self, name: str, target: int, start: int, progress: Progress | None, size: int
    ) -> int:
        """Batches until the checkpoint reaches `target` or nothing is left to apply."""
        applied = 0
        delay = MIN_BACKOFF
        batch: _Batch | None = None
        while True:
            batch = await self._step(name, size, batch)
            if batch is None:  # another process is applying this projection's batches
                if await read_checkpoint(self._db, name) >= target:
                    return applied
                await asyncio.sleep(delay)
                delay = min(delay * 2, max(self._poll, MIN_BACKOFF))
                continue
            delay = MIN_BACKOFF
            applied += batch.applied
            if batch.applied and progress is not None:
                done = batch.position - start
                progress(done, max(done, target - start))
            if batch.applied == 0 or batch.position >= target:
                return applied

    async def _locked(self, name: str, work: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `work` in one transaction holding the projection's lock, waiting for it."""
        delay = MIN_BACKOFF / 5
        async with self._local[name]:
            while True:
                async with self._db.transaction() as conn:
                    if await self._try_lock(conn, name):
                        return await work(conn)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    async def _loop(self, name: str) -> None:
        wake = self._wake[name]
        failures = 0
        batch: _Batch | None = None
        while not self._stopping.is_set():
            if self._leader is not None and not await self._leader.ensure():
                batch = None  # a read-ahead is only good for the batch right after it
                await self._sleep(self._leader.standby_poll)
                continue
            wake.clear()
            try:
                batch = await self._step(name, self._batch_size, batch)
            except Exception:
                batch = None
                failures += 1
                delay = min(MAX_BACKOFF, max(self._poll, MIN_BACKOFF) * 2 ** min(failures - 1, 8))
                log.exception(
                    "projection %s: batch failed (attempt %d); retrying in %.2f s",
                    name,
                    failures,
                    delay,
                )
                await self._sleep(delay)
                continue
            if failures:
                log.info("projection %s: recovered after %d failed attempts", name, failures)
                failures = 0
            if batch is None:
                # Another process is the active runner; look again later (a notify does
                # not help: that process tails the store itself).
                await self._sleep(self._poll)
            elif batch.applied >= self._batch_size:
                await asyncio.sleep(0)  # more is waiting; let others run, then go on
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):
                        await wake.wait()
                if batch.applied and wake.is_set():
                    # Under steady load (the last batch had events and a commit woke us): let a
                    # few more commits land so the next batch, and its transaction, is bigger.
                    await self._sleep(min(SETTLE, self._poll))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, ending early only when the runner stops."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
