"""A real `banking-es serve` process on a free loopback port, for multi-process tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    """A loopback TCP port nobody listens on now (for servers the tests start)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """Starts the server with the given environment; `kill()` sends SIGKILL to every worker."""

    def __init__(
        self,
        database_url: str,
        *,
        workers: int = 2,
        workdir: Path,
        args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        self.args = args  # after `serve`
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.workers = workers
        self.workdir = workdir
        self.extra_env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"server-{self.port}.log"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "WORKERS": str(self.workers),
            "LOG_LEVEL": "warning",
            "DATA_DIR": str(self.workdir / "data"),
            "RATE_LIMIT_ENABLED": "false",  # tests that need limits pass RATE_LIMIT_ENABLED=true
            "ARGON2_TIME_COST": "1",  # cheap password hashing: tests log in a lot
            "ARGON2_MEMORY_COST": "8",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = self._spawn(env, log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready in {timeout}s:\n{self.log()}")

    def _spawn(self, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "banking_es", "serve", *self.args],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches every worker
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the whole process group: no graceful shutdown, like a crash."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
