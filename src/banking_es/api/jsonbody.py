"""Request bodies parsed with exact decimals: a JSON number is taken by its text.

`1e3`, NaN and Infinity are kept as markers so validation can name the field that
holds them; huge integers are kept as markers too (no 5,000-digit int parsing).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from fastapi import Request


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


#: One decoder for every body: `json.loads` with hooks builds a new one per call.
_DECODER = json.JSONDecoder(
    parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant
)


def loads(raw: bytes) -> Any:
    """`json.loads(raw, parse_float=..., ...)` (the same encodings), with exact numbers."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


class DecimalJSONRequest(Request):
    """A request whose `json()` keeps numbers exact (FastAPI calls it for JSON bodies)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json
