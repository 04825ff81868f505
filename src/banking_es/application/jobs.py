"""Background jobs started over the admin API: run in this process, recorded in a `JobStore`.

The process running a job writes its progress and a heartbeat every `HEARTBEAT` seconds. A
job still `running` whose heartbeat is older than `STALE_AFTER` belongs to a process that
died: whoever looks (a read of the job, the projections' status, a new start) marks it
`failed` with the reason, so no instance ever shows it running forever. A process that stops
cleanly fails its own running jobs at once (`stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

from banking_es.application.ports import Clock, Job, JobStore

log = logging.getLogger(__name__)

#: Seconds between two progress writes (the heartbeat) of a running job.
HEARTBEAT = 2.0
#: A running job whose heartbeat is this old (seconds) is failed: several missed beats, so
#: a busy database or a paused process does not fail a live job.
STALE_AFTER = 30.0
STALE_REASON = f"the process running the job stopped (no heartbeat for {STALE_AFTER:.0f} s)"
STOPPED_REASON = "the server stopped while the job ran"

#: `progress(done, total)`, called by the work as it goes.
Progress = Callable[[int, int], None]
Work = Callable[[Progress], Awaitable[object]]


class JobNotFound(LookupError):
    pass


class Jobs:
    """Starts jobs as tasks of this process and answers their status from the store."""

    def __init__(self, store: JobStore, clock: Clock, *, heartbeat: float = HEARTBEAT) -> None:
        self.store = store
        self._clock = clock
        self._heartbeat = heartbeat
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[str, tuple[Job, asyncio.Task[None]]] = {}

    async def start(self, kind: str, subject: str, work: Work) -> Job:
        """Record a running job and start `work` on it; answer the job."""
        await self.fail_stale()
        job = Job(
            id=str(uuid.uuid4()),
            kind=kind,
            subject=subject,
            status="running",
            done=0,
            total=0,
            started_at=self._clock.now(),
            finished_at=None,
            error=None,
        )
        await self.store.create(job, self.owner)
        task = asyncio.create_task(self._run(job, work), name=f"job:{kind}:{job.id}")
        self._running[job.id] = (job, task)
        task.add_done_callback(lambda _: self._running.pop(job.id, None))
        return job

    async def get(self, job_id: str) -> Job:
        await self.fail_stale()
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        return job

    async def running(self, kind: str) -> list[Job]:
        await self.fail_stale()
        return await self.store.running(kind)

    async def fail_stale(self) -> int:
        now = self._clock.now()
        failed = await self.store.fail_stale(
            now - timedelta(seconds=STALE_AFTER), now, STALE_REASON
        )
        if failed:
            log.warning("%d job(s) failed: %s", failed, STALE_REASON)
        return failed

    async def stop(self) -> None:
        """Cancel this process's jobs; each records itself `failed` (`STOPPED_REASON`)."""
        running = list(self._running.values())
        for _, task in running:
            task.cancel()
        await asyncio.gather(*(task for _, task in running), return_exceptions=True)
        now = self._clock.now()
        for job, _ in running:
            # A task cancelled before it began never ran its own `finally` (a no-op otherwise).
            try:
                await self.store.finish(
                    job.id, replace(job, status="failed", error=STOPPED_REASON, finished_at=now)
                )
            except Exception:  # the database is away: the stale heartbeat fails it later
                log.warning("job %s: cannot record its end", job.id, exc_info=True)

    async def _run(self, job: Job, work: Work) -> None:
        counts = [0, 0]

        def progress(done: int, total: int) -> None:
            counts[:] = [done, total]

        beat = asyncio.create_task(self._beat(job.id, counts))
        # Anything but a normal end or an error of the work: cancelled, the server stopping.
        final = replace(job, status="failed", error=STOPPED_REASON)
        try:
            await work(progress)
            total = max(counts)
            final = replace(job, status="done", done=total, total=total)
        except Exception as exc:
            log.exception("job %s (%s %s) failed", job.id, job.kind, job.subject)
            final = replace(job, status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            if final.status == "failed":
                final = replace(final, done=counts[0], total=counts[1])
            try:
                await self.store.finish(job.id, replace(final, finished_at=self._clock.now()))
            except Exception:  # the database is away: the stale heartbeat fails it later
                log.warning("job %s: cannot record its end", job.id, exc_info=True)

    async def _beat(self, job_id: str, counts: list[int]) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            try:
                await self.store.beat(job_id, counts[0], counts[1], self._clock.now())
            except Exception:  # a missed beat; STALE_AFTER allows several
                log.warning("job %s: heartbeat not written", job_id, exc_info=True)
