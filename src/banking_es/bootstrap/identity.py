"""The identity service built from `Settings` (for `build_services` and `banking-es users`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from banking_es.application.ports import Clock
from banking_es.config import Settings
from banking_es.db.base import Database
from banking_es.identity.lockout import LoginAttempts
from banking_es.identity.passwords import Passwords
from banking_es.identity.revocation import RevocationList
from banking_es.identity.secrets_store import ensure_secrets
from banking_es.identity.service import IdentityService
from banking_es.identity.tokens import TokenCodec
from banking_es.identity.users import UserRepository
from banking_es.mail.queue import MailQueue
from banking_es.mail.setup import mail_enabled


def build_identity(
    settings: Settings,
    db: Database,
    clock: Clock,
    *,
    mail: MailQueue | None = None,
    on_login: Callable[[str, str | None], None] | None = None,
) -> IdentityService:
    """`mail`: the queue the process's sender follows (default: a new one, if mail is on);
    `on_login`: told of every login attempt (metrics)."""
    settings = ensure_secrets(settings)
    assert settings.jwt_secret
    assert settings.refresh_token_secret
    users = UserRepository(db)
    attempts = LoginAttempts(
        db, settings.max_login_attempts, timedelta(seconds=settings.lockout_duration)
    )
    return IdentityService(
        users,
        attempts,
        Passwords(settings.argon2_time_cost, settings.argon2_memory_cost),
        TokenCodec(
            settings.jwt_secret,
            settings.refresh_token_secret,
            access_ttl=settings.access_token_expiry,
            refresh_ttl=settings.refresh_token_expiry,
            clock=clock,
        ),
        RevocationList(
            users, clock, grace_s=settings.access_token_expiry, also_purge=attempts.purge
        ),
        clock,
        max_login_attempts=settings.max_login_attempts,
        lockout_duration=settings.lockout_duration,
        password_reset_ttl=settings.password_reset_ttl,
        mail=mail or (MailQueue(db) if mail_enabled(settings) else None),
        on_login=on_login,
    )
