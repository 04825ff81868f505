"""`banking-es export` and `import` over a large store: time and peak memory of each step.

    python -m bench.export [--events 1000000]

Fills an SQLite store with realistic events (accounts opened, then deposits and withdrawals),
then runs, each as its own `banking-es` process: export (SQLite), import into a scratch
PostgreSQL database, export (PostgreSQL), import into a fresh SQLite file. Each step's wall
time, CPU time and peak RSS (`wait4`'s rusage) are printed as a table and as JSON; the load
average is printed too, since on a shared machine the wall time says more about the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from banking_es.db.migrate import migrate
from banking_es.db.sqlite import SqliteDatabase
from bench.common import event_rows, load_average, say, scratch_database


async def fill_sqlite(path: Path, count: int) -> None:
    db = await SqliteDatabase.connect(path)
    try:
        await migrate(db)
        async with db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO events (position, stream_id, version, event_id, type, data,"
                " metadata, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                event_rows(count, datetime.now(UTC)),
            )
    finally:
        await db.close()


#: The import's load alone (no rebuild of the read models), to tell their memory apart.
LOAD_ONLY = """
import asyncio, sys
from pathlib import Path
from banking_es.db.migrate import migrate
from banking_es.db.sqlite import SqliteDatabase
from banking_es.portable.load import check_file, load_file

async def main(path, target):
    _header, totals = check_file(path)
    db = await SqliteDatabase.connect(target)
    await migrate(db)
    await load_file(db, path, totals, lambda *_: None)
    await db.close()

asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
"""


def run_step(label: str, database_url: str, *args: str, code: str = "") -> dict[str, Any]:
    """`banking-es ARGS` (or the Python `code` with ARGS) as a child process; its wall time,
    CPU time and peak RSS, and the last line it printed."""
    env = {**os.environ, "DATABASE_URL": database_url}
    started = time.perf_counter()
    command = ["-c", code] if code else ["-m", "banking_es"]
    child = subprocess.Popen(
        [sys.executable, *command, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"{label} failed ({child.returncode}): {output}")
    cpu = usage.ru_utime + usage.ru_stime
    rss = usage.ru_maxrss // 1024
    say(f"{label}: {elapsed:.1f}s ({cpu:.1f}s of CPU), peak RSS {rss} MiB")
    last = output.strip().splitlines()[-1] if output.strip() else ""
    return {
        "step": label,
        "seconds": round(elapsed, 2),
        "cpu_s": round(cpu, 2),
        "peak_rss_mib": rss,
        "said": last,
    }


async def main(count: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
        folder = Path(scratch)
        source, back = folder / "source.db", folder / "back.db"
        say(f"filling SQLite with {count:,} events")
        started = time.perf_counter()
        await fill_sqlite(source, count)
        say(f"filled in {time.perf_counter() - started:.1f}s")
        one, two = str(folder / "one.bes"), str(folder / "two.bes")
        steps = [run_step("export from SQLite", f"sqlite:///{source}", "export", "--to", one)]
        size = await asyncio.to_thread(os.path.getsize, one)
        loaded = str(folder / "loaded.db")
        steps.append(run_step("load only into SQLite", "", one, loaded, code=LOAD_ONLY))
        async with scratch_database("export") as pg_url:
            steps.append(run_step("import into PostgreSQL", pg_url, "import", "--from", one))
            steps.append(run_step("export from PostgreSQL", pg_url, "export", "--to", two))
        steps.append(run_step("import into SQLite", f"sqlite:///{back}", "import", "--from", two))
    for step in steps:
        step["events_per_s"] = round(count / step["seconds"])
    steps.append({"step": "file size", "bytes": size, "bytes_per_event": round(size / count)})
    return steps


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    options = parser.parse_args()
    results = asyncio.run(main(options.events))
    say(f"load average {load_average()}")
    for row in results:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(json.dumps({"events": options.events, "steps": results}))
