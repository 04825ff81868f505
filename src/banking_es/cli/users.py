"""`banking-es users ...`: create the first admin, list users, change roles, end lock-outs."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from banking_es.cli.common import console, ensure_secrets, read_settings, run
from banking_es.config import Settings

users_app = typer.Typer(help="Manage users and their roles.", no_args_is_help=True)


async def _with_identity(settings: Settings, work: Any) -> Any:
    from banking_es.application.ports import SystemClock
    from banking_es.bootstrap.adapters import connect_database
    from banking_es.bootstrap.identity import build_identity
    from banking_es.db.migrate import migrate

    db = await connect_database(settings, pool_size=2)
    try:
        await migrate(db)
        return await work(build_identity(settings, db, SystemClock()))
    finally:
        await db.close()


@users_app.command("create-admin")
def users_create_admin(
    username: Annotated[str, typer.Option(help="Login name (3-64 of A-Z a-z 0-9 _ . -)")],
    email: Annotated[str, typer.Option(help="Email address")],
) -> None:
    """Create a user with the admin role.

    The password is read from BANKING_ADMIN_PASSWORD or asked for (never an argument).
    """
    import os

    from banking_es.identity.errors import IdentityError

    settings = read_settings()
    ensure_secrets(settings)
    password = os.environ.get("BANKING_ADMIN_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )

    async def work(identity: Any) -> Any:
        return await identity.register(username, email, password, roles=("admin",))

    try:
        user = run(_with_identity(settings, work))
    except IdentityError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"created admin {user.username} ({user.id})")


@users_app.command("list")
def users_list() -> None:
    """List users and their roles."""
    settings = read_settings()

    async def work(identity: Any) -> list[Any]:
        found: list[Any] = []
        after = None
        while page := await identity.users.page(after, 500):
            found.extend(page)
            after = page[-1].id
        return found

    table = Table("id", "username", "email", "roles", "created")
    for user in run(_with_identity(settings, work)):
        table.add_row(
            user.id, user.username, user.email, ",".join(user.roles), user.created_at.isoformat()
        )
    Console().print(table)


@users_app.command("set-role")
def users_set_role(
    username: Annotated[str, typer.Argument(help="Username or email")],
    roles: Annotated[list[str], typer.Argument(help="The new roles: customer, auditor, admin")],
) -> None:
    """Replace a user's roles (recorded as made from the command line; ends their logins)."""
    import getpass

    from banking_es.application.errors import NotFound
    from banking_es.identity.errors import IdentityError

    settings = read_settings()

    async def work(identity: Any) -> Any:
        user = await identity.users.by_login_name(username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return await identity.set_roles(user.id, roles, f"cli:{getpass.getuser()}")

    try:
        user = run(_with_identity(settings, work))
    except (IdentityError, NotFound) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"{user.username} now has roles: {', '.join(user.roles)}")


@users_app.command("unlock")
def users_unlock(
    name: Annotated[str, typer.Argument(help="Username or email (or any name tried at login)")],
) -> None:
    """End a login lock-out: of the name, and of both names of the user it names (recorded
    as made from the command line)."""
    import getpass

    settings = read_settings()

    async def work(identity: Any) -> list[str]:
        ended: list[str] = await identity.unlock(name, f"cli:{getpass.getuser()}")
        return ended

    ended = run(_with_identity(settings, work))
    typer.echo(f"unlocked: {', '.join(ended)}" if ended else f"no lock-out on {name!r}")
