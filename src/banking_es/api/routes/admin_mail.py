"""/admin/mail/dead-letters: the mails given up on after MAIL_MAX_ATTEMPTS, and their retry.

Admin-only, like /admin/dead-letters. A listing shows who and why, never a mail's body.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path, Query
from starlette.responses import Response

from banking_es.api.deps import ServicesDep
from banking_es.api.problems import ApiError
from banking_es.api.routes.admin_dead_letters import require_admin
from banking_es.mail.queue import MailNotFound, MailQueue

router = APIRouter(
    prefix="/admin/mail/dead-letters", tags=["admin"], dependencies=[Depends(require_admin)]
)


def _queue(services: ServicesDep) -> MailQueue:
    if services.mail is None:
        raise ApiError(404, "mail_disabled", "this server sends no mail (no SMTP_URL)")
    return services.mail.queue


QueueDep = Annotated[MailQueue, Depends(_queue)]


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("", summary="Mails given up on, oldest first (never their bodies)")
async def list_dead_mail(
    queue: QueueDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Response:
    return _json({"items": [mail.as_json() for mail in await queue.dead(limit)], "limit": limit})


@router.post(
    "/{mail_id}/retry",
    summary="Send the mail again now, with a fresh count of attempts",
    responses={404: {}},
)
async def retry_dead_mail(
    mail_id: Annotated[int, Path(ge=1, le=2**63 - 1)], queue: QueueDep, services: ServicesDep
) -> Response:
    try:
        await queue.retry(mail_id, services.clock.now())
    except MailNotFound as exc:
        raise ApiError(404, "mail_not_found", str(exc)) from None
    return _json({"retried": mail_id})
