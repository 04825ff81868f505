"""The backup and restore drill of docs/operations.md on the real PostgreSQL: write through
the service, `pg_dump`, drop the database, create and restore it, `banking-es verify`, and
every balance is as it was."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from tests.db_support import admin_execute, run_sync
from tests.integration.verify_support import read_balances, run_verify, write_history

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _client(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (apt-get install postgresql-client)"
    return found


async def _server_major(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()


def test_dump_drop_restore_then_verify_and_every_balance_is_as_it_was(
    pg_url: str, pg_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    balances = run_sync(write_history(pg_url, tmp_path, outbox=True))
    pg_dump, pg_restore = _client("pg_dump"), _client("pg_restore")
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=True)
    major = int(re.search(r"(\d+)\.", version.stdout).group(1))  # type: ignore[union-attr]
    assert major >= run_sync(_server_major(pg_url)), f"pg_dump older than the server: {version}"

    dump = tmp_path / "banking.dump"
    subprocess.run([pg_dump, "--format=custom", f"--file={dump}", pg_url], check=True)
    name = urlsplit(pg_url).path.lstrip("/")
    run_sync(admin_execute(pg_admin_url, f'DROP DATABASE "{name}" WITH (FORCE)'))
    run_sync(admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"'))
    subprocess.run(
        [pg_restore, "--exit-on-error", "--no-owner", f"--dbname={pg_url}", str(dump)], check=True
    )

    result = run_verify(monkeypatch, pg_url)
    assert result.exit_code == 0, result.output
    assert "sound" in result.stdout
    assert run_sync(read_balances(pg_url, tmp_path, list(balances))) == balances
