"""/health/live, /health/ready, /openapi.json and /docs."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.http_support import BOTH_BACKENDS, open_account

from banking_es.api.app import create_app
from banking_es.bootstrap import Services
from banking_es.config import load_settings
from banking_es.eventstore.base import StoreUnavailable

both_backends = pytest.mark.parametrize("db_backend", BOTH_BACKENDS, indirect=True)
PROBLEM_REF = "#/components/schemas/Problem"
WRITES = [
    ("/accounts", "post"),
    ("/accounts/{account_id}/deposit", "post"),
    ("/accounts/{account_id}/withdraw", "post"),
    ("/accounts/{account_id}/close", "post"),
    ("/transfers", "post"),
]


# ---- health -----------------------------------------------------------------------------------


async def test_live_is_ok(api: httpx.AsyncClient) -> None:
    response = await api.get("/health/live")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


@both_backends
async def test_ready_reports_every_component(api: httpx.AsyncClient, services: Services) -> None:
    await open_account(api)
    head = await services.store.head_position()
    assert await services.projections.wait_for(head, 5)

    response = await api.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    components = body["components"]
    assert {"event_store", "projections", "outbox"} <= set(components)
    assert not {"redis", "kafka"} & set(components)  # neither is configured
    assert all(c["status"] == "ok" for c in components.values())
    projections = components["projections"]["projections"]
    assert set(projections) == {"account_summaries", "transactions"}
    for lag in projections.values():
        assert lag["lag_events"] == 0
        assert lag["lag_seconds"] == 0
        assert lag["position"] == head
    outbox = components["outbox"]
    assert isinstance(outbox["backlog"], int)
    assert outbox["oldest_age_seconds"] >= 0


async def test_ready_shows_projection_lag(api: httpx.AsyncClient, services: Services) -> None:
    await services.projections.stop()
    await open_account(api)
    await open_account(api)

    body = (await api.get("/health/ready")).json()

    lags = body["components"]["projections"]["projections"]
    assert {name: lag["lag_events"] for name, lag in lags.items()} == {
        "account_summaries": 2,
        "transactions": 2,
    }
    assert body["status"] == "ok"  # a lag of milliseconds is not degraded


async def test_ready_is_503_down_when_the_event_store_fails(
    api: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> None:
        raise StoreUnavailable("connection refused")

    monkeypatch.setattr(services.store, "ping", down)
    monkeypatch.setattr(services.store, "head_position", down)

    response = await api.get("/health/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["components"]["event_store"]["status"] == "down"


async def test_ready_answers_within_a_second_when_a_check_hangs(
    api: httpx.AsyncClient, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(services.store, "ping", hang)
    monkeypatch.setattr(services.store, "head_position", hang)
    started = time.monotonic()

    response = await api.get("/health/ready")

    assert time.monotonic() - started < 1.0
    assert response.status_code == 503
    assert response.json()["components"]["event_store"]["status"] == "down"


# ---- OpenAPI ----------------------------------------------------------------------------------


async def get_without_services(path: str, data_dir: Path) -> httpx.Response:
    """GET `path` from an app whose lifespan never ran: documentation needs no database."""
    settings = load_settings(database_url=f"sqlite:///{data_dir / 'unused.db'}")
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path)


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The OpenAPI document, fetched once for the module (it does not depend on data)."""
    response = asyncio.run(get_without_services("/openapi.json", tmp_path_factory.mktemp("doc")))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


async def test_openapi_lists_every_endpoint(openapi: dict[str, Any]) -> None:
    assert openapi["openapi"].startswith("3.")
    found = {(path, method) for path, method, _ in operations(openapi)}
    assert found >= {
        ("/accounts", "get"),
        ("/accounts", "post"),
        ("/accounts/{account_id}", "get"),
        ("/accounts/{account_id}/deposit", "post"),
        ("/accounts/{account_id}/withdraw", "post"),
        ("/accounts/{account_id}/close", "post"),
        ("/accounts/{account_id}/events", "get"),
        ("/accounts/{account_id}/transactions", "get"),
        ("/transfers", "post"),
        ("/transfers/{transfer_id}", "get"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
    }


async def test_openapi_has_no_fastapi_validation_error(openapi: dict[str, Any]) -> None:
    text = json.dumps(openapi)

    assert "HTTPValidationError" not in text
    assert '"ValidationError"' not in text
    assert "#/components/schemas/ValidationError" not in text
    for path, method, operation in operations(openapi):
        response = operation["responses"].get("422")
        if response is not None:
            content = response.get("content", {})
            assert list(content) == ["application/problem+json"], (path, method)
            assert content["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}


async def test_openapi_error_responses_are_problems(openapi: dict[str, Any]) -> None:
    checked = 0
    for path, method, operation in operations(openapi):
        if path == "/health/ready":
            continue  # its 503 is the health body (see the test below)
        for status, response in operation["responses"].items():
            if status[0] in "45":
                content = response.get("content", {})
                assert list(content) == ["application/problem+json"], (path, method, status)
                assert content["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}
                checked += 1
    assert checked > 20


async def test_openapi_problem_schema_has_the_error_fields(openapi: dict[str, Any]) -> None:
    problem = openapi["components"]["schemas"]["Problem"]

    assert set(problem["properties"]) >= {
        "type",
        "title",
        "status",
        "detail",
        "error",
        "code",
        "errors",
        "current_version",
    }
    assert set(problem.get("required", [])) >= {"title", "status", "detail", "error", "code"}


async def test_openapi_documents_400_wherever_there_is_input(openapi: dict[str, Any]) -> None:
    for path, method, operation in operations(openapi):
        if operation.get("parameters") or operation.get("requestBody"):
            assert "400" in operation["responses"], (path, method)


@pytest.mark.parametrize(("path", "method"), WRITES)
async def test_openapi_documents_the_http_errors_of_writes(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    responses = openapi["paths"][path][method]["responses"]

    assert {"400", "409", "413", "415"} <= set(responses)


@pytest.mark.parametrize(("path", "method"), WRITES)
async def test_openapi_request_bodies_are_json(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    body = openapi["paths"][path][method]["requestBody"]

    assert "application/json" in body["content"]


@pytest.mark.parametrize(("path", "method"), WRITES)
async def test_openapi_documents_the_business_422_of_writes(
    openapi: dict[str, Any], path: str, method: str
) -> None:
    response = openapi["paths"][path][method]["responses"]["422"]

    assert response["content"]["application/problem+json"]["schema"] == {"$ref": PROBLEM_REF}


async def test_openapi_describes_the_ready_503_as_the_health_body(
    openapi: dict[str, Any],
) -> None:
    content = openapi["paths"]["/health/ready"]["get"]["responses"]["503"].get("content", {})

    assert "application/problem+json" not in content
    assert "application/json" in content


async def test_docs_is_the_interactive_documentation(tmp_path: Path) -> None:
    response = await get_without_services("/docs", tmp_path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger" in response.text.lower()
    assert "/openapi.json" in response.text


async def test_docs_loads_swagger_ui_from_the_service_itself(tmp_path: Path) -> None:
    """Banks run air-gapped: every script, stylesheet and icon of /docs comes from here."""
    page = (await get_without_services("/docs", tmp_path)).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)

    assert len(assets) == 3
    for asset in assets:
        assert asset.startswith("/docs/assets/"), asset
        response = await get_without_services(asset, tmp_path)
        assert response.status_code == 200, asset
        assert len(response.content) > 500, asset  # the files themselves, not an error page
    assert (await get_without_services("/docs/assets/index.html", tmp_path)).status_code == 404
