"""The `jobs` table (migrations 0014/0009): the `JobStore` of application/jobs.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from banking_es.application.ports import Job
from banking_es.db.base import Database

_COLUMNS = "id, kind, subject, status, done, total, started_at, finished_at, error"


def _job(row: Any) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        subject=row["subject"],
        status=row["status"],
        done=int(row["done"]),
        total=int(row["total"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
    )


class SqlJobStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, job: Job, owner: str) -> None:
        await self._db.execute(
            f"INSERT INTO jobs ({_COLUMNS}, owner, heartbeat_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $7)",
            job.id,
            job.kind,
            job.subject,
            job.status,
            job.done,
            job.total,
            job.started_at,
            job.finished_at,
            job.error,
            owner,
        )

    async def beat(self, job_id: str, done: int, total: int, now: datetime) -> None:
        await self._db.execute(
            "UPDATE jobs SET done = $2, total = $3, heartbeat_at = $4"
            " WHERE id = $1 AND status = 'running'",
            job_id,
            done,
            total,
            now,
        )

    async def finish(self, job_id: str, job: Job) -> None:
        # Only a running job: one already failed as stale keeps its reason.
        await self._db.execute(
            "UPDATE jobs SET status = $2, done = $3, total = $4, finished_at = $5, error = $6,"
            " heartbeat_at = $5 WHERE id = $1 AND status = 'running'",
            job_id,
            job.status,
            job.done,
            job.total,
            job.finished_at,
            job.error,
        )

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE id = $1", job_id)
        return None if row is None else _job(row)

    async def running(self, kind: str) -> list[Job]:
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM jobs WHERE status = 'running' AND kind = $1", kind
        )
        return [_job(r) for r in rows]

    async def fail_stale(self, beat_before: datetime, now: datetime, reason: str) -> int:
        # A read first: readers of jobs and projections call this, and it rarely finds any.
        stale = await self._db.fetchval(
            "SELECT count(*) FROM jobs WHERE status = 'running' AND heartbeat_at < $1",
            beat_before,
        )
        if not stale:
            return 0
        async with self._db.transaction() as conn:
            rows = await conn.fetch(
                "UPDATE jobs SET status = 'failed', finished_at = $2, error = $3"
                " WHERE status = 'running' AND heartbeat_at < $1 RETURNING id",
                beat_before,
                now,
                reason,
            )
        return len(rows)
