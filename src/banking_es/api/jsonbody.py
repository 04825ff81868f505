"""Request bodies parsed with exact decimals: a JSON number is taken by its text.

`1e3`, NaN and Infinity are kept as markers so validation can name the field that
holds them; huge integers are kept as markers too (no 5,000-digit int parsing). A key given
twice in one object is invalid JSON here: parsers differ on which value wins (`{"amount": 5,
"amount": 6}` is 6 for Python, and may be 5 for a proxy that checked it).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any


class BadNumber:
    """A JSON number that money can never be (exponent form, NaN, Infinity, too long)."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason

    def __repr__(self) -> str:
        return self.text


def _parse_float(text: str) -> Decimal | BadNumber:
    if "e" in text or "E" in text:
        return BadNumber(text, "must not use exponent notation")
    if len(text) > 40:
        return BadNumber(text[:20] + "...", "has too many digits")
    return Decimal(text)


def _parse_int(text: str) -> int | BadNumber:
    if len(text) > 40:
        return BadNumber(text[:20] + "...", "has too many digits")
    return int(text)


def _parse_constant(text: str) -> BadNumber:
    return BadNumber(text, "must be a finite number")


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


#: One decoder for every body: `json.loads` with hooks builds a new one per call.
_DECODER = json.JSONDecoder(
    parse_float=_parse_float,
    parse_int=_parse_int,
    parse_constant=_parse_constant,
    object_pairs_hook=_object,
)

#: The start of the message of a body with a key given twice (`api/errors.py` shows it).
DUPLICATE_KEY = "the key "


def loads(raw: bytes) -> Any:
    """`json.loads(raw, parse_float=..., ...)` (the same encodings), with exact numbers; a
    key given twice in one object is a `json.JSONDecodeError`, as any invalid JSON."""
    text = raw.decode(json.detect_encoding(raw), "surrogatepass")
    try:
        return _DECODER.decode(text)
    except _DuplicateKey as exc:
        key: str = exc.args[0]
        shown = repr(key if len(key) <= 40 else key[:40] + "...")  # it is echoed to the client
        message = f"{DUPLICATE_KEY}{shown} appears twice in one object"
        raise json.JSONDecodeError(message, text, 0) from None
