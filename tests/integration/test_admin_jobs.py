"""Jobs (application/jobs.py) on the `jobs` table: a live job's heartbeat keeps it running
however long it takes; one whose process stopped beating is failed by any other instance."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from tests.conftest import DatabaseOpener
from tests.contract.eventstore_helpers import SQL_BACKENDS

from banking_es.application.jobs import STALE_AFTER, STOPPED_REASON, Jobs
from banking_es.db.jobs import SqlJobStore
from banking_es.db.migrate import migrate


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


async def wait_until_done(jobs: Jobs, job_id: str) -> str:
    for _ in range(200):
        job = await jobs.get(job_id)
        if job.status != "running":
            return job.status
        await asyncio.sleep(0.01)
    raise AssertionError("still running")


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_a_beating_job_stays_running_and_a_silent_one_fails_elsewhere(
    open_database: DatabaseOpener,
) -> None:
    db = await open_database()
    await migrate(db)
    clock = Clock()
    live = Jobs(SqlJobStore(db), clock, heartbeat=0.01)  # this process, alive
    dead = Jobs(SqlJobStore(db), clock, heartbeat=3600)  # "killed": it never beats again
    other = Jobs(SqlJobStore(await open_database()), clock)  # another instance, reading
    release = asyncio.Event()

    async def slow(progress: object) -> None:
        await release.wait()

    beating = await live.start("projection_rebuild", "transactions", slow)
    silent = await dead.start("projection_rebuild", "account_summaries", slow)

    clock.at += timedelta(seconds=STALE_AFTER + 1)  # longer than a stale heartbeat
    await asyncio.sleep(0.1)  # the live job beats at the new time
    assert (await other.get(beating.id)).status == "running"
    failed = await other.get(silent.id)
    assert failed.status == "failed"
    assert "no heartbeat" in (failed.error or "")
    assert [j.subject for j in await other.running("projection_rebuild")] == ["transactions"]

    release.set()
    assert await wait_until_done(other, beating.id) == "done"
    # The killed process's task ending later does not overwrite the reason it was failed with.
    await asyncio.sleep(0.05)
    assert (await other.get(silent.id)).error == failed.error
    await dead.stop()


@pytest.mark.parametrize("backend", SQL_BACKENDS)
async def test_stopping_fails_the_running_jobs_and_a_failing_work_records_its_error(
    open_database: DatabaseOpener,
) -> None:
    db = await open_database()
    await migrate(db)
    jobs = Jobs(SqlJobStore(db), Clock())

    async def broken(progress: object) -> None:
        raise RuntimeError("the store went away")

    job = await jobs.start("projection_rebuild", "transactions", broken)
    assert await wait_until_done(jobs, job.id) == "failed"
    assert (await jobs.get(job.id)).error == "RuntimeError: the store went away"

    async def forever(progress: object) -> None:
        await asyncio.Event().wait()

    running = await jobs.start("projection_rebuild", "transactions", forever)
    await jobs.stop()
    stopped = await jobs.get(running.id)
    assert (stopped.status, stopped.error) == ("failed", STOPPED_REASON)
    assert stopped.finished_at is not None
