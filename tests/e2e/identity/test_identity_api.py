"""Every row of API.md's identity table, through the HTTP API (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import jwt
import orjson
import pytest
from tests.api_support import App, running_app
from tests.auth import (
    PASSWORD,
    admin_headers,
    bearer,
    login,
    new_username,
    register,
    reset_token,
    sign_up,
)
from tests.clock_support import FakeClock
from tests.e2e.http_support import assert_problem

from banking_es.identity.errors import InvalidCredentials
from banking_es.identity.passwords import Passwords

# ---- register -----------------------------------------------------------------------------


async def test_register_returns_the_user_as_a_customer(app: App) -> None:
    http, _ = app
    response = await http.post(
        "/auth/register",
        json={"username": "ann.b-1", "email": "Ann@Example.com", "password": "s3cret-pass"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "username", "email", "roles"}
    assert body["username"] == "ann.b-1"
    assert body["email"] == "Ann@Example.com"
    assert body["roles"] == ["customer"]


async def test_register_rejects_invalid_fields_listing_each(app: App) -> None:
    http, _ = app
    response = await http.post(
        "/auth/register", json={"username": "a!", "email": "not-an-email", "password": "short"}
    )
    assert_problem(response, 400, "validation_error")
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"username", "email", "password"}
    too_long = await http.post(
        "/auth/register",
        json={"username": "x" * 65, "email": "x@example.com", "password": "p" * 129},
    )
    assert_problem(too_long, 400, "validation_error")
    assert (
        await http.post("/auth/login", json={"username": "x" * 65, "password": "p"})
    ).status_code == 401


async def test_register_refuses_a_taken_username_or_email_ignoring_case(app: App) -> None:
    http, _ = app
    await register(http, "carol")
    same_name = await http.post(
        "/auth/register",
        json={"username": "CAROL", "email": "other@example.com", "password": PASSWORD},
    )
    assert_problem(same_name, 409, "user_exists")
    same_email = await http.post(
        "/auth/register",
        json={"username": "carol2", "email": "CAROL@example.com", "password": PASSWORD},
    )
    assert_problem(same_email, 409, "user_exists")


async def test_concurrent_registrations_of_one_name_create_one_user(app: App) -> None:
    http, _ = app
    responses = await asyncio.gather(
        *(
            http.post(
                "/auth/register",
                json={"username": "race", "email": f"race{i}@example.com", "password": PASSWORD},
            )
            for i in range(5)
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]


# ---- login ----------------------------------------------------------------------------------


async def test_login_by_username_or_email_returns_a_token_pair(app: App) -> None:
    http, _ = app
    user = await register(http)
    for name in (user["username"], user["email"].upper()):
        pair = await login(http, name)
        assert pair["token_type"] == "bearer"
        assert pair["expires_in"] == 3600
        claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
        assert claims["sub"] == user["id"]
        assert claims["roles"] == ["customer"]
        assert claims["typ"] == "access"
        assert {"jti", "exp", "iat", "sid"} <= set(claims)
        me = await http.get("/auth/me", headers=bearer(pair["access_token"]))
        assert me.json() == user


async def test_login_answers_unknown_users_and_wrong_passwords_alike(app: App) -> None:
    http, _ = app
    user = await register(http)
    wrong = await http.post("/auth/login", json={"username": user["username"], "password": "x" * 9})
    unknown = await http.post("/auth/login", json={"username": "nobody", "password": "x" * 9})
    assert_problem(wrong, 401, "invalid_credentials")
    assert_problem(unknown, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()


async def test_unknown_users_cost_a_password_check_too(app: App) -> None:
    _, services = app
    calls: list[str | None] = []
    passwords = services.identity.passwords
    original = passwords._check

    def spy(stored: str, password: str) -> bool:
        calls.append(stored)
        return original(stored, password)

    passwords._check = spy  # type: ignore[method-assign]
    with pytest.raises(InvalidCredentials):
        await services.identity.login("nobody-at-all", "whatever-password")
    assert len(calls) == 1
    assert calls[0] is not None
    assert calls[0].startswith("$argon2id$")


async def test_lockout_after_max_attempts_even_with_the_right_password_then_expires(
    app: App, clock: FakeClock
) -> None:
    http, services = app
    user = await register(http)
    attempts = services.identity.max_login_attempts
    for _ in range(attempts):
        wrong = await http.post(
            "/auth/login", json={"username": user["username"], "password": "wrong-password"}
        )
        assert_problem(wrong, 401, "invalid_credentials")
    locked = await http.post(
        "/auth/login", json={"username": user["username"], "password": PASSWORD}
    )
    assert_problem(locked, 429, "account_locked")
    assert int(locked.headers["retry-after"]) == services.identity.lockout_duration
    clock.advance(services.identity.lockout_duration / 2)
    still = await http.post(
        "/auth/login", json={"username": user["username"], "password": PASSWORD}
    )
    assert_problem(still, 429, "account_locked")
    assert 0 < int(still.headers["retry-after"]) <= services.identity.lockout_duration / 2
    clock.advance(services.identity.lockout_duration / 2 + 1)
    await login(http, user["username"])  # unlocked, and the counter starts again
    for _ in range(attempts - 1):
        await http.post("/auth/login", json={"username": user["username"], "password": "wrong1234"})
    await login(http, user["username"])


async def test_a_successful_login_resets_the_failure_count(app: App) -> None:
    http, services = app
    user = await register(http)
    for _ in range(3):
        for _ in range(services.identity.max_login_attempts - 1):
            await http.post(
                "/auth/login", json={"username": user["username"], "password": "bad-pass"}
            )
        await login(http, user["username"])


async def test_login_rehashes_a_password_made_with_older_parameters(app: App) -> None:
    http, services = app
    user = await register(http)

    old = await Passwords(time_cost=2, memory_cost=16).hash(PASSWORD)
    await services.db.execute("UPDATE users SET password_hash = $1 WHERE id = $2", old, user["id"])
    await login(http, user["username"])
    stored = await services.db.fetchval("SELECT password_hash FROM users WHERE id = $1", user["id"])
    assert stored != old
    assert not services.identity.passwords.needs_rehash(stored)
    await login(http, user["username"])


# ---- refresh and logout ------------------------------------------------------------------


async def test_refresh_rotates_and_reuse_of_a_dead_token_ends_the_login(app: App) -> None:
    http, _ = app
    user = await register(http)
    first = await login(http, user["username"])
    second = (
        await http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    ).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await http.get("/auth/me", headers=bearer(second["access_token"]))).status_code == 200
    reused = await http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(reused, 401, "unauthenticated")
    # reuse detection: every token of that login is dead now, also the newest ones
    for token in (first["access_token"], second["access_token"]):
        assert_problem(await http.get("/auth/me", headers=bearer(token)), 401, "unauthenticated")
    again = await http.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_problem(again, 401, "unauthenticated")
    other = await login(http, user["username"])  # other logins are untouched
    assert (await http.get("/auth/me", headers=bearer(other["access_token"]))).status_code == 200


async def test_concurrent_refreshes_of_one_token_yield_one_new_pair(app: App) -> None:
    http, _ = app
    user = await register(http)
    pair = await login(http, user["username"])
    responses = await asyncio.gather(
        *(
            http.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 401, 401, 401]


async def test_logout_ends_that_login_only(app: App) -> None:
    http, _ = app
    user = await register(http)
    first = await login(http, user["username"])
    second = await login(http, user["username"])
    response = await http.post(
        "/auth/logout",
        json={"refresh_token": first["refresh_token"]},
        headers=bearer(first["access_token"]),
    )
    assert response.status_code == 204
    assert_problem(
        await http.get("/auth/me", headers=bearer(first["access_token"])), 401, "unauthenticated"
    )
    dead_refresh = await http.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(dead_refresh, 401, "unauthenticated")
    assert (await http.get("/auth/me", headers=bearer(second["access_token"]))).status_code == 200
    no_body = await http.post("/auth/logout", headers=bearer(second["access_token"]))
    assert no_body.status_code == 204
    assert_problem(
        await http.get("/auth/me", headers=bearer(second["access_token"])), 401, "unauthenticated"
    )


async def test_logout_needs_a_token(app: App) -> None:
    http, _ = app
    response = await http.post("/auth/logout")
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_revocation_survives_a_restart(app: App, tmp_path: Path, database_url: str) -> None:
    http, _ = app
    user = await register(http)
    pair = await login(http, user["username"])
    await http.post("/auth/logout", headers=bearer(pair["access_token"]))
    async with running_app(tmp_path, database_url) as (fresh, _):
        me = await fresh.get("/auth/me", headers=bearer(pair["access_token"]))
        assert_problem(me, 401, "unauthenticated")


# ---- passwords ----------------------------------------------------------------------------


async def test_change_password_ends_every_other_login(app: App) -> None:
    http, _ = app
    user = await register(http)
    current = await login(http, user["username"])
    other = await login(http, user["username"])
    wrong = await http.post(
        "/auth/change-password",
        json={"current_password": "not-the-password", "new_password": "brand-new-pass"},
        headers=bearer(current["access_token"]),
    )
    assert_problem(wrong, 401, "invalid_credentials")
    short = await http.post(
        "/auth/change-password",
        json={"current_password": PASSWORD, "new_password": "short"},
        headers=bearer(current["access_token"]),
    )
    assert_problem(short, 400, "validation_error")
    changed = await http.post(
        "/auth/change-password",
        json={"current_password": PASSWORD, "new_password": "brand-new-pass"},
        headers=bearer(current["access_token"]),
    )
    assert changed.status_code == 204
    assert (await http.get("/auth/me", headers=bearer(current["access_token"]))).status_code == 200
    assert_problem(
        await http.get("/auth/me", headers=bearer(other["access_token"])), 401, "unauthenticated"
    )
    old = await http.post("/auth/login", json={"username": user["username"], "password": PASSWORD})
    assert_problem(old, 401, "invalid_credentials")
    await login(http, user["username"], "brand-new-pass")


async def test_reset_password_is_202_for_known_and_unknown_emails(app: App) -> None:
    http, services = app
    user = await register(http)
    known = await http.post("/auth/reset-password", json={"email": user["email"]})
    unknown = await http.post("/auth/reset-password", json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    token = await reset_token(services, user["id"])
    hashed = await services.db.fetchval("SELECT token_hash FROM password_resets")
    assert hashed != token  # stored hashed, never as sent
    count = await services.db.fetchval("SELECT count(*) FROM outbox WHERE topic = 'notifications'")
    assert count == 1  # nothing queued for the unknown email


async def test_reset_password_answers_before_it_queues_anything(app: App) -> None:
    """The answer goes out before the token is queued, so its timing cannot tell a known
    email from an unknown one: when the body is sent, nothing is written yet."""
    http, services = app
    user = await register(http)
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    body = orjson.dumps({"email": user["email"]})
    sent: list[tuple[int, int]] = []
    incoming = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, object]:
        return incoming.pop() if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            assert isinstance(status, int)
            sent.append((status, -1))
        elif message["type"] == "http.response.body":
            queued = await services.db.fetchval(
                "SELECT (SELECT count(*) FROM mail_queue) + (SELECT count(*) FROM password_resets)"
            )
            sent.append((sent[-1][0], queued))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/auth/reset-password",
        "raw_path": b"/auth/reset-password",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    await transport.app(scope, receive, send)
    assert sent[-1] == (202, 0)  # answered with nothing written
    # Then queued: the mail row, which the sender may already have turned into a reset row.
    written = await services.db.fetchval(
        "SELECT (SELECT count(*) FROM mail_queue) + (SELECT count(*) FROM password_resets)"
    )
    assert written >= 1


async def test_reset_confirm_sets_the_password_ends_all_logins_and_is_single_use(app: App) -> None:
    http, services = app
    user = await register(http)
    session = await login(http, user["username"])
    await http.post("/auth/reset-password", json={"email": user["email"]})
    token = await reset_token(services, user["id"])
    short = await http.post(
        "/auth/reset-password/confirm", json={"token": token, "new_password": "short"}
    )
    assert_problem(short, 400, "validation_error")
    done = await http.post(
        "/auth/reset-password/confirm", json={"token": token, "new_password": "after-reset-1"}
    )
    assert done.status_code == 204
    assert_problem(
        await http.get("/auth/me", headers=bearer(session["access_token"])), 401, "unauthenticated"
    )
    await login(http, user["username"], "after-reset-1")
    reused = await http.post(
        "/auth/reset-password/confirm", json={"token": token, "new_password": "after-reset-2"}
    )
    assert_problem(reused, 400, "invalid_token")
    forged = await http.post(
        "/auth/reset-password/confirm", json={"token": "made-up", "new_password": "after-reset-2"}
    )
    assert_problem(forged, 400, "invalid_token")


async def test_reset_token_expires(app: App, clock: FakeClock) -> None:
    http, services = app
    user = await register(http)
    await http.post("/auth/reset-password", json={"email": user["email"]})
    token = await reset_token(services, user["id"])
    clock.advance(services.identity.password_reset_ttl + 1)
    late = await http.post(
        "/auth/reset-password/confirm", json={"token": token, "new_password": "too-late-1"}
    )
    assert_problem(late, 400, "invalid_token")
    await login(http, user["username"])  # the old password still works


async def test_reset_notification_is_relayed(app: App) -> None:
    http, services = app
    user = await register(http)
    await http.post("/auth/reset-password", json={"email": user["email"]})
    for _ in range(100):
        pending = await services.db.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = 'notifications' AND published_at IS NULL"
        )
        if pending == 0:
            break
        await asyncio.sleep(0.05)
    assert pending == 0


# ---- roles ------------------------------------------------------------------------------------


async def test_admin_sets_roles_recorded_with_who_and_the_users_logins_end(app: App) -> None:
    http, services = app
    admin = await admin_headers(http, services)
    user = await register(http)
    session = await login(http, user["username"])
    response = await http.patch(
        f"/admin/users/{user['id']}", json={"roles": ["auditor"]}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.json()["roles"] == ["auditor"]
    assert_problem(
        await http.get("/auth/me", headers=bearer(session["access_token"])), 401, "unauthenticated"
    )
    fresh = await login(http, user["username"])
    assert jwt.decode(fresh["access_token"], options={"verify_signature": False})["roles"] == [
        "auditor"
    ]
    admin_id = (await http.get("/auth/me", headers=admin)).json()["id"]
    changes = await services.identity.users.role_changes(user["id"])
    assert [(c["old_roles"], c["new_roles"], c["changed_by"]) for c in changes] == [
        ("customer", "auditor", admin_id)
    ]


async def test_set_roles_validates_and_is_admin_only(app: App) -> None:
    http, services = app
    admin = await admin_headers(http, services)
    customer = await sign_up(http)
    user = await register(http)
    bad = await http.patch(f"/admin/users/{user['id']}", json={"roles": ["king"]}, headers=admin)
    assert_problem(bad, 400, "validation_error")
    empty = await http.patch(f"/admin/users/{user['id']}", json={"roles": []}, headers=admin)
    assert_problem(empty, 400, "validation_error")
    unknown = await http.patch(
        "/admin/users/00000000-0000-4000-8000-000000000000",
        json={"roles": ["admin"]},
        headers=admin,
    )
    assert_problem(unknown, 404, "not_found")
    by_customer = await http.patch(
        f"/admin/users/{user['id']}", json={"roles": ["admin"]}, headers=customer
    )
    assert_problem(by_customer, 403, "forbidden")
    auditor = await admin_headers(http, services, roles=("auditor",))
    assert_problem(await http.get("/admin/users", headers=auditor), 403, "forbidden")
    listed = await http.get("/admin/users", params={"limit": 100}, headers=admin)
    assert user["id"] in {u["id"] for u in listed.json()["data"]}


async def test_usernames_are_unique_per_run_helper(app: App) -> None:
    assert new_username() != new_username()


async def test_revocations_are_forgotten_once_every_token_of_the_login_expired(
    app: App, clock: FakeClock
) -> None:
    http, services = app
    user = await register(http)
    pair = await login(http, user["username"])
    await http.post("/auth/logout", headers=bearer(pair["access_token"]))
    revocations = services.identity.revocations
    await revocations.refresh()
    assert len(revocations) == 1
    await revocations.prune()
    assert len(revocations) == 1  # the login's refresh token would still be valid
    assert await services.db.fetchval("SELECT count(*) FROM revocations") == 1
    tokens = services.identity.tokens
    clock.advance(tokens.refresh_ttl + tokens.access_ttl + 1)
    await revocations.prune()
    assert len(revocations) == 0
    assert await services.db.fetchval("SELECT count(*) FROM revocations") == 0
