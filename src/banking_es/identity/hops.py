"""The hop header of a request forwarded from one instance to the shard's owner: a short-lived
JWT (PyJWT, HS256) signed with `CLUSTER_SECRET`, naming the original client address and the
caller the first instance authenticated, and bound to the request it travels with (method,
target and a SHA-256 of the body), so it cannot be moved onto another request. The owner
trusts these only with a valid signature; anything else is `Unauthenticated`. A captured
header replays only the same request within `HOP_TTL_S`, which idempotency keys then answer.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime

import jwt

from banking_es.identity.errors import Unauthenticated

HOP_HEADER = "x-banking-es-hop"
HOP_TTL_S = 30
#: How far two instances' clocks may disagree about a hop's times.
CLOCK_SKEW_S = 5
_ALGORITHM = "HS256"
_TYP = "hop"
_REQUIRED = ["exp", "iat", "iss", "typ", "cip", "htm", "htu", "bh"]


@dataclass(frozen=True, slots=True)
class Hop:
    """Who a forwarded request is from: the first instance, the client's address there, and
    the caller it authenticated (None: an anonymous request)."""

    origin: str
    client: str
    caller: str | None


def _body_hash(body: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()


def sign_hop(secret: str, hop: Hop, *, method: str, target: str, body: bytes, now: datetime) -> str:
    """The header value for forwarding `method target` with `body` on behalf of `hop`."""
    issued = int(now.timestamp())
    claims: dict[str, object] = {
        "typ": _TYP,
        "iss": hop.origin,
        "cip": hop.client,
        "htm": method.upper(),
        "htu": target,
        "bh": _body_hash(body),
        "iat": issued,
        "exp": issued + HOP_TTL_S,
    }
    if hop.caller is not None:
        claims["sub"] = hop.caller
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def verify_hop(
    secret: str, value: str, *, method: str, target: str, body: bytes, now: datetime
) -> Hop:
    """The `Hop` of a valid header for exactly this request; else `Unauthenticated`."""
    try:
        claims = jwt.decode(
            value,
            secret,
            algorithms=[_ALGORITHM],
            # The times are checked below against `now`, not PyJWT's own clock.
            options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidTokenError:
        raise Unauthenticated("the hop header is invalid") from None
    issued, expires = int(claims["iat"]), int(claims["exp"])
    moment = now.timestamp()
    fresh = issued - CLOCK_SKEW_S <= moment <= expires + CLOCK_SKEW_S
    if claims["typ"] != _TYP or not fresh:
        raise Unauthenticated("the hop header is invalid")
    bound = (claims["htm"], claims["htu"], claims["bh"])
    if bound != (method.upper(), target, _body_hash(body)):
        raise Unauthenticated("the hop header belongs to another request")
    caller = claims.get("sub")
    return Hop(str(claims["iss"]), str(claims["cip"]), str(caller) if caller else None)
