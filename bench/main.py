"""`python -m bench`: measure every row beside its reference, print one table, save JSON.

python -m bench                 # all rows (about 5 minutes on 2 cores)
python -m bench --rows 1-4 6    # some of them
python -m bench --rows 3 8      # row 8 (two instances) beside row 3 (one server, hot account)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from banking_es.api.app import GC_THRESHOLDS, tune_gc
from bench import http, instances, store
from bench.common import load_average, say, scratch_database
from bench.report import table

RESULTS = Path(__file__).parent / "results"


ROWS = range(1, 9)


def _rows(value: str) -> set[int]:
    """One `--rows` value: `4`, `1-4` or `1,3,5-7` (argparse's `type`: a bad one is a usage
    error, not a traceback, and nothing runs)."""
    rows: set[int] = set()
    for part in value.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a row or a range of rows (e.g. 5 or 1-4)"
            ) from None
        if first > last or first not in ROWS or last not in ROWS:
            raise argparse.ArgumentTypeError(
                f"{part!r}: rows are {ROWS.start}-{ROWS.stop - 1}, ranges low-high"
            )
        rows.update(range(first, last + 1))
    return rows


async def run(rows: set[int]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_before": load_average(),
        },
    }
    started = time.monotonic()
    if rows & {1, 2, 3, 4}:
        async with scratch_database("http") as url:
            results["http"] = await http.http_rows(url)
    if 8 in rows:  # next to rows 1-4: row 3 is its reference
        async with scratch_database("instances") as url:
            results["instances"] = await instances.two_instances_row(url)
    if 5 in rows:
        async with scratch_database("appends") as url:
            results["appends"] = await store.appends_row(url)
    if 6 in rows:
        async with scratch_database("load") as url:
            results["load"] = await store.load_row(url)
    if 7 in rows:
        async with scratch_database("rebuild") as url:
            results["rebuild"] = await store.rebuild_row(url)
    results["machine"]["load_after"] = load_average()
    results["seconds"] = round(time.monotonic() - started, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--rows", nargs="+", type=_rows, default=[set(ROWS)], help="rows to run, e.g. 1-4 6"
    )
    args = parser.parse_args()
    rows: set[int] = set().union(*args.rows)
    if 5 in rows:
        try:
            import eventsourcing.postgres  # noqa: F401  (row 5's reference)
        except ImportError:
            raise SystemExit(
                "row 5 needs the bench extra: run `make bench`"
                " (it installs requirements-bench.lock)"
            ) from None
    say(f"bench: rows {sorted(rows)}; load average before: {load_average()}")
    # Rows 5-7 run the store and the projections in this process: collect garbage and run
    # the event loop as a serving worker does (api/app.py, `serve`'s uvloop), and the
    # references under the same settings; docs/performance.md says what each saves.
    tune_gc()
    results = uvloop.run(run(rows))
    results["machine"]["gc_thresholds"] = list(GC_THRESHOLDS)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    say(f"results written to {path}")


if __name__ == "__main__":
    main()
