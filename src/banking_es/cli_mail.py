"""`banking-es mail ...`: the mail queue's backlog and its dead letters (see `mail.sender`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from banking_es.cli_messaging import BIGINT_MAX, _run, _settings, console, with_store
from banking_es.config import Settings, SettingsError

mail_app = typer.Typer(
    help="The mail queue (reset, password-changed, lock-out mail): backlog, dead letters, retry.",
    no_args_is_help=True,
)


def check_mail_or_exit(settings: Settings) -> None:
    """`serve`'s check: production without a mail server stops with one line (exit 2)."""
    from banking_es.mail.setup import check_mail_settings

    try:
        check_mail_settings(settings)
    except SettingsError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


async def _with_queue(settings: Settings, work: Any) -> Any:
    from banking_es.mail.queue import MailQueue

    async def inner(db: Any, store: Any) -> Any:
        return await work(MailQueue(db))

    return await with_store(settings, inner)


@mail_app.command("status")
def mail_status() -> None:
    """Show how many mails wait to be sent and how many are dead."""
    settings = _settings()

    async def work(queue: Any) -> tuple[int, int]:
        return await queue.pending_count(), len(await queue.dead(10000))

    pending, dead = _run(_with_queue(settings, work))
    table = Table("pending", "dead")
    table.add_row(str(pending), str(dead))
    Console().print(table)


@mail_app.command("dead-letters")
def mail_dead_letters(limit: Annotated[int, typer.Option(min=1, max=10000)] = 100) -> None:
    """List mails given up on after MAIL_MAX_ATTEMPTS, oldest first (never their bodies)."""
    settings = _settings()

    async def work(queue: Any) -> Any:
        return await queue.dead(limit)

    table = Table("id", "kind", "recipient", "attempts", "created", "last error")
    for mail in _run(_with_queue(settings, work)):
        table.add_row(
            str(mail.id),
            mail.kind,
            mail.recipient,
            str(mail.attempts),
            mail.created_at.isoformat(timespec="seconds"),
            (mail.last_error or "")[:80],
        )
    Console().print(table)


@mail_app.command("retry")
def mail_retry(
    mail_id: Annotated[int, typer.Argument(min=1, max=BIGINT_MAX, help="The dead mail's id")],
) -> None:
    """Send a dead mail again (after the mail server is fixed), with a fresh count of tries."""
    from banking_es.mail.queue import MailNotFound

    settings = _settings()

    async def work(queue: Any) -> None:
        await queue.retry(mail_id, datetime.now(UTC))

    try:
        _run(_with_queue(settings, work))
    except MailNotFound as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"mail {mail_id} queued again; the running server's sender sends it")
