"""The OpenAPI document describes the real answers: every answer of a walk through the API
(successes and refusals) has a status the document lists for its operation, the documented
content type, and a body valid against the documented schema."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from tests.api_support import running_services
from tests.e2e.http_support import api_client, open_account, wait_for_projections


def as_json_schema(schema: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: `nullable: true` also admits null, and an object
    with documented properties admits no others (an answer's fields are all documented)."""
    if isinstance(schema, list):
        return [as_json_schema(value) for value in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: as_json_schema(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        converted["additionalProperties"] = False
    if converted.pop("nullable", False):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def check(document: dict[str, Any], template: str, response: httpx.Response) -> None:
    method = response.request.method.lower()
    where = f"{method.upper()} {template} -> {response.status_code}"
    operation = document["paths"][template][method]
    described = operation["responses"].get(str(response.status_code))
    assert described is not None, f"{where}: status not documented"
    if response.status_code == 204:
        return
    media = response.headers["content-type"].split(";")[0]
    assert media in described.get("content", {}), f"{where}: {media} not documented"
    schema = described["content"][media].get("schema")
    if schema and media.endswith("json"):  # a CSV or PDF statement: its media type only
        components = as_json_schema(document["components"])
        jsonschema.Draft202012Validator({**schema, "components": components}).validate(
            response.json()
        )


async def test_every_answer_of_a_walk_through_the_api_is_as_documented(tmp_path: Path) -> None:
    async with (
        running_services(tmp_path) as services,
        api_client(services) as api,
    ):
        document = (await api.get("/openapi.json")).json()
        account = (await open_account(api, "Ada", "100.00"))["id"]
        other = (await open_account(api, "Bob", "0"))["id"]
        unknown = str(uuid.uuid4())
        calls: list[tuple[str, httpx.Response]] = [
            (
                "/accounts",
                await api.post("/accounts", json={"owner_name": "Cy", "initial_balance": 1}),
            ),
            ("/accounts", await api.post("/accounts", json={"owner_name": ""})),
            ("/accounts/{account_id}", await api.get(f"/accounts/{account}")),
            ("/accounts/{account_id}", await api.get(f"/accounts/{account}?version=1")),
            ("/accounts/{account_id}", await api.get(f"/accounts/{unknown}")),
            ("/accounts/{account_id}", await api.get("/accounts/not-a-uuid")),
            (
                "/accounts/{account_id}/deposit",
                await api.post(f"/accounts/{account}/deposit", json={"amount": "2.50"}),
            ),
            (
                "/accounts/{account_id}/deposit",
                await api.post(
                    f"/accounts/{account}/deposit", json={"amount": "1", "expected_version": 1}
                ),
            ),
            (
                "/accounts/{account_id}/withdraw",
                await api.post(f"/accounts/{account}/withdraw", json={"amount": "1000"}),
            ),
            (
                "/accounts/{account_id}/withdraw",
                await api.post(
                    f"/accounts/{account}/withdraw",
                    content=b"{",
                    headers={"content-type": "application/json"},
                ),
            ),
            (
                "/accounts/{account_id}/deposit",
                await api.post(f"/accounts/{account}/deposit", content=b"amount=1"),
            ),
            (
                "/transfers",
                await api.post(
                    "/transfers",
                    json={"from_account_id": account, "to_account_id": other, "amount": "1"},
                ),
            ),
            ("/health/live", await api.get("/health/live")),
            ("/health/ready", await api.get("/health/ready")),
            ("/auth/me", await api.get("/auth/me")),
            ("/auth/me", await api.get("/auth/me", headers={"authorization": "Bearer nope"})),
            ("/admin/users", await api.get("/admin/users")),
        ]
        transfer = calls[11][1].json()["id"]
        calls.append(("/transfers/{transfer_id}", await api.get(f"/transfers/{transfer}")))
        await wait_for_projections(services)
        for template in ("/accounts", "/accounts/{account_id}/transactions"):
            path = template.replace("{account_id}", account)
            calls.append((template, await api.get(path)))
            calls.append((template, await api.get(f"{path}?limit=0")))
        events = f"/accounts/{account}/events"
        calls.append(("/accounts/{account_id}/events", await api.get(events)))
        calls.append(("/accounts/{account_id}/events", await api.get(f"{events}?cursor=x")))
        calls.append(
            ("/accounts/{account_id}/close", await api.post(f"/accounts/{other}/close", json={}))
        )
        holds = f"/accounts/{account}/holds"
        placed = await api.post(holds, json={"amount": "5", "expires_in": 60})
        hold = placed.json()["id"]
        calls += [
            ("/accounts/{account_id}/holds", placed),
            ("/accounts/{account_id}/holds", await api.post(holds, json={"amount": "1e9"})),
            ("/accounts/{account_id}/holds", await api.get(holds)),
            ("/holds/{hold_id}", await api.get(f"/holds/{hold}")),
            ("/holds/{hold_id}", await api.get(f"/holds/{unknown}")),
            (
                "/holds/{hold_id}/capture",
                await api.post(f"/holds/{hold}/capture", json={"amount": "6"}),
            ),
            ("/holds/{hold_id}/capture", await api.post(f"/holds/{hold}/capture")),
            ("/holds/{hold_id}/void", await api.post(f"/holds/{hold}/void")),
        ]
        statement = f"/accounts/{account}/statement?from=2026-01-01&to=2026-01-31"
        for accept in ("application/json", "text/csv", "application/pdf", "text/html"):
            answer = await api.get(statement, headers={"accept": accept})
            calls.append(("/accounts/{account_id}/statement", answer))
        bad_period = await api.get(f"/accounts/{account}/statement?from=2026-02-01")
        calls.append(("/accounts/{account_id}/statement", bad_period))
        admin_path = f"/admin/accounts/{account}"
        refused = await api.patch(admin_path, json={"overdraft_limit": 1})
        calls.append(("/admin/accounts/{account_id}", refused))
        async with api_client(services, role="admin") as admin:
            for template, answer in [
                ("/admin/accounts/{account_id}", await admin.patch(admin_path, json={})),
                (
                    "/admin/accounts/{account_id}",
                    await admin.patch(admin_path, json={"overdraft_limit": "10"}),
                ),
                (
                    "/admin/accounts/{account_id}/freeze",
                    await admin.post(f"{admin_path}/freeze", json={"reason": "kyc"}),
                ),
                (
                    "/admin/accounts/{account_id}/unfreeze",
                    await admin.post(f"{admin_path}/unfreeze"),
                ),
                (
                    "/admin/accounts/{account_id}/freeze",
                    await admin.post(f"/admin/accounts/{unknown}/freeze", json={"reason": "x"}),
                ),
            ]:
                calls.append((template, answer))
    statuses = {response.status_code for _, response in calls}
    assert statuses >= {200, 201, 400, 401, 403, 404, 406, 409, 415, 422}, statuses
    for template, response in calls:
        check(document, template, response)
