"""api/fields.py: request models checked field by field, every problem reported."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from msgspec import Meta, Struct

from banking_es.api.fields import Check, FieldError, build, converter


def _upper(value: Any) -> str:
    if not isinstance(value, str):
        raise FieldError("must be a string")
    return value.upper()


class Body(Struct):
    name: Annotated[str, Meta(max_length=5, pattern=r"^[a-z]+$")]
    code: Annotated[str, Check(_upper)]
    count: Annotated[int, Meta(ge=0, le=10)] | None = None


class Query(Struct):
    limit: Annotated[int, Meta(ge=1, le=100)] = 20


def _build(model: type[Struct], data: dict[str, Any], *, extra: bool = False) -> Any:
    problems: list[dict[str, str]] = []
    return build(model, data, problems, extra=extra), problems


def test_a_valid_body_is_built_with_checks_applied_and_defaults_kept() -> None:
    body, problems = _build(Body, {"name": "ann", "code": "usd"})

    assert problems == []
    assert (body.name, body.code, body.count) == ("ann", "USD", None)


def test_every_problem_of_a_body_is_reported_at_once() -> None:
    body, problems = _build(Body, {"name": "toolong", "count": "3", "extra": 1})

    assert body is None
    assert {p["field"]: p["message"] for p in problems} == {
        "name": "must be at most 5 characters",
        "code": "is required",
        "count": "must be an integer",
        "extra": "is not allowed",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must be at least 0"),
        (11, "must be at most 10"),
        (True, "must be an integer"),
        (1.0, "must be an integer"),
    ],
)
def test_numbers_out_of_range_or_of_another_type_are_named(value: Any, message: str) -> None:
    _, problems = _build(Body, {"name": "a", "code": "x", "count": value})

    assert problems == [{"field": "count", "message": message}]


def test_a_pattern_ending_in_dollar_does_not_take_a_final_newline() -> None:
    _, problems = _build(Body, {"name": "ann\n", "code": "x"})

    assert problems == [{"field": "name", "message": "has an invalid format"}]


@pytest.mark.parametrize("text", ["1.0", "1e1", " 5", "5 ", "", "\u0665", "0x5"])
def test_query_integers_are_ascii_digits_only(text: str) -> None:
    query, problems = _build(Query, {"limit": text}, extra=True)

    assert query is None
    assert problems == [{"field": "limit", "message": "must be an integer"}]


def test_query_strings_are_converted_and_unknown_parameters_ignored() -> None:
    query, problems = _build(Query, {"limit": "7", "other": "x"}, extra=True)

    assert problems == []
    assert query.limit == 7


def test_a_path_uuid_is_refused_in_the_words_of_the_api() -> None:
    from uuid import UUID

    convert = converter(UUID, text=True)

    assert str(convert("6F1C2F7E-3A43-4A36-9D0B-4F3C9A9B8C01")) == (
        "6f1c2f7e-3a43-4a36-9d0b-4f3c9a9b8c01"
    )
    with pytest.raises(FieldError, match="must be a UUID"):
        convert("not-a-uuid")
