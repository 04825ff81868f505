"""The identity use cases: register, log in, refresh, log out, passwords, roles.

A *login* is one sign-in. Its tokens carry its id (`sid`); ending it (logout, password
change or reset, role change, refresh-token reuse) writes a revocation row in the same
transaction, which every process follows (`RevocationList`). Every password check of a
login or a password change is first reserved in the lock-out table (`LoginAttempts`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from banking_es.application.errors import NotFound
from banking_es.application.ports import Clock
from banking_es.db.base import Connection, UniqueViolation
from banking_es.identity.errors import (
    AccountLocked,
    Forbidden,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    Unauthenticated,
    UserExists,
)
from banking_es.identity.lockout import LoginAttempts, new_ticket
from banking_es.identity.passwords import Passwords
from banking_es.identity.revocation import RevocationList
from banking_es.identity.tokens import ACCESS, REFRESH, TokenCodec, TokenPair
from banking_es.identity.users import ROLES, Login, User, UserRepository, encode_roles, key
from banking_es.mail.messages import (
    queue_login_locked_mail,
    queue_password_changed_mail,
    queue_reset_mail,
)
from banking_es.mail.queue import MailQueue

log = logging.getLogger(__name__)

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


def _ignore_login(outcome: str, user_id: str | None) -> None:
    pass


class IdentityService:
    """Users, sessions and roles."""

    def __init__(
        self,
        users: UserRepository,
        attempts: LoginAttempts,
        passwords: Passwords,
        tokens: TokenCodec,
        revocations: RevocationList,
        clock: Clock,
        *,
        max_login_attempts: int,
        lockout_duration: int,
        password_reset_ttl: int,
        mail: MailQueue | None = None,
        on_login: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.users = users
        self.attempts = attempts
        #: None when mail is off (production without SMTP_URL, resets disabled).
        self.mail = mail
        #: Told of every login attempt: (outcome success|failure|locked, user id or None).
        self.on_login: Callable[[str, str | None], None] = on_login or (
            lambda outcome, user_id: None
        )
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
        # Before the costly hash (the unique constraint below still decides a race): a name
        # taken costs a query, not a core.
        if await self.users.by_login_name(username) or await self.users.by_email(email):
            raise UserExists("a user with this username or email exists")
        hashed = await self.passwords.hash_new_user(password)
        now = self.clock.now()
        user = User(
            str(uuid.uuid4()),
            username,
            email,
            hashed,
            roles,
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
        return User(user.id, user.username, user.email, user.password_hash, new, user.created_at)

    # ---- sessions --------------------------------------------------------------------------

    async def login(self, name: str, password: str) -> TokenPair:
        """Tokens for a name (username or email) and its password; locked names get 429."""
        name_key = key(name)
        user = await self.users.by_login_name(name)
        try:
            ticket = await self._reserve([name_key], password)
        except AccountLocked:
            self.on_login("locked", user.id if user else None)
            raise
        if not await self.passwords.verify(user.password_hash if user else None, password):
            await self._failed(user, [name_key], ticket)
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
        now = self.clock.now()
        async with self.users.db.transaction() as conn:
            await self.attempts.succeed(conn, [name_key], ticket, now)
            if rehash is not None:
                await self.users.set_password(conn, user.id, rehash, now)
            await self.users.insert_login(
                conn,
                Login(login_id, user.id, pair.refresh_jti, self.tokens.refresh_expiry(), None),
                now,
            )
        self.on_login("success", user.id)
        return pair

    async def _reserve(self, keys: list[str], password: str) -> str:
        """A reserved password check on every key (its ticket), or AccountLocked."""
        ticket = new_ticket()
        wait = await self.attempts.reserve(keys, ticket, self.clock.now())
        if wait is not None:
            # The same Argon2 work as a check, so a lock shows in no timing.
            await self.passwords.verify(None, password)
            raise AccountLocked(wait)
        return ticket

    async def _failed(self, user: User | None, keys: list[str], ticket: str) -> None:
        now = self.clock.now()

        async def mail_owner(conn: Connection, locked_until: datetime) -> None:
            if user is not None:
                await queue_login_locked_mail(self.mail, conn, user, locked_until, now)

        locked = await self.attempts.fail(keys, ticket, now, mail_owner)
        for _ in locked:
            # The key of an unknown name is not logged: it may be a password typed as a name.
            user_id = user.id if user else None
            log.warning("a login name is locked after failed password checks (user %s)", user_id)
        if locked and user is not None:
            self._mail_queued()

    async def unlock(self, name: str, by: str) -> list[str]:
        """End the lock-out of a name, and of both names of the user it names; the keys that
        had failures or a lock. Recorded with `by` (login_unlocks) and logged."""
        user = await self.users.by_login_name(name)
        keys = {key(name), *(user.name_keys if user else ())}
        async with self.users.db.transaction() as conn:
            ended = await self.attempts.unlock(
                conn, keys, user.id if user else None, by, self.clock.now()
            )
        for name_key in ended:
            log.warning("login lock-out of %r ended by %s", name_key, by)
        return ended

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
        # A wrong current password is a failed login under both of the user's names.
        keys = list(user.name_keys)
        ticket = await self._reserve(keys, current)
        if not await self.passwords.verify(user.password_hash, current):
            await self._failed(user, keys, ticket)
            raise InvalidCredentials("the current password is wrong")
        hashed = await self.passwords.hash(new)
        now = self.clock.now()
        async with self.users.db.transaction() as conn:
            await self.attempts.succeed(conn, keys, ticket, now)
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
            user = await self.users.by_id(user_id, conn)
            assert user is not None
            # The lock-out rows before the users row, in the order a login takes them.
            await self.attempts.unlock(conn, user.name_keys, user_id, "password reset", now)
            await self.users.set_password(conn, user_id, hashed, now)
            ended = await self.users.revoke_logins(conn, now, "password reset", user_id=user_id)
            await queue_password_changed_mail(self.mail, conn, user, now, by_reset=True)
        self.revocations.add(ended)
        self._mail_queued()


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise Forbidden("only an admin may do this")


def require_reader(principal: Principal) -> None:
    """Admins and auditors: the operations reads (projections, jobs, caches, dead letters)."""
    if not principal.reads_all:
        raise Forbidden("only an admin or an auditor may see this")
