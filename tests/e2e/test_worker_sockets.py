"""Connections spread over the workers (`banking_es/serving.py`): each worker listens on a
socket of its own in one `SO_REUSEPORT` group, and the supervisor keeps every socket."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.server import ServerProcess

from banking_es.serving import bind_worker_sockets, spreads_connections

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not spreads_connections(), reason="SO_REUSEPORT spreads only on Linux"),
]

CONNECTIONS = 64
REQUEST = b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(f"sqlite:///{tmp_path / 'banking.db'}", workdir=tmp_path).start()
    try:
        # Ready answers once one worker serves; the other may still be starting.
        deadline = time.monotonic() + 30
        while len(listening(process.port)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(listening(process.port)) == 2, process.log()
        yield process
    finally:
        process.stop()


def tcp_table() -> list[list[str]]:
    with open("/proc/net/tcp") as f:
        return [line.split() for line in f.readlines()[1:]]


def listening(port: int) -> set[str]:
    """Inodes of the sockets listening on `port`."""
    return {
        fields[9]
        for fields in tcp_table()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port
    }


def workers(server: ServerProcess) -> list[int]:
    """The worker processes: the supervisor's children started by `multiprocessing`'s spawn
    (its resource tracker is a child too)."""
    assert server.process is not None
    pid = server.process.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(child) for child in f.read().split()]
    found = []
    for child in children:
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"spawn_main" in f.read():
                    found.append(child)
        except OSError:  # reaped meanwhile
            continue
    return found


def client_ports_held_by(pid: int, server_port: int) -> set[int]:
    """Client ports of the established connections to `server_port` that `pid` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return {
        int(remote.split(":")[1], 16)
        for _, local, remote, state, *rest in tcp_table()
        if state == "01" and rest[5] in inodes and int(local.split(":")[1], 16) == server_port
    }


def open_together(port: int, count: int) -> list[socket.socket]:
    """`count` connections opened at once, each with one keep-alive request sent."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=30)
        client.sendall(REQUEST)
        clients.append(client)
    return clients


def read_answer(client: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(4096)
        assert chunk, "the server closed the connection without answering"
        data += chunk
    return data


def held(server: ServerProcess, clients: list[socket.socket]) -> dict[int, int]:
    """How many of `clients` each worker holds."""
    ours = {c.getsockname()[1] for c in clients}
    return {pid: len(client_ports_held_by(pid, server.port) & ours) for pid in workers(server)}


def answered_and_held(server: ServerProcess, clients: list[socket.socket]) -> dict[int, int]:
    """Waits for every client's answer (each must be 200) and returns how many of `clients`
    each worker held at most meanwhile. Counting once at the end is not enough when a worker
    is replaced: uvicorn closes a keep-alive connection after 5 idle seconds, so the other
    worker may have closed the ones it answered at once before the replacement is up."""
    most: dict[int, int] = {}
    waiting = dict.fromkeys(clients, b"")
    deadline = time.monotonic() + 30
    while waiting:
        assert time.monotonic() < deadline, f"{len(waiting)} connections got no answer in 30 s"
        for pid, count in held(server, clients).items():
            most[pid] = max(most.get(pid, 0), count)
        readable, _, _ = select.select(list(waiting), [], [], 0.1)
        for client in readable:
            chunk = client.recv(4096)
            assert chunk, "the server closed the connection without answering"
            waiting[client] += chunk
            if b"\r\n\r\n" in waiting[client]:
                assert waiting.pop(client).startswith(b"HTTP/1.1 200")
    for pid, count in held(server, clients).items():
        most[pid] = max(most.get(pid, 0), count)
    return most


def test_connections_opened_while_a_worker_is_busy_still_reach_it(server: ServerProcess) -> None:
    # With one shared socket, the worker that is free accepts every connection waiting, so
    # a worker busy at the moment a crowd connects gets none of it for good. A paused
    # worker is the extreme of busy: its share waits in its own queue until it resumes.
    paused, other = workers(server)
    os.kill(paused, signal.SIGSTOP)
    try:
        clients = open_together(server.port, CONNECTIONS)
        time.sleep(0.5)  # the running worker accepts all it can meanwhile
    finally:
        os.kill(paused, signal.SIGCONT)
    try:
        for client in clients:
            assert read_answer(client).startswith(b"HTTP/1.1 200")
        counts = held(server, clients)
        assert sum(counts.values()) == CONNECTIONS, counts
        # Binomial(64, 1/2): fewer than 12 on either side has a chance below 1 in 10^6.
        assert counts[paused] >= 12, counts
        assert counts[other] >= 12, counts
    finally:
        for client in clients:
            client.close()


def test_connections_wait_for_the_replacement_of_a_dead_worker(server: ServerProcess) -> None:
    # The supervisor keeps each worker's socket: connections that arrive while a worker is
    # replaced queue for its successor instead of being refused.
    dead = workers(server)[0]
    os.kill(dead, signal.SIGKILL)
    clients = open_together(server.port, CONNECTIONS)
    try:
        counts = answered_and_held(server, clients)
        replaced = workers(server)
        assert dead not in replaced
        assert len(replaced) == 2
        assert set(replaced) <= set(counts)
        assert all(counts[pid] >= 12 for pid in replaced), counts
        assert len(listening(server.port)) == 2
    finally:
        for client in clients:
            client.close()


def test_a_worker_that_dies_during_its_health_ping_is_replaced_at_once(
    server: ServerProcess,
) -> None:
    # The supervisor pings every worker each half second and waits up to 30 s
    # (timeout_worker_healthcheck) for the answer. A paused worker never answers, so the
    # ping is waiting when it dies; uvicorn's own wait noticed nothing for those 30 s, and
    # the connections queued for the worker waited as long (once in CI, at random).
    dead = workers(server)[0]
    os.kill(dead, signal.SIGSTOP)
    time.sleep(1.5)  # at least one ping to it is now waiting for an answer
    os.kill(dead, signal.SIGKILL)
    killed = time.monotonic()
    clients = open_together(server.port, CONNECTIONS)
    try:
        while time.monotonic() - killed < 20 and len(set(workers(server)) - {dead}) < 2:
            time.sleep(0.05)
        replaced_after = time.monotonic() - killed
        assert replaced_after < 10, f"replaced only after {replaced_after:.1f} s"
        counts = answered_and_held(server, clients)
        assert all(counts.get(pid, 0) >= 12 for pid in workers(server)), counts
    finally:
        for client in clients:
            client.close()


def test_a_second_server_on_a_taken_port_fails_instead_of_sharing_it() -> None:
    group = bind_worker_sockets("127.0.0.1", 0, 2)
    try:
        for sock in group:
            sock.listen()  # as the workers do
        port = group[0].getsockname()[1]
        assert {s.getsockname()[1] for s in group} == {port}
        with pytest.raises(OSError):  # a second group would join the first without the probe
            bind_worker_sockets("127.0.0.1", port, 2)
    finally:
        for sock in group:
            sock.close()
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError):
            bind_worker_sockets("127.0.0.1", plain.getsockname()[1], 2)


def test_sighup_replaces_every_worker_on_its_own_socket(server: ServerProcess) -> None:
    assert server.process is not None
    before, sockets = set(workers(server)), listening(server.port)
    os.kill(server.process.pid, signal.SIGHUP)  # uvicorn's rolling restart
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(workers(server)) & before:
        time.sleep(0.2)
    after = workers(server)
    assert len(after) == 2
    assert not set(after) & before, (before, after)
    assert listening(server.port) == sockets  # the same two sockets, one per new worker
    clients = open_together(server.port, CONNECTIONS)
    try:
        for client in clients:
            assert read_answer(client).startswith(b"HTTP/1.1 200")
        assert all(count >= 12 for count in held(server, clients).values())
    finally:
        for client in clients:
            client.close()


def test_serve_on_a_taken_port_says_so_and_exits(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'banking.db'}",
            "DATA_DIR": str(tmp_path / "data"),
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": "2",
        }
        done = subprocess.run(
            [sys.executable, "-m", "banking_es", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
