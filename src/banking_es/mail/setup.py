"""Which mail transport the settings ask for, and the production start-up check."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage

from banking_es.application.ports import Clock
from banking_es.config import Environment, Settings, SettingsError
from banking_es.db.base import Database
from banking_es.db.lease import LeaseElection
from banking_es.mail.queue import MailQueue
from banking_es.mail.sender import (
    MAIL_LEASE,
    IssueReset,
    LogTransport,
    MailSender,
    SmtpTransport,
    Transport,
)


def mail_enabled(settings: Settings) -> bool:
    """SMTP_URL set, or not production (the log stands in for the mail server there)."""
    return bool(settings.smtp_url) or settings.banking_env is not Environment.PRODUCTION


def check_mail_settings(settings: Settings) -> None:
    """`SettingsError` (one line) when production could not deliver reset mail."""
    production = settings.banking_env is Environment.PRODUCTION
    if production and not settings.smtp_url and settings.password_reset_enabled:
        raise SettingsError(
            "SMTP_URL is not set: production needs a mail server to send password-reset"
            " mail (smtp:// or smtps://user:pass@host:port), or PASSWORD_RESET_ENABLED=false"
        )


def transport_for(settings: Settings) -> Transport:
    return SmtpTransport(settings.smtp_url) if settings.smtp_url else LogTransport()


def build_sender(
    settings: Settings,
    db: Database,
    queue: MailQueue,
    clock: Clock,
    issue_reset: IssueReset,
    *,
    on_sent: Callable[[EmailMessage], None] | None = None,
) -> MailSender:
    return MailSender(
        queue,
        transport_for(settings),
        clock,
        mail_from=settings.mail_from,
        issue_reset=issue_reset,
        max_attempts=settings.mail_max_attempts,
        retry_base=settings.mail_retry_base_s,
        leader=LeaseElection(db, MAIL_LEASE, clock, ttl=settings.kafka_relay_lease_ttl),
        on_sent=on_sent,
    )
