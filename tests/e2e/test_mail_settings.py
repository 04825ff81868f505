"""Mail settings at start-up: production cannot run resets without a mail server, a bad
SMTP_URL stops start-up with one line that names it (never its password), and
PASSWORD_RESET_ENABLED=false makes reset a 503."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from tests.api_support import running_app
from tests.auth import PASSWORD, bearer, login, register
from tests.e2e.http_support import assert_problem

from banking_es.bootstrap import build_services
from banking_es.config import SettingsError, load_settings

STRONG = {  # secrets production accepts: long, varied, and not the same
    "JWT_SECRET": "Xk2-vT9qLw8_zR4mNc7bYh5jPs0fGd3eAa1",
    "REFRESH_TOKEN_SECRET": "bQ7-wE3rT9yU1iO5pA8sD2fG6hJ0kL4zX_cV",
}


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("SMTP_URL", "PASSWORD_RESET_ENABLED")}
    return subprocess.run(
        [sys.executable, "-m", "banking_es", "serve"],
        cwd=tmp_path,
        env={**base, "DATABASE_URL": f"sqlite:///{tmp_path / 'banking.db'}", "PORT": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_production_without_smtp_url_refuses_to_start(tmp_path: Path) -> None:
    line = _one_line(_serve(tmp_path, BANKING_ENV="production", **STRONG))
    assert "SMTP_URL is not set" in line
    assert "PASSWORD_RESET_ENABLED=false" in line


def test_a_bad_smtp_url_stops_start_up_naming_it_not_its_password(tmp_path: Path) -> None:
    line = _one_line(_serve(tmp_path, SMTP_URL="http://mailer:hunter2-pw@mail.example"))
    assert "SMTP_URL" in line
    assert "hunter2-pw" not in line


@pytest.mark.parametrize("url", ["http://mail", "smtp://", "smtp://mail:99999", "mail:25"])
def test_smtp_url_must_be_smtp_or_smtps_with_a_host(url: str) -> None:
    with pytest.raises(SettingsError, match="SMTP_URL"):
        load_settings(smtp_url=url)


async def test_build_services_refuses_production_without_a_mail_server(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
        banking_env="production",
        jwt_secret=STRONG["JWT_SECRET"],
        refresh_token_secret=STRONG["REFRESH_TOKEN_SECRET"],
    )
    with pytest.raises(SettingsError, match="SMTP_URL"):
        await build_services(settings)


async def test_resets_disabled_answer_503_and_no_mail_is_queued(tmp_path: Path) -> None:
    options = {
        "banking_env": "production",
        "password_reset_enabled": False,
        "jwt_secret": secrets.token_urlsafe(48),
        "refresh_token_secret": secrets.token_urlsafe(48),
    }
    async with running_app(tmp_path, **options) as (http, services):
        assert services.mail is None  # no mail server: nothing to send with
        user = await register(http)
        refused = await http.post("/auth/reset-password", json={"email": user["email"]})
        assert_problem(refused, 503, "service_unavailable")
        assert int(refused.headers["Retry-After"]) > 0
        confirm = {"token": "whatever", "new_password": "a new password"}
        assert_problem(
            await http.post("/auth/reset-password/confirm", json=confirm),
            503,
            "service_unavailable",
        )
        pair = await login(http, user["username"])
        changed = await http.post(
            "/auth/change-password",
            json={"current_password": PASSWORD, "new_password": "a new password"},
            headers=bearer(pair["access_token"]),
        )
        assert changed.status_code == 204
        assert await services.db.fetchval("SELECT count(*) FROM mail_queue") == 0
        assert await services.db.fetchval("SELECT count(*) FROM password_resets") == 0
