"""The login lock-out through the HTTP API (SQLite and PostgreSQL, in-process): a bound on
password checks under concurrency, failures of change-password, known and unknown names
alike, a sliding window, and a user's two names as two keys."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from tests.api_support import App
from tests.auth import (
    LOCKOUT,
    MAX_ATTEMPTS,
    PASSWORD,
    bearer,
    login,
    register,
    reset_token,
)
from tests.clock_support import FakeClock
from tests.e2e.http_support import assert_problem


def _count_checks(app: App) -> list[str]:
    """The stored hashes the password checks ran against, from now on."""
    passwords = app[1].identity.passwords
    original = passwords._check
    checked: list[str] = []

    def spy(stored: str, password: str) -> bool:
        checked.append(stored)
        return original(stored, password)

    passwords._check = spy  # type: ignore[method-assign]
    return checked


async def _login(http: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await http.post("/auth/login", json={"username": name, "password": password})


async def _change(http: httpx.AsyncClient, token: str, current: str) -> httpx.Response:
    return await http.post(
        "/auth/change-password",
        json={"current_password": current, "new_password": "brand-new-pass"},
        headers=bearer(token),
    )


async def _hash(app: App, user: dict[str, Any]) -> str:
    stored: str = await app[1].db.fetchval(
        "SELECT password_hash FROM users WHERE id = $1", user["id"]
    )
    return stored


async def test_concurrent_logins_check_at_most_max_attempts_passwords(app: App) -> None:
    http, _ = app
    user = await register(http)
    stored = await _hash(app, user)
    checked = _count_checks(app)
    passwords = ["wrong-password"] * 50
    passwords[25] = PASSWORD
    answers = await asyncio.gather(*(_login(http, user["username"], p) for p in passwords))
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 401, 429}, statuses
    for answer in answers:
        if answer.status_code == 429:
            assert_problem(answer, 429, "account_locked")
            assert int(answer.headers["retry-after"]) > 0
    real_checks = checked.count(stored)
    assert real_checks == statuses.count(200) + statuses.count(401)
    if statuses[25] == 200:  # checked before the lock: a success starts the count again
        assert real_checks <= 2 * MAX_ATTEMPTS, statuses
    else:
        assert statuses[25] == 429
        assert real_checks <= MAX_ATTEMPTS, statuses
        assert_problem(await _login(http, user["username"], PASSWORD), 429, "account_locked")


async def test_a_wrong_current_password_counts_as_a_failed_login(app: App) -> None:
    http, _ = app
    user = await register(http)
    token = (await login(http, user["username"]))["access_token"]
    for _ in range(MAX_ATTEMPTS):
        assert_problem(await _change(http, token, "not-the-password"), 401, "invalid_credentials")
    locked = await _change(http, token, PASSWORD)
    assert_problem(locked, 429, "account_locked")
    assert int(locked.headers["retry-after"]) == LOCKOUT
    for name in (user["username"], user["email"].upper()):  # both names of the user
        assert_problem(await _login(http, name, PASSWORD), 429, "account_locked")


async def test_a_locked_login_refuses_change_password(app: App) -> None:
    http, _ = app
    user = await register(http)
    token = (await login(http, user["username"]))["access_token"]
    for _ in range(MAX_ATTEMPTS):
        await _login(http, user["username"], "wrong-password")
    locked = await _change(http, token, PASSWORD)
    assert_problem(locked, 429, "account_locked")
    assert "retry-after" in locked.headers


async def test_known_and_unknown_names_lock_alike(app: App) -> None:
    http, _ = app
    user = await register(http)
    checked = _count_checks(app)
    answers: dict[str, list[httpx.Response]] = {}
    for name in (user["username"], "nobody-by-this-name"):
        answers[name] = [await _login(http, name, "wrong-password") for _ in range(MAX_ATTEMPTS)]
        answers[name].append(await _login(http, name, PASSWORD))
        assert len(checked) == MAX_ATTEMPTS + 1  # one Argon2 check per answer, 429 included
        checked.clear()
    known, unknown = answers.values()
    for mine, theirs in zip(known, unknown, strict=True):
        assert mine.status_code == theirs.status_code
        assert mine.json() == theirs.json()
        assert mine.headers.get("retry-after") == theirs.headers.get("retry-after")
    assert_problem(known[-1], 429, "account_locked")


async def test_failures_count_within_a_sliding_window(app: App, clock: FakeClock) -> None:
    http, _ = app
    user = await register(http)
    for _ in range(MAX_ATTEMPTS):  # spread over more than the window: never 3 within it
        assert_problem(
            await _login(http, user["username"], "wrong-password"), 401, "invalid_credentials"
        )
        clock.advance(LOCKOUT * 2 / 3)
    await login(http, user["username"])


async def test_a_username_and_its_email_are_two_keys(app: App) -> None:
    http, _ = app
    user = await register(http)
    for _ in range(MAX_ATTEMPTS):
        await _login(http, user["username"], "wrong-password")
    assert_problem(await _login(http, user["username"], PASSWORD), 429, "account_locked")
    assert_problem(await _login(http, user["username"].upper(), PASSWORD), 429, "account_locked")
    await login(http, user["email"])


async def test_a_password_reset_ends_the_lockout_of_both_names(app: App) -> None:
    http, services = app
    user = await register(http)
    for name in (user["username"], user["email"]):
        for _ in range(MAX_ATTEMPTS):
            await _login(http, name, "wrong-password")
        assert_problem(await _login(http, name, PASSWORD), 429, "account_locked")
    assert (await http.post("/auth/reset-password", json={"email": user["email"]})).is_success
    confirmed = await http.post(
        "/auth/reset-password/confirm",
        json={"token": await reset_token(services, user["id"]), "new_password": "brand-new-pass"},
    )
    assert confirmed.status_code == 204
    for name in (user["username"], user["email"]):
        await login(http, name, "brand-new-pass")
