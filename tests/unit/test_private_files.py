"""Files a local user must not read: the data directory 0700, SQLite's files and the
signing secrets 0600, whatever the umask, and wider modes left behind narrowed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from banking_es.config import load_settings
from banking_es.db.sqlite import SqliteDatabase
from banking_es.identity.secrets_store import ensure_secrets


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0: whatever is not asked for explicitly comes out world-writable."""
    saved = os.umask(0)
    try:
        yield
    finally:
        os.umask(saved)


async def test_sqlite_directory_and_files_are_private(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "data" / "banking.db"
    db = await SqliteDatabase.connect(path)
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        await db.execute("INSERT INTO t VALUES (1)")
        files = [path, path.with_name("banking.db-wal"), path.with_name("banking.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert mode(path.parent) == 0o700
    finally:
        await db.close()


async def test_existing_wider_sqlite_files_are_narrowed(tmp_path: Path, open_umask: None) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "banking.db"
    first = await SqliteDatabase.connect(path)
    await first.execute("CREATE TABLE t (x INTEGER)")
    files = [path, path.with_name("banking.db-wal"), path.with_name("banking.db-shm")]
    for f in files:
        f.chmod(0o644)  # as an older version left them
    second = await SqliteDatabase.connect(path)
    try:
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert mode(tmp_path) == 0o755  # a directory the operator chose is left alone
    finally:
        await second.close()
        await first.close()


def test_secret_files_and_data_dir_are_private(tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "data"
    ensure_secrets(load_settings(data_dir=data))
    assert mode(data) == 0o700
    assert mode(data / "jwt_secret") == 0o600
    assert mode(data / "refresh_token_secret") == 0o600


def test_existing_wider_secret_files_and_data_dir_are_narrowed(
    tmp_path: Path, open_umask: None
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    secret = data / "jwt_secret"
    secret.write_text("x" * 48)
    secret.chmod(0o644)
    settings = ensure_secrets(load_settings(data_dir=data))
    assert settings.jwt_secret == "x" * 48
    assert mode(data) == 0o700
    assert mode(secret) == 0o600
