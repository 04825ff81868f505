"""The signing secrets: refused when weak in production, generated once in development."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from banking_es.config import SettingsError, load_settings
from banking_es.identity.secrets_store import ensure_secrets

STRONG = "Xk2-vT9qLw8_zR4mNc7bYh5jPs0fGd3e"  # 32 bytes, 32 different characters
OTHER_STRONG = "bQ7-wE3rT9yU1iO5pA8sD2fG6hJ0kL4zX_cV"


def test_development_generates_private_secrets_once_and_reuses_them(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    first = ensure_secrets(settings)
    assert first.jwt_secret
    assert first.refresh_token_secret
    assert first.jwt_secret != first.refresh_token_secret
    assert len(first.jwt_secret) >= 32
    for name in ("jwt_secret", "refresh_token_secret"):
        mode = stat.S_IMODE((tmp_path / "data" / name).stat().st_mode)
        assert mode == 0o600
    again = ensure_secrets(load_settings(data_dir=tmp_path / "data"))
    assert (again.jwt_secret, again.refresh_token_secret) == (
        first.jwt_secret,
        first.refresh_token_secret,
    )
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "jwt_secret",
        "refresh_token_secret",
    ]  # no temporary files left behind


def test_concurrent_starters_agree_on_one_secret(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: ensure_secrets(settings).jwt_secret, range(16)))
    assert len(set(results)) == 1


def test_development_keeps_secrets_given_in_the_environment(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", jwt_secret="mine" * 10)
    assert ensure_secrets(settings).jwt_secret == "mine" * 10
    assert not (tmp_path / "data" / "jwt_secret").exists()


@pytest.mark.parametrize(
    ("jwt_secret", "refresh_secret", "message"),
    [
        (None, STRONG, "JWT_SECRET is missing"),
        ("x" * 31, STRONG, "JWT_SECRET is shorter than 32 bytes"),
        ("default-secret", STRONG, "JWT_SECRET is a well-known default"),
        (STRONG, None, "REFRESH_TOKEN_SECRET is missing"),
        (STRONG, "default-refresh-secret", "REFRESH_TOKEN_SECRET is a well-known default"),
        ("changeme", STRONG, "JWT_SECRET is a well-known default"),
        ("Your_Secret_Key", STRONG, "JWT_SECRET is a well-known default"),
        ("0123456789abcde" * 3, STRONG, "JWT_SECRET has fewer than 16 different characters"),
        ("ab" * 40, STRONG, "JWT_SECRET has fewer than 16 different characters"),
        ("default-secret" * 3, STRONG, "JWT_SECRET has fewer than 16 different characters"),
        (STRONG, "r" * 40, "REFRESH_TOKEN_SECRET has fewer than 16 different characters"),
        (STRONG, STRONG, "JWT_SECRET and REFRESH_TOKEN_SECRET are the same"),
    ],
)
def test_production_refuses_missing_short_or_default_secrets(
    tmp_path: Path, jwt_secret: str | None, refresh_secret: str | None, message: str
) -> None:
    settings = load_settings(
        banking_env="production",
        data_dir=tmp_path,
        jwt_secret=jwt_secret,
        refresh_token_secret=refresh_secret,
    )
    with pytest.raises(SettingsError, match=message) as caught:
        ensure_secrets(settings)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_production_accepts_strong_secrets(tmp_path: Path) -> None:
    settings = load_settings(
        banking_env="production", jwt_secret=STRONG, refresh_token_secret=OTHER_STRONG
    )
    assert ensure_secrets(settings) is settings
