"""The mail sender: one process at a time (the lease `mail-sender`) sends the due mails of
the queue, deletes each once the server took it, and retries a failure with exponential
backoff until `max_attempts`, after which the mail is dead until an admin retries it.

Delivery is at least once: a crash between the server's acceptance and the row's deletion
sends that mail again (for a reset, with a second token; both work once, until expiry).
A reset mail's token is made here, just before sending, and only its hash is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

from banking_es.application.ports import Clock
from banking_es.db.lease import LeaseElection
from banking_es.mail.messages import RESET, reset_body
from banking_es.mail.queue import MailQueue, QueuedMail
from banking_es.tasks import cancel

MAIL_LEASE = "mail-sender"
#: How long `stop` lets the mail in flight finish before cancelling the loop.
STOP_GRACE = 5.0

log = logging.getLogger(__name__)

#: Makes a reset token for a user: (username, token, expiry), or None if the user is gone.
IssueReset = Callable[[str], Awaitable[tuple[str, str, datetime] | None]]


class Transport(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpTransport:
    """SMTP_URL: `smtp://` (STARTTLS when offered) or `smtps://` (TLS), user:pass optional."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (465 if self.tls else 25)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout

    async def send(self, message: EmailMessage) -> None:
        import aiosmtplib

        await aiosmtplib.send(
            message,
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.tls,
            timeout=self.timeout,
        )


class LogTransport:
    """Development without SMTP_URL: the mail, reset token included, goes to the log.
    Never used in production (start-up refuses, or mail is off)."""

    async def send(self, message: EmailMessage) -> None:
        log.info("mail to %s: %s\n%s", message["To"], message["Subject"], message.get_content())


class MailSender:
    """Sends the queue's due mails while this process holds the lease."""

    def __init__(
        self,
        queue: MailQueue,
        transport: Transport,
        clock: Clock,
        *,
        mail_from: str,
        issue_reset: IssueReset,
        max_attempts: int = 8,
        retry_base: float = 30.0,
        retry_max: float = 3600.0,
        poll_interval: float = 1.0,
        batch_size: int = 20,
        leader: LeaseElection | None = None,
        on_sent: Callable[[EmailMessage], None] | None = None,
    ) -> None:
        self.queue = queue
        self.transport = transport
        self._clock = clock
        self._from = mail_from
        self._issue_reset = issue_reset
        self._max_attempts = max_attempts
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._poll = poll_interval
        self._batch = batch_size
        self._leader = leader
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # aiosmtplib waits with `asyncio.wait_for`, which can lose a cancellation (see
        # `tasks.cancel`): the loop also ends on this flag.
        self._stopping = False
        #: Told of each mail the server accepted (metrics; tests read the mail here).
        self.on_sent: Callable[[EmailMessage], None] = on_sent or (lambda message: None)
        queue.on_queued = self.notify

    def notify(self) -> None:
        self._wake.set()

    def backoff(self, attempts: int) -> float:
        return float(min(self._retry_base * 2 ** (attempts - 1), self._retry_max))

    async def run_once(self) -> int:
        """Send what is due; the number of mails tried."""
        if self._leader is not None and not await self._leader.ensure():
            return 0
        due = await self.queue.due(self._clock.now(), self._batch)
        for mail in due:
            if self._stopping:
                return 0
            await self._deliver(mail)
        return len(due)

    async def _deliver(self, mail: QueuedMail) -> None:
        try:
            message = await self._compose(mail)
            if message is not None:
                await self.transport.send(message)
        except Exception as exc:  # the server refused or is away: retry later
            attempts = mail.attempts + 1
            now = self._clock.now()
            retry_at = None
            if attempts < self._max_attempts:
                retry_at = now + timedelta(seconds=self.backoff(attempts))
            error = f"{type(exc).__name__}: {exc}"
            await self.queue.failed(mail.id, attempts, error, retry_at, now)
            state = "dead" if retry_at is None else f"retry in {self.backoff(attempts):.0f}s"
            log.warning(
                "mail %d (%s) failed, attempt %d, %s: %s",
                mail.id,
                mail.kind,
                attempts,
                state,
                error,
            )
            return
        await self.queue.sent(mail.id)
        if message is not None:
            self.on_sent(message)

    async def _compose(self, mail: QueuedMail) -> EmailMessage | None:
        body = mail.body
        if mail.kind == RESET:
            issued = await self._issue_reset(mail.user_id)
            if issued is None:
                return None  # the user is gone: nothing to send
            username, token, expires = issued
            body = reset_body(username, token, expires)
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = mail.recipient
        message["Subject"] = mail.subject
        message.set_content(body or "")
        return message

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                while await self.run_once() >= self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep trying
                log.warning("mail sender failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="mail-sender")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # The loop ends after the mail in flight: cancelled between the server's acceptance
            # and the row's deletion, the mail would go out again.
            await asyncio.wait({self._task}, timeout=STOP_GRACE)
        await cancel(self._task)
        self._task = None
        if self._leader is not None:
            await self._leader.release()
