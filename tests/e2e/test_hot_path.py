"""The hot path (`api/hotpath.py`): it serves the ordinary deposit, withdrawal and account
read without FastAPI's dependency solving, and every answer equals FastAPI's own."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import pytest
from tests.auth import bearer, login, make_settings, register, sign_up

from banking_es.api.app import create_app
from banking_es.bootstrap import Services, build_services

Client = httpx.AsyncClient


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests FastAPI solved route dependencies for."""
    paths: list[str] = []
    original = fastapi.routing.solve_dependencies

    def counting(*args: Any, **kwargs: Any) -> Any:
        paths.append(kwargs["request"].url.path)
        return original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return paths


@asynccontextmanager
async def app_client(
    tmp_path: Path, *, hot_path: bool = True, **overrides: Any
) -> AsyncIterator[tuple[Client, Services]]:
    settings = make_settings(tmp_path, **overrides)
    services = await build_services(settings)
    await services.start()
    try:
        app = create_app(settings, services, hot_path=hot_path)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http, services
    finally:
        await services.close()


async def open_account(http: Client, headers: dict[str, str], balance: str = "100.00") -> str:
    answer = await http.post(
        "/accounts", json={"owner_name": "Ada", "initial_balance": balance}, headers=headers
    )
    assert answer.status_code == 201, answer.text
    account_id: str = answer.json()["id"]
    return account_id


async def test_ordinary_requests_skip_fastapi_and_others_do_not(
    tmp_path: Path, solved: list[str]
) -> None:
    async with app_client(tmp_path) as (http, _):
        headers = await sign_up(http)
        account = await open_account(http, headers)
        solved.clear()

        deposit = await http.post(
            f"/accounts/{account}/deposit", json={"amount": "10.50"}, headers=headers
        )
        withdraw = await http.post(
            f"/accounts/{account}/withdraw", json={"amount": 0.5}, headers=headers
        )
        read = await http.get(f"/accounts/{account}", headers=headers)
        assert [deposit.status_code, withdraw.status_code, read.status_code] == [200, 200, 200]
        assert read.json()["balance"] == "110.00"
        assert read.json()["version"] == 3
        assert read.headers["x-request-id"]
        assert solved == []  # all three served by the hot path

        # A query, a non-canonical id and a body the model refuses go to FastAPI.
        by_version = await http.get(f"/accounts/{account}?version=1", headers=headers)
        assert by_version.json()["balance"] == "100.00"
        assert (await http.get(f"/accounts/{account.upper()}", headers=headers)).status_code == 200
        extra = await http.post(
            f"/accounts/{account}/deposit", json={"amount": 1, "to": "me"}, headers=headers
        )
        assert extra.status_code == 400
        assert solved == [
            f"/accounts/{account}",
            f"/accounts/{account.upper()}",
            f"/accounts/{account}/deposit",
        ]


JSON = {"Content-Type": "application/json"}
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T[0-9:.]+(Z|[+-]\d{2}:\d{2})")


def _normalized(answer: httpx.Response, names: dict[str, str]) -> tuple[Any, ...]:
    text = _TIME.sub("<time>", answer.text)
    for real, alias in names.items():
        text = text.replace(real, alias).replace(real.upper(), alias)
    headers = {
        k: v
        for k, v in answer.headers.items()
        if k in ("content-type", "retry-after", "idempotent-replayed", "www-authenticate")
    }
    return answer.status_code, headers, text


Step = Callable[[Client, dict[str, Any]], Awaitable[httpx.Response]]


def _steps() -> list[tuple[str, Step]]:
    """Requests on the hot routes, good and bad, run in this order against one app."""

    def post(op: str, who: str = "a", account: str = "x", **kwargs: Any) -> Step:
        def run(http: Client, ctx: dict[str, Any]) -> Awaitable[httpx.Response]:
            headers = {**ctx[who], **kwargs.pop("headers", {})} if who else kwargs.pop("headers")
            return http.post(f"/accounts/{ctx[account]}/{op}", headers=headers, **kwargs)

        return run

    def get(suffix: str = "", who: str = "a", account: str = "x") -> Step:
        return lambda http, ctx: http.get(f"/accounts/{ctx[account]}{suffix}", headers=ctx[who])

    async def withdraw_all(http: Client, ctx: dict[str, Any]) -> httpx.Response:
        balance = (await http.get(f"/accounts/{ctx['x']}", headers=ctx["a"])).json()["balance"]
        url = f"/accounts/{ctx['x']}/withdraw"
        return await http.post(url, json={"amount": balance}, headers=ctx["a"])

    return [
        ("read", get()),
        ("deposit", post("deposit", json={"amount": "10.50", "description": "pay"})),
        ("withdraw", post("withdraw", json={"amount": 5})),
        ("insufficient funds", post("withdraw", json={"amount": "1000000"})),
        ("stale expected_version", post("deposit", json={"amount": 1, "expected_version": 1})),
        ("right expected_version", post("deposit", json={"amount": 1, "expected_version": 3})),
        ("3 decimals", post("deposit", json={"amount": "1.001"})),
        ("exponent", post("deposit", content=b'{"amount": 1e3}', headers=JSON)),
        ("negative", post("withdraw", json={"amount": -1})),
        ("zero", post("deposit", json={"amount": 0})),
        ("huge", post("deposit", json={"amount": "1" * 40})),
        ("boolean", post("deposit", json={"amount": True})),
        ("extra field", post("deposit", json={"amount": 1, "to": "me"})),
        ("missing amount", post("deposit", json={"description": "x"})),
        ("long description", post("deposit", json={"amount": 1, "description": "d" * 501})),
        ("NUL in description", post("deposit", json={"amount": 1, "description": "a\u0000b"})),
        ("not JSON", post("deposit", content=b"amount=1", headers=JSON)),
        ("a JSON list", post("deposit", content=b"[1]", headers=JSON)),
        ("empty body", post("deposit", content=b"", headers=JSON)),
        (
            "text/plain",
            post("deposit", content=b'{"amount": 1}', headers={"Content-Type": "text/plain"}),
        ),
        ("no content type", post("deposit", content=b'{"amount": 1}')),
        (
            "charset",
            post(
                "deposit",
                content=b'{"amount": 1}',
                headers={"Content-Type": "application/json; charset=utf-8"},
            ),
        ),
        ("no token", post("deposit", who="", json={"amount": 1}, headers={})),
        (
            "bad token",
            post("deposit", who="", json={"amount": 1}, headers={"Authorization": "Bearer nope"}),
        ),
        (
            "basic scheme",
            post("deposit", who="", json={"amount": 1}, headers={"Authorization": "Basic eDp5"}),
        ),
        ("read without token", lambda http, ctx: http.get(f"/accounts/{ctx['x']}")),
        ("someone else's account", post("deposit", who="b", json={"amount": 1})),
        ("someone else's read", get(who="b")),
        ("unknown account", post("deposit", account="unknown", json={"amount": 1})),
        ("unknown read", get(account="unknown")),
        ("keyed", post("deposit", json={"amount": 2}, headers={"Idempotency-Key": "k-1"})),
        ("keyed again", post("deposit", json={"amount": 2}, headers={"Idempotency-Key": "k-1"})),
        (
            "keyed, other body",
            post("deposit", json={"amount": 3}, headers={"Idempotency-Key": "k-1"}),
        ),
        ("read at version", get("?version=2")),
        ("read, bad query", get("?version=zero")),
        ("withdraw everything", withdraw_all),
        ("close", post("close", json={"reason": "done"})),
        ("deposit on closed", post("deposit", json={"amount": 1})),
        ("withdraw on closed", post("withdraw", json={"amount": 1})),
        ("read closed", get()),
    ]


async def _run_scenario(tmp_path: Path, *, hot_path: bool) -> list[tuple[str, tuple[Any, ...]]]:
    async with app_client(tmp_path, hot_path=hot_path) as (http, _):
        user_a = await register(http, "alice")
        user_b = await register(http, "bob")
        ctx: dict[str, Any] = {
            "a": bearer((await login(http, "alice"))["access_token"]),
            "b": bearer((await login(http, "bob"))["access_token"]),
            "unknown": "00000000-0000-4000-8000-000000000000",
        }
        ctx["x"] = await open_account(http, ctx["a"])
        names = {ctx["x"]: "<x>", user_a["id"]: "<alice>", user_b["id"]: "<bob>"}
        return [(label, _normalized(await step(http, ctx), names)) for label, step in _steps()]


async def test_every_answer_equals_fastapis_own(tmp_path: Path) -> None:
    fast = await _run_scenario(tmp_path / "fast", hot_path=True)
    plain = await _run_scenario(tmp_path / "plain", hot_path=False)
    for (label, got), (_, expected) in zip(fast, plain, strict=True):
        assert got == expected, label
    statuses = {label: answer[0] for label, answer in fast}
    # The scenario covers what it claims to (a sanity check on the steps themselves).
    assert statuses["deposit"] == 200
    assert statuses["insufficient funds"] == 422
    assert statuses["stale expected_version"] == 409
    assert statuses["right expected_version"] == 200
    assert statuses["not JSON"] == 400
    assert statuses["text/plain"] == 415
    assert statuses["no token"] == 401
    assert statuses["unknown account"] == 404
    assert statuses["keyed again"] == 200
    assert statuses["keyed, other body"] == 422
    assert statuses["close"] == 200
    assert statuses["deposit on closed"] == 409
    assert dict(fast)["keyed again"][1].get("idempotent-replayed") == "true"


async def test_a_revoked_token_is_refused_on_the_hot_path(
    tmp_path: Path, solved: list[str]
) -> None:
    async with app_client(tmp_path) as (http, _):
        user = await register(http)
        pair = await login(http, user["username"])
        headers = bearer(pair["access_token"])
        account = await open_account(http, headers)
        assert (await http.get(f"/accounts/{account}", headers=headers)).status_code == 200
        logout = await http.post(
            "/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=headers
        )
        assert logout.status_code == 204
        refused = await http.get(f"/accounts/{account}", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthenticated"
        deposit = await http.post(
            f"/accounts/{account}/deposit", json={"amount": 1}, headers=headers
        )
        assert deposit.status_code == 401


async def test_the_per_client_rate_limit_applies_on_the_hot_path(
    tmp_path: Path, solved: list[str]
) -> None:
    async with app_client(
        tmp_path, rate_limit_enabled=True, rate_limit_burst=1000, rate_limit_per_minute=4
    ) as (http, services):
        headers = await sign_up(http)  # register and login are per-IP limited only
        account = await open_account(http, headers)  # the client's 1st request
        solved.clear()
        answers = [
            await http.post(f"/accounts/{account}/deposit", json={"amount": 1}, headers=headers)
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert answers[-1].json()["code"] == "rate_limited"
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert solved == []
        assert (await services.accounts.get_account(account)).balance == Decimal("103.00")
