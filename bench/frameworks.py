"""`python -m bench.frameworks`: which HTTP stack (framework + ASGI server) costs least.

Each stack (bench/frameworks_apps/) serves a trivial `GET /health/live` and a deposit-shaped
route (UUID path, bearer guard, strict JSON with an exact decimal amount and no repeated key,
an account-shaped answer), no database. One worker per server, uvloop; rounds alternate the
stacks (A B C ... A B C ...) and each stack's median is set beside the bare ASGI app's, measured
in the same run. The load average is read at each round: a busy machine compresses differences.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import load_average, positive_int, say
from bench.frameworks_apps.common import AUTHORIZATION, TOKEN
from bench.http import _descendants, _free_port, cpu_seconds, run_wrk, wrk_binary

RESULTS = Path(__file__).parent / "results"
WARMUP_S = 2
ACCOUNTS = 100
DEPOSIT = b'{"amount": "1.00", "description": "bench"}'


@dataclass(frozen=True)
class Stack:
    name: str
    module: str
    server: str  # "uvicorn" or "granian"

    def command(self, port: int) -> list[str]:
        app = f"bench.frameworks_apps.{self.module}:app"
        if self.server == "granian":
            return [
                sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
                "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", "--no-ws", app,
            ]  # fmt: skip
        return [
            sys.executable, "-m", "uvicorn", app, "--loop", "uvloop", "--http", "httptools",
            "--workers", "1", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip


STACKS = {
    stack.name: stack
    for stack in (
        Stack("bare", "bare", "uvicorn"),
        Stack("fastapi", "fastapi_app", "uvicorn"),
        Stack("starlette", "starlette_app", "uvicorn"),
        Stack("litestar", "litestar_app", "uvicorn"),
        Stack("fastapi+granian", "fastapi_app", "granian"),
        Stack("starlette+granian", "starlette_app", "granian"),
        Stack("litestar+granian", "litestar_app", "granian"),
        Stack("bare+granian", "bare", "granian"),
    )
}
DEFAULT_STACKS = "bare,fastapi,starlette,litestar,starlette+granian,litestar+granian"


def _stacks(value: str) -> list[Stack]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in STACKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown stack(s) {', '.join(unknown) or '(none)'}; known: {', '.join(STACKS)}"
        )
    if "bare" not in names:
        names.insert(0, "bare")  # the reference of every ratio
    return [STACKS[name] for name in dict.fromkeys(names)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.frameworks",
        description="Which HTTP stack (framework + ASGI server) costs least: each beside a"
        " bare ASGI app, in alternating rounds, driven by wrk on loopback.",
    )
    parser.add_argument(
        "--seconds", type=positive_int, default=5, help="measured seconds per route (5)"
    )
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternating rounds (3)")
    parser.add_argument("--connections", type=positive_int, default=64, help="wrk connections (64)")
    parser.add_argument(
        "--stacks",
        type=_stacks,
        default=_stacks(DEFAULT_STACKS),
        help=f"comma-separated, from {', '.join(STACKS)} ({DEFAULT_STACKS})",
    )
    args = parser.parse_args(argv)
    if args.connections > 10_000:
        parser.error("--connections: at most 10000")
    return args


class Running:
    """One server process of `stack` on a free loopback port, until `stop`."""

    def __init__(self, stack: Stack) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            stack.command(self.port),
            cwd=Path(__file__).parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"{stack.name} exited early:\n{error[-3000:]}")
            try:
                if httpx.get(self.url + "/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{stack.name} was not ready in 30s")

    def pids(self) -> list[int]:
        return [self.process.pid, *_descendants(self.process.pid)]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def check_equal_rules(url: str, stack: Stack) -> None:
    """Every framework stack accepts the deposit and refuses the same bad ones (4xx)."""
    if stack.module == "bare":
        return
    path = f"{url}/accounts/{uuid.uuid4()}/deposit"
    auth = {"Authorization": AUTHORIZATION, "Content-Type": "application/json"}
    good = httpx.post(path, content=DEPOSIT, headers=auth)
    if good.status_code != 200 or good.json().get("balance") != "1001.00":
        raise RuntimeError(f"{stack.name}: the deposit answered {good.status_code} {good.text}")
    bad = {
        "no token": (DEPOSIT, {"Content-Type": "application/json"}),
        "wrong token": (DEPOSIT, {**auth, "Authorization": "Bearer x" + TOKEN}),
        "float": (b'{"amount": 12.34, "description": "x"}', auth),
        "exponent": (b'{"amount": "1e3", "description": "x"}', auth),
        "NaN": (b'{"amount": "NaN", "description": "x"}', auth),
        "zero": (b'{"amount": "0.00", "description": "x"}', auth),
        "three decimals": (b'{"amount": "1.005", "description": "x"}', auth),
        "repeated key": (b'{"amount": "1.00", "amount": "2.00", "description": "x"}', auth),
        "unknown key": (b'{"amount": "1.00", "description": "x", "x": 1}', auth),
        "not JSON": (b'{"amount": ', auth),
    }
    for label, (body, headers) in bad.items():
        answer = httpx.post(path, content=body, headers=headers)
        if not 400 <= answer.status_code < 500:
            raise RuntimeError(f"{stack.name}: {label} answered {answer.status_code}")
    answer = httpx.post(f"{url}/accounts/not-a-uuid/deposit", content=DEPOSIT, headers=auth)
    if not 400 <= answer.status_code < 500:
        raise RuntimeError(f"{stack.name}: a bad UUID answered {answer.status_code}")


def _measure(
    server: Running, mode: str, ids: list[str], seconds: int, connections: int
) -> dict[str, Any]:
    # bench/http.py's "health" mode is wrk's static GET; "deposit" posts to a random id.
    path, token = ("/health/live", None) if mode == "health" else ("/", TOKEN)
    run_wrk(server.url, path, mode, ids, token, WARMUP_S, connections)
    before = cpu_seconds(server.pids())
    result = run_wrk(server.url, path, mode, ids, token, seconds, connections)
    spent = cpu_seconds(server.pids()) - before
    result["cpu_us"] = spent / result["requests"] * 1e6 if result["requests"] else 0.0
    return result


async def _asgi_call(app: Any, mode: str, path: str) -> int:
    method, body, headers = "GET", b"", []
    if mode == "deposit":
        method, body = "POST", DEPOSIT
        headers = [
            (b"authorization", AUTHORIZATION.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        status = message.get("status", status)

    await app(scope, receive, send)
    return status


def in_process_us(module: str, calls: int = 5000) -> dict[str, float]:
    """CPU per request of the app's ASGI callable alone (no server, no socket): the
    framework's own cost, which a busy machine hardly disturbs."""
    app = importlib.import_module(f"bench.frameworks_apps.{module}").app
    paths = {"health": "/health/live", "deposit": f"/accounts/{uuid.uuid4()}/deposit"}

    async def measure() -> dict[str, float]:
        costs: dict[str, float] = {}
        for mode, path in paths.items():
            for _ in range(calls // 10):  # warm-up
                if await _asgi_call(app, mode, path) != 200:
                    raise RuntimeError(f"{module} {mode}: not 200 in process")
            started = time.process_time()
            for _ in range(calls):
                await _asgi_call(app, mode, path)
            costs[mode] = (time.process_time() - started) / calls * 1e6
        return costs

    return asyncio.run(measure())


def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk_binary()
    ids = [str(uuid.uuid4()) for _ in range(ACCOUNTS)]
    rounds: list[dict[str, Any]] = []
    for number in range(1, args.rounds + 1):
        current: dict[str, Any] = {"load_before": load_average(), "stacks": {}}
        say(f"round {number}/{args.rounds}, load {current['load_before']}")
        for stack in args.stacks:
            server = Running(stack)
            try:
                if number == 1:
                    check_equal_rules(server.url, stack)
                rows = {
                    mode: _measure(server, mode, ids, args.seconds, args.connections)
                    for mode in ("health", "deposit")
                }
            finally:
                server.stop()
            for mode, row in rows.items():
                if row["non_2xx"] or row["socket_errors"]:
                    raise RuntimeError(f"{stack.name} {mode}: errors {row}")
            say(
                f"  {stack.name:18} GET {rows['health']['rate']:8,.0f}/s"
                f" p99 {rows['health']['p99_ms']:6.1f} ms | deposit"
                f" {rows['deposit']['rate']:8,.0f}/s p99 {rows['deposit']['p99_ms']:6.1f} ms"
            )
            current["stacks"][stack.name] = rows
        current["load_after"] = load_average()
        rounds.append(current)
    modules = dict.fromkeys(stack.module for stack in args.stacks)
    say(f"in process (the ASGI callable alone): {', '.join(modules)}")
    return {
        "in_process_us": {module: in_process_us(module) for module in modules},
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "connections": args.connections,
        "rounds": rounds,
    }


def table(result: dict[str, Any]) -> str:
    """Medians over the rounds, each beside the bare ASGI app's median on the same route."""
    rounds = result["rounds"]
    names = list(rounds[0]["stacks"])

    def values(name: str, mode: str, key: str) -> list[float]:
        return [r["stacks"][name][mode][key] for r in rounds]

    bare = {mode: statistics.median(values("bare", mode, "rate")) for mode in ("health", "deposit")}
    lines = [
        "| stack | GET req/s (median; rounds) | p99 ms | x bare | CPU us/req"
        " | deposit req/s (median; rounds) | p99 ms | x bare | CPU us/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        cells = [name]
        for mode in ("health", "deposit"):
            rates = values(name, mode, "rate")
            median = statistics.median(rates)
            cells += [
                f"{median:,.0f} ({' '.join(f'{r:,.0f}' for r in rates)})",
                f"{statistics.median(values(name, mode, 'p99_ms')):.1f}",
                f"{median / bare[mode]:.0%}",
                f"{statistics.median(values(name, mode, 'cpu_us')):,.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| app | in process, GET us/req | in process, deposit us/req |")
    lines.append("|---|---:|---:|")
    for module, costs in result.get("in_process_us", {}).items():
        lines.append(f"| {module} | {costs['health']:,.0f} | {costs['deposit']:,.0f} |")
    loads = ", ".join(f"{r['load_before']} -> {r['load_after']}" for r in rounds)
    lines.append("")
    lines.append(f"load average (1/5/15 min) at each round: {loads}; {result['cpus']} CPUs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    say(
        f"stacks {', '.join(s.name for s in args.stacks)}; {args.rounds} rounds of"
        f" {WARMUP_S}s warm-up + {args.seconds}s per route, {args.connections} connections"
    )
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"frameworks-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(table(result))
    say(f"saved {path}")


if __name__ == "__main__":
    main()
