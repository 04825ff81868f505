"""JWTs (PyJWT, HS256): short-lived access tokens and rotating refresh tokens.

Access and refresh tokens are signed with different secrets and carry `typ`, so one can
never pass for the other. Both carry `sid`, the login they belong to: revoking a login
kills every token it issued. Only HS256 is accepted (`alg: none` and every other
algorithm are refused by PyJWT), and `exp`, `iat`, `jti`, `sub`, `sid` are required.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from cachetools import LRUCache

from banking_es.application.ports import Clock
from banking_es.identity.errors import Unauthenticated

ALGORITHM = "HS256"
ACCESS = "access"
REFRESH = "refresh"
#: Verified access tokens remembered per process (one per active login, roughly).
VERIFIED_CACHE_SIZE = 10_000
_REQUIRED = ["exp", "iat", "jti", "sub", "sid", "typ"]


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token's claims."""

    user_id: str
    login_id: str
    jti: str
    roles: tuple[str, ...]
    expires_at: int


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    refresh_jti: str
    expires_in: int


class TokenCodec:
    """Issues and verifies both kinds of token."""

    def __init__(
        self,
        access_secret: str,
        refresh_secret: str,
        *,
        access_ttl: int,
        refresh_ttl: int,
        clock: Clock,
    ) -> None:
        self._secrets = {ACCESS: access_secret, REFRESH: refresh_secret}
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.clock = clock
        self._verified: LRUCache[str, Claims] = LRUCache(maxsize=VERIFIED_CACHE_SIZE)

    def issue(self, user_id: str, login_id: str, roles: tuple[str, ...]) -> TokenPair:
        now = self.clock.now()
        refresh_jti = uuid.uuid4().hex
        access = self._encode(ACCESS, user_id, login_id, now, self.access_ttl, roles=list(roles))
        refresh = self._encode(REFRESH, user_id, login_id, now, self.refresh_ttl, jti=refresh_jti)
        return TokenPair(access, refresh, refresh_jti, self.access_ttl)

    def refresh_expiry(self) -> datetime:
        return self.clock.now() + timedelta(seconds=self.refresh_ttl)

    def _encode(
        self,
        typ: str,
        user_id: str,
        login_id: str,
        now: datetime,
        ttl: int,
        *,
        jti: str | None = None,
        roles: list[str] | None = None,
    ) -> str:
        issued = int(now.timestamp())
        claims: dict[str, object] = {
            "sub": user_id,
            "sid": login_id,
            "jti": jti or uuid.uuid4().hex,
            "typ": typ,
            "iat": issued,
            "exp": issued + ttl,
        }
        if roles is not None:
            claims["roles"] = roles
        return jwt.encode(claims, self._secrets[typ], algorithm=ALGORITHM)

    def verify(self, token: str, typ: str) -> Claims:
        """The claims of a valid, unexpired token of kind `typ`; else `Unauthenticated`.

        Access tokens are sent with every request: one that verified once is remembered
        (a bounded LRU) until it expires, so its signature is not checked again. The
        cache holds only tokens that passed every check; revocation is checked by the
        caller on every request, cached or not.
        """
        if typ == ACCESS:
            cached = self._verified.get(token)
            if cached is not None and cached.expires_at > time.time():
                return cached
        claims = self._verify(token, typ)
        if typ == ACCESS:
            self._verified[token] = claims
        return claims

    def _verify(self, token: str, typ: str) -> Claims:
        try:
            claims = jwt.decode(
                token,
                self._secrets[typ],
                algorithms=[ALGORITHM],
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the token is invalid") from None
        if claims.get("typ") != typ:
            raise Unauthenticated(f"not an {typ} token" if typ == ACCESS else "wrong token type")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthenticated("the token is invalid")
        return Claims(
            str(claims["sub"]),
            str(claims["sid"]),
            str(claims["jti"]),
            tuple(roles),
            int(claims["exp"]),
        )
