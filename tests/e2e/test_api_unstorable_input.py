"""Input that is valid JSON but that a backend cannot store: refused alone, harming nobody else.

JSON may spell a lone UTF-16 surrogate (`"\\ud800"`), which is no Unicode text (orjson refuses
to encode it), and a NUL character (`"\\u0000"`), which PostgreSQL text cannot hold. Such a
value must be answered with a 400 (or, for NUL, may be stored and round-tripped exactly), never
with a 5xx, and never fail the other requests that happen to share its group commit.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from tests.e2e.http_support import assert_problem, open_account, snapshot_store

from banking_es.bootstrap import Services

JSON = {"content-type": "application/json"}
SURROGATE = "a\\ud800b"  # JSON text of a string holding a lone surrogate
NUL = "a\\u0000b"  # JSON text of a string holding a NUL character

SQLITE = pytest.param("sqlite", id="sqlite")
POSTGRES = pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)


def text_requests(account_id: str, empty_id: str, text: str) -> list[tuple[str, str]]:
    """(path, raw JSON body) of every write with a free-text field, holding `text`.

    Each would succeed with ordinary text: `account_id` has money, `empty_id` has none.
    """
    return [
        ("/accounts", f'{{"owner_name": "{text}", "initial_balance": 1}}'),
        (f"/accounts/{account_id}/deposit", f'{{"amount": 1, "description": "{text}"}}'),
        (f"/accounts/{account_id}/withdraw", f'{{"amount": 1, "description": "{text}"}}'),
        (f"/accounts/{empty_id}/close", f'{{"reason": "{text}"}}'),
    ]


@pytest.mark.parametrize(
    ("db_backend", "field"),
    [
        *(
            pytest.param("sqlite", field, id=f"sqlite-{field}")
            for field in ("owner_name", "description", "withdraw", "reason")
        ),
        pytest.param(
            "postgres",
            "description",
            id="postgres-description",
            marks=pytest.mark.postgres,
        ),
    ],
    indirect=["db_backend"],
)
async def test_a_lone_surrogate_in_a_text_field_is_400(
    api: httpx.AsyncClient, services: Services, field: str
) -> None:
    account = await open_account(api, balance="10")
    empty = await open_account(api, balance="0")
    index = ["owner_name", "description", "withdraw", "reason"].index(field)
    path, content = text_requests(account["id"], empty["id"], SURROGATE)[index]
    before = await snapshot_store(services)

    response = await api.post(path, content=content, headers=JSON)

    code = response.json().get("code")
    assert code in ("invalid_json", "validation_error"), response.text
    assert_problem(response, 400, code)
    assert await snapshot_store(services) == before


@pytest.mark.parametrize(
    "db_backend",
    [SQLITE, pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
async def test_a_nul_in_a_name_is_refused_or_kept_exactly(
    api: httpx.AsyncClient, services: Services
) -> None:
    before = await snapshot_store(services)

    response = await api.post("/accounts", content=text_requests("-", "-", NUL)[0][1], headers=JSON)

    if response.status_code == 201:
        created = response.json()
        assert created["owner_name"] == "a\x00b"
        assert (await api.get(f"/accounts/{created['id']}")).json() == created
    else:
        assert_problem(response, 400, "validation_error")
        assert await snapshot_store(services) == before


@pytest.mark.parametrize(
    "db_backend",
    [SQLITE, pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)],
    indirect=True,
)
async def test_a_nul_in_a_description_is_refused_or_kept_exactly(
    api: httpx.AsyncClient, services: Services
) -> None:
    account = await open_account(api, balance="10")
    before = await snapshot_store(services)

    path, content = text_requests(account["id"], "-", NUL)[1]
    response = await api.post(path, content=content, headers=JSON)

    if response.status_code == 200:
        events = (await api.get(f"/accounts/{account['id']}/events")).json()["data"]
        assert events[-1]["data"]["description"] == "a\x00b"
    else:
        assert_problem(response, 400, "validation_error")
        assert await snapshot_store(services) == before


@pytest.mark.parametrize(
    ("db_backend", "bad_text"),
    [
        pytest.param("sqlite", SURROGATE, id="sqlite-surrogate"),
        pytest.param("postgres", NUL, id="postgres-nul", marks=pytest.mark.postgres),
        pytest.param("sqlite", NUL, id="sqlite-nul"),
    ],
    indirect=["db_backend"],
)
async def test_one_unstorable_request_does_not_fail_concurrent_valid_ones(
    api: httpx.AsyncClient, bad_text: str
) -> None:
    victim = (await open_account(api, "Victim", "0"))["id"]
    culprit = (await open_account(api, "Culprit", "0"))["id"]

    def deposit(account_id: str, description: str) -> object:
        content = json.dumps({"amount": 1})[:-1] + f', "description": "{description}"}}'
        return api.post(f"/accounts/{account_id}/deposit", content=content, headers=JSON)

    requests = [deposit(victim, "fine") for _ in range(15)]
    requests += [deposit(culprit, bad_text)]
    requests += [deposit(victim, "fine") for _ in range(15)]
    requests += [deposit(culprit, "fine") for _ in range(5)]
    responses = await asyncio.gather(*requests)

    bad = responses[15]
    good = responses[:15] + responses[16:]
    assert [r.status_code for r in good] == [200] * len(good), [r.status_code for r in good]
    assert bad.status_code in (200, 400), bad.text
    assert (await api.get(f"/accounts/{victim}")).json()["balance"] == "30.00"
    culprit_balance = "6.00" if bad.status_code == 200 else "5.00"
    assert (await api.get(f"/accounts/{culprit}")).json()["balance"] == culprit_balance
