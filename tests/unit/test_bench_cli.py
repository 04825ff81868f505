"""`make bench`'s own logic: which rows `--rows` selects, and the table's "met" column."""

from __future__ import annotations

import argparse
import copy
from typing import Any

import pytest
from bench.frameworks import parse_args
from bench.main import _rows
from bench.report import table


@pytest.mark.parametrize(
    ("value", "rows"),
    [("5", {5}), ("1-4", {1, 2, 3, 4}), ("1,3,5-7", {1, 3, 5, 6, 7}), ("7-7", {7})],
)
def test_rows_accepts_rows_ranges_and_lists(value: str, rows: set[int]) -> None:
    assert _rows(value) == rows


@pytest.mark.parametrize("value", ["x", "0", "8", "4-2", "1-", "-", "1-9", "1,,2", "2.5"])
def test_rows_refuses_anything_else_with_a_usage_error(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"row"):
        _rows(value)


def _wrk(rate: float, p99_ms: float = 20.0, non_2xx: int = 0) -> dict[str, Any]:
    return {
        "rate": rate,
        "p50_ms": 10.0,
        "p99_ms": p99_ms,
        "non_2xx": non_2xx,
        "socket_errors": 0,
        "worker_cpu_us": 100.0,
        "postgres_cpu_us": 10.0,
    }


#: A run that meets every target, each by a little.
PASSING: dict[str, Any] = {
    "machine": {"cpus": 2, "load_before": "0.1", "load_after": "0.2"},
    "seconds": 300,
    "http": {
        "bare": _wrk(20_000),
        "health": _wrk(10_000),
        "deposits": _wrk(5_000, p99_ms=49.9),
        "contention": _wrk(1_500),
        "mixed": _wrk(7_000),
        "transfers": _wrk(3_000),
        "peak_rss_bytes": 200 * 2**20,
        "workers_sampled": 2,
        "authenticated": True,
        "check": {"hot_account_version": 10, "acknowledged_deposits": 9, "no_lost_write": True},
    },
    "appends": {"store_rate": 30_000, "copy_rate": 50_000, "eventsourcing_rate": 6_000},
    "load": {"small_ms": 1.0, "big_ms": 1.99, "ratio": 1.99},
    "rebuild": {"rate": 30_000, "per_projection": {"transactions": 30_000}},
}


def _met(result: dict[str, Any]) -> dict[str, str]:
    """Row (number or name) -> its "met" cell."""
    cells = {}
    for line in table(result).splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) > 7 and parts[1] not in ("#", "---"):
            cells[parts[1]] = parts[7]
    return cells


def test_a_run_meeting_every_target_says_yes_on_every_row() -> None:
    rows = [*(str(n) for n in range(1, 8)), "transfers"]
    assert _met(PASSING) == {"0": "-", **dict.fromkeys(rows, "yes")}


@pytest.mark.parametrize(
    ("row", "path", "value"),
    [
        ("1", ("http", "health", "rate"), 9_999),  # under 50% of row 0
        ("2", ("http", "deposits", "rate"), 4_999),  # under 25% of row 0
        ("2", ("http", "deposits", "p99_ms"), 50.0),  # p99 not under 50 ms
        ("3", ("http", "contention", "rate"), 1_499),
        ("3", ("http", "contention", "non_2xx"), 1),
        ("4", ("http", "mixed", "rate"), 6_999),  # under 35% of row 0
        ("transfers", ("http", "transfers", "rate"), 2_999),  # under 15% of row 0
        ("5", ("appends", "copy_rate"), 50_001),  # under 60% of COPY
        ("5", ("appends", "eventsourcing_rate"), 6_001),  # under 5x eventsourcing
        ("6", ("load", "ratio"), 2.0),
        ("7", ("rebuild", "rate"), 29_999),
    ],
)
def test_a_missed_target_says_no_on_its_row_only(
    row: str, path: tuple[str, ...], value: float
) -> None:
    result = copy.deepcopy(PASSING)
    *parents, key = path
    holder = result
    for name in parents:
        holder = holder[name]
    holder[key] = value
    met = _met(result)
    assert met[row] == "**no**"
    assert all(cell in ("yes", "-") for number, cell in met.items() if number != row), met


@pytest.mark.parametrize(
    "argv",
    [
        ["--seconds", "0"],
        ["--seconds", "-3"],
        ["--seconds", "2.5"],
        ["--seconds", "x"],
        ["--rounds", "0"],
        ["--connections", "0"],
        ["--connections", "20000"],
        ["--stacks", "django"],
        ["--stacks", ","],
    ],
)
def test_frameworks_refuses_a_bad_value_with_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_frameworks_always_measures_the_bare_app_first_as_the_reference() -> None:
    args = parse_args(["--seconds", "3", "--rounds", "4", "--stacks", "litestar,fastapi"])
    assert (args.seconds, args.rounds, args.connections) == (3, 4, 64)
    assert [stack.name for stack in args.stacks] == ["bare", "litestar", "fastapi"]
