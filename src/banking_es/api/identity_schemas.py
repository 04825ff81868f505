"""Request and response shapes of /auth and /admin/users (msgspec models, see api/fields.py)."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

Password = Annotated[str, Meta(min_length=8, max_length=128)]
Username = Annotated[str, Meta(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Email = Annotated[
    str,
    Meta(
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$",
        examples=["ann@example.com"],
    ),
]


class _Body(Struct, forbid_unknown_fields=True):
    """A request body (checked by `api/fields.py`, which refuses unknown fields)."""


class RegisterRequest(_Body):
    username: Username
    email: Email
    password: Password


class LoginRequest(_Body):
    username: Annotated[
        str,
        Meta(min_length=1, max_length=254, pattern=r"^[^\x00]+$", description="username or email"),
    ]
    password: Annotated[str, Meta(min_length=1, max_length=1024)]


class RefreshRequest(_Body):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=4096)]


class LogoutRequest(_Body):
    refresh_token: Annotated[str, Meta(max_length=4096)] | None = None


class ChangePasswordRequest(_Body):
    current_password: Annotated[str, Meta(min_length=1, max_length=1024)]
    new_password: Password


class ResetRequest(_Body):
    email: Annotated[str, Meta(min_length=1, max_length=254, pattern=r"^[^\x00]+$")]


class ResetConfirmRequest(_Body):
    token: Annotated[str, Meta(min_length=1, max_length=512)]
    new_password: Password


class SetRolesRequest(_Body):
    roles: Annotated[list[str], Meta(min_length=1, max_length=3)]


class UserOut(Struct):
    id: str
    username: str
    email: str
    roles: list[str]


class TokenPairOut(Struct, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int


class UserPage(Struct):
    data: list[UserOut]
    has_more: bool
    next_cursor: str | None
