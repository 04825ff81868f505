"""/admin/dead-letters: list, retry and discard the consumers' dead letters (API.md).

Admin-only: every route depends on `require_admin` (401 without a token, 403 for other roles).
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from banking_es.api.deps import CallerDep, ServicesDep
from banking_es.api.problems import ApiError
from banking_es.api.ranges import LetterId, Offset
from banking_es.identity.service import require_admin as check_admin
from banking_es.messaging.dead_letters import (
    DeadLetterClosed,
    DeadLetterNotFound,
    DeadLetters,
    RetryFailed,
)
from banking_es.projections import default_projections
from banking_es.projections.kafka_applier import KafkaProjectionApplier


async def require_admin(caller: CallerDep) -> None:
    """Only admins may see or replay dead letters."""
    check_admin(caller.identity)


router = APIRouter(
    prefix="/admin/dead-letters", tags=["admin"], dependencies=[Depends(require_admin)]
)


def _service(services: ServicesDep) -> DeadLetters:
    topic = f"{services.settings.kafka_topic_prefix}.events"
    applier = KafkaProjectionApplier(services.db, services.store, default_projections(), topic)
    return applier.dead_letters()


DeadLettersDep = Annotated[DeadLetters, Depends(_service)]


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.get("", summary="Dead letters, oldest first")
async def list_dead_letters(
    letters: DeadLettersDep,
    status: Literal["open", "retried", "discarded", "all"] = "open",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Response:
    found = await letters.find(
        status=None if status == "all" else status, limit=limit, offset=offset
    )
    return _json({"items": [letter.as_json() for letter in found], "limit": limit})


@router.post(
    "/{letter_id}/retry",
    summary="Apply the letter now (after a fix), with the letters parked behind it",
    responses={404: {}, 409: {}, 422: {}},
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
    summary="Discard the letter: its message is skipped for good",
    description=(
        'Answers `{"discarded": id, "still_parked": [ids]}`: the letters parked behind it'
        " (same key) are not applied; they stay open, and the key stays parked, until they are"
        " retried or discarded in turn."
    ),
    responses={404: {}, 409: {}},
)
async def discard_dead_letter(letter_id: LetterId, letters: DeadLettersDep) -> Response:
    try:
        parked = await letters.discard(letter_id)
    except DeadLetterNotFound as exc:
        raise ApiError(404, "dead_letter_not_found", str(exc)) from None
    except DeadLetterClosed as exc:
        raise ApiError(409, "dead_letter_closed", str(exc)) from None
    return _json({"discarded": letter_id, "still_parked": parked})
