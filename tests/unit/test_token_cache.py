"""Verified access tokens are remembered until they expire, and only verified ones."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from tests.clock_support import FakeClock

from banking_es.identity import tokens
from banking_es.identity.errors import Unauthenticated
from banking_es.identity.tokens import ACCESS, REFRESH, TokenCodec


def codec(access_ttl: int = 900) -> TokenCodec:
    return TokenCodec(
        "a" * 32, "r" * 32, access_ttl=access_ttl, refresh_ttl=3600, clock=FakeClock(start=None)
    )


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token PyJWT is asked to check."""
    seen: list[str] = []
    original = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return original(token, *args, **kwargs)

    monkeypatch.setattr(tokens.jwt, "decode", counting)
    return seen


def test_a_verified_access_token_is_not_checked_again(decodes: list[str]) -> None:
    subject = codec()
    pair = subject.issue("user-1", "login-1", ("customer",))
    first = subject.verify(pair.access_token, ACCESS)
    again = subject.verify(pair.access_token, ACCESS)
    assert again == first
    assert first.user_id == "user-1"
    assert decodes == [pair.access_token]


def test_refused_tokens_and_refresh_tokens_are_never_remembered(decodes: list[str]) -> None:
    subject = codec()
    pair = subject.issue("user-1", "login-1", ())
    forged = pair.access_token[:-2] + ("AA" if not pair.access_token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            subject.verify(forged, ACCESS)
        with pytest.raises(Unauthenticated):  # a refresh token is not an access token
            subject.verify(pair.refresh_token, ACCESS)
        subject.verify(pair.refresh_token, REFRESH)
    assert len(decodes) == 6


def test_a_remembered_token_still_expires() -> None:
    subject = codec(access_ttl=1)
    pair = subject.issue("user-1", "login-1", ())
    assert subject.verify(pair.access_token, ACCESS).user_id == "user-1"
    expires_at = subject.verify(pair.access_token, ACCESS).expires_at
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    with pytest.raises(Unauthenticated, match="expired"):
        subject.verify(pair.access_token, ACCESS)
