"""Worker processes that each accept their own share of the connections.

On Linux each worker listens on a socket of its own in one `SO_REUSEPORT` group, so the
kernel spreads new connections over the workers (uvicorn's shared socket lets one take them
all); the supervisor holds every socket, so connections wait for a restarting worker.
`WorkerProcess` notices a worker that dies during a health ping at once,
`bind_worker_sockets` refuses an address another server holds, and without Redis the
workers keep their rate limits in one shared file. docs/architecture.md ("Processes").
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from multiprocessing.connection import wait
from pathlib import Path

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from banking_es.config import Settings
from banking_es.ratelimit.windows import SHARED_FILE_ENV, SharedWindows

log = logging.getLogger("banking_es.serving")


def spreads_connections() -> bool:
    """Whether this platform balances connections over `SO_REUSEPORT` sockets (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_worker_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` sockets bound to `host:port` in one `SO_REUSEPORT` group (port 0: one free
    port for all). Raises OSError when the address is taken, by a group too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:  # fails if anyone holds the address
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@contextlib.contextmanager
def shared_rate_limits(settings: Settings) -> Iterator[None]:
    """With more than one worker, a rate-limit file for all of them (in a private temporary
    directory, removed when the server stops), named to them in the environment."""
    if settings.workers == 1 or not settings.rate_limit_enabled:
        yield
        return
    directory = Path(tempfile.mkdtemp(prefix="banking-es-limits-"))
    try:
        path = directory / "windows"
        SharedWindows.create(path, settings.rate_limit_max_clients)
        os.environ[SHARED_FILE_ENV] = str(path)
        yield
    finally:
        os.environ.pop(SHARED_FILE_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


class WorkerProcess(Process):
    """uvicorn's worker process, whose health ping (behind `is_alive`, `ping` and
    `is_ready`) also ends when the worker exits."""

    def _healthcheck(self, timeout: float) -> bool | None:
        """The worker's startup flag, or None when it exits or does not answer in time."""
        try:
            self.parent_conn.send(b"ping")
            if self.parent_conn not in wait([self.parent_conn, self.process.sentinel], timeout):
                return None
            started: bool = self.parent_conn.recv()
            return started
        except (OSError, EOFError, pickle.UnpicklingError):
            return None


class SpreadSupervisor(Multiprocess):
    """uvicorn's supervisor (restarts, health pings, graceful stop), with worker `i`
    listening on `sockets[i]` only. The number of workers is fixed: SIGTTIN and SIGTTOU
    are refused, a new worker would have no socket of its own."""

    def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self.processes_num = len(sockets)

    def _process(self, index: int) -> WorkerProcess:
        return WorkerProcess(self.config, [self.sockets[index]])

    def init_processes(self) -> None:
        for index in range(self.processes_num):
            process = self._process(index)
            process.start()
            self.processes.append(process)

    def keep_subprocess_alive(self) -> None:
        # uvicorn's, but a replacement takes over the socket of the worker it replaces, and
        # a worker that dies during its health ping is replaced at once (WorkerProcess).
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()  # hung: not answering the health ping
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                # Failed before serving (the app cannot start): it would fail again.
                log.error("worker [%s] failed to start; stopping", process.pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.warning("worker [%s] died; starting a replacement", process.pid)
            replacement = self._process(index)
            replacement.start()
            self.processes[index] = replacement

    def restart_all(self) -> None:
        # SIGHUP: replace each worker in turn, the new one ready before the old one stops.
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._process(index)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                if not self.should_exit.is_set():
                    log.error("worker [%s] was not ready in time; restart aborted", new.pid)
                return
            old.terminate()
            old.join()
            self.processes[index] = new

    def handle_ttin(self) -> None:
        log.warning("SIGTTIN ignored: the number of workers is fixed (WORKERS)")

    def handle_ttou(self) -> None:
        log.warning("SIGTTOU ignored: the number of workers is fixed (WORKERS)")
