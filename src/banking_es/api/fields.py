"""Input checked against msgspec models, field by field, so that every problem is reported.

A model is a `msgspec.Struct`: its annotations (with `msgspec.Meta` constraints) are the
OpenAPI schema and the checks. A field may carry a `Check` in its `Annotated` metadata for
what a type cannot say (exact money, trimmed names): msgspec ignores it, this module runs it.
msgspec stops at the first error; the API lists every one (API.md), hence one field at a time.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import msgspec

from banking_es.api.jsonbody import BadNumber

S = TypeVar("S", bound=msgspec.Struct)


class FieldError(ValueError):
    """A field's value is refused; the message is shown to the client after the field name."""


@dataclass(frozen=True, slots=True)
class Check:
    """`Annotated[T, Check(fn)]`: `fn(value)` returns the field's value or raises FieldError;
    with `with_fields`, `fn(value, before)` also gets the fields declared before it that are
    valid (absent ones at their defaults)."""

    fn: Callable[..., Any]
    with_fields: bool = False


Problems = list[dict[str, str]]

_TYPE_NAMES = {
    "int": "an integer",
    "str": "a string",
    "array": "a list",
    "object": "an object",
    "bool": "a boolean",
    "uuid": "a UUID",
}
#: msgspec's messages, in the words of the API's other messages ({0}: the first group).
_TRANSLATIONS = tuple(
    (re.compile(pattern), say)
    for pattern, say in (
        (r"Expected `(\w+)[^`]*`, got", "must be {0}"),
        (r"Expected `\w+` >= (-?\d+)", "must be at least {0}"),
        (r"Expected `\w+` <= (-?\d+)", "must be at most {0}"),
        (r"Expected `str` of length >= (\d+)", "must be {0} characters or more"),
        (r"Expected `str` of length <= (\d+)", "must be at most {0} characters"),
        (r"Expected `array` of length >= (\d+)", "must have {0} items or more"),
        (r"Expected `array` of length <= (\d+)", "must have at most {0} items"),
        (r"Expected `str` matching regex", "has an invalid format"),
        (r"Invalid enum value", "is not one of the allowed values"),
        (r"Invalid UUID", "must be a UUID"),
    )
)


def _message(error: msgspec.ValidationError) -> str:
    text = str(error)
    for pattern, say in _TRANSLATIONS:
        match = pattern.match(text)
        if match is not None:
            groups = [_TYPE_NAMES.get(g, g) for g in match.groups()]
            return say.format(*groups)
    return "is invalid"


def _checked(kind: Any) -> Check | None:
    if get_origin(kind) is Annotated:
        for extra in kind.__metadata__:
            if isinstance(extra, Check):
                return extra
    return None


def _parts(kind: Any) -> tuple[Any, bool]:
    """(`kind` without `| None`, whether None is allowed)."""
    if get_origin(kind) in (Union, types.UnionType):
        args = [a for a in get_args(kind) if a is not type(None)]
        if len(args) < len(get_args(kind)):
            return (args[0] if len(args) == 1 else Union[tuple(args)]), True  # noqa: UP007
    return kind, False


def _base(kind: Any) -> Any:
    return get_args(kind)[0] if get_origin(kind) is Annotated else kind


def _checked_with_fields(kind: Any) -> Callable[..., Any] | None:
    """The check of a field that needs the fields before it (`Check(..., with_fields=True)`)."""
    check = _checked(_parts(kind)[0])
    return check.fn if check is not None and check.with_fields else None


def converter(kind: Any, *, text: bool = False) -> Callable[[Any], Any]:
    """A function that checks and converts one value of type `kind` (FieldError if refused).

    `text=True` for query and path values, which are strings: integers are then read from
    ASCII digits (msgspec's lax mode would also take "1.0" and "1e1")."""
    inner, nullable = _parts(kind)
    check = _checked(inner)
    integer = text and _base(inner) is int
    # msgspec matches with `re.search`, where `$` also matches before a final newline.
    anchored = get_origin(inner) is Annotated and any(
        isinstance(m, msgspec.Meta) and (m.pattern or "").endswith("$") for m in inner.__metadata__
    )

    def convert(value: Any) -> Any:
        if value is None and nullable:
            return None
        if isinstance(value, BadNumber):
            raise FieldError(value.reason)
        if check is not None:
            return check.fn(value)
        if integer:
            if not (value.isascii() and re.fullmatch(r"-?[0-9]{1,20}", value)):
                raise FieldError("must be an integer")
            value = int(value)
        try:
            converted = msgspec.convert(value, inner, strict=not text)
        except msgspec.ValidationError as exc:
            raise FieldError(_message(exc)) from None
        if anchored and converted.endswith("\n"):
            raise FieldError("has an invalid format")
        return converted

    return convert


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    required: bool
    default: Any
    convert: Callable[..., Any]
    with_fields: bool


_PLANS: dict[type, tuple[tuple[_Field, ...], frozenset[str]]] = {}


def _plan(model: type[msgspec.Struct], text: bool) -> tuple[tuple[_Field, ...], frozenset[str]]:
    plan = _PLANS.get(model)
    if plan is None:
        fields = tuple(
            _Field(
                f.name,
                f.required,
                f.default,
                _checked_with_fields(f.type) or converter(f.type, text=text),
                _checked_with_fields(f.type) is not None,
            )
            for f in msgspec.structs.fields(model)
        )
        plan = _PLANS[model] = fields, frozenset(f.name for f in fields)
    return plan


def build(
    model: type[S], data: Mapping[str, Any], problems: Problems, *, extra: bool = False
) -> S | None:
    """`model` from `data`, or None with every problem appended to `problems`.

    `extra=True` ignores unknown keys (query strings); a body's unknown field is refused."""
    plan, known = _plan(model, text=extra)
    values: dict[str, Any] = {}
    failed = False
    for field in plan:
        if field.name in data:
            try:
                value = data[field.name]
                if field.with_fields:
                    before = {f.name: f.default for f in plan if f.name not in data}
                    values[field.name] = field.convert(value, {**before, **values})
                else:
                    values[field.name] = field.convert(value)
            except FieldError as exc:
                problems.append({"field": field.name, "message": str(exc)})
                failed = True
        elif field.required:
            problems.append({"field": field.name, "message": "is required"})
            failed = True
    if not extra:
        for key in data:
            if key not in known:
                problems.append({"field": str(key), "message": "is not allowed"})
                failed = True
    return None if failed else model(**values)
