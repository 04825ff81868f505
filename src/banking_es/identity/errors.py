"""Identity errors; each carries its HTTP status and stable `code` (API.md).

IdentityError
├── InvalidInput         a field is malformed (400 validation_error)
├── InvalidToken         a reset token is unknown, used or expired (400)
├── InvalidCredentials   wrong username or password (401)
├── Unauthenticated      missing, malformed, expired, revoked or forged token (401)
├── Forbidden            the caller's role may not do this (403)
├── UserExists           username or email taken (409)
└── AccountLocked        too many failed logins; carries retry_after seconds (429)
"""

from __future__ import annotations


class IdentityError(Exception):
    """Base of identity failures."""

    status = 400
    code = "identity_error"


class InvalidInput(IdentityError):
    status = 400
    code = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = message


class InvalidToken(IdentityError):
    status = 400
    code = "invalid_token"


class InvalidCredentials(IdentityError):
    status = 401
    code = "invalid_credentials"


class Unauthenticated(IdentityError):
    status = 401
    code = "unauthenticated"


class MissingToken(Unauthenticated):
    """No bearer token at all (the challenge then names no error, RFC 6750)."""


class Forbidden(IdentityError):
    status = 403
    code = "forbidden"


class UserExists(IdentityError):
    status = 409
    code = "user_exists"


class AccountLocked(IdentityError):
    status = 429
    code = "account_locked"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after
