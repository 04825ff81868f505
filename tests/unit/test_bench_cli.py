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
    [("5", {5}), ("1-4", {1, 2, 3, 4}), ("1,3,5-7", {1, 3, 5, 6, 7}), ("8", {8}), ("3,8", {3, 8})],
)
def test_rows_accepts_rows_ranges_and_lists(value: str, rows: set[int]) -> None:
    assert _rows(value) == rows


@pytest.mark.parametrize("value", ["x", "0", "9", "4-2", "1-", "-", "1-9", "1,,2", "2.5"])
def test_rows_refuses_anything_else_with_a_usage_error(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"row"):
        _rows(value)


def _wrk(
    rate: float, p99_ms: float = 20.0, non_2xx: int = 0, conflicts: float | None = None
) -> dict[str, Any]:
    """One wrk row; with `conflicts`, row 8's commands counted on /metrics (1,000 of them)."""
    counted = (
        {}
        if conflicts is None
        else {
            "counted": {"ok": 1_000.0, "conflict": conflicts},
            "per_instance": {"bench-a": rate / 2, "bench-b": rate / 2},
        }
    )
    return {
        **counted,
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
    "instances": {
        "deposits": _wrk(2_000, conflicts=0.99),
        "contention": _wrk(1_500, conflicts=0.99),
        "check": {"hot_account_version": 10, "acknowledged_deposits": 9, "no_lost_write": True},
        "shards": {"bench-a": 8, "bench-b": 8},
        "hot_owner": "bench-a",
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
    rows = [*(str(n) for n in range(1, 9)), "8 hot", "transfers"]
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
        ("8", ("instances", "deposits", "counted", "conflict"), 1.0),  # 1 per 1,000 commands
        ("8", ("instances", "deposits", "non_2xx"), 1),
        ("8 hot", ("instances", "contention", "counted", "conflict"), 1.0),
        ("8 hot", ("instances", "contention", "rate"), 1_499),  # under row 3's 1,500/s
        ("8 hot", ("instances", "contention", "non_2xx"), 1),
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


def test_row_8_without_rows_2_and_3_judges_only_what_it_measured() -> None:
    """`--rows 8` alone: no reference rate, so the hot row's "met" is unknown unless its
    conflicts already miss; the 1,000-account row's target is its conflicts alone."""
    result = {k: v for k, v in copy.deepcopy(PASSING).items() if k != "http"}
    assert _met(result)["8"] == "yes"
    assert _met(result)["8 hot"] == "-"
    result["instances"]["contention"]["counted"]["conflict"] = 1.0
    assert _met(result)["8 hot"] == "**no**"
