"""Bad parameters: ids in paths, the Idempotency-Key header, list limits and cursors; a 4xx
problem, and the store unchanged."""

from __future__ import annotations

import pytest
from tests.e2e.bad_input_support import (
    CLOSE,
    DEPOSIT,
    JSON,
    UNKNOWN_ID,
    WITHDRAW,
    WRITE_ENDPOINTS,
    Endpoint,
    World,
    _valid_body,
    endpoint_params,
)
from tests.e2e.http_support import assert_problem

pytestmark = pytest.mark.asyncio(loop_scope="module")

# ---- path ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", endpoint_params([DEPOSIT, WITHDRAW, CLOSE]))
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c0"])
async def test_a_malformed_account_id_in_the_path_is_400(
    world: World, endpoint: Endpoint, bad_id: str
) -> None:
    path = endpoint.path.replace("{A}", bad_id).replace("{Z}", bad_id)

    body = await world.rejects(path, _valid_body(endpoint), 400, "validation_error")

    assert [p["field"] for p in body["errors"]] == ["account_id"]


@pytest.mark.parametrize("endpoint", endpoint_params([DEPOSIT, WITHDRAW, CLOSE]))
async def test_an_unknown_account_id_in_the_path_is_404(world: World, endpoint: Endpoint) -> None:
    path = endpoint.path.replace("{A}", UNKNOWN_ID).replace("{Z}", UNKNOWN_ID)

    body = await world.rejects(path, _valid_body(endpoint), 404, "not_found")

    assert UNKNOWN_ID in str(body["error"])


# ---- Idempotency-Key --------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
@pytest.mark.parametrize(
    "key",
    [
        pytest.param("k" * 256, id="256-chars"),
        pytest.param("a\x01b", id="control-char"),
        pytest.param("a\x7fb", id="delete-char"),
        pytest.param("a\tb", id="tab"),
        pytest.param("", id="empty"),
    ],
)
async def test_a_bad_idempotency_key_is_400(world: World, endpoint: Endpoint, key: str) -> None:
    body = await world.rejects(
        endpoint.path,
        _valid_body(endpoint),
        400,
        "validation_error",
        headers={**JSON, "Idempotency-Key": key},
    )

    assert [p["field"] for p in body["errors"]] == ["Idempotency-Key"]


async def test_a_non_ascii_idempotency_key_is_400(world: World) -> None:
    await world.rejects(
        DEPOSIT.path,
        DEPOSIT.body(),
        400,
        "validation_error",
        headers={**JSON, "Idempotency-Key": "clé".encode()},
    )


async def test_a_255_char_idempotency_key_is_accepted(world: World) -> None:
    world = await world.fresh()
    response = await world.post(
        DEPOSIT.path, DEPOSIT.body(), {**JSON, "Idempotency-Key": "k" * 255}
    )

    assert response.status_code == 200, response.text


# ---- list endpoints ---------------------------------------------------------------------------

LISTS = [
    pytest.param("/accounts", id="accounts"),
    pytest.param("/accounts/{A}/events", id="events"),
    pytest.param("/accounts/{A}/transactions", id="transactions"),
]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", ["0", "-1", "101", "1000000", "99999999999999999999999", "x", ""])
async def test_a_limit_outside_1_to_100_is_400(world: World, path: str, limit: str) -> None:
    response = await world.api.get(world.fill(path), params={"limit": limit})

    body = assert_problem(response, 400, "validation_error")
    assert [p["field"] for p in body["errors"]] == ["limit"]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("limit", ["1", "100"])
async def test_limits_1_and_100_are_accepted(world: World, path: str, limit: str) -> None:
    response = await world.api.get(world.fill(path), params={"limit": limit})

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) <= int(limit)


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        "",
        "eDox",  # base64 of "x:1", a kind no list uses
        "YTotMQ",  # "a:-1"
        "djp4",  # "v:x"
        "dDoxMjM0NTY3ODkwMTIzNDU2Nzg5MA",  # "t:" and 20 digits
        "%00",
        "a" * 150,
    ],
)
async def test_a_garbage_cursor_is_400_invalid_cursor(world: World, path: str, cursor: str) -> None:
    response = await world.api.get(world.fill(path), params={"cursor": cursor})

    assert_problem(response, 400, "invalid_cursor")


async def test_a_cursor_of_one_list_is_invalid_for_another(world: World) -> None:
    world = await world.fresh()
    for amount in range(3):
        await world.post(DEPOSIT.path, DEPOSIT.body(str(amount + 1)))
    events = (await world.api.get(world.fill("/accounts/{A}/events"), params={"limit": 1})).json()
    accounts = (await world.api.get("/accounts", params={"limit": 1})).json()
    assert events["next_cursor"]
    assert accounts["next_cursor"]

    for path, cursor in [
        ("/accounts", events["next_cursor"]),
        ("/accounts/{A}/transactions", events["next_cursor"]),
        ("/accounts/{A}/events", accounts["next_cursor"]),
    ]:
        response = await world.api.get(world.fill(path), params={"cursor": cursor})
        assert_problem(response, 400, "invalid_cursor")


@pytest.mark.parametrize("path", ["/accounts/{id}/events", "/accounts/{id}/transactions"])
async def test_lists_of_an_unknown_account_are_404(world: World, path: str) -> None:
    response = await world.api.get(path.replace("{id}", UNKNOWN_ID))

    assert_problem(response, 404, "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/not-a-uuid",
        "/accounts/not-a-uuid/events",
        "/accounts/not-a-uuid/transactions",
        "/transfers/not-a-uuid",
        "/accounts/12345",
    ],
)
async def test_a_malformed_id_in_a_read_path_is_400(world: World, path: str) -> None:
    response = await world.api.get(path)

    body = assert_problem(response, 400, "validation_error")
    assert body["errors"][0]["field"] in ("account_id", "transfer_id")
