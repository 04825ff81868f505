"""Rows 0-4, the transfers row and the holds row: the server (`banking-es serve`, 2 workers)
under wrk on loopback, beside row 0, a bare ASGI app with the same server and workers
(bench/bare_server.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import say

WORKERS = 2
CONNECTIONS = 64
WARMUP_S = 2
DURATION_S = 10
CACHE_WARMUP_S = 5
ACCOUNTS = 1000
OPENING_BALANCE = "1000000.00"
#: Every rate limit of the bench's server: far above anything wrk can send.
RATE_LIMIT = 1_000_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    children = [int(c) for c in f.read().split()]
                found.extend(children)
                todo.extend(children)
        except OSError:
            continue
    return found


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"spawn_main" in f.read()
    except OSError:
        return False


def worker_pids(pid: int) -> list[int]:
    """The worker processes of the server `pid`, or `pid` itself when it serves alone."""
    return [p for p in _descendants(pid) if _is_worker(p)] or [pid]


class MemorySampler:
    """Samples the summed RSS of the server's worker processes every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid = pid
        self.every = every
        self.peak = 0
        self.workers_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            workers = worker_pids(self.pid)
            self.workers_seen = max(self.workers_seen, len(workers))
            self.peak = max(self.peak, sum(_rss_bytes(p) for p in workers))
            self._stop.wait(self.every)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Server:
    database_url: str
    workdir: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    workers: int = WORKERS
    #: Set last, over the bench's own settings (row 8's instance and cluster settings).
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("REDIS_", "KAFKA_", "OTEL_"))
        }
        env.update(
            DATABASE_URL=self.database_url,
            HOST="127.0.0.1",
            PORT=str(self.port),
            WORKERS=str(self.workers),
            LOG_LEVEL="warning",
            # On, so that its cost is measured, with limits that refuse nothing.
            RATE_LIMIT_ENABLED="true",
            RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
            RATE_LIMIT_BURST=str(RATE_LIMIT),
            RATE_LIMIT_PER_IP_PER_MINUTE=str(RATE_LIMIT),
            AUTH_RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
            DATA_DIR=str(self.workdir / "data"),
            JWT_SECRET=env.get("JWT_SECRET", "bench-secret-" + "x" * 32),
            REFRESH_TOKEN_SECRET=env.get("REFRESH_TOKEN_SECRET", "bench-refresh-" + "y" * 32),
        )
        env.update(self.extra_env)
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "banking_es", "serve"],
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


async def authenticate(client: httpx.AsyncClient) -> str | None:
    """A bearer token for a bench user when the API has /auth/register; None otherwise."""
    paths = (await client.get("/openapi.json")).json().get("paths", {})
    if "/auth/register" not in paths:
        return None
    name = f"bench_{os.getpid()}_{int(time.time())}"
    password = "bench-password-" + name
    answer = await client.post(
        "/auth/register",
        json={"username": name, "email": f"{name}@example.com", "password": password},
    )
    if answer.status_code != 201:
        raise RuntimeError(f"register failed: {answer.status_code} {answer.text}")
    answer = await client.post("/auth/login", json={"username": name, "password": password})
    if answer.status_code != 200:
        raise RuntimeError(f"login failed: {answer.status_code} {answer.text}")
    token: str = answer.json()["access_token"]
    return token


@dataclass
class BareServer:
    """Row 0: bench/bare_server.py, the same server and workers without the service."""

    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        command = [sys.executable, "-m", "bench.bare_server", str(self.port), str(WORKERS)]
        self.process = subprocess.Popen(command, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the bare server was not ready in {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)


def bare_row() -> dict[str, Any]:
    """Row 0, measured like row 1 (wrk's own static GET, no script work per request)."""
    server = BareServer()
    server.start()
    try:
        assert server.process is not None
        workers = _descendants(server.process.pid)
        return measure(server.url, "/", "health", [], None, "row 0 bare ASGI app", workers)
    finally:
        server.stop()


async def open_accounts(
    client: httpx.AsyncClient, count: int, headers: dict[str, str]
) -> list[str]:
    ids: list[str] = []
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:
            answer = await client.post(
                "/accounts",
                json={"owner_name": f"Bench Owner {i}", "initial_balance": OPENING_BALANCE},
                headers=headers,
            )
            if answer.status_code != 201:
                raise RuntimeError(f"opening an account failed: {answer.status_code} {answer.text}")
            ids.append(answer.json()["id"])

    await asyncio.gather(*(one(i) for i in range(count)))
    return ids


_LUA = r"""
local ids = {%(ids)s}
local mode = "%(mode)s"
local out = "%(out)s"
local headers = {["Content-Type"] = "application/json"%(auth)s}
local deposit = '{"amount": "1.00", "description": "bench"}'
local transfer = '{"from_account_id": "%%s", "to_account_id": "%%s", "amount": "0.01"}'
local withdraw = '{"amount": "0.50", "description": "bench"}'
local ports = {%(ports)s}
local n = 0
local threads = {}
sent = 0

function setup(thread)
  n = n + 1
  thread:set("seed", n)
  table.insert(threads, thread)
  if #ports > 0 then  -- one thread per server (row 8): each thread's connections go to its own
    thread.addr = wrk.lookup(wrk.host, ports[(n - 1) %% #ports + 1])[1]
  end
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

%(request)s

if #ports > 0 and request then  -- each thread counts what it sent: its server's share
  local make = request
  request = function()
    sent = sent + 1
    return make()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local per = {}
  for i, thread in ipairs(threads) do per[i] = tostring(thread:get("sent") or 0) end
  local f = io.open(out, "w")
  f:write(string.format(
    '{"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "connect_errors": %%d, ' ..
    '"read_errors": %%d, "write_errors": %%d, "timeouts": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"sent_per_thread": [%%s]}',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    table.concat(per, ", ")))
  f:close()
end
"""

_REQUESTS = {
    "health": "",  # wrk's own static request: the cheapest possible client
    "deposit": r"""
function request()
  return wrk.format("POST", "/accounts/" .. ids[math.random(#ids)] .. "/deposit", headers, deposit)
end
""",
    "get": r"""
function request()
  return wrk.format("GET", "/accounts/" .. ids[math.random(#ids)], headers)
end
""",
    "transfer": r"""
function request()
  local from = math.random(#ids)
  local to = math.random(#ids - 1)
  if to >= from then to = to + 1 end
  return wrk.format("POST", "/transfers", headers, string.format(transfer, ids[from], ids[to]))
end
""",
    # A hold's capture is sent once its placement answered (its id in the body): a pair
    # is two requests, so the pair rate is half the request rate.
    "hold": r"""
local pending = {}
local placing = '{"amount": "0.01", "description": "bench"}'
function request()
  local id = table.remove(pending)
  if id then
    return wrk.format("POST", "/holds/" .. id .. "/capture", headers)
  end
  return wrk.format("POST", "/accounts/" .. ids[math.random(#ids)] .. "/holds", headers, placing)
end
function response(status, answer_headers, body)
  if status == 201 then
    local id = body:match('"id":"([^"]+)"')
    if id then table.insert(pending, id) end
  end
end
""",
    "mixed": r"""
function request()
  local id = ids[math.random(#ids)]
  local r = math.random(10)
  if r <= 7 then
    return wrk.format("GET", "/accounts/" .. id, headers)
  elseif r <= 9 then
    return wrk.format("POST", "/accounts/" .. id .. "/deposit", headers, deposit)
  end
  return wrk.format("POST", "/accounts/" .. id .. "/withdraw", headers, withdraw)
end
""",
}


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is missing: `make bench` installs it (apt-get install -y wrk)")
    return found


def run_wrk(
    url: str,
    path: str,
    mode: str,
    ids: list[str],
    token: str | None,
    duration: int,
    connections: int = CONNECTIONS,
    ports: list[int] | None = None,
) -> dict[str, Any]:
    """wrk on `url` + `path` for `duration` seconds; with `ports`, one thread per port on
    `url`'s host, the connections split evenly between them."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        out = Path(tmp) / "result.json"
        script = Path(tmp) / "script.lua"
        script.write_text(
            _LUA
            % {
                "ids": ", ".join(f'"{i}"' for i in ids),
                "mode": mode,
                "out": out,
                "auth": f', ["Authorization"] = "Bearer {token}"' if token else "",
                "request": _REQUESTS[mode],
                "ports": ", ".join(f'"{p}"' for p in ports or ()),
            }
        )
        command = [
            wrk_binary(),
            f"-t{len(ports) if ports else 1}",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "5s",
            "-s",
            str(script),
        ]
        if mode == "health" and token:
            command += ["-H", f"Authorization: Bearer {token}"]
        completed = subprocess.run(
            [*command, url + path], capture_output=True, text=True, check=False
        )
        if completed.returncode != 0 or not out.exists():
            raise RuntimeError(f"wrk failed: {completed.stdout}\n{completed.stderr}")
        result: dict[str, Any] = json.loads(out.read_text())
    seconds = result["duration_us"] / 1e6
    result["rate"] = result["requests"] / seconds if seconds else 0.0
    result["p50_ms"] = result.pop("p50_us") / 1000
    result["p99_ms"] = result.pop("p99_us") / 1000
    result["socket_errors"] = sum(
        result[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return result


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of `pids` so far (processes gone meanwhile count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / _TICKS


def postgres_pids() -> list[int]:
    """Every PostgreSQL process on this machine (the backends serve the server and others)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read().startswith(b"postgres"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


def measure(
    url: str,
    path: str,
    mode: str,
    ids: list[str],
    token: str | None,
    label: str,
    workers: list[int] | None = None,
    ports: list[int] | None = None,
    counters: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Warm up, then measure; with `workers`, also the CPU time per request they and
    PostgreSQL spent (less sensitive to a busy machine than requests/s); with `counters`,
    how much each counter it reads grew over the measured run (`counted`)."""
    say(f"{label}: {WARMUP_S}s warm-up, {DURATION_S}s measured ({CONNECTIONS} connections)")
    warmup = run_wrk(url, path, mode, ids, token, WARMUP_S, ports=ports)
    pg = postgres_pids()
    first = counters() if counters else {}
    before = (cpu_seconds(workers or []), cpu_seconds(pg))
    result = run_wrk(url, path, mode, ids, token, DURATION_S, ports=ports)
    after = (cpu_seconds(workers or []), cpu_seconds(pg))
    if counters:
        last = counters()
        result["counted"] = {k: v - first.get(k, 0.0) for k, v in last.items()}
    result["warmup_requests"] = warmup["requests"]
    result["warmup_non_2xx"] = warmup["non_2xx"]
    cpu = ""
    if workers and result["requests"]:
        result["worker_cpu_us"] = (after[0] - before[0]) / result["requests"] * 1e6
        result["postgres_cpu_us"] = (after[1] - before[1]) / result["requests"] * 1e6
        cpu = (
            f", CPU per request: workers {result['worker_cpu_us']:,.0f} us,"
            f" PostgreSQL {result['postgres_cpu_us']:,.0f} us"
        )
    say(
        f"{label}: {result['rate']:,.0f}/s, p50 {result['p50_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, non-2xx {result['non_2xx']},"
        f" socket errors {result['socket_errors']}{cpu}"
    )
    return result


async def http_rows(database_url: str) -> dict[str, Any]:
    """Rows 0-4, the transfers and holds rows and the server's peak memory."""
    loop = asyncio.get_running_loop()
    say(f"row 0: the bare ASGI app with {WORKERS} workers")
    bare = await loop.run_in_executor(None, bare_row)
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        server = Server(database_url, Path(tmp))
        say(f"starting `banking-es serve` with {WORKERS} workers on {server.url}")
        server.start()
        try:
            assert server.process is not None
            with MemorySampler(server.process.pid) as memory:
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                    token = await authenticate(client)
                    say("authentication: " + ("bearer token of a bench user" if token else "open"))
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    say(f"opening {ACCOUNTS + 1} accounts")
                    ids = await open_accounts(client, ACCOUNTS + 1, headers)
                hot, spread = ids[:1], ids[1:]

                workers = worker_pids(server.process.pid)

                def run(path: str, mode: str, accounts: list[str], label: str) -> dict[str, Any]:
                    return measure(server.url, path, mode, accounts, token, label, workers)

                # Both workers load every account once before the deposits (their L1 caches
                # are warm in a running server): reads spread over the 1,000 accounts.
                say(f"warming both workers' caches: {CACHE_WARMUP_S}s of GET /accounts/{{id}}")
                await loop.run_in_executor(
                    None, run_wrk, server.url, "/", "get", ids, token, CACHE_WARMUP_S
                )
                rows: dict[str, Any] = {
                    "health": await loop.run_in_executor(
                        None, run, "/health/live", "health", spread, "row 1 GET /health/live"
                    ),
                    "deposits": await loop.run_in_executor(
                        None, run, "/", "deposit", spread, "row 2 deposits, 1,000 accounts"
                    ),
                    "contention": await loop.run_in_executor(
                        None, run, "/", "deposit", hot, "row 3 deposits, one account"
                    ),
                    "mixed": await loop.run_in_executor(
                        None, run, "/", "mixed", spread, "row 4 mixed 70/20/10"
                    ),
                    "transfers": await loop.run_in_executor(
                        None, run, "/", "transfer", spread, "transfers, 1,000 accounts"
                    ),
                    "holds": await loop.run_in_executor(
                        None, run, "/", "hold", spread, "hold + capture pairs, 1,000 accounts"
                    ),
                }
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                    rows["check"] = await check_balances(client, hot, headers, rows)
            rows["bare"] = bare
            rows["peak_rss_bytes"] = memory.peak
            rows["workers_sampled"] = memory.workers_seen
            rows["authenticated"] = token is not None
        finally:
            server.stop()
    return rows


async def check_balances(
    client: httpx.AsyncClient, hot: list[str], headers: dict[str, str], rows: dict[str, Any]
) -> dict[str, Any]:
    """The hot account's version counts every acknowledged deposit (no lost write)."""
    answer = await client.get(f"/accounts/{hot[0]}", headers=headers)
    body = answer.json()
    row = rows["contention"]
    acknowledged = row["warmup_requests"] - row["warmup_non_2xx"] + row["requests"] - row["non_2xx"]
    return {
        "hot_account_version": body["version"],
        "hot_account_balance": body["balance"],
        "acknowledged_deposits": acknowledged,
        # Deposits in flight when wrk stopped may be applied without being counted: >=.
        "no_lost_write": body["version"] - 1 >= acknowledged,
    }
