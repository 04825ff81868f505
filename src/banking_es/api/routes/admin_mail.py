"""/admin/mail/dead-letters: the mails given up on after MAIL_MAX_ATTEMPTS, and their retry.

As /admin/dead-letters: admins and auditors list (a page), admins retry. A listing shows
who and why, never a mail's body.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from msgspec import Meta, Struct
from starlette.responses import Response

from banking_es.api import render
from banking_es.api.admin_schemas import LetterPage
from banking_es.api.problems import ApiError
from banking_es.api.ranges import INT8_MAX
from banking_es.api.routes.admin_dead_letters import Cursor, Limit, letter_page
from banking_es.api.routing import Call, operation
from banking_es.application.ports import Clock
from banking_es.identity.service import require_reader
from banking_es.mail.queue import MailNotFound, MailQueue


class MailQuery(Struct, frozen=True):
    limit: Limit = 20
    cursor: Cursor | None = None


class MailRoutes:
    """The dead mail routes; `queue` is None when this server sends no mail."""

    def __init__(self, queue: MailQueue | None, clock: Clock) -> None:
        self._queue = queue
        self.clock = clock

    def queue(self) -> MailQueue:
        if self._queue is None:
            raise ApiError(404, "mail_disabled", "this server sends no mail (no SMTP_URL)")
        return self._queue

    @operation(
        "GET",
        "/admin/mail/dead-letters",
        "Mails given up on, oldest first, never their bodies (admin, auditor)",
        query=MailQuery,
        response=LetterPage,
        problems=(400, 401, 403, 404),
        role=require_reader,
    )
    async def list_dead_mail(self, call: Call) -> Response:
        query: MailQuery = call.query
        found = await self.queue().dead(
            query.limit + 1, render.decode_cursor("m", query.cursor) or 0
        )
        body = letter_page([m.as_json() for m in found], [m.id for m in found], query.limit, "m")
        return Response(body, media_type="application/json")

    @operation(
        "POST",
        "/admin/mail/dead-letters/{mail_id}/retry",
        "Send the mail again now, with a fresh count of attempts (admin)",
        params={"mail_id": Annotated[int, Meta(ge=1, le=INT8_MAX)]},
        problems=(400, 401, 403, 404),
    )
    async def retry_dead_mail(self, call: Call) -> Response:
        mail_id: int = call.params["mail_id"]
        try:
            await self.queue().retry(mail_id, self.clock.now())
        except MailNotFound as exc:
            raise ApiError(404, "mail_not_found", str(exc)) from None
        return Response(orjson.dumps({"retried": mail_id}), media_type="application/json")
