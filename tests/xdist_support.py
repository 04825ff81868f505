"""The suite on pytest-xdist workers (`make test` runs `pytest -n 2 --dist loadgroup`).

Tests that use PostgreSQL form one xdist group, so they run one after another on one worker as
in a serial run: some open 40 connections, and the server allows 100. The event store's
contract tests (tests/contract) stay free: they open at most two stores on their database.
Tests marked `alone` (a latency compared with an idle one, a fixed time budget) run while no
other test runs: every test holds a shared lock on a file of the run, an `alone` one holds it
exclusively.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

PG_FIXTURES = frozenset({"pg_url", "pg_module_url", "pg_admin_url"})
CONTRACT_DIR = Path(__file__).resolve().parent / "contract"


def group_postgres_tests(items: list[pytest.Item]) -> None:
    """Mark every test that uses PostgreSQL `postgres` (a fixture is enough); group all but
    the contract tests."""
    for item in items:
        uses_pg = PG_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_pg and item.get_closest_marker("postgres") is None:
            item.add_marker(pytest.mark.postgres)
        grouped = item.path.resolve().parent != CONTRACT_DIR
        if grouped and item.get_closest_marker("postgres") is not None:
            item.add_marker(pytest.mark.xdist_group("postgres"))


@contextmanager
def turn(item: pytest.Item) -> Iterator[None]:
    """Hold the run's lock while `item` runs: shared, or exclusive for an `alone` test.

    A second lock file is a turnstile: an `alone` test waiting for the exclusive lock keeps
    it, so the other worker cannot start test after test meanwhile and starve it.
    """
    workdir = item.config.option.basetemp
    if not hasattr(item.config, "workerinput") or not workdir:
        yield  # not on an xdist worker: nothing else runs
        return
    run_dir = Path(workdir).parent  # the controller's basetemp, one per run
    alone = item.get_closest_marker("alone") is not None
    with ExitStack() as stack:
        gate = stack.enter_context((run_dir / "turnstile.lock").open("a"))
        main = stack.enter_context((run_dir / "tests.lock").open("a"))
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(main, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(main, fcntl.LOCK_UN)
