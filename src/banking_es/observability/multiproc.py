"""The directory prometheus-client's multiprocess mode shares between workers.

Kept apart from `metrics` on purpose: it must not import prometheus-client, which reads
`PROMETHEUS_MULTIPROC_DIR` once, when it is first imported.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(data_dir: Path) -> Path:
    """Create (or empty) the workers' metrics directory and point the environment at it.

    `banking-es serve` calls this before the workers start. An operator's own
    PROMETHEUS_MULTIPROC_DIR is used when set; otherwise `<DATA_DIR>/prometheus-multiproc`.
    Files of an earlier run are removed, or their counts would be added to this run's.
    """
    configured = os.environ.get(ENV_DIR)
    path = Path(configured) if configured else data_dir / "prometheus-multiproc"
    path.mkdir(parents=True, exist_ok=True)
    for child in path.glob("*.db"):
        child.unlink()
    os.environ[ENV_DIR] = str(path.resolve())
    return path
