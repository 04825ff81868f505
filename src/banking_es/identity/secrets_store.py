"""The JWT signing secrets: checked in production, generated once in development.

In production a missing, short (< 32 bytes), well-known or low-variety (< 16 different
characters) secret, or one secret used for both, stops start-up with one line. Elsewhere a
random secret is created once in `settings.data_dir` (mode 0600) and read back by every
later process, so all workers and restarts share it. The directory is kept 0700 and the
files 0600 (`private_files`).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from pathlib import Path

from banking_es.config import Environment, Settings, SettingsError
from banking_es.private_files import narrow_if_exists, private_dir

MIN_BYTES = 32
#: A random secret of 32 bytes has many more; fewer is a word, a pattern or a repetition.
MIN_DISTINCT = 16
#: Compared case-folded, with `_`, `.` and spaces read as `-`; the first two are the seed's.
KNOWN_DEFAULTS = frozenset(
    {
        "default-secret",
        "default-refresh-secret",
        "secret",
        "changeme",
        "change-me",
        "your-secret-key",
        "your-jwt-secret",
        "your-256-bit-secret",
        "jwt-secret",
        "refresh-secret",
        "super-secret",
        "supersecret",
        "mysecret",
        "password",
        "default",
        "development",
    }
)
_NAMES = {"jwt_secret": "JWT_SECRET", "refresh_token_secret": "REFRESH_TOKEN_SECRET"}
_ADVICE = (
    f"production needs a random secret of at least {MIN_BYTES} bytes"
    " (e.g. `openssl rand -base64 48`)"
)


def _problem(value: str | None) -> str | None:
    if not value:
        return "is missing"
    if re.sub(r"[\s_.-]+", "-", value.strip().casefold()) in KNOWN_DEFAULTS:
        return "is a well-known default"
    if len(value.encode()) < MIN_BYTES:
        return f"is shorter than {MIN_BYTES} bytes"
    if len(set(value)) < MIN_DISTINCT:
        return f"has fewer than {MIN_DISTINCT} different characters"
    return None


def _read_or_create(path: Path) -> str:
    """Written to a private temporary file, then linked into place: concurrent starters
    never see a half-written secret, and the first one to link wins."""
    private_dir(path.parent)
    if not path.exists():
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secret-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(48))
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    narrow_if_exists(path)  # one written wider by hand or by an older version
    value = path.read_text().strip()
    if len(value.encode()) < MIN_BYTES:
        raise SettingsError(f"secret file {path} is shorter than {MIN_BYTES} bytes; delete it")
    return value


def ensure_secrets(settings: Settings) -> Settings:
    """`settings` with both secrets set, or `SettingsError` (one line) in production."""
    if settings.banking_env is Environment.PRODUCTION:
        for field, name in _NAMES.items():
            problem = _problem(getattr(settings, field))
            if problem:
                raise SettingsError(f"{name} {problem}: {_ADVICE}")
        if settings.jwt_secret == settings.refresh_token_secret:  # one leak must not give both
            raise SettingsError(
                "JWT_SECRET and REFRESH_TOKEN_SECRET are the same: production needs two"
                " different random secrets (e.g. two runs of `openssl rand -base64 48`)"
            )
        return settings
    values = {
        field: getattr(settings, field) or _read_or_create(settings.data_dir / field)
        for field in _NAMES
    }
    return settings.model_copy(update=values)
