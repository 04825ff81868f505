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
