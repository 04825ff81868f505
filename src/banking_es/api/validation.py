"""Running the request validation rules from a route (see application/validation.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from banking_es.api.deps import Caller
from banking_es.api.problems import validation_error
from banking_es.application.validation import RequestContext

if TYPE_CHECKING:
    from banking_es.bootstrap import Services


async def validate_request(
    services: Services, caller: Caller, kind: str, data: Mapping[str, Any]
) -> list[str]:
    """The warnings of `kind`'s rules; a 400 listing every problem if any rule refuses."""
    context = RequestContext(kind, data, services.accounts.cached_account, caller.user_id)
    result = await services.validator.validate(context)
    if result.errors:
        raise validation_error([{"field": e.field, "message": e.message} for e in result.errors])
    return result.warnings
