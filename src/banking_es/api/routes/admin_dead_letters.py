"""/admin/dead-letters: list, retry and discard the consumers' dead letters (API.md).

Admins and auditors list (a page like every other list); only admins retry or discard.
401 without a token, 403 for other roles.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.admin_schemas import LetterPage
from banking_es.api.deps import CallerDep, ServicesDep
from banking_es.api.problems import ApiError
from banking_es.api.ranges import LetterId
from banking_es.api.routes.accounts import _problems
from banking_es.identity.service import require_admin as check_admin
from banking_es.identity.service import require_reader as check_reader
from banking_es.messaging.dead_letters import (
    DeadLetterClosed,
    DeadLetterNotFound,
    DeadLetters,
    RetryFailed,
)
from banking_es.projections import default_projections
from banking_es.projections.kafka_applier import KafkaProjectionApplier


async def require_admin(caller: CallerDep) -> None:
    """Only admins retry or discard dead letters."""
    check_admin(caller.identity)


async def require_reader(caller: CallerDep) -> None:
    """Admins and auditors see dead letters."""
    check_reader(caller.identity)


router = APIRouter(prefix="/admin/dead-letters", tags=["admin"])
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=64, description="next_cursor")]


def letter_page(items: list[dict[str, object]], ids: list[int], limit: int, kind: str) -> bytes:
    """A page of `limit` of `items` (one more was read: is there a next page?)."""
    more = len(items) > limit
    cursor = render.encode_cursor(kind, ids[limit - 1]) if more else None
    return render.page(items[:limit], more, cursor)


def _service(services: ServicesDep) -> DeadLetters:
    topic = f"{services.settings.kafka_topic_prefix}.events"
    applier = KafkaProjectionApplier(services.db, services.store, default_projections(), topic)
    return applier.dead_letters()


DeadLettersDep = Annotated[DeadLetters, Depends(_service)]


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.get(
    "",
    summary="Dead letters, oldest first (admin, auditor)",
    response_model=LetterPage,
    responses=_problems(400, 401, 403),
    dependencies=[Depends(require_reader)],
)
async def list_dead_letters(
    letters: DeadLettersDep,
    status: Literal["open", "retried", "discarded", "all"] = "open",
    limit: Limit = 20,
    cursor: Cursor = None,
) -> Response:
    after = render.decode_cursor("d", cursor) or 0
    found = await letters.find(
        status=None if status == "all" else status, limit=limit + 1, after=after
    )
    body = letter_page([x.as_json() for x in found], [x.id for x in found], limit, "d")
    return Response(body, media_type="application/json")


@router.post(
    "/{letter_id}/retry",
    summary="Apply the letter now (after a fix), with the letters parked behind it (admin)",
    responses=_problems(400, 401, 403, 404, 409, 422),
    dependencies=[Depends(require_admin)],
)
async def retry_dead_letter(letter_id: LetterId, letters: DeadLettersDep) -> Response:
    try:
        retried = await letters.retry(letter_id)
    except DeadLetterNotFound as exc:
        raise ApiError(404, "dead_letter_not_found", str(exc)) from None
    except DeadLetterClosed as exc:
        raise ApiError(409, "dead_letter_closed", str(exc)) from None
    except RetryFailed as exc:
        raise ApiError(422, "dead_letter_retry_failed", str(exc)) from None
    return _json({"retried": retried})


@router.delete(
    "/{letter_id}",
    summary="Discard the letter: its message is skipped for good (admin)",
    description=(
        'Answers `{"discarded": id, "still_parked": [ids]}`: the letters parked behind it'
        " (same key) are not applied; they stay open, and the key stays parked, until they are"
        " retried or discarded in turn."
    ),
    responses=_problems(400, 401, 403, 404, 409),
    dependencies=[Depends(require_admin)],
)
async def discard_dead_letter(letter_id: LetterId, letters: DeadLettersDep) -> Response:
    try:
        parked = await letters.discard(letter_id)
    except DeadLetterNotFound as exc:
        raise ApiError(404, "dead_letter_not_found", str(exc)) from None
    except DeadLetterClosed as exc:
        raise ApiError(409, "dead_letter_closed", str(exc)) from None
    return _json({"discarded": letter_id, "still_parked": parked})
