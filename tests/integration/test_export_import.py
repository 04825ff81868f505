"""`banking-es export` / `import`: a store moves SQLite -> PostgreSQL -> SQLite unchanged, logins
keep working, and a damaged file or a non-empty target is refused with nothing changed."""

from __future__ import annotations

import asyncio
import gzip
import os
import stat
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tests.api_support import running_app
from tests.auth import PASSWORD, bearer, login, register
from tests.e2e.http_support import wait_for_projections
from typer.testing import CliRunner

from banking_es.application.accounts import CommandContext, HoldResult
from banking_es.cli import app as cli_app
from banking_es.db.base import Database
from banking_es.db.migrate import migrate
from banking_es.db.postgres import PostgresDatabase
from banking_es.db.sqlite import SqliteDatabase
from banking_es.domain import commands as cmd
from banking_es.portable.fileformat import ExportReader, Rows, TableStart
from banking_es.portable.tables import BY_NAME, TABLES

#: Exported tables compared whole after each move (rows by their keys).
COMPARED = {
    "events": "position",
    "users": "id",
    "role_changes": "id",
    "login_unlocks": "id",
    "mail_queue": "id",
    "logins": "id",
    "password_resets": "token_hash",
    "idempotency_keys": "scope, key",
}
#: A read model the import rebuilds, compared whole too (hold rows with their statuses).
REBUILT = {"transactions": "account_id, version"}


async def run_cli(database_url: str, *args: str) -> Any:
    """`banking-es ARGS` on `database_url` (in a thread: the CLI runs its own event loop)."""
    env = {"DATABASE_URL": database_url}
    return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env=env)


async def open_db(url: str) -> Database:
    if url.startswith("sqlite"):
        return await SqliteDatabase.connect(url.removeprefix("sqlite:///"))
    return await PostgresDatabase.connect(url, max_size=2)


async def table_rows(url: str) -> dict[str, list[dict[str, Any]]]:
    db = await open_db(url)
    try:
        return {
            table: [dict(r) for r in await db.fetch(f"SELECT * FROM {table} ORDER BY {key}")]
            for table, key in {**COMPARED, **REBUILT}.items()
        }
    finally:
        await db.close()


async def seed_through_the_api(tmp_path: Path, url: str) -> dict[str, Any]:
    """A customer with two accounts, deposits, a transfer (with an Idempotency-Key), a
    pending password reset and a role change; answers what the checks need."""
    async with running_app(tmp_path, url) as (http, services):
        user = await register(http, "mover")
        pair = await login(http, "mover")
        headers = bearer(pair["access_token"])
        ids = []
        for balance in ("100.00", "250.50"):
            response = await http.post(
                "/accounts",
                json={"owner_name": "Mo Ver", "initial_balance": balance},
                headers=headers,
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        deposit = await http.post(
            f"/accounts/{ids[0]}/deposit",
            json={"amount": "12.34"},
            headers={**headers, "Idempotency-Key": "deposit-1"},
        )
        assert deposit.status_code == 200, deposit.text
        transfer = await http.post(
            "/transfers",
            json={"from_account_id": ids[1], "to_account_id": ids[0], "amount": "50.25"},
            headers=headers,
        )
        assert transfer.status_code == 201, transfer.text
        service, ctx = services.accounts, CommandContext()
        for amount, settle in (("10.00", "capture"), ("3.00", "void"), ("2.00", None)):
            hold = await service.place_hold(
                cmd.PlaceHold(ids[0], Decimal(amount), ids[1] if settle else None), ctx
            )
            assert isinstance(hold, HoldResult)
            if settle == "capture":
                await service.capture_hold(cmd.CaptureHold(hold.id, Decimal("4.00")), ctx)
            elif settle == "void":
                await service.void_hold(cmd.VoidHold(hold.id), ctx)
        await services.identity.request_reset("mover@example.com")
        await services.identity.register("auditor1", "auditor1@example.com", PASSWORD)
        auditor = await services.identity.users.by_login_name("auditor1")
        await services.identity.set_roles(auditor.id, ["auditor"], "cli:test")
        await wait_for_projections(services)
        balances = {i: (await http.get(f"/accounts/{i}", headers=headers)).json() for i in ids}
        return {"user": user, "ids": ids, "balances": balances, "refresh": pair["refresh_token"]}


async def check_it_works(tmp_path: Path, url: str, seeded: dict[str, Any]) -> None:
    """The same password logs in; the old refresh token still works; balances are equal."""
    async with running_app(tmp_path, url) as (http, services):
        await wait_for_projections(services)
        pair = await login(http, "mover")
        refreshed = await http.post("/auth/refresh", json={"refresh_token": seeded["refresh"]})
        assert refreshed.status_code == 200, refreshed.text
        headers = bearer(pair["access_token"])
        for account_id, before in seeded["balances"].items():
            now = (await http.get(f"/accounts/{account_id}", headers=headers)).json()
            assert (now["balance"], now["version"]) == (before["balance"], before["version"])
        response = await http.post(
            f"/accounts/{seeded['ids'][0]}/deposit", json={"amount": "1.00"}, headers=headers
        )
        assert response.status_code == 200, response.text  # the next position is free
        auditor = await services.identity.users.by_login_name("auditor1")
        await services.identity.set_roles(auditor.id, ["customer"], "cli:test")  # next id free


@pytest.mark.postgres
async def test_a_store_moves_sqlite_to_postgres_to_sqlite_unchanged(
    tmp_path: Path, pg_url: str
) -> None:
    first = f"sqlite:///{tmp_path / 'first.db'}"
    last = f"sqlite:///{tmp_path / 'last.db'}"
    seeded = await seed_through_the_api(tmp_path, first)
    original = await table_rows(first)
    assert original["password_resets"]
    assert original["role_changes"]
    assert original["logins"]
    holds = [(r["type"], r["status"]) for r in original["transactions"] if r["status"]]
    assert sorted(holds) == [("hold", "captured"), ("hold", "pending"), ("hold", "voided")]

    exported = await run_cli(first, "export", "--to", str(tmp_path / "one.bes"))
    assert exported.exit_code == 0, exported.output
    imported = await run_cli(pg_url, "import", "--from", str(tmp_path / "one.bes"))
    assert imported.exit_code == 0, imported.output
    assert await table_rows(pg_url) == original

    assert (await run_cli(pg_url, "export", "--to", str(tmp_path / "two.bes"))).exit_code == 0
    back = await run_cli(last, "import", "--from", str(tmp_path / "two.bes"))
    assert back.exit_code == 0, back.output
    assert await table_rows(last) == original

    await check_it_works(tmp_path, pg_url, seeded)
    await check_it_works(tmp_path, last, seeded)


# ---- what is exported -------------------------------------------------------------------


async def seed_rows(path: Path) -> None:
    """A user with live and spent side rows of every kind an export filters."""
    db = await SqliteDatabase.connect(path)
    try:
        await migrate(db)
        now = datetime.now(UTC)
        past, future = now - timedelta(minutes=1), now + timedelta(hours=1)
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO users (id, username, username_key, email, email_key, password_hash,"
                " roles, created_at, updated_at) VALUES ('u1', 'u', 'u', 'u@x.io', 'u@x.io',"
                " 'hash', 'customer', $1, $1)",
                now,
            )
            for login_id, expires, revoked in (
                ("live", future, None),
                ("revoked", future, past),
                ("expired", past, None),
            ):
                await conn.execute(
                    "INSERT INTO logins (id, user_id, refresh_jti, created_at, refreshed_at,"
                    " expires_at, revoked_at) VALUES ($1, 'u1', 'jti', $2, $2, $3, $4)",
                    login_id,
                    now,
                    expires,
                    revoked,
                )
            for token, expires, used in (
                ("valid", future, None),
                ("used", future, past),
                ("expired", past, None),
            ):
                await conn.execute(
                    "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at,"
                    " used_at) VALUES ($1, 'u1', $2, $3, $4)",
                    token,
                    now,
                    expires,
                    used,
                )
            for key, expires in (("valid", future), ("expired", past)):
                await conn.execute(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body,"
                    " created_at, expires_at) VALUES ('s', $1, 'f', 200, '{}', $2, $3)",
                    key,
                    now,
                    expires,
                )
            for login_id, expires in (("old", now - timedelta(hours=2)), ("recent", past)):
                # The list keeps a revocation one access-token lifetime (1 h) past its expiry.
                await conn.execute(
                    "INSERT INTO revocations (login_id, expires_at, revoked_at)"
                    " VALUES ($1, $2, $2)",
                    login_id,
                    expires,
                )
            await conn.execute(
                "INSERT INTO mail_queue (kind, user_id, recipient, subject, status,"
                " next_attempt_at, created_at, updated_at)"
                " VALUES ('password_reset', 'u1', 'u@x.io', 'Reset', 'pending', $1, $1, $1)",
                now,
            )
            await conn.execute(
                "INSERT INTO login_unlocks (name_key, user_id, unlocked_by, unlocked_at)"
                " VALUES ('u', 'u1', 'cli:test', $1)",
                now,
            )
            for key, published in (("unsent", None), ("sent", now)):
                await conn.execute(
                    "INSERT INTO outbox (topic, key, payload, created_at, published_at)"
                    " VALUES ('notifications', $1, $2, $3, $4)",
                    key,
                    {"type": "password_reset"},
                    now,
                    published,
                )
    finally:
        await db.close()


def exported_keys(path: Path) -> dict[str, list[Any]]:
    """Each table's exported rows, by the first column of their key."""
    keys: dict[str, list[Any]] = {}
    with ExportReader(path) as reader:
        table = ""
        for item in reader.items():
            if isinstance(item, TableStart):
                table, keys[item.name] = item.name, []
                first = item.columns.index(BY_NAME[table].key[-1])
            elif isinstance(item, Rows):
                keys[table] += [row[first] for row in item.rows]
    return keys


async def test_only_live_logins_resets_records_and_unsent_mail_are_exported(
    tmp_path: Path,
) -> None:
    await seed_rows(tmp_path / "bank.db")
    result = await run_cli(
        f"sqlite:///{tmp_path / 'bank.db'}", "export", "--to", str(tmp_path / "out.bes")
    )
    assert result.exit_code == 0, result.output
    keys = exported_keys(tmp_path / "out.bes")
    assert keys["logins"] == ["live"]
    assert keys["password_resets"] == ["valid"]
    assert keys["idempotency_keys"] == ["valid"]
    assert keys["outbox"] == [1]
    assert keys["revocations"] == [2]
    assert keys["mail_queue"] == [1]
    assert keys["login_unlocks"] == [1]
    assert keys["users"] == ["u1"]
    assert set(keys) == {spec.name for spec in TABLES}


@pytest.mark.parametrize("umask", [0o000, 0o277])
async def test_the_file_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    await seed_rows(tmp_path / "bank.db")
    previous = os.umask(umask)
    try:
        result = await run_cli(
            f"sqlite:///{tmp_path / 'bank.db'}", "export", "--to", str(tmp_path / "out.bes")
        )
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE((tmp_path / "out.bes").stat().st_mode) == 0o600
    again = await run_cli(
        f"sqlite:///{tmp_path / 'bank.db'}", "export", "--to", str(tmp_path / "out.bes")
    )
    assert again.exit_code == 1
    assert "exists" in again.output


# ---- refusals ---------------------------------------------------------------------------


async def all_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of an SQLite file."""
    db = await SqliteDatabase.connect(path)
    try:
        names = [
            r["name"] for r in await db.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {n: [dict(r) for r in await db.fetch(f"SELECT * FROM {n}")] for n in sorted(names)}
    finally:
        await db.close()


def rewrite(path: Path, change: Any) -> None:
    """Decompress `path`, apply `change` to its bytes, compress it again (a valid gzip)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    path.write_bytes(gzip.compress(change(data)))


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


DAMAGES = {
    "flipped byte": (flip_a_byte, "damaged"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-30]), "truncated"),
    "manifest cut off": (
        lambda p: rewrite(p, lambda d: d[: d.rindex(b'{"manifest"')]),
        "truncated",
    ),
    "data after the manifest": (lambda p: rewrite(p, lambda d: d + b"[1]\n"), "after its manifest"),
    "row changed": (
        lambda p: rewrite(p, lambda d: d.replace(b'"valid"', b'"valie"', 1)),
        "checksum",
    ),
    "count changed": (
        lambda p: rewrite(
            p, lambda d: d.replace(b'{"end":"users","rows":1', b'{"end":"users","rows":2')
        ),
        "checksum",
    ),
    "wrong version": (
        lambda p: rewrite(p, lambda d: d.replace(b'"format_version":1', b'"format_version":2', 1)),
        "format version 2",
    ),
    "not an export": (lambda p: p.write_bytes(b"id,name\n1,x\n"), "not an export"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
async def test_a_damaged_file_is_refused_with_nothing_changed(tmp_path: Path, damage: str) -> None:
    await seed_rows(tmp_path / "bank.db")
    file = tmp_path / "out.bes"
    result = await run_cli(f"sqlite:///{tmp_path / 'bank.db'}", "export", "--to", str(file))
    assert result.exit_code == 0, result.output
    spoil, says = DAMAGES[damage]
    spoil(file)
    empty = tmp_path / "empty.db"
    db = await SqliteDatabase.connect(empty)
    await migrate(db)
    await db.close()
    before = await all_rows(empty)

    for target in (empty, tmp_path / "absent.db"):
        result = await run_cli(f"sqlite:///{target}", "import", "--from", str(file))
        assert result.exit_code == 1, result.output
        line = result.output.strip().splitlines()[-1]
        assert line.startswith("error:")
        assert says in line
    assert await all_rows(empty) == before
    assert not (tmp_path / "absent.db").exists()


async def test_a_target_with_data_is_refused_with_nothing_changed(tmp_path: Path) -> None:
    bank = tmp_path / "bank.db"
    await seed_rows(bank)
    result = await run_cli(f"sqlite:///{bank}", "export", "--to", str(tmp_path / "out.bes"))
    assert result.exit_code == 0, result.output
    before = await all_rows(bank)
    refused = await run_cli(f"sqlite:///{bank}", "import", "--from", str(tmp_path / "out.bes"))
    assert refused.exit_code == 1
    assert "not empty (table users has rows)" in refused.output
    assert await all_rows(bank) == before


@pytest.mark.postgres
async def test_a_postgres_target_with_data_is_refused(tmp_path: Path, pg_url: str) -> None:
    await seed_rows(tmp_path / "bank.db")
    file = str(tmp_path / "out.bes")
    assert (
        await run_cli(f"sqlite:///{tmp_path / 'bank.db'}", "export", "--to", file)
    ).exit_code == 0
    first = await run_cli(pg_url, "import", "--from", file)
    assert first.exit_code == 0, first.output
    before = await table_rows(pg_url)
    again = await run_cli(pg_url, "import", "--from", file)
    assert again.exit_code == 1
    assert "not empty" in again.output
    assert await table_rows(pg_url) == before
