"""The identity use cases: register, log in, refresh, log out, passwords, roles.

A *login* is one sign-in. Its tokens carry its id (`sid`); ending it (logout, password
change or reset, role change, refresh-token reuse) writes a revocation row in the same
transaction, which every process follows (`RevocationList`).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from banking_es.application.errors import NotFound
from banking_es.application.ports import Clock
from banking_es.db.base import UniqueViolation
from banking_es.identity.errors import (
    AccountLocked,
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    Unauthenticated,
    UserExists,
)
from banking_es.identity.passwords import Passwords
from banking_es.identity.revocation import RevocationList
from banking_es.identity.tokens import ACCESS, REFRESH, TokenCodec, TokenPair
from banking_es.identity.users import ROLES, Login, User, UserRepository, encode_roles
from banking_es.mail.messages import queue_password_changed_mail, queue_reset_mail
from banking_es.mail.queue import MailQueue

NOTIFICATIONS_TOPIC = "notifications"
_USERNAME = re.compile(r"^[A-Za-z0-9_.-]{3,64}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    user_id: str
    login_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def reads_all(self) -> bool:
        return bool(self.roles & {"admin", "auditor"})

    @property
    def may_write(self) -> bool:
        return bool(self.roles & {"admin", "customer"})


def check_password(password: str, field: str = "password") -> None:
    if not 8 <= len(password) <= 128:
        raise InvalidInput(field, "must be 8-128 characters")


def check_roles(roles: list[str]) -> tuple[str, ...]:
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise InvalidInput("roles", f"must be a non-empty list of {', '.join(ROLES)}")
    return tuple(encode_roles(roles).split(","))


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class IdentityService:
    """Users, sessions and roles."""

    def __init__(
        self,
        users: UserRepository,
        passwords: Passwords,
        tokens: TokenCodec,
        revocations: RevocationList,
        clock: Clock,
        *,
        max_login_attempts: int,
        lockout_duration: int,
        password_reset_ttl: int,
        mail: MailQueue | None = None,
    ) -> None:
        self.users = users
        #: None when mail is off (production without SMTP_URL, resets disabled).
        self.mail = mail
        #: Told of every login attempt: (outcome success|failure|locked, user id or None).
        self.on_login: Callable[[str, str | None], None] = lambda outcome, user_id: None
        self.passwords = passwords
        self.tokens = tokens
        self.revocations = revocations
        self.clock = clock
        self.max_login_attempts = max_login_attempts
        self.lockout_duration = lockout_duration
        self.password_reset_ttl = password_reset_ttl

    # ---- users -----------------------------------------------------------------------------

    async def register(
        self, username: str, email: str, password: str, roles: tuple[str, ...] = ("customer",)
    ) -> User:
        if not _USERNAME.match(username):
            raise InvalidInput("username", "must be 3-64 characters of A-Z a-z 0-9 _ . -")
        if len(email) > 254 or not _EMAIL.match(email):
            raise InvalidInput("email", "must be a valid email address")
        check_password(password)
        now = self.clock.now()
        user = User(
            str(uuid.uuid4()),
            username,
            email,
            await self.passwords.hash(password),
            roles,
            0,
            None,
            now,
        )
        try:
            async with self.users.db.transaction() as conn:
                await self.users.insert(conn, user)
        except UniqueViolation:
            raise UserExists("a user with this username or email exists") from None
        return user

    async def get_user(self, user_id: str) -> User:
        user = await self.users.by_id(user_id)
        if user is None:
            raise Unauthenticated("the user no longer exists")
        return user

    async def set_roles(self, user_id: str, roles: list[str], changed_by: str) -> User:
        """Change a user's roles, log who did it, and end the user's logins."""
        new = check_roles(roles)
        now = self.clock.now()
        async with self.users.db.transaction() as conn:
            user = await self.users.by_id(user_id, conn)
            if user is None:
                raise NotFound(f"user {user_id} not found")
            await self.users.set_roles(
                conn, user_id, encode_roles(user.roles), encode_roles(new), changed_by, now
            )
            ended = await self.users.revoke_logins(conn, now, "role change", user_id=user_id)
        self.revocations.add(ended)
        return User(
            user.id,
            user.username,
            user.email,
            user.password_hash,
            new,
            user.failed_logins,
            user.locked_until,
            user.created_at,
        )

    # ---- sessions --------------------------------------------------------------------------

    async def login(self, name: str, password: str) -> TokenPair:
        user = await self.users.by_login_name(name)
        now = self.clock.now()
        if user is not None and user.locked_until is not None and user.locked_until > now:
            await self.passwords.verify(None, password)  # same work as any other answer
            self.on_login("locked", user.id)
            raise AccountLocked(math.ceil((user.locked_until - now).total_seconds()))
        if not await self.passwords.verify(user.password_hash if user else None, password):
            if user is not None:  # the attempt that locks still answers 401; later ones 429
                await self.users.record_failure(
                    user.id,
                    self.max_login_attempts,
                    now + timedelta(seconds=self.lockout_duration),
                    now,
                )
            self.on_login("failure", user.id if user else None)
            raise InvalidCredentials("invalid username or password")
        assert user is not None
        rehash = (
            await self.passwords.hash(password)
            if self.passwords.needs_rehash(user.password_hash)
            else None
        )
        login_id = str(uuid.uuid4())
        pair = self.tokens.issue(user.id, login_id, user.roles)
        async with self.users.db.transaction() as conn:
            await self.users.clear_failures(conn, user.id)
            if rehash is not None:
                await self.users.set_password(conn, user.id, rehash, now)
            await self.users.insert_login(
                conn,
                Login(login_id, user.id, pair.refresh_jti, self.tokens.refresh_expiry(), None),
                now,
            )
        self.on_login("success", user.id)
        return pair

    def authenticate(self, token: str) -> Principal:
        """The caller behind an access token; no database round trip."""
        claims = self.tokens.verify(token, ACCESS)
        if self.revocations.is_revoked(claims.login_id):
            raise Unauthenticated("the token has been revoked")
        return Principal(claims.user_id, claims.login_id, frozenset(claims.roles))

    async def refresh(self, refresh_token: str) -> TokenPair:
        """A new pair for a live refresh token; a dead one ends its whole login."""
        claims = self.tokens.verify(refresh_token, REFRESH)
        user = await self.users.by_id(claims.user_id)
        if user is None:
            raise Unauthenticated("the user no longer exists")
        now = self.clock.now()
        pair = self.tokens.issue(user.id, claims.login_id, user.roles)
        async with self.users.db.transaction() as conn:
            rotated = await self.users.rotate_refresh(
                conn,
                claims.login_id,
                claims.jti,
                pair.refresh_jti,
                self.tokens.refresh_expiry(),
                now,
            )
            ended: list[str] = []
            if not rotated:
                ended = await self.users.revoke_logins(
                    conn, now, "refresh token reuse", login_id=claims.login_id
                )
        if not rotated:
            self.revocations.add(ended or [claims.login_id])
            raise Unauthenticated("the refresh token is no longer valid; log in again")
        return pair

    async def logout(self, principal: Principal, refresh_token: str | None = None) -> None:
        if refresh_token is not None:
            claims = self.tokens.verify(refresh_token, REFRESH)
            if claims.login_id != principal.login_id:
                raise Unauthenticated("the refresh token belongs to another login")
        await self._end(principal.login_id, "logout")

    async def _end(self, login_id: str, reason: str) -> None:
        async with self.users.db.transaction() as conn:
            ended = await self.users.revoke_logins(
                conn, self.clock.now(), reason, login_id=login_id
            )
        self.revocations.add(ended or [login_id])

    # ---- passwords -------------------------------------------------------------------------

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        check_password(new, "new_password")
        user = await self.get_user(principal.user_id)
        if not await self.passwords.verify(user.password_hash, current):
            raise InvalidCredentials("the current password is wrong")
        hashed = await self.passwords.hash(new)
        now = self.clock.now()
        async with self.users.db.transaction() as conn:
            await self.users.set_password(conn, user.id, hashed, now)
            ended = await self.users.revoke_logins(
                conn, now, "password change", user_id=user.id, keep=principal.login_id
            )
            await queue_password_changed_mail(self.mail, conn, user, now, by_reset=False)
        self.revocations.add(ended)
        self._mail_queued()

    async def request_reset(self, email: str) -> None:
        """Queue a reset mail for the user with this email, if there is one.

        Its token is made only when the mail is sent (`issue_reset_token`): none waits in
        the queue. The notification on the outbox says that a reset was asked for, no more.
        """
        user = await self.users.by_email(email.strip())
        if user is None:
            return
        now = self.clock.now()
        async with self.users.db.transaction() as conn:
            await queue_reset_mail(self.mail, conn, user, now)
            await self.users.insert_notification(
                conn,
                NOTIFICATIONS_TOPIC,
                user.id,
                {"type": "password_reset_requested", "user_id": user.id},
                now,
            )
        self._mail_queued()

    async def issue_reset_token(self, user_id: str) -> tuple[str, str, datetime] | None:
        """A new reset token for the mail sender: (username, token, expiry); only its hash
        is stored. None if the user no longer exists."""
        user = await self.users.by_id(user_id)
        if user is None:
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        expires = now + timedelta(seconds=self.password_reset_ttl)
        async with self.users.db.transaction() as conn:
            await self.users.insert_reset(conn, _hash_token(token), user.id, now, expires)
        return user.username, token, expires

    def _mail_queued(self) -> None:
        if self.mail is not None:
            self.mail.on_queued()

    async def confirm_reset(self, token: str, new_password: str) -> None:
        check_password(new_password, "new_password")
        hashed = await self.passwords.hash(new_password)
        now = self.clock.now()
        async with self.users.db.transaction() as conn:
            user_id = await self.users.use_reset(conn, _hash_token(token), now)
            if user_id is None:
                raise InvalidToken("the reset token is invalid, used or expired")
            await self.users.set_password(conn, user_id, hashed, now)
            await self.users.clear_failures(conn, user_id)
            ended = await self.users.revoke_logins(conn, now, "password reset", user_id=user_id)
            user = await self.users.by_id(user_id, conn)
            if user is not None:
                await queue_password_changed_mail(self.mail, conn, user, now, by_reset=True)
        self.revocations.add(ended)
        self._mail_queued()


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("only an admin may do this")
