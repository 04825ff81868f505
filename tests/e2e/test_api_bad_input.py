"""Bad bodies of every kind on every write endpoint: a 4xx problem, and the store unchanged.

Bodies are sent as raw JSON text, so that numbers such as `1e3`, `NaN` or
`999999999999999.99` reach the server exactly as a client could write them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from tests.e2e.bad_input_support import (
    CLOSE,
    DEPOSIT,
    JSON,
    MONEY_ENDPOINTS,
    OPEN,
    TRANSFER,
    WITHDRAW,
    WRITE_ENDPOINTS,
    Endpoint,
    World,
    _valid_body,
    endpoint_params,
)
from tests.e2e.http_support import assert_problem

pytestmark = pytest.mark.asyncio(loop_scope="module")

# ---- sanity: the valid bodies used below are accepted ----------------------------------------


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
async def test_the_valid_body_of_each_write_endpoint_is_accepted(
    world: World, endpoint: Endpoint
) -> None:
    world = await world.fresh()
    response = await world.post(endpoint.path, _valid_body(endpoint))

    assert response.status_code in (200, 201), response.text


# ---- bodies that are not JSON objects ---------------------------------------------------------


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"amount": 1,}', id="trailing-comma"),
        pytest.param(b"{'amount': 1}", id="single-quotes"),
        pytest.param(b"amount=1", id="form-encoded"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
    ],
)
async def test_malformed_json_is_400_invalid_json(
    world: World, endpoint: Endpoint, content: bytes
) -> None:
    await world.rejects(endpoint.path, content, 400, "invalid_json")


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
async def test_a_key_given_twice_is_400_invalid_json_naming_it(
    world: World, endpoint: Endpoint
) -> None:
    # Parsers differ on which of the two values wins; a proxy may have checked the other one.
    valid = world.fill(_valid_body(endpoint))
    first = next(iter(json.loads(valid)))
    twice = valid.rstrip()[:-1] + f', "{first}": ' + json.dumps(json.loads(valid)[first]) + "}"

    body = await world.rejects(endpoint.path, twice, 400, "invalid_json")

    assert f"the key '{first}' appears twice" in body["detail"]


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
async def test_an_empty_body_is_400_invalid_json(world: World, endpoint: Endpoint) -> None:
    await world.rejects(endpoint.path, b"", 400, "invalid_json")


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
@pytest.mark.parametrize("content", [b"[]", b'"text"', b"42", b"null", b"true", b"[{}]"])
async def test_json_that_is_not_an_object_is_400_validation_error(
    world: World, endpoint: Endpoint, content: bytes
) -> None:
    # It is JSON (so not `invalid_json`), but not the object the endpoint needs.
    await world.rejects(endpoint.path, content, 400, "validation_error")


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
async def test_unknown_fields_are_400_naming_the_field(world: World, endpoint: Endpoint) -> None:
    valid = json.loads(world.fill(_valid_body(endpoint)))
    content = json.dumps({**valid, "surprise": 1})

    body = await world.rejects(endpoint.path, content, 400, "validation_error")

    assert body["errors"] == [{"field": "surprise", "message": body["errors"][0]["message"]}]
    assert "surprise" in str(body["error"])


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_body_that_is_not_declared_json_is_415(
    world: World, endpoint: Endpoint, content_type: str
) -> None:
    await world.rejects(
        endpoint.path,
        _valid_body(endpoint),
        415,
        "unsupported_media_type",
        headers={"content-type": content_type},
    )


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/merge-patch+json"]
)
async def test_json_media_types_with_parameters_or_suffixes_are_accepted(
    world: World, content_type: str
) -> None:
    world = await world.fresh()
    response = await world.post(DEPOSIT.path, DEPOSIT.body(), {"content-type": content_type})

    assert response.status_code == 200, response.text


@pytest.mark.parametrize("endpoint", endpoint_params([DEPOSIT]))
async def test_a_json_object_without_content_type_is_accepted_or_415(
    world: World, endpoint: Endpoint
) -> None:
    world = await world.fresh()
    response = await world.api.post(
        world.fill(endpoint.path), content=world.fill(endpoint.body()).encode()
    )

    if response.status_code != 200:
        assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("endpoint", endpoint_params(WRITE_ENDPOINTS))
async def test_a_body_over_64_kib_is_413(world: World, endpoint: Endpoint) -> None:
    padding = "x" * (64 * 1024)
    content = '{"description": "' + padding + '"}'

    await world.rejects(endpoint.path, content, 413, "payload_too_large")


async def test_a_streamed_body_over_64_kib_without_length_is_413(world: World) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"amount": 1, "description": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    before = await world.state()
    response = await world.api.post(world.fill(DEPOSIT.path), content=chunks(), headers=JSON)

    assert_problem(response, 413, "payload_too_large")
    assert await world.state() == before


async def test_a_body_just_under_64_kib_is_not_refused_for_its_size(world: World) -> None:
    # 500-char descriptions are the limit, so this one is a validation error, not a 413.
    content = '{"amount": 1, "description": "' + "x" * (60 * 1024) + '"}'

    body = await world.rejects(DEPOSIT.path, content, 400, "validation_error")

    assert body["errors"][0]["field"] == "description"


# ---- amounts ----------------------------------------------------------------------------------

BAD_AMOUNTS = [
    pytest.param("1e3", id="exponent"),
    pytest.param("1E3", id="exponent-upper"),
    pytest.param("1.5e2", id="exponent-fraction"),
    pytest.param('"1e3"', id="exponent-string"),
    pytest.param("NaN", id="nan"),
    pytest.param('"NaN"', id="nan-string"),
    pytest.param("Infinity", id="infinity"),
    pytest.param("-Infinity", id="minus-infinity"),
    pytest.param('"Infinity"', id="infinity-string"),
    pytest.param("0.001", id="three-decimals"),
    pytest.param('"1.005"', id="three-decimals-string"),
    pytest.param("1234567890123456", id="sixteen-digits"),
    pytest.param('"1234567890123456.00"', id="sixteen-digits-string"),
    pytest.param("1000000000000000", id="ten-to-the-fifteen"),
    pytest.param("9" * 60, id="sixty-digits"),
    pytest.param("0." + "0" * 59 + "1", id="sixty-decimals"),
    pytest.param("-1", id="negative"),
    pytest.param('"-0.01"', id="negative-string"),
    pytest.param("true", id="true"),
    pytest.param("false", id="false"),
    pytest.param("null", id="null"),
    pytest.param('""', id="empty-string"),
    pytest.param('"   "', id="blank-string"),
    pytest.param('"abc"', id="letters"),
    pytest.param('" 1"', id="padded-string"),
    pytest.param('"1,00"', id="comma-decimal"),
    pytest.param('"$1"', id="currency-sign"),
    pytest.param('"0x10"', id="hex-string"),
    pytest.param("[1]", id="list"),
    pytest.param('{"value": 1}', id="object"),
]
NOT_POSITIVE = [
    pytest.param("0", id="zero"),
    pytest.param("0.00", id="zero-decimals"),
    pytest.param('"0"', id="zero-string"),
    pytest.param("-0", id="minus-zero"),
    pytest.param("-0.0", id="minus-zero-float"),
]


@pytest.mark.parametrize("endpoint", endpoint_params(MONEY_ENDPOINTS))
@pytest.mark.parametrize("amount", BAD_AMOUNTS)
async def test_bad_amounts_are_400_naming_the_field(
    world: World, endpoint: Endpoint, amount: str
) -> None:
    body = await world.rejects(endpoint.path, endpoint.body(amount), 400, "validation_error")

    assert [p["field"] for p in body["errors"]] == [endpoint.amount_field]
    assert endpoint.amount_field in str(body["error"])


@pytest.mark.parametrize("endpoint", endpoint_params([DEPOSIT, WITHDRAW, TRANSFER]))
@pytest.mark.parametrize("amount", NOT_POSITIVE)
async def test_zero_transaction_amounts_are_400(
    world: World, endpoint: Endpoint, amount: str
) -> None:
    body = await world.rejects(endpoint.path, endpoint.body(amount), 400, "validation_error")

    assert [p["field"] for p in body["errors"]] == ["amount"]


@pytest.mark.parametrize("amount", NOT_POSITIVE)
async def test_an_account_may_open_with_zero(world: World, amount: str) -> None:
    response = await world.post(OPEN.path, OPEN.body(amount))

    assert response.status_code == 201, response.text
    assert response.json()["balance"] == "0.00"


@pytest.mark.parametrize("endpoint", endpoint_params(MONEY_ENDPOINTS))
@pytest.mark.parametrize(
    ("amount", "shown"),
    [("1", "1.00"), ("1.5", "1.50"), ('"2.25"', "2.25"), ("3.10", "3.10"), ("0.01", "0.01")],
)
async def test_amounts_as_numbers_or_strings_are_taken_exactly(
    world: World, endpoint: Endpoint, amount: str, shown: str
) -> None:
    world = await world.fresh()
    response = await world.post(endpoint.path, endpoint.body(amount))

    assert response.status_code in (200, 201), response.text
    if endpoint is OPEN:
        assert response.json()["balance"] == shown
    elif endpoint is TRANSFER:
        assert response.json()["amount"] == shown
    else:
        sign = 1 if endpoint is DEPOSIT else -1
        expected = Decimal("100.00") + sign * Decimal(shown)
        assert response.json()["balance"] == f"{expected:.2f}"


# ---- open: names and currencies ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fields"),
    [
        pytest.param('{"initial_balance": 1}', ["owner_name"], id="name-missing"),
        pytest.param('{"owner_name": null, "initial_balance": 1}', ["owner_name"], id="name-null"),
        pytest.param('{"owner_name": 42, "initial_balance": 1}', ["owner_name"], id="name-number"),
        pytest.param('{"owner_name": ["a"], "initial_balance": 1}', ["owner_name"], id="name-list"),
        pytest.param('{"owner_name": "", "initial_balance": 1}', ["owner_name"], id="name-empty"),
        pytest.param(
            '{"owner_name": " \\t\\n ", "initial_balance": 1}', ["owner_name"], id="name-blank"
        ),
        pytest.param(
            '{"owner_name": "\\u3000", "initial_balance": 1}', ["owner_name"], id="name-ideographic"
        ),
        pytest.param(
            json.dumps({"owner_name": "x" * 201, "initial_balance": 1}),
            ["owner_name"],
            id="name-201",
        ),
        pytest.param('{"owner_name": "Eve"}', ["initial_balance"], id="balance-missing"),
        pytest.param(
            '{"owner_name": "Eve", "initial_balance": 1, "currency": "US"}',
            ["currency"],
            id="currency-short",
        ),
        pytest.param(
            '{"owner_name": "Eve", "initial_balance": 1, "currency": "usdx"}',
            ["currency"],
            id="currency-long",
        ),
        pytest.param(
            '{"owner_name": "Eve", "initial_balance": 1, "currency": 840}',
            ["currency"],
            id="currency-number",
        ),
        pytest.param(
            '{"owner_name": "Eve", "initial_balance": 1, "currency": "U$D"}',
            ["currency"],
            id="currency-symbol",
        ),
        pytest.param(
            '{"owner_name": "Eve", "initial_balance": 1, "currency": ""}',
            ["currency"],
            id="currency-empty",
        ),
        pytest.param("{}", ["owner_name", "initial_balance"], id="both-missing"),
        pytest.param(
            '{"initial_balance": -5}', ["owner_name", "initial_balance"], id="no-name-negative"
        ),
        pytest.param(
            '{"owner_name": 5, "initial_balance": "1.005", "currency": "x", "extra": 1}',
            ["owner_name", "initial_balance", "currency", "extra"],
            id="four-problems",
        ),
    ],
)
async def test_open_account_lists_every_problem(
    world: World, content: str, fields: list[str]
) -> None:
    body = await world.rejects(OPEN.path, content, 400, "validation_error")

    assert sorted(p["field"] for p in body["errors"]) == sorted(fields)
    for field in fields:
        assert field in str(body["error"])


async def test_missing_name_and_negative_balance_are_named_in_one_message(world: World) -> None:
    body = await world.rejects(OPEN.path, '{"initial_balance": -5}', 400, "validation_error")

    message = str(body["error"])
    assert "owner_name" in message
    assert "required" in message
    assert "initial_balance" in message
    assert "negative" in message


async def test_a_200_char_name_padded_with_spaces_is_accepted(world: World) -> None:
    name = "n" * 200
    response = await world.post(
        OPEN.path, json.dumps({"owner_name": f"  {name}  ", "initial_balance": 1})
    )

    assert response.status_code == 201, response.text
    assert response.json()["owner_name"] == name


# ---- deposit, withdraw, close: the other fields -----------------------------------------------


@pytest.mark.parametrize("endpoint", endpoint_params([DEPOSIT, WITHDRAW, CLOSE]))
@pytest.mark.parametrize(
    "version",
    [
        pytest.param('"1"', id="string"),
        pytest.param("1.0", id="float"),
        pytest.param("1.5", id="fraction"),
        pytest.param("true", id="bool"),
        pytest.param("-1", id="negative"),
        pytest.param("[1]", id="list"),
        pytest.param("1e0", id="exponent"),
        pytest.param("99999999999999999999", id="huge"),
    ],
)
async def test_expected_version_must_be_a_non_negative_integer(
    world: World, endpoint: Endpoint, version: str
) -> None:
    valid = _valid_body(endpoint)
    content = valid[:-1] + f', "expected_version": {version}}}'

    body = await world.rejects(endpoint.path, content, 400, "validation_error")

    assert [p["field"] for p in body["errors"]] == ["expected_version"]


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        pytest.param(DEPOSIT, "description", id="deposit"),
        pytest.param(WITHDRAW, "description", id="withdraw"),
        pytest.param(TRANSFER, "description", id="transfer"),
        pytest.param(CLOSE, "reason", id="close"),
    ],
)
@pytest.mark.parametrize("value", ["5", "true", '["x"]', '{"a": 1}', json.dumps("d" * 501)])
async def test_texts_must_be_strings_of_at_most_500_chars(
    world: World, endpoint: Endpoint, field: str, value: str
) -> None:
    valid = json.loads(world.fill(_valid_body(endpoint)))
    valid.pop(field, None)
    content = json.dumps(valid)[:-1] + (", " if valid else "") + f'"{field}": {value}}}'

    body = await world.rejects(endpoint.path, content, 400, "validation_error")

    assert [p["field"] for p in body["errors"]] == [field]


@pytest.mark.parametrize("endpoint", endpoint_params([DEPOSIT, WITHDRAW]))
async def test_deposit_and_withdraw_list_every_problem(world: World, endpoint: Endpoint) -> None:
    content = '{"amount": -1, "expected_version": "x", "description": 7, "what": 1}'

    body = await world.rejects(endpoint.path, content, 400, "validation_error")

    assert sorted(p["field"] for p in body["errors"]) == [
        "amount",
        "description",
        "expected_version",
        "what",
    ]


# ---- transfers: account ids -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["from_account_id", "to_account_id"])
@pytest.mark.parametrize(
    "value",
    [
        pytest.param('"not-a-uuid"', id="words"),
        pytest.param('"zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"', id="not-hex"),
        pytest.param('"------------------------------------"', id="dashes"),
        pytest.param('"6f1c2f7e3a434a369d0b4f3c9a9b8c01"', id="no-dashes"),
        pytest.param('"6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c0"', id="short"),
        pytest.param('""', id="empty"),
        pytest.param("42", id="number"),
        pytest.param("null", id="null"),
        pytest.param('["6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01"]', id="list"),
    ],
)
async def test_transfer_account_ids_must_be_uuids(world: World, field: str, value: str) -> None:
    valid = {"from_account_id": "{A}", "to_account_id": "{B}", "amount": "1"}
    others = {k: v for k, v in valid.items() if k != field}
    content = json.dumps(others)[:-1] + f', "{field}": {value}}}'

    result = await world.rejects(TRANSFER.path, content, 400, "validation_error")

    assert [p["field"] for p in result["errors"]] == [field]


async def test_transfer_lists_every_missing_field(world: World) -> None:
    body = await world.rejects(TRANSFER.path, "{}", 400, "validation_error")

    assert sorted(p["field"] for p in body["errors"]) == [
        "amount",
        "from_account_id",
        "to_account_id",
    ]
