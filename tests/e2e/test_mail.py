"""Mail over SMTP to a real server on loopback (aiosmtpd): the reset token arrives and
works, nothing usable stays behind (queue, outbox), a failing server ends in a dead letter
an admin retries, and event publishing never waits for it."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.api_support import running_app
from tests.auth import PASSWORD, admin_headers, bearer, login, register, reset_token
from tests.smtp_support import SmtpServer, token_in

from banking_es.bootstrap import Services
from banking_es.mail.messages import RESET_SUBJECT, queue_login_locked_mail
from banking_es.mail.queue import MailQueue
from banking_es.mail.setup import build_sender

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def smtp() -> Any:
    with SmtpServer() as server:
        yield server


async def _stored_text(services: Services) -> str:
    """Everything the mail queue and the outbox hold, as one text to search for secrets."""
    rows = [*await services.db.fetch("SELECT * FROM mail_queue")]
    rows += await services.db.fetch("SELECT * FROM outbox")
    return repr(rows)


async def test_reset_mail_arrives_its_token_works_and_nothing_usable_is_stored(
    tmp_path: Path, database_url: str, smtp: SmtpServer
) -> None:
    async with running_app(tmp_path, database_url, smtp_url=smtp.url) as (http, services):
        user = await register(http)
        session = await login(http, user["username"])
        requested = await http.post("/auth/reset-password", json={"email": user["email"]})
        assert requested.status_code == 202
        mail = await smtp.wait_for(lambda m: m["Subject"] == RESET_SUBJECT)
        assert mail["To"] == user["email"]
        assert mail["From"] == "banking-es@localhost"
        token = token_in(mail)

        # Delivered: the queue is empty, and no table holds the token (the reset row its hash).
        for _ in range(100):
            if await services.db.fetchval("SELECT count(*) FROM mail_queue") == 0:
                break
            await asyncio.sleep(0.02)
        assert await services.db.fetchval("SELECT count(*) FROM mail_queue") == 0
        stored = await _stored_text(services)
        assert token not in stored
        assert user["email"] not in stored  # the outbox notification carries no address
        notifications = await services.db.fetch(
            "SELECT payload FROM outbox WHERE topic = 'notifications'"
        )  # what the relay publishes on <prefix>.notifications
        assert [n["payload"] for n in notifications] == [
            {"type": "password_reset_requested", "user_id": user["id"]}
        ]
        assert token not in repr(await services.db.fetch("SELECT * FROM password_resets"))

        confirm = {"token": token, "new_password": "a brand new one"}
        assert (await http.post("/auth/reset-password/confirm", json=confirm)).status_code == 204
        assert (
            await http.get("/auth/me", headers=bearer(session["access_token"]))
        ).status_code == 401
        await login(http, user["username"], "a brand new one")
        changed = await smtp.wait_for(lambda m: m["Subject"] == "Your password was changed")
        assert changed["To"] == user["email"]
        assert "with a reset token" in changed.get_content()


async def test_change_password_mails_the_user(tmp_path: Path, smtp: SmtpServer) -> None:
    async with running_app(tmp_path, smtp_url=smtp.url) as (http, _services):
        user = await register(http)
        pair = await login(http, user["username"])
        changed = await http.post(
            "/auth/change-password",
            json={"current_password": PASSWORD, "new_password": "another password"},
            headers=bearer(pair["access_token"]),
        )
        assert changed.status_code == 204
        mail = await smtp.wait_for(lambda m: m["Subject"] == "Your password was changed")
        assert mail["To"] == user["email"]
        assert "by a signed-in session" in mail.get_content()
        assert "another password" not in mail.get_content()


async def test_lockout_mail_says_until_when(tmp_path: Path, smtp: SmtpServer) -> None:
    """`queue_login_locked_mail`, which the lock-out calls in its transaction."""
    async with running_app(tmp_path, smtp_url=smtp.url) as (http, services):
        registered = await register(http)
        user = await services.identity.users.by_id(registered["id"])
        assert user is not None
        now = services.clock.now()
        until = now + timedelta(seconds=300)
        async with services.db.transaction() as conn:
            await queue_login_locked_mail(services.identity.mail, conn, user, until, now)
        assert services.identity.mail is not None
        services.identity.mail.on_queued()
        mail = await smtp.wait_for(lambda m: m["Subject"] == "Your login was locked")
        assert mail["To"] == user.email
        body = mail.get_content()
        assert user.username in body
        assert f"locked until {until:%Y-%m-%d %H:%M} UTC" in body


async def test_wrong_passwords_that_lock_a_login_mail_its_owner_once(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with running_app(tmp_path, smtp_url=smtp.url, max_login_attempts=3) as (http, _services):
        user = await register(http)
        for _ in range(3):
            wrong = {"username": user["username"], "password": "not the password"}
            assert (await http.post("/auth/login", json=wrong)).status_code == 401
        locked = await http.post("/auth/login", json=wrong)
        assert locked.json()["code"] == "account_locked"
        mail = await smtp.wait_for(lambda m: m["Subject"] == "Your login was locked")
        assert mail["To"] == user["email"]
        await asyncio.sleep(0.3)
        assert [m["Subject"] for m in smtp.received].count("Your login was locked") == 1


async def test_refusing_server_retries_then_dead_letter_admin_retry_sends_it(
    tmp_path: Path, database_url: str, smtp: SmtpServer
) -> None:
    smtp.refuse = True  # 451 to every mail
    options = {"smtp_url": smtp.url, "mail_max_attempts": 3, "mail_retry_base_s": 0.05}
    async with running_app(tmp_path, database_url, **options) as (http, services):
        admin = await admin_headers(http, services)
        user = await register(http)
        assert (
            await http.post("/auth/reset-password", json={"email": user["email"]})
        ).status_code == 202
        dead: list[dict[str, Any]] = []
        for _ in range(300):
            listed = await http.get("/admin/mail/dead-letters", headers=admin)
            assert listed.status_code == 200, listed.text
            dead = listed.json()["data"]
            if dead:
                break
            await asyncio.sleep(0.05)
        [letter] = dead
        assert letter["kind"] == "password_reset"
        assert letter["attempts"] == 3
        assert "451" in letter["last_error"]
        assert "body" not in letter
        assert smtp.received == []
        # Event publishing went on meanwhile: the notification of the request is published.
        unpublished = await services.db.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        assert unpublished == 0
        # The tokens the failed attempts made were never delivered, nor stored in clear.
        assert await services.db.fetchval("SELECT count(*) FROM password_resets") == 3

        smtp.refuse = False
        customer = bearer((await login(http, user["username"]))["access_token"])
        forbidden = await http.post(
            f"/admin/mail/dead-letters/{letter['id']}/retry", headers=customer
        )
        assert forbidden.status_code == 403
        retried = await http.post(f"/admin/mail/dead-letters/{letter['id']}/retry", headers=admin)
        assert retried.status_code == 200, retried.text
        mail = await smtp.wait_for(lambda m: m["Subject"] == RESET_SUBJECT)
        confirm = {"token": token_in(mail), "new_password": "after the outage"}
        assert (await http.post("/auth/reset-password/confirm", json=confirm)).status_code == 204
        again = await http.post(f"/admin/mail/dead-letters/{letter['id']}/retry", headers=admin)
        assert again.status_code == 404
        huge = await http.post(f"/admin/mail/dead-letters/{2**63}/retry", headers=admin)
        assert huge.status_code == 400


async def test_server_down_does_not_stall_event_publishing(tmp_path: Path) -> None:
    """A mail server that is away: the outbox relay publishes on, the mail waits (one per
    user however often the reset is asked for)."""
    server = SmtpServer()  # never started: connections are refused
    options = {"smtp_url": server.url, "mail_retry_base_s": 60.0}
    async with running_app(tmp_path, **options) as (http, services):
        first = await register(http)
        for _ in range(5):  # asked again while one waits: still one mail
            await http.post("/auth/reset-password", json={"email": first["email"]})
        for _ in range(2):
            user = await register(http)
            assert (
                await http.post("/auth/reset-password", json={"email": user["email"]})
            ).status_code == 202
        for _ in range(200):
            failed = await services.db.fetchval(
                "SELECT count(*) FROM mail_queue WHERE attempts >= 1 AND status = 'pending'"
            )
            published = await services.db.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"
            )
            if failed == 3 and published == 7:
                break
            await asyncio.sleep(0.05)
        assert (failed, published) == (3, 7)
        assert await services.db.fetchval("SELECT count(*) FROM mail_queue") == 3


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banking_es", *args],
        cwd=tmp_path,
        env={**os.environ, "DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_lists_dead_mail_and_retries_it(tmp_path: Path, smtp: SmtpServer) -> None:
    smtp.refuse = True
    url = f"sqlite:///{tmp_path / 'banking.db'}"
    options = {"smtp_url": smtp.url, "mail_max_attempts": 1}
    async with running_app(tmp_path, url, **options) as (http, services):
        user = await register(http)
        await http.post("/auth/reset-password", json={"email": user["email"]})
        for _ in range(200):
            if await services.db.fetchval("SELECT count(*) FROM mail_queue WHERE status = 'dead'"):
                break
            await asyncio.sleep(0.05)
        listed = await asyncio.to_thread(_cli, ["mail", "dead-letters"], tmp_path, DATABASE_URL=url)
        assert listed.returncode == 0, listed.stderr
        assert user["email"] in listed.stdout
        assert "password_reset" in listed.stdout
        mail_id = await services.db.fetchval("SELECT id FROM mail_queue")
        smtp.refuse = False
        retried = await asyncio.to_thread(
            _cli, ["mail", "retry", str(mail_id)], tmp_path, DATABASE_URL=url
        )
        assert retried.returncode == 0, retried.stderr
        await smtp.wait_for(lambda m: m["Subject"] == RESET_SUBJECT)  # the server's sender
        unknown = await asyncio.to_thread(
            _cli, ["mail", "retry", "999"], tmp_path, DATABASE_URL=url
        )
        assert unknown.returncode == 1
        assert "no dead mail 999" in unknown.stderr


async def test_development_without_smtp_url_logs_the_mail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="banking_es.mail")
    async with running_app(tmp_path) as (http, services):
        user = await register(http)
        await http.post("/auth/reset-password", json={"email": user["email"]})
        token = await reset_token(services, user["id"])
        logged = [r.getMessage() for r in caplog.records if r.name == "banking_es.mail.sender"]
        assert any(f"mail to {user['email']}" in m and token in m for m in logged), logged
        confirm = {"token": token, "new_password": "from the log"}
        assert (await http.post("/auth/reset-password/confirm", json=confirm)).status_code == 204


async def test_one_sender_at_a_time_and_a_stand_by_takes_over(
    tmp_path: Path, database_url: str, smtp: SmtpServer
) -> None:
    """Two workers' senders on one database: only the lease holder sends, each mail once."""
    async with running_app(tmp_path, database_url, smtp_url=smtp.url) as (_http, services):
        first = services.mail
        assert first is not None
        queue = first.queue
        by_second: list[Any] = []
        second = build_sender(
            services.settings,
            services.db,
            MailQueue(services.db),
            services.clock,
            _no_reset,
            on_sent=by_second.append,
        )
        for _ in range(500):  # the running sender takes the lease at start (slow on a busy host)
            if await services.db.fetchval("SELECT holder FROM leases WHERE name = 'mail-sender'"):
                break
            await asyncio.sleep(0.02)
        now = services.clock.now()
        async with services.db.transaction() as conn:
            for n in range(5):
                await queue.put(conn, "notice", f"u{n}", f"u{n}@example.com", f"n{n}", "hi", now)
        for _ in range(20):
            assert await second.run_once() == 0  # stands by
            await asyncio.sleep(0.01)
        first.notify()
        for n in range(5):
            await smtp.wait_for(lambda m, n=n: m["Subject"] == f"n{n}")
        await first.stop()  # gives the lease up
        async with services.db.transaction() as conn:
            await queue.put(conn, "notice", "u9", "u9@example.com", "n9", "hi", now)
        for _ in range(300):  # once its next try at the lease is due
            if await second.run_once():
                break
            await asyncio.sleep(0.05)
        await second.stop()
        assert sorted(m["Subject"] for m in smtp.received) == [f"n{n}" for n in (0, 1, 2, 3, 4, 9)]
        assert [m["Subject"] for m in by_second] == ["n9"]


async def _no_reset(user_id: str) -> None:
    raise AssertionError("no reset mail in this test")
