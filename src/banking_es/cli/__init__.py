"""The `banking-es` command line: one module per command group, registered here.

Every module imports only `cli.common` and the layers below; this one imports the modules.
"""

from __future__ import annotations

import typer

from banking_es.cli.mail import mail_app
from banking_es.cli.messaging import dlq_app, outbox_app
from banking_es.cli.portable import export_command, import_command
from banking_es.cli.projections import projections_app
from banking_es.cli.serve import migrate_command, serve
from banking_es.cli.shards import shards_app
from banking_es.cli.users import users_app
from banking_es.cli.verify import verify_command

app = typer.Typer(
    help=(
        "banking-es: an event-sourced banking service.\n\n"
        "Configuration comes from environment variables (DATABASE_URL, REDIS_URL, ...; see "
        "docs/configuration.md). With none set it uses an SQLite file under ./data/."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(serve)
app.command("migrate")(migrate_command)
app.command("verify")(verify_command)
app.command("export")(export_command)
app.command("import")(import_command)
app.add_typer(projections_app, name="projections")
app.add_typer(users_app, name="users")
app.add_typer(outbox_app, name="outbox")
app.add_typer(dlq_app, name="dlq")
app.add_typer(mail_app, name="mail")
app.add_typer(shards_app, name="shards")


def main() -> None:
    app()
