"""/admin/mail/dead-letters: the mails given up on after MAIL_MAX_ATTEMPTS, and their retry.

As /admin/dead-letters: admins and auditors list (a page), admins retry. A listing shows
who and why, never a mail's body.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Path
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.admin_schemas import LetterPage
from banking_es.api.deps import ServicesDep
from banking_es.api.problems import ApiError
from banking_es.api.routes.accounts import _problems
from banking_es.api.routes.admin_dead_letters import (
    Cursor,
    Limit,
    letter_page,
    require_admin,
    require_reader,
)
from banking_es.mail.queue import MailNotFound, MailQueue

router = APIRouter(prefix="/admin/mail/dead-letters", tags=["admin"])


def _queue(services: ServicesDep) -> MailQueue:
    if services.mail is None:
        raise ApiError(404, "mail_disabled", "this server sends no mail (no SMTP_URL)")
    return services.mail.queue


QueueDep = Annotated[MailQueue, Depends(_queue)]


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.get(
    "",
    summary="Mails given up on, oldest first, never their bodies (admin, auditor)",
    response_model=LetterPage,
    responses=_problems(400, 401, 403, 404),
    dependencies=[Depends(require_reader)],
)
async def list_dead_mail(queue: QueueDep, limit: Limit = 20, cursor: Cursor = None) -> Response:
    found = await queue.dead(limit + 1, render.decode_cursor("m", cursor) or 0)
    body = letter_page([m.as_json() for m in found], [m.id for m in found], limit, "m")
    return Response(body, media_type="application/json")


@router.post(
    "/{mail_id}/retry",
    summary="Send the mail again now, with a fresh count of attempts (admin)",
    responses=_problems(400, 401, 403, 404),
    dependencies=[Depends(require_admin)],
)
async def retry_dead_mail(
    mail_id: Annotated[int, Path(ge=1, le=2**63 - 1)], queue: QueueDep, services: ServicesDep
) -> Response:
    try:
        await queue.retry(mail_id, services.clock.now())
    except MailNotFound as exc:
        raise ApiError(404, "mail_not_found", str(exc)) from None
    return _json({"retried": mail_id})
