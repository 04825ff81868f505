"""`DEFAULT_CURRENCY` is checked at start-up as an account's currency is: one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("currency", ["XXX", "ABC", "CLF"])
def test_a_default_currency_no_account_may_have_stops_serve_with_one_line(
    tmp_path: Path, currency: str
) -> None:
    path = tmp_path / "banking.db"
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{path}",
        "DATA_DIR": str(tmp_path),
        "DEFAULT_CURRENCY": currency,
    }
    result = subprocess.run(
        [sys.executable, "-m", "banking_es", "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DEFAULT_CURRENCY" in lines[0]
    assert "not an active ISO 4217 currency code" in lines[0]
    assert currency in lines[0]
    assert "Traceback" not in result.stderr
    assert not path.exists()  # refused before touching the database
