"""What the service mails its users, and the functions that queue each mail.

Each takes the `MailQueue` (None when mail is off: production without SMTP_URL and with
PASSWORD_RESET_ENABLED=false) and the caller's transaction, so a mail is queued exactly
when the change it reports commits.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from banking_es.db.base import Connection
from banking_es.mail.queue import MailQueue


class Recipient(Protocol):
    """Whom a mail goes to (an identity `User`): mail knows no more of users than this."""

    @property
    def id(self) -> str: ...
    @property
    def username(self) -> str: ...
    @property
    def email(self) -> str: ...


RESET = "password_reset"
CHANGED = "password_changed"
LOCKED = "login_locked"

RESET_SUBJECT = "Reset your banking-es password"


def reset_body(username: str, token: str, expires_at: datetime) -> str:
    """Made by the sender when it sends: the token never waits in the queue."""
    return (
        f"Hello {username},\n\n"
        "Somebody (we hope you) asked to reset your password. To choose a new one, send\n"
        "this token to POST /auth/reset-password/confirm with your new password:\n\n"
        f"    {token}\n\n"
        f"It works once, until {expires_at:%Y-%m-%d %H:%M} UTC. If you did not ask, ignore\n"
        "this mail: your password stays as it is.\n"
    )


async def queue_reset_mail(
    queue: MailQueue | None, conn: Connection, user: Recipient, at: datetime
) -> None:
    """One pending reset mail per user: asking again while one waits (a flood, or a mail
    server that is away) adds none; the waiting one gets a fresh token when it is sent."""
    if queue is None:
        return
    waiting = await conn.fetchval(
        "SELECT count(*) FROM mail_queue WHERE user_id = $1 AND kind = $2 AND status = 'pending'",
        user.id,
        RESET,
    )
    if not waiting:
        await queue.put(conn, RESET, user.id, user.email, RESET_SUBJECT, None, at)


async def queue_password_changed_mail(
    queue: MailQueue | None, conn: Connection, user: Recipient, at: datetime, *, by_reset: bool
) -> None:
    """Tells the owner, who did not do it if a thief did, while they can still act."""
    if queue is None:
        return
    how = "with a reset token" if by_reset else "by a signed-in session"
    body = (
        f"Hello {user.username},\n\n"
        f"The password of your banking-es account was changed {how} at\n"
        f"{at:%Y-%m-%d %H:%M} UTC, and your other sessions were signed out.\n\n"
        "If this was not you, reset your password now and contact support.\n"
    )
    await queue.put(conn, CHANGED, user.id, user.email, "Your password was changed", body, at)


async def queue_login_locked_mail(
    queue: MailQueue | None, conn: Connection, user: Recipient, locked_until: datetime, at: datetime
) -> None:
    """Tells the owner that wrong passwords locked their login, and until when."""
    if queue is None:
        return
    body = (
        f"Hello {user.username},\n\n"
        "Too many wrong passwords were tried for your banking-es account, so logging in\n"
        f"is locked until {locked_until:%Y-%m-%d %H:%M} UTC.\n\n"
        "If this was not you, somebody may be guessing your password: choose a strong one\n"
        "once the lock ends, or reset it now.\n"
    )
    await queue.put(conn, LOCKED, user.id, user.email, "Your login was locked", body, at)
