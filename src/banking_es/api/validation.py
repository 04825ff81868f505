"""Running the request validation rules from a route (see application/validation.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from banking_es.api.caller import Caller
from banking_es.api.problems import validation_error
from banking_es.application.validation import AccountLookup, RequestContext, RequestValidator


class RequestRules:
    """The configured rules (`RequestValidator`), with the account lookup they may use."""

    def __init__(self, validator: RequestValidator, lookup: AccountLookup) -> None:
        self.validator = validator
        self.lookup = lookup

    async def check(self, caller: Caller, kind: str, data: Mapping[str, Any]) -> list[str]:
        """The warnings of `kind`'s rules; a 400 listing every problem if any rule refuses."""
        context = RequestContext(kind, data, self.lookup, caller.user_id)
        result = await self.validator.validate(context)
        if result.errors:
            raise validation_error(
                [{"field": e.field, "message": e.message} for e in result.errors]
            )
        return result.warnings
