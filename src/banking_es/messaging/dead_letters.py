"""Dead letters: messages a consumer gave up on, kept in the `dead_letters` table.

    DeadLetterError
    ├── DeadLetterNotFound      no letter has this id
    ├── DeadLetterClosed        the letter was already retried or discarded
    └── RetryFailed             applying it failed again (the letter stays open)

A letter is `open` until retried (`retried`) or discarded (`discarded`). While a key has an
open letter, later messages of that key are parked behind it, so one account's events are
never applied out of order (docs/kafka.md, "Retries and dead letters").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from banking_es.db.base import Connection, Database, Row

OPEN, RETRIED, DISCARDED = "open", "retried", "discarded"


class DeadLetterError(Exception):
    """Base of dead-letter failures."""


class DeadLetterNotFound(DeadLetterError):
    """No dead letter has this id."""


class DeadLetterClosed(DeadLetterError):
    """The dead letter was already retried or discarded."""


class RetryFailed(DeadLetterError):
    """Applying the dead letter failed again; it stays open with one more attempt."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a consumer could not apply, with the error and the attempts made."""

    id: int
    consumer: str
    topic: str
    partition: int
    offset: int
    key: str
    value: str
    headers: dict[str, str]
    error: str
    attempts: int
    status: str
    created_at: datetime
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "consumer": self.consumer,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key,
            "value": self.value,
            "headers": self.headers,
            "error": self.error,
            "attempts": self.attempts,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _letter(row: Row) -> DeadLetter:
    headers = row["headers"]
    if isinstance(headers, str | bytes):
        headers = orjson.loads(headers)
    return DeadLetter(
        id=int(row["id"]),
        consumer=row["consumer"],
        topic=row["topic"],
        partition=int(row["partition"]),
        offset=int(row["offset"]),
        key=row["key"],
        value=row["value"],
        headers=dict(headers),
        error=row["error"],
        attempts=int(row["attempts"]),
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_COLUMNS = (
    'id, consumer, topic, partition, "offset", key, value, headers, error, attempts, status,'
    " created_at, updated_at"
)


async def add_letter(
    conn: Connection,
    *,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
    key: str,
    value: str,
    headers: dict[str, str],
    error: str,
    attempts: int,
) -> int:
    now = datetime.now(UTC)
    new_id = await conn.fetchval(
        'INSERT INTO dead_letters (consumer, topic, partition, "offset", key, value, headers,'
        " error, attempts, status, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', $10, $10) RETURNING id",
        consumer,
        topic,
        partition,
        offset,
        key,
        value,
        headers,
        error[:4000],
        attempts,
        now,
    )
    return int(new_id)


async def open_keys(conn: Connection, consumer: str, keys: Sequence[str]) -> dict[str, int]:
    """The keys among `keys` that have an open letter, with the first such letter's id."""
    found: dict[str, int] = {}
    for key in dict.fromkeys(keys):
        first = await conn.fetchval(
            "SELECT min(id) FROM dead_letters WHERE consumer = $1 AND key = $2 AND status = 'open'",
            consumer,
            key,
        )
        if first is not None:
            found[key] = int(first)
    return found


#: Applies one letter inside the caller's transaction (the consumer's handler).
ApplyLetter = Callable[[Connection, DeadLetter], Awaitable[None]]
#: Marks a discarded letter as skipped for the consumer (so later messages go on).
SkipLetter = Callable[[Connection, DeadLetter], Awaitable[None]]


class DeadLetters:
    """Lists, retries and discards dead letters (the CLI and the admin API use it)."""

    def __init__(
        self, db: Database, apply: ApplyLetter | None = None, skip: SkipLetter | None = None
    ) -> None:
        self._db = db
        self._apply = apply
        self._skip = skip

    async def find(
        self, *, status: str | None = OPEN, limit: int = 100, after: int = 0
    ) -> list[DeadLetter]:
        """Up to `limit` letters with an id above `after` (a page's last), oldest first."""
        if status is None:
            rows = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE id > $1 ORDER BY id LIMIT $2",
                after,
                limit,
            )
        else:
            rows = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE status = $1 AND id > $2"
                " ORDER BY id LIMIT $3",
                status,
                after,
                limit,
            )
        return [_letter(r) for r in rows]

    async def get(self, letter_id: int) -> DeadLetter:
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE id = $1", letter_id
        )
        if row is None:
            raise DeadLetterNotFound(f"no dead letter {letter_id}")
        return _letter(row)

    async def retry(self, letter_id: int) -> list[int]:
        """Apply the open letter and the open letters parked behind it (same consumer and
        key), in order; return the ids retried. On a failure the failing letter stays open
        with one more attempt and `RetryFailed` is raised (the earlier ones stay retried)."""
        if self._apply is None:
            raise RuntimeError("this DeadLetters cannot apply letters")
        first = await self.get(letter_id)
        if first.status != OPEN:
            raise DeadLetterClosed(f"dead letter {letter_id} is {first.status}")
        retried: list[int] = []
        while True:
            rows = await self._db.fetch(
                f"SELECT {_COLUMNS} FROM dead_letters WHERE consumer = $1 AND key = $2"
                " AND status = 'open' AND id >= $3 ORDER BY id",
                first.consumer,
                first.key,
                first.id,
            )
            if not rows:
                return retried
            for letter in map(_letter, rows):
                try:
                    async with self._db.transaction() as conn:
                        await self._apply(conn, letter)
                        await self._set(conn, letter.id, RETRIED)
                except Exception as exc:
                    async with self._db.transaction() as conn:
                        await conn.execute(
                            "UPDATE dead_letters SET attempts = attempts + 1, error = $2,"
                            " updated_at = $3 WHERE id = $1",
                            letter.id,
                            (str(exc) or type(exc).__name__)[:4000],
                            datetime.now(UTC),
                        )
                    raise RetryFailed(f"dead letter {letter.id} failed again: {exc}") from exc
                retried.append(letter.id)

    async def discard(self, letter_id: int) -> list[int]:
        """Give the letter up: its message is skipped for good. Answers the ids of the open
        letters parked behind it (same consumer and key): they are not applied, and the key
        stays parked until they are retried (`retry` of the first applies them in order) or
        discarded in turn."""
        letter = await self.get(letter_id)
        if letter.status != OPEN:
            raise DeadLetterClosed(f"dead letter {letter_id} is {letter.status}")
        async with self._db.transaction() as conn:
            if self._skip is not None:
                await self._skip(conn, letter)
            await self._set(conn, letter.id, DISCARDED)
            parked = await conn.fetch(
                "SELECT id FROM dead_letters WHERE consumer = $1 AND key = $2"
                " AND status = 'open' AND id > $3 ORDER BY id",
                letter.consumer,
                letter.key,
                letter.id,
            )
        return [int(row["id"]) for row in parked]

    @staticmethod
    async def _set(conn: Connection, letter_id: int, status: str) -> None:
        await conn.execute(
            "UPDATE dead_letters SET status = $2, updated_at = $3 WHERE id = $1",
            letter_id,
            status,
            datetime.now(UTC),
        )
