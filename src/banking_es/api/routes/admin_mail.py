"""/admin/mail/dead-letters: the mails given up on after MAIL_MAX_ATTEMPTS, and their retry.

Admin-only, like every /admin route. A listing shows who and why, never a mail's body.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from msgspec import Meta, Struct
from starlette.responses import Response

from banking_es.api.problems import ApiError
from banking_es.api.ranges import INT8_MAX
from banking_es.api.routing import Call, operation
from banking_es.application.ports import Clock
from banking_es.mail.queue import MailNotFound, MailQueue


class MailQuery(Struct, frozen=True):
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100


def _json(body: object) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


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
        "Mails given up on, oldest first (never their bodies)",
        query=MailQuery,
    )
    async def list_dead_mail(self, call: Call) -> Response:
        limit = call.query.limit
        mails = await self.queue().dead(limit)
        return _json({"items": [mail.as_json() for mail in mails], "limit": limit})

    @operation(
        "POST",
        "/admin/mail/dead-letters/{mail_id}/retry",
        "Send the mail again now, with a fresh count of attempts",
        params={"mail_id": Annotated[int, Meta(ge=1, le=INT8_MAX)]},
        problems=(404,),
    )
    async def retry_dead_mail(self, call: Call) -> Response:
        mail_id: int = call.params["mail_id"]
        try:
            await self.queue().retry(mail_id, self.clock.now())
        except MailNotFound as exc:
            raise ApiError(404, "mail_not_found", str(exc)) from None
        return _json({"retried": mail_id})
