"""Tokens that must not get in: alg none, forged signature, wrong type, expired, tampered."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from tests.api_support import App, running_app
from tests.auth import bearer, login, register
from tests.clock_support import FakeClock


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Token checks never touch the database: SQLite is enough (PostgreSQL: the other files)."""
    return f"sqlite:///{tmp_path / 'banking.db'}"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


async def _claims(http: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    user = await register(http)
    pair = await login(http, user["username"])
    return pair, jwt.decode(pair["access_token"], options={"verify_signature": False})


async def _assert_rejected(http: httpx.AsyncClient, token: str) -> None:
    for path in ("/auth/me", "/accounts"):
        response = await http.get(path, headers=bearer(token))
        assert response.status_code == 401, (path, response.text)
        assert response.json()["code"] == "unauthenticated"
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_alg_none_is_rejected(app: App) -> None:
    http, _ = app
    _, claims = await _claims(http)
    claims["roles"] = ["admin"]
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    await _assert_rejected(http, unsigned)


async def test_a_token_signed_with_another_key_is_rejected(app: App) -> None:
    http, _ = app
    _, claims = await _claims(http)
    claims["roles"] = ["admin"]
    await _assert_rejected(http, jwt.encode(claims, "x" * 48, algorithm="HS256"))


async def test_tampered_claims_break_the_signature(app: App) -> None:
    http, _ = app
    pair, claims = await _claims(http)
    header, _, signature = pair["access_token"].split(".")
    claims["roles"] = ["admin"]
    await _assert_rejected(http, f"{header}.{_b64(claims)}.{signature}")


async def test_other_algorithms_are_rejected_even_with_the_right_key(app: App) -> None:
    http, services = app
    _, claims = await _claims(http)
    secret = services.identity.tokens._secrets["access"]
    await _assert_rejected(http, jwt.encode(claims, secret, algorithm="HS512"))


async def test_a_refresh_token_is_not_an_access_token(app: App) -> None:
    http, _ = app
    pair, _ = await _claims(http)
    await _assert_rejected(http, pair["refresh_token"])


async def test_an_access_token_is_not_a_refresh_token(app: App) -> None:
    http, _ = app
    pair, _ = await _claims(http)
    response = await http.post("/auth/refresh", json={"refresh_token": pair["access_token"]})
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


async def test_a_token_with_the_wrong_typ_claim_is_rejected(app: App) -> None:
    http, services = app
    _, claims = await _claims(http)
    claims["typ"] = "refresh"
    secret = services.identity.tokens._secrets["access"]
    await _assert_rejected(http, jwt.encode(claims, secret, algorithm="HS256"))


@pytest.mark.parametrize("missing", ["exp", "sid", "jti", "sub", "typ"])
async def test_a_token_missing_a_required_claim_is_rejected(app: App, missing: str) -> None:
    http, services = app
    _, claims = await _claims(http)
    del claims[missing]
    secret = services.identity.tokens._secrets["access"]
    await _assert_rejected(http, jwt.encode(claims, secret, algorithm="HS256"))


async def test_an_expired_token_is_rejected(app: App) -> None:
    http, services = app
    _, claims = await _claims(http)
    claims["iat"], claims["exp"] = int(time.time()) - 120, int(time.time()) - 60
    secret = services.identity.tokens._secrets["access"]
    await _assert_rejected(http, jwt.encode(claims, secret, algorithm="HS256"))


async def test_an_expired_refresh_token_is_rejected(app: App) -> None:
    http, services = app
    pair, _ = await _claims(http)
    claims = jwt.decode(pair["refresh_token"], options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 1
    secret = services.identity.tokens._secrets["refresh"]
    expired = jwt.encode(claims, secret, algorithm="HS256")
    response = await http.post("/auth/refresh", json={"refresh_token": expired})
    assert response.status_code == 401


async def test_a_short_lived_access_token_expires(tmp_path: Any, database_url: str) -> None:
    clock = FakeClock(start=None)
    clock.advance(-3600)  # tokens issued an hour ago, valid for a minute
    async with running_app(tmp_path, database_url, clock=clock, access_token_expiry=60) as (
        http,
        _,
    ):
        user = await register(http)
        pair = await login(http, user["username"])
        await _assert_rejected(http, pair["access_token"])
