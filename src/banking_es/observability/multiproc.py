"""The directory prometheus-client's multiprocess mode shares between workers.

Kept apart from `metrics` on purpose: it must not import prometheus-client, which reads
`PROMETHEUS_MULTIPROC_DIR` once, when it is first imported.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from banking_es.private_files import private_dir

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """Create an empty metrics directory for this server's workers; point the environment at it.

    `banking-es serve` calls this before the workers start. An operator's own
    PROMETHEUS_MULTIPROC_DIR is used when set (emptied first: one server per directory);
    otherwise `<DATA_DIR>/prometheus-multiproc/<pid of serve>`, so two servers sharing a
    data directory never mix or wipe each other's files, and directories left by servers
    that are gone are removed. Old files must go, or their counts would be added to ours.
    """
    configured = os.environ.get(ENV_DIR)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for child in path.glob("*.db"):
            child.unlink()
    else:
        parent = private_dir(data_dir) / "prometheus-multiproc"
        parent.mkdir(parents=True, exist_ok=True)
        for old in parent.iterdir():
            if old.is_dir() and old.name.isdigit() and not _running(int(old.name)):
                shutil.rmtree(old, ignore_errors=True)
        path = parent / str(os.getpid())
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
    os.environ[ENV_DIR] = str(path.resolve())
    return path


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
