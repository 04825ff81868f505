"""`banking-es shards ...`: the shard map (status) and a manual move for maintenance."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from banking_es.cli.common import console, read_settings, run, with_store
from banking_es.config import Settings

shards_app = typer.Typer(
    help="Shards: which instance owns which (status), and a manual move for maintenance.",
    no_args_is_help=True,
)


async def _with_leases(settings: Settings, work: Any) -> Any:
    from banking_es.shards.leases import ShardLeases

    async def inner(db: Any, store: Any) -> Any:
        leases = ShardLeases(db, ttl=settings.shard_lease_ttl)
        await leases.ensure_shard_count(settings.shard_count)  # another count: one line, exit 2
        return await work(leases)

    return await with_store(settings, inner)


@shards_app.command("status")
def shards_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print GET /admin/shards' JSON")] = False,
) -> None:
    """Show every shard (status, owner, epoch, load) and every instance seen."""
    import orjson

    from banking_es.shards.report import shard_report

    settings = read_settings()
    report = run(_with_leases(settings, shard_report))
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    out = Console()
    shards = Table("shard", "status", "owner", "epoch", "load", title="shards")
    for shard in report["shards"]:
        shards.add_row(
            str(shard["shard"]), shard["status"], shard["owner"] or "-", str(shard["epoch"]),
            f"{shard['load']:g}",
        )  # fmt: skip
    out.print(shards)
    instances = Table("instance", "url", "status", "last seen", "shards", title="instances")
    for instance in report["instances"]:
        instances.add_row(
            instance["id"], instance["url"], instance["status"], instance["last_seen"],
            ",".join(map(str, instance["shards"])) or "-",
        )  # fmt: skip
    out.print(instances)


@shards_app.command("move")
def shards_move(
    shard: Annotated[int, typer.Argument(min=0, max=4095, help="The shard to move")],
    target: Annotated[str, typer.Argument(help="The INSTANCE_ID to hand it to")],
) -> None:
    """Ask the shard's owner to hand it to TARGET (it drains, then releases; TARGET claims)."""
    settings = read_settings()
    if shard >= settings.shard_count:
        console.print(f"[red]error:[/red] no shard {shard}: SHARD_COUNT is {settings.shard_count}")
        raise typer.Exit(2)

    async def work(leases: Any) -> str | None:
        alive = sorted(i.id for i in await leases.instances() if i.alive)
        if target not in alive:
            return f"{target} is not a live instance (live: {', '.join(alive) or 'none'})"
        if not await leases.hand_over(shard, target):
            return f"shard {shard} has no owner to hand it over"
        return None

    refused = run(_with_leases(settings, work))
    if refused is not None:
        console.print(f"[red]error:[/red] {refused}")
        raise typer.Exit(1)
    typer.echo(f"shard {shard}: handover to {target} requested")
