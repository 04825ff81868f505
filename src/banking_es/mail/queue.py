"""The mail queue (migration `mail_queue`): rows written in the caller's transaction, sent
and deleted by the sender, retried with backoff, dead after `max_attempts` until an admin
retries them. Nothing secret is stored: a reset mail's token is made when it is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from banking_es.db.base import Connection, Database, Row

_COLUMNS = (
    "id, kind, user_id, recipient, subject, body, status, attempts, next_attempt_at,"
    " last_error, created_at"
)


class MailNotFound(LookupError):
    """No dead mail with this id."""


@dataclass(frozen=True, slots=True)
class QueuedMail:
    """One mail still to send (`pending`) or given up on (`dead`)."""

    id: int
    kind: str
    user_id: str
    recipient: str
    subject: str
    body: str | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime

    def as_json(self) -> dict[str, Any]:
        """For admins: who, what and why it failed; never the body."""
        return {
            "id": self.id,
            "kind": self.kind,
            "user_id": self.user_id,
            "recipient": self.recipient,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at.isoformat(),
            "created_at": self.created_at.isoformat(),
        }


def _mail(row: Row) -> QueuedMail:
    return QueuedMail(
        int(row["id"]),
        row["kind"],
        row["user_id"],
        row["recipient"],
        row["subject"],
        row["body"],
        row["status"],
        int(row["attempts"]),
        row["next_attempt_at"],
        row["last_error"],
        row["created_at"],
    )


class MailQueue:
    """Reads and writes `mail_queue`; `on_queued` wakes the sender after a commit."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.on_queued: Callable[[], None] = lambda: None

    async def put(
        self,
        conn: Connection,
        kind: str,
        user_id: str,
        recipient: str,
        subject: str,
        body: str | None,
        at: datetime,
    ) -> None:
        """Queue a mail in the caller's transaction (sent once it commits)."""
        await conn.execute(
            "INSERT INTO mail_queue (kind, user_id, recipient, subject, body, status, attempts,"
            " next_attempt_at, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6)",
            kind,
            user_id,
            recipient,
            subject,
            body,
            at,
        )

    async def due(self, now: datetime, limit: int) -> list[QueuedMail]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM mail_queue WHERE status = 'pending'"
            " AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2",
            now,
            limit,
        )
        return [_mail(r) for r in rows]

    async def sent(self, mail_id: int) -> None:
        """Delivered: the row goes, body and all."""
        await self.db.execute("DELETE FROM mail_queue WHERE id = $1", mail_id)

    async def failed(
        self, mail_id: int, attempts: int, error: str, retry_at: datetime | None, now: datetime
    ) -> None:
        """Count a failed attempt: retry at `retry_at`, or dead when it is None."""
        await self.db.execute(
            "UPDATE mail_queue SET attempts = $2, last_error = $3, status = $4,"
            " next_attempt_at = $5, updated_at = $6 WHERE id = $1",
            mail_id,
            attempts,
            error[:500],
            "dead" if retry_at is None else "pending",
            retry_at or now,
            now,
        )

    async def dead(self, limit: int = 100, after: int = 0) -> list[QueuedMail]:
        """Up to `limit` dead mails with an id above `after` (a page's last), oldest first."""
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM mail_queue WHERE status = 'dead' AND id > $1"
            " ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_mail(r) for r in rows]

    async def pending_count(self) -> int:
        return int(
            await self.db.fetchval("SELECT count(*) FROM mail_queue WHERE status = 'pending'")
        )

    async def retry(self, mail_id: int, now: datetime) -> None:
        """Send a dead mail again now, with a fresh count of attempts."""
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE mail_queue SET status = 'pending', attempts = 0, next_attempt_at = $2,"
                " updated_at = $2 WHERE id = $1 AND status = 'dead' RETURNING id",
                mail_id,
                now,
            )
        if row is None:
            raise MailNotFound(f"no dead mail {mail_id}")
        self.on_queued()
