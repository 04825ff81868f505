"""The hop header of forwarded requests: it carries the client address and the caller, and
is refused when forged, expired, of another kind, or moved onto another request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from banking_es.identity.errors import Unauthenticated
from banking_es.identity.hops import CLOCK_SKEW_S, HOP_TTL_S, Hop, sign_hop, verify_hop

SECRET = "c" * 40
NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
METHOD, TARGET, BODY = "POST", "/accounts/acc-1/deposit?x=1", b'{"amount":"5"}'


def _signed(hop: Hop = Hop("i1", "203.0.113.7", "user-9")) -> str:
    return sign_hop(SECRET, hop, method=METHOD, target=TARGET, body=BODY, now=NOW)


def _verify(
    value: str,
    *,
    secret: str = SECRET,
    method: str = METHOD,
    target: str = TARGET,
    body: bytes = BODY,
    now: datetime = NOW,
) -> Hop:
    return verify_hop(secret, value, method=method, target=target, body=body, now=now)


def test_a_signed_hop_names_the_client_and_the_caller() -> None:
    assert _verify(_signed()) == Hop("i1", "203.0.113.7", "user-9")
    assert _verify(_signed(Hop("i1", "::1", None))).caller is None
    assert _verify(_signed(), method="post").origin == "i1"


def test_a_hop_moved_onto_another_request_is_refused() -> None:
    for moved in (
        {"method": "PUT"},
        {"target": "/accounts/acc-2/deposit?x=1"},
        {"body": b'{"amount":"500"}'},
    ):
        with pytest.raises(Unauthenticated, match="another request"):
            _verify(_signed(), **moved)  # type: ignore[arg-type]


def test_a_forged_or_expired_hop_is_refused() -> None:
    with pytest.raises(Unauthenticated):
        _verify(_signed(), secret="d" * 40)
    with pytest.raises(Unauthenticated):
        _verify(_signed(), now=NOW + timedelta(seconds=HOP_TTL_S + CLOCK_SKEW_S + 1))
    with pytest.raises(Unauthenticated):
        _verify(_signed(), now=NOW - timedelta(seconds=CLOCK_SKEW_S + 1))
    assert _verify(_signed(), now=NOW + timedelta(seconds=HOP_TTL_S)).client == "203.0.113.7"
    with pytest.raises(Unauthenticated):
        _verify("not a token")


def test_a_token_of_another_kind_or_algorithm_is_refused() -> None:
    claims = jwt.decode(
        _signed(), SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False}
    )
    with pytest.raises(Unauthenticated):
        _verify(jwt.encode({**claims, "typ": "access"}, SECRET, algorithm="HS256"))
    with pytest.raises(Unauthenticated):
        _verify(jwt.encode(claims, None, algorithm="none"))
    missing = {k: v for k, v in claims.items() if k != "bh"}
    with pytest.raises(Unauthenticated):
        _verify(jwt.encode(missing, SECRET, algorithm="HS256"))
