"""SHARD_COUNT is stored with the database at its first start; a server started with another
value refuses to start with one line naming the stored one."""

from __future__ import annotations

from pathlib import Path

from tests.auth import run_cli

REFUSAL = (
    "error: SHARD_COUNT is 8 but this database was set up with 16 shards; start with SHARD_COUNT=16"
)


def test_a_server_with_another_shard_count_refuses_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'banking.db'}"
    first = run_cli(["migrate"], tmp_path, DATABASE_URL=url)
    assert first.returncode == 0, first.stderr

    for args in (["migrate"], ["serve", "--port", "1"], ["serve", "--no-migrate"]):
        refused = run_cli(args, tmp_path, DATABASE_URL=url, SHARD_COUNT="8")
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert refused.stderr.strip().splitlines() == [REFUSAL], args

    again = run_cli(["migrate"], tmp_path, DATABASE_URL=url, SHARD_COUNT="16")
    assert again.returncode == 0, again.stderr
