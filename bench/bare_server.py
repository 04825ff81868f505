"""Row 0's server: the bare ASGI app (bench/frameworks_apps/bare.py) under uvicorn with uvloop
and httptools, with the service's workers and socket per worker (banking_es/serving.py), so
it is the ceiling of this machine's Python HTTP at the same number of processes.

`python -m bench.bare_server PORT WORKERS`
"""

from __future__ import annotations

import sys

import uvicorn

from banking_es import serving

APP = "bench.frameworks_apps.bare:app"


def main(port: int, workers: int) -> None:
    options = {
        "host": "127.0.0.1",
        "port": port,
        "workers": workers,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
        "log_level": "warning",
    }
    if workers > 1 and serving.spreads_connections():
        sockets = serving.bind_worker_sockets("127.0.0.1", port, workers)
        serving.SpreadSupervisor(uvicorn.Config(APP, **options), sockets).run()  # type: ignore[arg-type]
    else:
        uvicorn.run(APP, **options)  # type: ignore[arg-type]


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
