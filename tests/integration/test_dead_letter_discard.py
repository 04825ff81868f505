"""Discarding a dead letter skips its message; the letters parked behind it stay open (their
key stays parked), and both the store API and the CLI say which ones they are."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from banking_es.cli import app as cli_app
from banking_es.db.migrate import migrate
from banking_es.db.sqlite import SqliteDatabase
from banking_es.messaging.dead_letters import DeadLetters, add_letter
from banking_es.projections.kafka_applier import CONSUMER


async def _letters(path: Path) -> dict[str, list[int]]:
    """A failed letter with two parked behind it (key `a`), and one of another key (`b`)."""
    db = await SqliteDatabase.connect(path)
    try:
        await migrate(db)
        ids: dict[str, list[int]] = {"a": [], "b": []}
        async with db.transaction() as conn:
            for key, attempts in (("a", 3), ("a", 0), ("b", 3), ("a", 0)):
                letter = await add_letter(
                    conn,
                    consumer=CONSUMER,
                    topic="banking.events",
                    partition=0,
                    offset=len(ids["a"]) + len(ids["b"]),
                    key=key,
                    value="{}",
                    headers={},
                    error="boom" if attempts else "parked",
                    attempts=attempts,
                )
                ids[key].append(letter)
        return ids
    finally:
        await db.close()


async def test_discard_answers_the_letters_still_parked_behind(tmp_path: Path) -> None:
    ids = await _letters(tmp_path / "bank.db")
    db = await SqliteDatabase.connect(tmp_path / "bank.db")
    try:
        letters = DeadLetters(db)
        assert await letters.discard(ids["a"][0]) == ids["a"][1:]  # not `b`'s
        assert [letter.id for letter in await letters.find()] == sorted(ids["a"][1:] + ids["b"])
        assert await letters.discard(ids["a"][2]) == []  # the last one: nothing behind it
    finally:
        await db.close()


def test_the_cli_says_which_letters_keep_the_key_parked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = asyncio.run(_letters(tmp_path / "bank.db"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bank.db'}")
    first, second, third = ids["a"]
    discarded = CliRunner().invoke(cli_app, ["dlq", "discard", str(first)])
    assert discarded.exit_code == 0, discarded.output
    assert f"discarded dead letter {first}" in discarded.stdout
    assert f"still open ({second}, {third})" in discarded.stdout
    assert f"banking-es dlq retry {second}" in discarded.stdout
    alone = CliRunner().invoke(cli_app, ["dlq", "discard", str(ids["b"][0])])
    assert alone.exit_code == 0, alone.output
    assert "still open" not in alone.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["dlq", "retry", str(2**63)],  # beyond a bigint: was the driver's OverflowError
        ["dlq", "discard", "99999999999999999999999"],
        ["dlq", "retry", "0"],
        ["projections", "rebuild", "--from-position", str(2**63)],
        ["outbox", "replay", "--from-position", str(2**63)],
        ["outbox", "replay", "--from-position", "1", "--to-position", str(2**63)],
    ],
)
def test_ids_and_positions_beyond_what_the_database_stores_are_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    asyncio.run(_letters(tmp_path / "bank.db"))
    before = (tmp_path / "bank.db").read_bytes()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'bank.db'}")
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert "Invalid value" in result.output
    assert (tmp_path / "bank.db").read_bytes() == before  # nothing ran
