"""`banking-es serve --no-migrate`: the pods of a rollout serve what the migration job made.

They must neither migrate (nor wait for the migration lock) nor serve a database that is not
migrated: that one is refused at start with the command to run.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from tests.db_support import connect_database
from tests.server import ServerProcess

from banking_es.db.migrate import MIGRATION_LOCK_KEY, migrate
from banking_es.db.postgres import normalize_url


def test_an_unmigrated_database_is_refused_and_left_unmigrated(tmp_path: Path) -> None:
    path = tmp_path / "banking.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}", "DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "banking_es", "serve", "--no-migrate", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "the database is not migrated" in result.stderr
    assert "0001_" in result.stderr
    assert "run `banking-es migrate` first" in result.stderr
    with sqlite3.connect(path) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == []


@pytest.mark.postgres
async def test_a_migrated_database_is_served_without_the_migration_lock(
    pg_url: str, tmp_path: Path
) -> None:
    db = await connect_database("postgres", pg_url)
    try:
        await migrate(db)
    finally:
        await db.close()
    # A migration job of the next release holding the lock: a pod that migrated would wait.
    holder = await asyncpg.connect(normalize_url(pg_url))
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        server = ServerProcess(pg_url, workers=2, workdir=tmp_path, args=("--no-migrate",))
        await asyncio.to_thread(server.start, 30.0)
        server.stop()
        assert server.process is not None
        assert server.process.returncode == 0, server.log()
    finally:
        await holder.close()
