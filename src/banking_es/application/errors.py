"""Application errors: the request cannot be carried out as asked.

    ApplicationError
    ├── NotFound                 unknown account or transfer (or one the caller may not see)
    ├── VersionConflict          expected_version does not match; carries current_version
    ├── IdempotencyInFlight      the same key is being executed right now
    ├── IdempotencyKeyReused     the key was used with another request
    └── ServiceUnavailable       a dependency failed or the retry budget ran out; retry later

Domain rule violations (`banking_es.domain.errors.DomainError`) pass through unchanged.
"""

from __future__ import annotations

from typing import TypeVar

from banking_es.domain.errors import DomainError
from banking_es.eventstore.base import StoreUnavailable


class ApplicationError(Exception):
    """Base of application-level failures; carries a stable `code`."""

    code = "application_error"


class NotFound(ApplicationError):
    code = "not_found"


class VersionConflict(ApplicationError):
    code = "version_conflict"

    def __init__(self, account_id: str, expected: int, current: int) -> None:
        super().__init__(
            f"account {account_id} is at version {current}, not the expected {expected}"
        )
        self.account_id = account_id
        self.expected = expected
        self.current_version = current


class IdempotencyInFlight(ApplicationError):
    code = "idempotency_in_flight"


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"


class ServiceUnavailable(ApplicationError):
    code = "service_unavailable"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


E = TypeVar("E", bound=BaseException)


def detached(exc: E) -> E:
    """`exc` without its traceback and the error it was raised while handling (the last
    conflict, when the retry budget runs out). Both hold the frames that hold the pending
    commands and their futures, which hold `exc`: a reference cycle per refused command,
    left to the garbage collector."""
    exc.__context__ = None
    return exc.with_traceback(None)


def as_unavailable(exc: Exception) -> Exception:
    """What the callers of a chunk hear of a failure that is not a command's outcome: the
    service's own errors `detached`; a bug as it is (its traceback is for its log)."""
    if isinstance(exc, StoreUnavailable):
        return ServiceUnavailable("the event store is unavailable; retry shortly")
    if isinstance(exc, ApplicationError | DomainError):
        return detached(exc)
    return exc
