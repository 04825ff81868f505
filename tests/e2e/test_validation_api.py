"""Request validation through the HTTP API: errors are 400s, warnings come back and are kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tests.api_support import running_app
from tests.auth import sign_up

from banking_es.application.validation import (
    TRANSACTION,
    FieldError,
    RequestContext,
    ValidationResult,
)

#: Cheap Argon2 for the customer each test signs up (identity is always on).


async def test_a_withdrawal_leaving_under_one_percent_answers_with_a_warning_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_app(tmp_path) as (http, services):
        http.headers.update(await sign_up(http))
        created = await http.post("/accounts", json={"owner_name": "Ada", "initial_balance": "100"})
        assert "warnings" not in created.json()
        account_id = created.json()["id"]
        with caplog.at_level(logging.INFO, logger="banking_es.validation"):
            response = await http.post(
                f"/accounts/{account_id}/withdraw",
                json={"amount": "99.50"},
                headers={"Idempotency-Key": "w-1"},
            )
        assert response.status_code == 200
        body = response.json()
        assert body["balance"] == "0.50"
        assert len(body["warnings"]) == 1
        assert "less than 1%" in body["warnings"][0]
        assert any("low_remaining_balance" in r.getMessage() for r in caplog.records)
        assert (
            services.metrics.count(services.metrics.validation_warnings, "low_remaining_balance")
            == 1
        )
        # the stored idempotent answer carries the warning too
        replay = await http.post(
            f"/accounts/{account_id}/withdraw",
            json={"amount": "99.50"},
            headers={"Idempotency-Key": "w-1"},
        )
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == response.content
        plain = await http.post(f"/accounts/{account_id}/withdraw", json={"amount": "0.10"})
        assert "warnings" not in plain.json()


async def test_a_transfer_emptying_the_source_warns(tmp_path: Path) -> None:
    async with running_app(tmp_path) as (http, _):
        http.headers.update(await sign_up(http))
        ids = [
            (await http.post("/accounts", json={"owner_name": n, "initial_balance": "10"})).json()[
                "id"
            ]
            for n in ("A", "B")
        ]
        response = await http.post(
            "/transfers", json={"from_account_id": ids[0], "to_account_id": ids[1], "amount": "10"}
        )
        assert response.status_code == 201
        assert len(response.json()["warnings"]) == 1


class DepositCap:
    name = "deposit_cap"

    async def validate(self, request: RequestContext) -> ValidationResult:
        if request.data["operation"] == "deposit" and request.data["amount"] > 1000:
            return ValidationResult(
                errors=[
                    FieldError("amount", "must be at most 1000.00 per deposit"),
                    FieldError("description", "is required for large deposits"),
                ]
            )
        return ValidationResult()


async def test_a_custom_rule_refuses_with_400_listing_every_problem_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with running_app(tmp_path) as (http, services):
        http.headers.update(await sign_up(http))
        services.validator.register(TRANSACTION, DepositCap())
        account_id = (
            await http.post("/accounts", json={"owner_name": "Ada", "initial_balance": "1"})
        ).json()["id"]
        refused = await http.post(f"/accounts/{account_id}/deposit", json={"amount": "5000"})
        assert refused.status_code == 400
        assert refused.headers["content-type"] == "application/problem+json"
        body = refused.json()
        assert body["code"] == "validation_error"
        assert body["error"] == (
            "amount must be at most 1000.00 per deposit, description is required for large deposits"
        )
        assert body["errors"] == [
            {"field": "amount", "message": "must be at most 1000.00 per deposit"},
            {"field": "description", "message": "is required for large deposits"},
        ]
        assert services.metrics.count(services.metrics.validation_failures, "deposit_cap") == 1
        after = (await http.get(f"/accounts/{account_id}")).json()
        assert (after["balance"], after["version"]) == ("1.00", 1)
        ok = await http.post(f"/accounts/{account_id}/deposit", json={"amount": "10"})
        assert ok.status_code == 200
