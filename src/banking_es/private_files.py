"""Files only the service's own user may read: directories 0700, files 0600, whatever the
umask, and wider modes left by older versions narrowed at start-up.

They hold password hashes, signing secrets and stored answers (docs/security.md).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, *, narrow_existing: bool = True) -> Path:
    """Create `path` (and missing parents) mode 0700; narrow it if it exists and is wider.

    `narrow_existing=False` leaves a directory that existed alone (one the operator chose
    for an SQLite file may be shared, such as /tmp): only a new one is made private.
    """
    existed = path.is_dir()
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if not existed or narrow_existing:
        _narrow(path, DIR_MODE)
    return path


def private_file(path: Path) -> None:
    """Create `path` empty if missing, mode 0600; narrow it if it exists and is wider."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & ~FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def narrow_if_exists(path: Path) -> None:
    """Mode 0600 for a file that may or may not exist (SQLite's -wal and -shm)."""
    with contextlib.suppress(FileNotFoundError):
        _narrow(path, FILE_MODE)


def _narrow(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) & ~mode:
        path.chmod(mode)
