"""Helpers for the API tests: problem assertions, store snapshots, small API calls."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from tests.api_support import app_client

from banking_es.bootstrap import Services

#: `@pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)` runs a test on both.
BOTH_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

PROBLEM_KEYS = {"type", "title", "status", "detail", "error", "code"}
PASSWORD = "e2e api password"


#: Fixed signing keys, so that two app instances on one database accept each other's tokens.
TEST_SECRETS = {
    "jwt_secret": "e2e-api-tests-access-token-secret-0123456789",
    "refresh_token_secret": "e2e-api-tests-refresh-token-secret-0123456789",
}


#: The settings of the API tests: fast projections, and fixed signing keys (`TEST_SECRETS`).
E2E_SETTINGS = {"projection_poll_interval_ms": 10, **TEST_SECRETS}


@asynccontextmanager
async def api_client(
    services: Services, authorization: str | None = None, *, role: str = "customer"
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for `create_app(settings, services)`, in process (no server).

    It sends `authorization` on every request; without one, a new user with `role` is
    registered (through the service, as the CLI does) and logged in for it.
    """
    async with app_client(services) as client:
        client.headers["Authorization"] = authorization or await log_in_new_user(
            client, services, role
        )
        yield client


async def log_in_new_user(client: httpx.AsyncClient, services: Services, role: str) -> str:
    """Register a user with `role`, log in through the API, return the Authorization value."""
    username = f"{role}_{uuid.uuid4().hex[:12]}"
    await services.identity.register(username, f"{username}@example.com", PASSWORD, roles=(role,))
    response = await client.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return f"Bearer {response.json()['access_token']}"


@dataclass(frozen=True)
class StoreState:
    """The store's head and every event's identity and content, for before/after comparisons."""

    head: int
    events: tuple[tuple[Any, ...], ...]


async def snapshot_store(services: Services) -> StoreState:
    head = await services.store.head_position()
    events = await services.store.read_all(0, 100_000)
    return StoreState(
        head,
        tuple(
            (e.event_id, e.position, e.stream_id, e.version, e.type, repr(e.data)) for e in events
        ),
    )


def assert_problem(
    response: httpx.Response, status: int, code: str, *, request_id: bool = True
) -> dict[str, Any]:
    """`response` is an RFC 9457 problem with `status` and `code`; return its body.

    `request_id=False` skips the `x-request-id` check (tested on its own where it fails).
    """
    assert response.status_code == status, response.text
    content_type = response.headers.get("content-type", "")
    assert content_type == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["code"] == code, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert body["detail"] == body["error"]
    assert body["title"]
    assert body["type"] == "about:blank" or body["type"].startswith("http")
    assert "traceback" not in response.text.lower()
    if request_id:
        assert response.headers.get("x-request-id"), response.headers
    if "errors" in body:
        assert code == "validation_error", body
        assert body["errors"], body
        for problem in body["errors"]:
            assert set(problem) == {"field", "message"}, problem
    return body


async def open_account(
    api: httpx.AsyncClient, owner: str = "Ada Lovelace", balance: Any = "100.00", **extra: Any
) -> dict[str, Any]:
    response = await api.post(
        "/accounts", json={"owner_name": owner, "initial_balance": balance, **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_projections(services: Services) -> None:
    head = await services.store.head_position()
    assert await services.projections.wait_for(head, 5), "projections did not catch up"


ACCOUNT_KEYS = {
    "id",
    "owner_name",
    "balance",
    "available",
    "overdraft_limit",
    "currency",
    "status",
    "version",
    "created_at",
    "updated_at",
}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

both_backends = pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)


def parse_time(value: str) -> datetime:
    assert RFC3339_UTC.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def deposit(api: httpx.AsyncClient, account_id: str, amount: Any, **extra: Any) -> Any:
    response = await api.post(f"/accounts/{account_id}/deposit", json={"amount": amount, **extra})
    assert response.status_code == 200, response.text
    return response.json()


async def withdraw(api: httpx.AsyncClient, account_id: str, amount: Any, **extra: Any) -> Any:
    response = await api.post(f"/accounts/{account_id}/withdraw", json={"amount": amount, **extra})
    assert response.status_code == 200, response.text
    return response.json()


async def answer_with_a_bug(
    services: Services, monkeypatch: pytest.MonkeyPatch, request_id: str
) -> httpx.Response:
    """GET a transfer while `get_transfer` raises an unexpected exception."""

    async def broken(transfer_id: str) -> None:
        raise RuntimeError("SECRET internal detail")

    monkeypatch.setattr(services.accounts, "get_transfer", broken)
    async with app_client(services, raise_app_exceptions=False) as client:
        authorization = await log_in_new_user(client, services, "customer")
        return await client.get(
            f"/transfers/{uuid.uuid4()}",
            headers={"x-request-id": request_id, "Authorization": authorization},
        )
