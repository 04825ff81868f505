"""Security headers on every answer: `nosniff`, a Content-Security-Policy, `no-store` on tokens.

The JSON API's policy forbids everything (`default-src 'none'`); /docs has its own, which
allows exactly what its Swagger UI page loads: checked against the page actually served.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from tests.api_support import running_app
from tests.auth import bearer, login, register
from tests.e2e.http_support import answer_with_a_bug

from banking_es.bootstrap import Services

API_POLICY = "default-src 'none'; frame-ancestors 'none'"


def policy(response: httpx.Response) -> dict[str, list[str]]:
    """The response's Content-Security-Policy as {directive: [sources]}."""
    directives = [d.split() for d in response.headers["content-security-policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}


def assert_api_headers(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("content-security-policy") == API_POLICY, where


async def test_every_kind_of_answer_carries_nosniff_and_the_api_policy(tmp_path: Path) -> None:
    async with running_app(tmp_path) as (http, _services):
        user = await register(http)
        headers = bearer((await login(http, user["username"]))["access_token"])
        account = (
            await http.post(
                "/accounts", json={"owner_name": "Ada", "initial_balance": "5"}, headers=headers
            )
        ).json()["id"]
        answers = [
            await http.get("/health/live"),
            await http.get("/health/ready"),
            await http.get("/metrics"),
            await http.get("/openapi.json"),
            await http.get("/no-such-endpoint"),  # 404
            await http.delete("/health/live"),  # 405
            await http.get("/accounts"),  # 401
            await http.get("/accounts?limit=0", headers=headers),  # 400
            await http.post(  # 413, answered by the middleware itself
                "/accounts", content=b"x" * 70_000, headers={**headers, "content-length": "70000"}
            ),
            await http.get(f"/accounts/{account}", headers=headers),
            await http.post(f"/accounts/{account}/deposit", json={"amount": "1"}, headers=headers),
            await http.get(f"/accounts/{uuid.uuid4()}", headers=headers),  # 404 problem
            await http.get("/auth/me", headers=headers),
        ]
        assert {r.status_code for r in answers} >= {200, 401, 404, 405, 400, 413}
        for response in answers:
            assert_api_headers(response)


async def test_a_429_from_the_rate_limiter_carries_them(tmp_path: Path) -> None:
    settings = {"rate_limit_enabled": True, "rate_limit_per_ip_per_minute": 1}
    async with running_app(tmp_path, **settings) as (http, _services):
        answers = [await http.get("/accounts") for _ in range(3)]
        assert answers[-1].status_code == 429
        for response in answers:
            assert_api_headers(response)


async def test_a_500_carries_them(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    response = await answer_with_a_bug(services, monkeypatch, "bug-report-headers")

    assert response.status_code == 500
    assert_api_headers(response)


async def test_token_answers_are_not_stored_by_caches(tmp_path: Path) -> None:
    async with running_app(tmp_path) as (http, _services):
        user = await register(http)
        logged_in = await http.post(
            "/auth/login", json={"username": user["username"], "password": "correct horse battery"}
        )
        refreshed = await http.post(
            "/auth/refresh", json={"refresh_token": logged_in.json()["refresh_token"]}
        )
        for response in (logged_in, refreshed):
            assert response.status_code == 200, response.text
            assert response.headers.get("cache-control") == "no-store"
            assert_api_headers(response)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "'self'"


async def test_docs_has_its_own_policy_that_allows_exactly_what_the_page_loads(
    tmp_path: Path,
) -> None:
    async with running_app(tmp_path) as (http, _services):
        response = await http.get("/docs")
        page = response.text
        assert response.status_code == 200
        assert response.headers.get("x-content-type-options") == "nosniff"
        rules = policy(response)
        assert rules["default-src"] == ["'none'"]
        assert rules["frame-ancestors"] == ["'none'"]
        assert "'unsafe-inline'" not in rules["script-src"]
        assert "'unsafe-eval'" not in rules["script-src"]
        inline = re.findall(r"<script>(.*?)</script>", page, re.S)
        assert inline
        for script in inline:  # Swagger UI's bootstrap runs by its hash, nothing else inline
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in rules["script-src"]
        for url in re.findall(r'<script src="([^"]+)"', page):
            assert _origin(url) in rules["script-src"], url
        for url in re.findall(r'<link type="text/css" rel="stylesheet" href="([^"]+)"', page):
            assert _origin(url) in rules["style-src"], url
        for url in re.findall(r'<link rel="shortcut icon" href="([^"]+)"', page):
            assert _origin(url) in rules["img-src"], url
        assert "'self'" in rules["connect-src"]  # the page fetches /openapi.json
        assert (await http.get("/openapi.json")).headers["content-security-policy"] == API_POLICY


async def test_no_second_docs_page_is_served_under_the_api_policy(tmp_path: Path) -> None:
    async with running_app(tmp_path) as (http, _services):
        for path in ("/redoc", "/docs/oauth2-redirect"):
            response = await http.get(path)
            assert response.status_code == 404, path
            assert_api_headers(response)
