"""/admin/shards (API.md): the shard map, and a rebalancing round started by hand."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response

from banking_es.api.admin_schemas import RebalanceStarted, ShardsOut
from banking_es.api.routing import Call, operation
from banking_es.identity.service import require_reader


class ShardRoutes:
    """Thin: the composition root hands the report and the rebalance (one instance: no moves)."""

    def __init__(
        self,
        report: Callable[[], Awaitable[dict[str, Any]]],
        rebalance: Callable[[], Awaitable[list[dict[str, Any]]]],
    ) -> None:
        self.report = report
        self.rebalance = rebalance

    @operation(
        "GET",
        "/admin/shards",
        "Every shard's status, owner, epoch and load, and the instances (admin, auditor)",
        response=ShardsOut,
        problems=(401, 403),
        role=require_reader,
    )
    async def shards_status(self, call: Call) -> Response:
        return Response(orjson.dumps(await self.report()), media_type="application/json")

    @operation(
        "POST",
        "/admin/shards/rebalance",
        "Run a rebalancing round now (admin); moves start as handovers",
        status=202,
        response=RebalanceStarted,
        problems=(401, 403),
    )
    async def shards_rebalance(self, call: Call) -> Response:
        body = orjson.dumps({"moves": await self.rebalance()})
        return Response(body, status_code=202, media_type="application/json")
