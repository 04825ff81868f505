"""Structured logs: one access line per request with its fields, and never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.api_support import running_app
from tests.auth import bearer, login, new_username, register, reset_token, sign_up
from tests.smtp_support import SmtpServer

from banking_es.bootstrap import Services
from banking_es.config import load_settings
from banking_es.logging_setup import REDACTED, configure_logging

#: Values that must never reach a log line, whatever the request carries them in.
SECRETS = {
    "authorization": "Bearer eyJSECRET-ACCESS-TOKEN.payload.signature",
    "idempotency_key": "idem-SECRET-KEY-7f3a",
    "password": "hunter2-SECRET-PASSWORD",
    "refresh_token": "SECRET-REFRESH-TOKEN-91b2",
    "description": "SECRET-BODY-TEXT-in-a-description",
}


class LogCapture:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def access(self) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("logger") == "banking_es.access"]


@pytest.fixture
def json_logs() -> Iterator[LogCapture]:
    """The service's real logging configuration (JSON, debug level), written to a buffer."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(load_settings(log_format="json", log_level="debug"))
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    try:
        yield LogCapture(stream)
    finally:
        root.handlers[:], root.level = saved
        logging.getLogger("uvicorn.access").disabled = False


async def test_every_request_logs_method_route_status_duration_request_and_user_id(
    tmp_path: Path, json_logs: LogCapture
) -> None:
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 'l.db'}") as (client, _services):
        user = await register(client)
        client.headers.update(bearer((await login(client, user["username"]))["access_token"]))
        signed_up = len(json_logs.access())  # POST /auth/register and /auth/login
        assert signed_up == 2
        opened = await client.post(
            "/accounts",
            json={"owner_name": "Ada", "initial_balance": "5"},
            headers={"x-request-id": "req-abc-1"},
        )
        account = opened.json()["id"]
        await client.post(f"/accounts/{account}/withdraw", json={"amount": "50"})
    lines = json_logs.access()[signed_up:]
    assert len(lines) == 2
    first, second = lines
    assert first["method"] == "POST"
    assert first["route"] == "/accounts"
    assert first["path"] == "/accounts"
    assert first["status"] == 201
    assert first["request_id"] == "req-abc-1"
    assert first["user_id"] == user["id"]  # set by the real bearer authentication
    assert isinstance(first["duration_ms"], float)
    assert first["level"] == "info"
    assert second["route"] == "/accounts/{account_id}/withdraw"
    assert second["status"] == 422
    # The refusal is logged with its reason and carries the request id of its request.
    refusals = [line for line in json_logs.lines() if line.get("reason") == "insufficient_funds"]
    assert len(refusals) == 1
    assert refusals[0]["request_id"] == second["request_id"]


async def test_validation_failures_are_logged_with_field_names_not_values(
    tmp_path: Path, json_logs: LogCapture
) -> None:
    async with running_app(tmp_path, f"sqlite:///{tmp_path / 'v.db'}") as (client, _services):
        client.headers.update(await sign_up(client))
        response = await client.post(
            "/accounts",
            json={"owner_name": "", "initial_balance": "-1", "password": SECRETS["password"]},
        )
        assert response.status_code == 400
    [line] = [x for x in json_logs.lines() if x.get("reason") == "validation_error"]
    assert set(line["fields"]) == {"owner_name", "initial_balance", "password"}
    assert SECRETS["password"] not in json_logs.text


async def test_no_secret_in_logs_of_a_full_flow(tmp_path: Path, json_logs: LogCapture) -> None:
    """Every secret a client can send, through every kind of request, and a debug level.

    The whole identity flow runs too: register, a wrong login, login, refresh, change-password,
    logout, reset-password (request, then confirm with the token from the outbox), login with
    the new password, and refused reuses of spent tokens. No password, access or refresh token,
    reset token or signing secret may appear anywhere in the output.

    Production settings: there the relay logs that a notification was sent, not its payload
    (in development `LogPublisher(with_payloads=True)` logs it, reset token included).
    """
    jwt_secret, refresh_secret = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
    with SmtpServer() as smtp:  # production sends the reset token by mail, never logs it
        await _full_flow_in_production(tmp_path, json_logs, smtp, jwt_secret, refresh_secret)


async def _full_flow_in_production(
    tmp_path: Path, json_logs: LogCapture, smtp: SmtpServer, jwt_secret: str, refresh_secret: str
) -> None:
    sent: list[str] = []

    async def record(request: httpx.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    async with running_app(
        tmp_path,
        f"sqlite:///{tmp_path / 's.db'}",
        banking_env="production",
        jwt_secret=jwt_secret,
        refresh_token_secret=refresh_secret,
        smtp_url=smtp.url,
    ) as (client, services):
        assert services.settings.banking_env == "production"
        client.event_hooks["request"].append(record)
        leaks = AuthSecrets(jwt_secret=jwt_secret, refresh_token_secret=refresh_secret)
        user = await auth_flow(client, services, leaks)
        access = leaks.values["access_token_3"]  # the live login of the flow

        forged = await client.get(
            "/accounts/nothing", headers={"authorization": SECRETS["authorization"]}
        )
        assert forged.status_code == 401
        headers = {
            "authorization": f"Bearer {access}",
            "idempotency-key": SECRETS["idempotency_key"],
            "cookie": f"session={SECRETS['refresh_token']}",
        }
        opened = await client.post(
            "/accounts", json={"owner_name": "Ada", "initial_balance": "5"}, headers=headers
        )
        assert opened.status_code == 201
        account = opened.json()["id"]
        replay = await client.post(
            "/accounts", json={"owner_name": "Ada", "initial_balance": "5"}, headers=headers
        )
        assert replay.headers["idempotent-replayed"] == "true"
        headers["idempotency-key"] += "-deposit"
        body = {"amount": "1", "description": SECRETS["description"]}
        deposit = await client.post(f"/accounts/{account}/deposit", json=body, headers=headers)
        assert deposit.status_code == 200
        reused = await client.post(
            f"/accounts/{account}/deposit", json={"amount": "2"}, headers=headers
        )
        assert reused.status_code == 422
        bad_json = await client.post(
            f"/accounts/{account}/deposit",
            content=f'{{"password": "{SECRETS["password"]}", ',
            headers={**headers, "content-type": "application/json"},
        )
        assert bad_json.status_code == 400
        rejected = await client.post(
            f"/accounts/{account}/withdraw",
            json={"amount": "999", "refresh_token": SECRETS["refresh_token"]},
            headers=headers,
        )
        assert rejected.status_code == 400
        await client.get(f"/accounts/{account}/events", headers=headers)
        await client.get("/metrics", headers=headers)

        # The reset notification went through the relay: logged as sent, payload withheld.
        await wait_for_log(json_logs, f"notification on notifications for {user['id']}")
    # Something the code itself might log by mistake is masked by field name.
    logging.getLogger("banking_es.test").info(
        "login", extra={"password": SECRETS["password"], "refresh_token": SECRETS["refresh_token"]}
    )
    text = json_logs.text
    # One access line per request, in order: 14 of the auth flow, 1 forged token, 8 more.
    assert len(sent) == 14 + 1 + 8
    assert [f"{line['method']} {line['path']}" for line in json_logs.access()] == sent
    notified = [line for line in json_logs.lines() if "notification on" in line["event"]]
    assert [line["event"] for line in notified] == [
        f"notification on notifications for {user['id']} (payload not logged)"
    ]
    for name, secret in {**SECRETS, **leaks.values}.items():
        assert secret not in text, f"{name} leaked into the logs"
    for name, token in leaks.jwts().items():  # not even the signature on its own
        assert token.rsplit(".", 1)[-1] not in text, f"the signature of {name} leaked"
    assert json_logs.lines()[-1]["password"] == REDACTED


class AuthSecrets:
    """Every secret value an auth flow sends or receives, by name."""

    def __init__(self, **values: str) -> None:
        self.values = dict(values)

    def add(self, name: str, value: str) -> str:
        assert value, name
        assert value not in self.values.values(), name
        self.values[name] = value
        return value

    def pair(self, number: int, response: httpx.Response) -> tuple[str, str]:
        assert response.status_code == 200, response.text
        pair = response.json()
        return (
            self.add(f"access_token_{number}", pair["access_token"]),
            self.add(f"refresh_token_{number}", pair["refresh_token"]),
        )

    def jwts(self) -> dict[str, str]:
        return {name: value for name, value in self.values.items() if value.count(".") == 2}


async def auth_flow(
    client: httpx.AsyncClient, services: Services, leaks: AuthSecrets
) -> dict[str, Any]:
    """14 requests through every /auth endpoint that carries a password or a token."""
    username = new_username("leak")
    email = f"{username}@example.com"
    first = leaks.add("password", f"first-SECRET-PASSWORD-{secrets.token_hex(4)}")
    second = leaks.add("changed_password", f"second-SECRET-PASSWORD-{secrets.token_hex(4)}")
    third = leaks.add("reset_password", f"third-SECRET-PASSWORD-{secrets.token_hex(4)}")
    wrong = leaks.add("wrong_password", f"wrong-SECRET-PASSWORD-{secrets.token_hex(4)}")

    user = await register(client, username, first)
    refused = await client.post("/auth/login", json={"username": username, "password": wrong})
    assert refused.status_code == 401
    _, refresh_1 = leaks.pair(
        1, await client.post("/auth/login", json={"username": email, "password": first})
    )
    access_2, refresh_2 = leaks.pair(
        2, await client.post("/auth/refresh", json={"refresh_token": refresh_1})
    )
    changed = await client.post(
        "/auth/change-password",
        json={"current_password": first, "new_password": second},
        headers=bearer(access_2),
    )
    assert changed.status_code == 204, changed.text
    me = await client.get("/auth/me", headers=bearer(access_2))
    assert me.json()["id"] == user["id"]
    out = await client.post(
        "/auth/logout", json={"refresh_token": refresh_2}, headers=bearer(access_2)
    )
    assert out.status_code == 204, out.text
    after_logout = await client.get("/auth/me", headers=bearer(access_2))
    assert after_logout.status_code == 401
    spent = await client.post("/auth/refresh", json={"refresh_token": refresh_1})
    assert spent.status_code == 401

    requested = await client.post("/auth/reset-password", json={"email": email})
    assert requested.status_code == 202
    token = leaks.add("reset_token", await reset_token(services, user["id"]))
    confirm = {"token": token, "new_password": third}
    confirmed = await client.post("/auth/reset-password/confirm", json=confirm)
    assert confirmed.status_code == 204, confirmed.text
    used = await client.post("/auth/reset-password/confirm", json=confirm)
    assert used.status_code == 400
    old = await client.post("/auth/login", json={"username": username, "password": second})
    assert old.status_code == 401
    leaks.pair(3, await client.post("/auth/login", json={"username": username, "password": third}))
    return user


async def wait_for_log(logs: LogCapture, fragment: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while fragment not in logs.text:
        assert time.monotonic() < deadline, f"never logged: {fragment}"
        await asyncio.sleep(0.05)


def test_console_format_is_readable_and_tracebacks_show_no_locals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(load_settings(log_format="console"))
        password = SECRETS["password"]
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("banking_es.test").exception("failed for %s", "ada")
        assert password  # a local variable of this frame, never printed
    finally:
        root.handlers[:], root.level = saved
    err = capsys.readouterr().err
    assert "failed for ada" in err
    assert "ValueError: boom" in err
    assert not err.lstrip().startswith("{")
    assert SECRETS["password"] not in err
