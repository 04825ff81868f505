"""/admin/dead-letters: list, retry and discard the consumers' dead letters (API.md).

Admins and auditors list (a page like every other list); only admins retry or discard.
401 without a token, 403 for other roles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

import orjson
from msgspec import Meta, Struct
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.admin_schemas import LetterPage
from banking_es.api.problems import ApiError
from banking_es.api.ranges import LetterId
from banking_es.api.routing import Call, operation
from banking_es.identity.service import require_reader
from banking_es.messaging.dead_letters import (
    DeadLetterClosed,
    DeadLetterNotFound,
    DeadLetters,
    RetryFailed,
)

Limit = Annotated[int, Meta(ge=1, le=100)]
Cursor = Annotated[str, Meta(max_length=64, description="next_cursor")]


class LettersQuery(Struct, frozen=True):
    status: Literal["open", "retried", "discarded", "all"] = "open"
    limit: Limit = 20
    cursor: Cursor | None = None


def letter_page(items: list[dict[str, object]], ids: list[int], limit: int, kind: str) -> bytes:
    """A page of `limit` of `items` (one more was read: is there a next page?)."""
    more = len(items) > limit
    cursor = render.encode_cursor(kind, ids[limit - 1]) if more else None
    return render.page(items[:limit], more, cursor)


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


LETTER_ID = {"letter_id": LetterId}


class DeadLetterRoutes:
    """The dead-letter routes (admins; auditors list); `letters` gives the dead letters."""

    def __init__(self, letters: Callable[[], DeadLetters]) -> None:
        self.letters = letters

    @operation(
        "GET",
        "/admin/dead-letters",
        "Dead letters, oldest first (admin, auditor)",
        query=LettersQuery,
        response=LetterPage,
        problems=(400, 401, 403),
        role=require_reader,
    )
    async def list_dead_letters(self, call: Call) -> Response:
        query: LettersQuery = call.query
        after = render.decode_cursor("d", query.cursor) or 0
        status = None if query.status == "all" else query.status
        found = await self.letters().find(status=status, limit=query.limit + 1, after=after)
        body = letter_page([x.as_json() for x in found], [x.id for x in found], query.limit, "d")
        return Response(body, media_type="application/json")

    @operation(
        "POST",
        "/admin/dead-letters/{letter_id}/retry",
        "Apply the letter now (after a fix), with the letters parked behind it (admin)",
        params=LETTER_ID,
        problems=(400, 401, 403, 404, 409, 422),
    )
    async def retry_dead_letter(self, call: Call) -> Response:
        letter_id: int = call.params["letter_id"]
        try:
            retried = await self.letters().retry(letter_id)
        except DeadLetterNotFound as exc:
            raise ApiError(404, "dead_letter_not_found", str(exc)) from None
        except DeadLetterClosed as exc:
            raise ApiError(409, "dead_letter_closed", str(exc)) from None
        except RetryFailed as exc:
            raise ApiError(422, "dead_letter_retry_failed", str(exc)) from None
        return _json({"retried": retried})

    @operation(
        "DELETE",
        "/admin/dead-letters/{letter_id}",
        "Discard the letter: its message is skipped for good (admin)",
        description=(
            'Answers `{"discarded": id, "still_parked": [ids]}`: the letters parked behind it'
            " (same key) are not applied; they stay open, and the key stays parked, until they"
            " are retried or discarded in turn."
        ),
        params=LETTER_ID,
        problems=(400, 401, 403, 404, 409),
    )
    async def discard_dead_letter(self, call: Call) -> Response:
        letter_id: int = call.params["letter_id"]
        try:
            parked = await self.letters().discard(letter_id)
        except DeadLetterNotFound as exc:
            raise ApiError(404, "dead_letter_not_found", str(exc)) from None
        except DeadLetterClosed as exc:
            raise ApiError(409, "dead_letter_closed", str(exc)) from None
        return _json({"discarded": letter_id, "still_parked": parked})
